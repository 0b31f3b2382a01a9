"""Time ``trainwarden scan`` on a ~2 GB torch state_dict, with and without --hash, vs picklescan.

Builds a real ``torch.save`` checkpoint of about 2 GB in a temporary directory, runs each command
a few times (first run after writing, so the file is in the page cache: this measures the
scanner, not the disk), writes the table into ``docs/BENCHMARKS.md`` and deletes the file.

    python bench/scan_large.py              # ~2 GB, 3 repetitions
    python bench/scan_large.py --gib 0.5 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- BEGIN scan_large (written by bench/scan_large.py) -->"
END = "<!-- END scan_large -->"
BIN = Path(sys.executable).parent


def make_checkpoint(path: Path, gib: float) -> int:
    """Write a real torch state_dict of about ``gib`` GiB (64 MiB float32 tensors)."""
    import torch

    per = 16 * 1024 * 1024  # float32 elements: 64 MiB per tensor
    n = max(1, round(gib * 1024 / 64))
    torch.manual_seed(0)
    state = {f"layers.{i}.weight": torch.rand(per) for i in range(n)}
    state["embed.weight"] = torch.zeros(4, 4)
    torch.save(state, path)
    del state
    return path.stat().st_size


def _time(cmd: list[str], reps: int) -> tuple[float, float, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    times = []
    rc = -1
    for _ in range(reps):
        start = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        times.append(time.perf_counter() - start)
        rc = p.returncode
    return statistics.median(times), min(times), rc


def _inproc_scan(path: Path, reps: int) -> float:
    """Library call time (no interpreter start-up): median of ``reps`` scan_path calls."""
    from trainwarden.scan import scan_path

    times = []
    for _ in range(reps):
        start = time.perf_counter()
        scan_path(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="checkpoint size in GiB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    ns = parser.parse_args(argv)
    rows: list[tuple[str, float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="tw-large-", dir=os.environ.get("TW_BENCH_DIR")) as tmp:
        ckpt = Path(tmp) / "big_state_dict.pt"
        size = make_checkpoint(ckpt, ns.gib)
        tw = [sys.executable, "-m", "trainwarden", "scan"]
        commands = {
            "trainwarden scan big_state_dict.pt": [*tw, str(ckpt)],
            "trainwarden scan --hash big_state_dict.pt": [*tw, "--hash", str(ckpt)],
            "picklescan -p big_state_dict.pt": [str(BIN / "picklescan"), "-p", str(ckpt)],
            "sha256sum big_state_dict.pt (disk-speed reference)": ["sha256sum", str(ckpt)],
        }
        for label, cmd in commands.items():
            med, best, rc = _time(cmd, ns.reps)
            rows.append((label, med, best, rc))
            print(f"{label}: median {med:.3f}s best {best:.3f}s rc={rc}", file=sys.stderr)
        lib = _inproc_scan(ckpt, ns.reps)
        rows.append(("trainwarden.scan.scan_path() in-process", lib, lib, 0))
        ckpt.unlink()
    lines = [
        BEGIN,
        "## Scanning a large checkpoint",
        "",
        f"A real `torch.save` state_dict of {size / 1024**3:.2f} GiB ({size} bytes), written to a "
        "temporary directory (so in the page cache), scanned by each command; median and best of "
        f"{ns.reps} runs, including interpreter start-up for the CLI rows. The file is deleted "
        "afterwards.",
        "",
        f"Command: `python bench/scan_large.py {' '.join(argv or sys.argv[1:])}`".rstrip() + "  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {platform.machine()} Linux, {os.cpu_count()} CPU cores shared with other jobs, "
        f"Python {platform.python_version()}, picklescan {metadata.version('picklescan')}",
        "",
        "| command | median (s) | best (s) | exit code |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{label}` | {med:.3f} | {best:.3f} | {rc} |" for label, med, best, rc in rows]
    lines.append(END)
    section = "\n".join(lines) + "\n"
    print(section)
    if not ns.no_write:
        from scan_peers import write_section

        write_section(BENCHMARKS, section, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
