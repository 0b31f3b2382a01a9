"""Benchmark `attest verify` on a real environment against a naive importlib.metadata RECORD walk.

Usage (read-only on the target environment; the hash cache goes to a temporary directory):

    python bench/attest_speed.py --python /work/main/.venv/bin/python

Prints a markdown table: wall and CPU seconds (``time.process_time`` of this process, all
threads, plus the rusage of the child processes it waited for: the interpreter's self-description
and the bytecode checkers, which compile sources in the attested interpreter) for a cold run
(empty hash cache, no remembered bytecode verdicts; page cache as found), the naive serial walk, a
second cold run (page cache now warm), warm runs with the hash cache only and with the hash cache
and the snapshot memo, the sha256 floor (hashing the same number of bytes from memory), and one
end-to-end CLI run. The share of each trainwarden run spent comparing bytecode with its source
is measured by timing that step inside the same runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trainwarden.attest._snapshot as snapshot_module
from trainwarden.attest._bytecode import forget_verdicts, verify_bytecode
from trainwarden.attest._cache import HashCache
from trainwarden.attest._snapshot import take_snapshot
from trainwarden.attest._verify import check_snapshot

# Wall and CPU (this process and its waited-for children) spent comparing bytecode, per run.
_BYTECODE: list[float] = [0.0, 0.0, 0.0]


def _timed_verify_bytecode(*args: Any, **kwargs: Any) -> Any:
    wall, cpu = time.perf_counter(), _cpu()
    try:
        return _real_verify_bytecode(*args, **kwargs)
    finally:
        _BYTECODE[0] += time.perf_counter() - wall
        _BYTECODE[1] += _cpu() - cpu
        _BYTECODE[2] += len(args[0])


# The step is timed where the snapshot calls it (a benchmark-only wrapper, same arguments).
_real_verify_bytecode = verify_bytecode
snapshot_module.verify_bytecode = _timed_verify_bytecode  # type: ignore[attr-defined]


def _cpu() -> float:
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def naive_record_walk(site: str) -> tuple[int, int, set[str]]:
    """What a straightforward tool does: every distribution's RECORD, every file hashed serially.
    Returns (files hashed, files matching, paths not matching or unreadable)."""
    files = ok = 0
    bad: set[str] = set()
    for dist in importlib.metadata.distributions(path=[site]):
        for f in dist.files or ():
            if f.hash is None or f.hash.mode != "sha256":
                continue
            files += 1
            path = os.path.normpath(str(f.locate()))
            try:
                data = Path(path).read_bytes()
            except OSError:
                bad.add(path)
                continue
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            if digest.decode() == f.hash.value:
                ok += 1
            else:
                bad.add(path)
    return files, ok, bad


def naive_sizes(site: str) -> int:
    """Bytes of the files the naive walk hashes."""
    total = 0
    for dist in importlib.metadata.distributions(path=[site]):
        for f in dist.files or ():
            if f.hash is not None and f.hash.mode == "sha256":
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.normpath(str(f.locate()))).st_size
    return total


def sha256_per_buffer() -> tuple[float, float]:
    """Wall and CPU seconds sha256 takes over 256 MiB already in memory (best of three)."""
    buf = os.urandom(256 << 20)
    runs = [timed(lambda: hashlib.sha256(buf).digest())[:2] for _ in range(3)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), _cpu()
    result = fn()
    return time.perf_counter() - wall, _cpu() - cpu, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--python", default=sys.executable, help="interpreter whose env to verify")
    ap.add_argument("--warm-runs", type=int, default=5)
    ap.add_argument(
        "--cold-runs",
        type=int,
        choices=(1, 2),
        default=2,
        help="1: no second cold run (its ratio is then taken from cold #1)",
    )
    args = ap.parse_args()

    cache_dir = Path(tempfile.mkdtemp(prefix="tw-attest-bench-"))
    cache_file = cache_dir / "hashes.bin"
    env = {"PATH": os.environ.get("PATH", "")}

    def verify(cache: HashCache) -> tuple[Any, list[Any]]:
        # A fresh process remembers no bytecode verdict: only the hash cache file may hold them.
        forget_verdicts()
        _BYTECODE[:] = [0.0, 0.0, 0.0]
        snap = take_snapshot(args.python, environ=env, cache=cache)
        return snap, check_snapshot(snap)

    def bytecode_share(c: float) -> str:
        w, bc, n = _BYTECODE
        return (
            f"bytecode: {bc:.1f} CPU s / {w:.1f} s wall for {int(n)} pairs; "
            f"without it {c - bc:.3f} CPU s"
        )

    memo_file = Path(str(cache_file) + ".memo")

    def cold() -> tuple[float, float, Any]:
        cache_file.unlink(missing_ok=True)
        memo_file.unlink(missing_ok=True)
        return timed(lambda: verify(HashCache(cache_file)))

    load_start = os.getloadavg()
    rows: list[tuple[str, float, float, str]] = []
    w, c, (snap, findings) = cold()
    files = sum(len(d.files) for d in snap.distributions) + len(snap.orphans)
    hashed_bytes = 0
    for d in snap.distributions:
        for f in d.files:
            p = os.path.normpath(os.path.join(d.location, f.path))
            try:
                hashed_bytes += os.lstat(p).st_size
            except OSError:
                continue
    rows.append(
        ("trainwarden cold #1 (empty hash cache, page cache as found)", w, c, bytecode_share(c))
    )
    cold1_bytecode = list(_BYTECODE)

    hashed_bytes_all = (
        hashed_bytes
        + sum(f.size for f in snap.path_files if f.sha256 is not None)
        + sum(o.size for o in snap.orphans)
    )
    site = snap.site_packages[0]
    w, c, (n, _ok, bad) = timed(lambda: naive_record_walk(site))
    naive_bytes = naive_sizes(site)
    naive_cpu = c
    rows.append(
        ("naive importlib.metadata walk, serial sha256", w, c, f"{n} files, {len(bad)} bad")
    )
    ours_bad = {f.location for f in findings if f.rule_id in ("TWA-REC-001", "TWA-REC-002")}

    if args.cold_runs == 2:
        w, c, (_, findings2) = cold()
        cold2_bytecode = list(_BYTECODE)
        name = "trainwarden cold #2 (empty hash cache, page cache warm)"
    else:
        w, c, findings2, cold2_bytecode = rows[0][1], rows[0][2], findings, cold1_bytecode
        name = "trainwarden cold #1 against the naive walk (no second cold run)"
    rows.append(
        (
            name,
            w,
            c,
            f"{c / naive_cpu:.2f}x naive CPU; without the bytecode comparison "
            f"{(c - cold2_bytecode[1]) / naive_cpu:.2f}x",
        )
    )

    def cache_only() -> tuple[float, float, Any]:
        memo_file.unlink(missing_ok=True)
        return timed(lambda: verify(HashCache(cache_file)))

    no_memo = [cache_only() for _ in range(args.warm_runs)]
    nm_cpu = statistics.median(x[1] for x in no_memo)
    rows.append(
        (
            f"trainwarden warm, hash cache only (memo deleted; median of {args.warm_runs})",
            statistics.median(x[0] for x in no_memo),
            nm_cpu,
            f"{nm_cpu / naive_cpu:.2f}x naive CPU; last run {bytecode_share(no_memo[-1][1])}",
        )
    )
    verify(HashCache(cache_file))  # writes the memo
    warm = [timed(lambda: verify(HashCache(cache_file))) for _ in range(args.warm_runs)]
    warm_cpu = statistics.median(x[1] for x in warm)
    rows.append(
        (
            f"trainwarden warm, hash cache and memo (median of {args.warm_runs})",
            statistics.median(x[0] for x in warm),
            warm_cpu,
            f"{warm_cpu / naive_cpu:.2f}x naive CPU; min wall {min(x[0] for x in warm):.3f} s",
        )
    )
    fw, fc = sha256_per_buffer()
    scale = naive_bytes / (256 << 20)
    rows.append(
        (
            "sha256 alone over the naive walk's bytes (in memory, from 256 MiB)",
            fw * scale,
            fc * scale,
            f"{fc * scale / naive_cpu:.2f}x naive CPU: no cold run can hash these bytes for less",
        )
    )
    scale_ours = hashed_bytes_all / (256 << 20)
    rows.append(
        (
            "sha256 alone over the bytes trainwarden cold hashes",
            fw * scale_ours,
            fc * scale_ours,
            f"{hashed_bytes_all / 1e9:.2f} GB, {fc * scale_ours / naive_cpu:.2f}x naive CPU",
        )
    )

    def key(fs: list[Any]) -> list[tuple[str, str, str, str]]:
        return sorted((f.rule_id, f.severity.name, f.location, f.message) for f in fs)

    same = key(findings) == key(findings2) == key(no_memo[-1][2][1]) == key(warm[-1][2][1])
    cli_env = {**os.environ, "TRAINWARDEN_CACHE_DIR": str(cache_dir)}
    cache_file.rename(cache_dir / "attest-sha256.bin")
    memo_file.rename(cache_dir / "attest-sha256.bin.memo")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainwarden",
            "attest",
            "verify",
            "--python",
            args.python,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        check=False,
    )
    cli_wall = time.perf_counter() - start
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu = child.ru_utime + child.ru_stime - before.ru_utime - before.ru_stime
    n_findings = len(json.loads(proc.stdout)["findings"]) if proc.stdout else -1
    rows.append(
        (
            "`trainwarden attest verify` CLI, warm, end to end",
            cli_wall,
            cli_cpu,
            f"exit {proc.returncode}, {n_findings} findings",
        )
    )
    shutil.rmtree(cache_dir, ignore_errors=True)

    print(
        f"environment: {snap.interpreter.prefix} ({len(snap.distributions)} distributions, "
        f"{files} files, {hashed_bytes / 1e9:.2f} GB in RECORDs)"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} at the end; "
        f"Python {platform.python_version()}"
    )
    print()
    print("| run | wall s | CPU s (this process) | note |")
    print("|---|---:|---:|---|")
    for name, w, c, note in rows:
        cpu = "-" if c != c else f"{c:.3f}"
        print(f"| {name} | {w:.3f} | {cpu} | {note} |")
    print()
    print(f"findings at INFO and above on this environment: {len(findings)}")
    print(
        "findings identical cold #1, cold #2, warm with the hash cache only and warm with the "
        f"memo: {'yes' if same else 'NO'}"
    )
    print(
        f"files failing RECORD: naive walk {len(bad)}, trainwarden {len(ours_bad)}, "
        f"same set: {'yes' if bad == ours_bad else 'NO'}"
    )
    path_files = len(snap.path_files)
    print(
        f"bytecode compared with its source: {snap.bytecode_checked} files; cold #1 "
        f"{cold1_bytecode[1]:.1f} CPU s, cold #2 {cold2_bytecode[1]:.1f} CPU s "
        f"({1000 * cold2_bytecode[1] / max(1, cold2_bytecode[2]):.2f} ms CPU per file)"
    )
    print(
        f"trainwarden also walks and hashes {path_files} files on sys.path outside "
        "site-packages (standard library, lib-dynload, .pth entries), which the naive walk does "
        "not look at, plus bytecode and orphans"
    )


if __name__ == "__main__":
    main()
