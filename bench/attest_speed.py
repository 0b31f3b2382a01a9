"""Benchmark `attest verify` on a real environment against a naive importlib.metadata RECORD walk.

Usage (read-only on the target environment; the hash cache goes to a temporary directory):

    python bench/attest_speed.py --python /work/main/.venv/bin/python

Prints a markdown table: wall and CPU seconds (``time.process_time`` of this process, all
threads, plus the rusage of the child processes it waited for: the interpreter's self-description
and the bytecode checkers, which compile sources in the attested interpreter) for

- taking the baseline, once: a cold snapshot with no baseline (empty hash cache, every bytecode
  file compiled and compared with its source; page cache as found), then signed;
- the naive serial walk;
- cold verify against that signed baseline, as ``attest verify --no-cache --baseline B --pub K``
  does (in-memory hash cache, no memo, no remembered verdict; loading the baseline and checking
  its signature included); with ``--cold-runs 2`` twice (the second with the page cache warm);
- warm runs with the hash cache only and with the hash cache and the snapshot memo, without a
  baseline and, once, against the signed baseline;
- the sha256 floor (hashing the same number of bytes from memory), and one end-to-end CLI run.

The share of each trainwarden run spent comparing bytecode with its source is measured by timing
that step inside the same runs. Findings are compared between every run.
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
from trainwarden.attest._signing import generate_key, load_snapshot, sign_statement
from trainwarden.attest._snapshot import take_snapshot
from trainwarden.attest._verify import check_snapshot, verify_environment

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
        help="cold runs against the baseline (the second with the page cache warm)",
    )
    args = ap.parse_args()

    cache_dir = Path(tempfile.mkdtemp(prefix="tw-attest-bench-"))
    cache_dir.chmod(0o700)
    cache_file = cache_dir / "hashes.bin"
    memo_file = Path(str(cache_file) + ".memo")
    env = {"PATH": os.environ.get("PATH", "")}
    key = cache_dir / "keys" / "attest.key"
    pub, _ = generate_key(key)
    baseline_file = cache_dir / "baseline.json"

    def share(c: float) -> str:
        w, bc, n = _BYTECODE
        return f"bytecode step {bc:.1f} CPU s / {w:.1f} s wall for {int(n)} files"

    def snapshot_only(cache: HashCache) -> tuple[Any, list[Any], list[Any]]:
        # A fresh process remembers no bytecode verdict: only the hash cache file may hold them.
        forget_verdicts()
        _BYTECODE[:] = [0.0, 0.0, 0.0]
        snap = take_snapshot(args.python, environ=env, cache=cache)
        findings = check_snapshot(snap)
        return snap, findings, []

    def against_baseline(cache: HashCache) -> tuple[Any, list[Any], list[Any]]:
        forget_verdicts()
        _BYTECODE[:] = [0.0, 0.0, 0.0]
        loaded = load_snapshot(baseline_file, key=pub)
        report = verify_environment(
            args.python, baseline=loaded, environ=env, cache=cache, require_signature=True
        )
        own = check_snapshot(report.snapshot)
        extra = [f for f in report.findings if f.rule_id.startswith(("TWA-BASE", "TWA-SIG"))]
        return report.snapshot, own, extra

    load_start = os.getloadavg()
    rows: list[tuple[str, float, float, str]] = []
    runs: list[tuple[str, Any, list[Any], list[Any]]] = []

    # 1. The baseline, taken once on the golden node: a cold run that compiles every source.
    w, c, (snap, findings, _) = timed(lambda: snapshot_only(HashCache(None)))
    base_bytecode = list(_BYTECODE)
    runs.append(("baseline", snap, findings, []))
    ws, _, _ = timed(
        lambda: baseline_file.write_text(json.dumps(sign_statement(snap.to_statement(), key)))
    )
    files = sum(len(d.files) for d in snap.distributions) + len(snap.orphans)
    hashed_bytes = 0
    for d in snap.distributions:
        for f in d.files:
            p = os.path.normpath(os.path.join(d.location, f.path))
            try:
                hashed_bytes += os.lstat(p).st_size
            except OSError:
                continue
    hashed_bytes_all = (
        hashed_bytes
        + sum(f.size for f in snap.path_files if f.sha256 is not None)
        + sum(o.size for o in snap.orphans)
    )
    site = snap.site_packages[0]
    nw, nc, (n, _ok, bad) = timed(lambda: naive_record_walk(site))
    naive_bytes = naive_sizes(site)
    naive_cpu, naive_wall = nc, nw

    def ratio(wall: float, cpu: float) -> str:
        return f"{cpu / naive_cpu:.2f}x naive CPU, {wall / naive_wall:.2f}x naive wall"

    rows.append(
        (
            "taking the baseline, once: cold, no baseline (every bytecode file compiled)",
            w,
            c,
            f"{ratio(w, c)}; {share(c)}; signing it: {ws:.1f} s, "
            f"{baseline_file.stat().st_size / 1e6:.1f} MB",
        )
    )
    rows.append(
        ("naive importlib.metadata walk, serial sha256", nw, nc, f"{n} files, {len(bad)} bad")
    )
    ours_bad = {f.location for f in findings if f.rule_id in ("TWA-REC-001", "TWA-REC-002")}

    # 2. Cold against the signed baseline (`attest verify --no-cache --baseline --pub`).
    cold_rows = []
    for i in range(args.cold_runs):
        w, c, (s2, f2, extra) = timed(lambda: against_baseline(HashCache(None)))
        runs.append((f"cold #{i + 1}", s2, f2, extra))
        cold_rows.append((w, c))
        page = "page cache as found" if i == 0 else "page cache warm"
        rows.append(
            (
                f"**cold #{i + 1} against the signed baseline** (`--no-cache`; {page})",
                w,
                c,
                f"**{ratio(w, c)}**; {share(c)}; {len(extra)} baseline findings",
            )
        )

    # 3. Warm: the hash cache file (filled once), then with and without the snapshot memo.
    snapshot_only(HashCache(cache_file))

    def cache_only() -> tuple[float, float, Any]:
        memo_file.unlink(missing_ok=True)
        return timed(lambda: snapshot_only(HashCache(cache_file)))

    no_memo = [cache_only() for _ in range(args.warm_runs)]
    runs.append(("warm, cache only", *no_memo[-1][2]))
    nm_w = statistics.median(x[0] for x in no_memo)
    nm_c = statistics.median(x[1] for x in no_memo)
    rows.append(
        (
            f"warm, hash cache only (memo deleted; median of {args.warm_runs})",
            nm_w,
            nm_c,
            ratio(nm_w, nm_c),
        )
    )
    snapshot_only(HashCache(cache_file))  # writes the memo
    warm = [timed(lambda: snapshot_only(HashCache(cache_file))) for _ in range(args.warm_runs)]
    runs.append(("warm, memo", *warm[-1][2]))
    warm_w = statistics.median(x[0] for x in warm)
    warm_cpu = statistics.median(x[1] for x in warm)
    rows.append(
        (
            f"**warm, hash cache and memo** (median of {args.warm_runs})",
            warm_w,
            warm_cpu,
            f"**{ratio(warm_w, warm_cpu)}**; min wall {min(x[0] for x in warm):.3f} s",
        )
    )
    w, c, (s3, f3, extra3) = timed(lambda: against_baseline(HashCache(cache_file)))
    runs.append(("warm against the baseline", s3, f3, extra3))
    rows.append(
        (
            "warm, hash cache and memo, against the signed baseline (loading and checking it)",
            w,
            c,
            f"{ratio(w, c)}; {len(extra3)} baseline findings",
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

    def key_of(fs: list[Any]) -> list[tuple[str, str, str, str]]:
        return sorted((f.rule_id, f.severity.name, f.location, f.message) for f in fs)

    same = all(key_of(r[2]) == key_of(findings) for r in runs)
    same_bytecode = all(
        (r[1].bytecode, r[1].bytecode_checked, r[1].bytecode_matches)
        == (snap.bytecode, snap.bytecode_checked, snap.bytecode_matches)
        for r in runs
    )
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
    print("| run | wall s | CPU s (process + children) | note |")
    print("|---|---:|---:|---|")
    for name, w, c, note in rows:
        print(f"| {name} | {w:.3f} | {c:.3f} | {note} |")
    print()
    print(f"findings at INFO and above on this environment: {len(findings)}")
    print(
        "findings identical in every run (" + ", ".join(r[0] for r in runs) + "): "
        f"{'yes' if same else 'NO'}; bytecode results and content keys identical: "
        f"{'yes' if same_bytecode else 'NO'}"
    )
    # What differs, if anything: the shared environment may change under a long run (another
    # user's import writes bytecode into an editable install's source tree).
    for name, r_snap, r_findings, _ in runs:
        a, b = set(key_of(findings)), set(key_of(r_findings))
        if a != b or r_snap.bytecode_checked != snap.bytecode_checked:
            print(
                f"  {name}: bytecode files {r_snap.bytecode_checked} (baseline "
                f"{snap.bytecode_checked}); findings only in the baseline run: "
                f"{sorted(a - b)[:3]}; only in this run: {sorted(b - a)[:3]}"
            )
    print(
        f"files failing RECORD: naive walk {len(bad)}, trainwarden {len(ours_bad)}, "
        f"same set: {'yes' if bad == ours_bad else 'NO'}"
    )
    print(
        f"bytecode compared with its source: {snap.bytecode_checked} files, "
        f"{len(snap.bytecode_matches)} content keys in the baseline; taking the baseline "
        f"compiled them in {base_bytecode[1]:.1f} CPU s "
        f"({1000 * base_bytecode[1] / max(1, base_bytecode[2]):.2f} ms CPU per file)"
    )
    print(
        f"trainwarden also walks and hashes {len(snap.path_files)} files on sys.path outside "
        "site-packages (standard library, lib-dynload, .pth entries), which the naive walk does "
        "not look at, plus bytecode and orphans"
    )


if __name__ == "__main__":
    main()
