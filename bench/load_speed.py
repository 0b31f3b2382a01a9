"""Benchmark: ``trainwarden.load`` against ``torch.load(weights_only=True)`` on a large state_dict.

Builds a state_dict of ``--size-mb`` MiB (float32 tensors of a transformer-like mix of shapes) in
a temporary folder, warms the page cache, then times each loader ``--repeats`` times, interleaved
(rotating the order each round), and prints a Markdown table of medians, with each loader's
peak-RSS increase measured once in a fresh process. Memory-mapped loads (``mmap=True``) are
compared with ``torch.load(weights_only=True, mmap=True)``. ``--write`` replaces this script's
section of docs/BENCHMARKS.md (between its markers).

    python bench/load_speed.py --size-mb 1024 --repeats 7 --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import trainwarden
from trainwarden.loading._manifest import create_manifest


def build_state_dict(size_mb: int) -> dict[str, torch.Tensor]:
    """Roughly ``size_mb`` MiB of float32 weights shaped like a small transformer's layers."""
    hidden = 1024
    per_layer = 4 * hidden * hidden + 2 * hidden * 4 * hidden + 6 * hidden  # attn + mlp + norms
    layers = max(1, (size_mb * 1024 * 1024 // 4) // per_layer)
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for i in range(layers):
        p = f"layers.{i}."
        for name in ("q", "k", "v", "o"):
            sd[p + f"attn.{name}.weight"] = torch.randn(hidden, hidden, generator=g)
        sd[p + "mlp.up.weight"] = torch.randn(4 * hidden, hidden, generator=g)
        sd[p + "mlp.down.weight"] = torch.randn(hidden, 4 * hidden, generator=g)
        for name in ("ln1", "ln2"):
            sd[p + f"{name}.weight"] = torch.ones(hidden)
            sd[p + f"{name}.bias"] = torch.zeros(hidden)
        sd[p + "mlp.up.bias"] = torch.zeros(hidden)
        sd[p + "mlp.down.bias"] = torch.zeros(hidden)
    return sd


def time_once(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    obj = fn()
    elapsed = time.perf_counter() - start
    del obj
    gc.collect()
    return elapsed


REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- BEGIN load_speed (written by bench/load_speed.py) -->"
END = "<!-- END load_speed -->"

# name -> expression of one load of `path` (or `signed`), run in a fresh process for peak RSS.
_EXPR = {
    "torch.load(weights_only=True)": "torch.load(path, weights_only=True)",
    "trainwarden.load": "trainwarden.load(path)",
    "trainwarden.load, manifest verified": "trainwarden.load(signed)",
    "torch.load(weights_only=True, mmap=True)": "torch.load(path, weights_only=True, mmap=True)",
    "trainwarden.load(mmap=True)": "trainwarden.load(path, mmap=True)",
}

_PEAK = """
import sys, torch, trainwarden
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
path, signed = sys.argv[1], sys.argv[2]
base = peak()
obj = eval(sys.argv[3])
sum(float(t.flatten()[-1]) for t in obj.values())  # touch one element of every tensor
print(peak() - base)
"""


def peak_rss(expr: str, path: Path, signed: Path) -> int:
    """The peak-RSS increase of one load in a fresh process (VmHWM after minus before)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), str(signed), expr],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    return int(r.stdout.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp:
        path = Path(tmp) / "state_dict.pt"
        sd = build_state_dict(args.size_mb)
        torch.save(sd, path)
        size = path.stat().st_size
        del sd
        gc.collect()
        path.read_bytes()  # warm the page cache: both loaders read from memory

        # A second name for the same file, with a manifest beside it: loads of it hash the
        # bytes and check them against the manifest before unpickling.
        signed = Path(tmp) / "with_manifest.pt"
        os.link(path, signed)
        create_manifest(signed)

        loaders: dict[str, Callable[[], Any]] = {
            "torch.load(weights_only=True)": lambda: torch.load(path, weights_only=True),
            "trainwarden.load": lambda: trainwarden.load(path),
            "trainwarden.load, manifest verified": lambda: trainwarden.load(signed),
            "torch.load(weights_only=True, mmap=True)": lambda: torch.load(
                path, weights_only=True, mmap=True
            ),
            "trainwarden.load(mmap=True)": lambda: trainwarden.load(path, mmap=True),
        }
        # Same result, checked once outside the timings.
        ref = torch.load(path, weights_only=True)
        for mapped in (False, True):
            got = trainwarden.load(path, mmap=mapped)
            assert list(ref) == list(got) and all(torch.equal(ref[k], got[k]) for k in ref)
        del ref, got

        times: dict[str, list[float]] = {name: [] for name in loaders}
        names = list(loaders)
        for r in range(args.repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(time_once(loaders[name]))
        peaks = {name: peak_rss(_EXPR[name], path, signed) for name in names}

    def baseline(name: str) -> str:
        return (
            "torch.load(weights_only=True, mmap=True)"
            if "mmap" in name
            else "torch.load(weights_only=True)"
        )

    lines = [
        "| loader | median s | min s | GB/s | vs torch (same mode) | peak RSS increase |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        med = statistics.median(times[name])
        base = statistics.median(times[baseline(name)])
        lines.append(
            f"| `{name}` | {med:.3f} | {min(times[name]):.3f} | {size / med / 1e9:.2f} "
            f"| {med / base:.2f}x | {peaks[name] / 2**20:.0f} MiB |"
        )
    table = "\n".join(lines)
    header = (
        f"state_dict of {size / 2**20:.0f} MiB ({size} bytes), {args.repeats} interleaved "
        f"repeats, page cache warm; peak RSS increase of one load in a fresh process (VmHWM), "
        f"touching one element of every tensor"
    )
    print(header)
    print(table)
    if args.write:
        machine = (
            f"{platform.machine()} Linux, {os.cpu_count()} CPU cores, Python "
            f"{platform.python_version()}, torch {torch.__version__}"
        )
        command = "python " + " ".join(["bench/load_speed.py", *sys.argv[1:]])
        section = (
            f"{BEGIN}\n## Safe loading: trainwarden.load vs torch.load(weights_only=True)\n\n"
            f"Command: `{command}`  \n"
            f"Machine: {machine} (shared with other jobs)  \n"
            f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}  \n"
            f"{header}.\n\n{table}\n{END}\n"
        )
        doc = REPO / "docs" / "BENCHMARKS.md"
        text = doc.read_text(encoding="utf-8")
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
        text = (
            pattern.sub(lambda _m: section, text)
            if pattern.search(text)
            else text.rstrip("\n") + "\n\n" + section
        )
        doc.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
