"""Guarantees docs/scan.md makes about walking and decompressing, proved as an attacker would test
them: a bomb scanned under a memory limit in a child process, symlinks that point out of a tree."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden.findings import Severity
from trainwarden.scan import scan_path

# Runs in a child: builds a bomb (gzip or a deflated zip member) of SIZE MiB of zeros, caps the
# process's data segment (heap and anonymous memory; file-backed maps are not counted) at
# HEADROOM MiB above what it uses now, lowers the in-memory spill threshold (256 MiB by default)
# to 8 MiB so the bomb can stay small, and scans the bomb. A scan that held the decompressed
# bytes in memory dies with MemoryError (reported as TWS-INTERNAL) instead of finishing clean.
CHILD = r"""
import io, resource, sys, zipfile, zlib
from trainwarden.scan import Limits, scan_bytes
from trainwarden.scan._formats import _spill

kind, size, headroom = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3]) << 20
# "inflate": the ratio cap lifted, so the whole bomb is decompressed (to disk); "default": the
# default limits, which stop it early
limits = Limits(max_compression_ratio=10**9) if sys.argv[4] == "inflate" else Limits()
chunk = bytes(1 << 20)
if kind == "gzip":
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join([c.compress(chunk) for _ in range(size >> 20)]) + c.flush()
else:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("w.bin", "w") as fh:
        for _ in range(size >> 20):
            fh.write(chunk)
    bomb = buf.getvalue()
del chunk
_spill.MEMORY_THRESHOLD = 8 << 20
base = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmData:"))
resource.setrlimit(resource.RLIMIT_DATA, (base + headroom, base + headroom))
report = scan_bytes(bomb, "bomb", limits=limits)
print(len(bomb), size, ",".join(sorted({f.rule_id for f in report.findings})) or "-")
"""


@pytest.mark.parametrize(
    ("kind", "mode"), [("gzip", "inflate"), ("zip", "inflate"), ("gzip", "default")]
)
def test_decompression_bomb_costs_disk_not_memory(kind: str, mode: str) -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, "128", "48", mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    packed, size, rules = proc.stdout.split()
    assert int(packed) < int(size) // 100  # it is a bomb: over 100x
    # fully inflated: nothing to report (a MemoryError would be TWS-INTERNAL); with the default
    # limits the ratio cap stops it first, as a finding
    assert rules == ("-" if mode == "inflate" else "TWS-LIMIT"), proc.stdout


def test_directory_walk_does_not_follow_directory_symlinks(tmp_path: Path) -> None:
    """A walk stays inside the tree it was given (a link to / cannot make it scan the machine),
    and what it did not follow is HIGH, not a pass; a symlinked *file* inside the tree is
    scanned like any other file."""
    tree = tmp_path / "models"
    tree.mkdir()
    (tree / "ok.pkl").write_bytes(pickle.dumps([1], protocol=4))
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85R."
    (outside / "evil.pkl").write_bytes(evil)
    (tree / "linked_dir").symlink_to(outside, target_is_directory=True)
    (tree / "loop").symlink_to(tree, target_is_directory=True)
    report = scan_path(tree)
    found = sorted((Path(f.location).name, f.rule_id, f.severity) for f in report.findings)
    assert found == [
        ("linked_dir", "TWS-UNSCANNED", Severity.HIGH),
        ("loop", "TWS-UNSCANNED", Severity.HIGH),
    ]
    assert {Path(f.path).name: f.formats for f in report.files} == {
        "linked_dir": ("unscanned",),
        "loop": ("unscanned",),
        "ok.pkl": ("pickle",),
    }
    (tree / "linked_file.pkl").symlink_to(outside / "evil.pkl")
    report = scan_path(tree)
    assert ("linked_file.pkl", "TWS-PKL-DANGEROUS") in {
        (Path(f.location.split("@")[0]).name, f.rule_id) for f in report.findings
    }
