"""``trainwarden.load(mmap=True)``: tensors are views of the mapped file, memory does not follow
the file size, and the scan still comes before any unpickling."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import trainwarden
from trainwarden.loading import UnsafeModelError

from ._payloads import SystemPayload

SRC = Path(trainwarden.__file__).resolve().parents[1]


def test_mmap_tensors_are_views_of_the_file(tmp_path: Path) -> None:
    p = tmp_path / "sd.pt"
    sd = {"a": torch.randn(64, 64), "b": torch.randn(1000)}
    torch.save(sd, p)
    got = trainwarden.load(p, mmap=True)
    assert all(torch.equal(sd[k], got[k]) for k in sd)
    reader: Any = torch._C.PyTorchFileReader(str(p))
    records = {r.rsplit("/", 1)[-1]: r for r in reader.get_all_records()}
    off = {k: reader.get_record_offset(records[k]) for k in ("0", "1")}
    # The tensors sit exactly as far apart in memory as their records sit in the file: views of
    # one mapping of the whole file, not separate copies.
    assert got["b"].data_ptr() - got["a"].data_ptr() == off["1"] - off["0"]
    # Writing to a loaded tensor never reaches the file (a private, copy-on-write mapping).
    before = p.read_bytes()
    got["a"].zero_()
    assert p.read_bytes() == before


def test_mmap_load_refuses_a_payload_before_unpickling(tmp_path: Path, canary: Path) -> None:
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2)}, p)
    # Replace data.pkl with a payload pickle inside the real checkpoint archive.
    evil = tmp_path / "evil2.pt"
    with zipfile.ZipFile(p) as src, zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps(SystemPayload(canary), protocol=2)
            dst.writestr(info, data)
    with pytest.raises(UnsafeModelError):
        trainwarden.load(evil, mmap=True)


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
def test_mmap_peak_memory_does_not_follow_file_size(tmp_path: Path, suffix: str) -> None:
    # A 256 MiB checkpoint loaded with mmap=True in a fresh process: the peak RSS added by the
    # load stays far below the file size (the default mode reads the file into memory: its
    # increase is at least the file size, which shows the measurement can fail).
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc for the peak RSS")
    size_mb = 256
    p = tmp_path / f"big.{suffix}"
    sd = {f"t{i}": torch.full((size_mb // 8, 1024, 256), float(i)) for i in range(8)}
    if suffix == "pt":
        torch.save(sd, p)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(p))
    del sd
    # VmHWM: the peak RSS of this process image (ru_maxrss would carry over the parent's peak
    # across exec).
    code = textwrap.dedent(
        f"""
        import sys, torch, trainwarden

        def peak():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
            raise SystemExit("no VmHWM")

        base = peak()
        obj = trainwarden.load({str(p)!r}, mmap=sys.argv[1] == "mmap")
        assert float(obj["t7"][0, 0, 0]) == 7.0
        print(peak() - base)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))

    def grow(mode: str) -> int:
        r = subprocess.run(
            [sys.executable, "-c", code, mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=True,
        )
        return int(r.stdout.split()[-1])

    file_size = p.stat().st_size
    assert grow("read") >= file_size * 0.9
    assert grow("mmap") < file_size / 8
