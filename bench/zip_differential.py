"""Differential ZIP fuzzing at length: mutate real torch/npz/zip files and compare what PyTorch's
reader and Python's zipfile read with what TrainWarden's ZIP handler reads and scans.

The CI test (tests/scan/test_zip_differential.py) runs 10,000 mutants; this runs as many as asked
(nightly-style) and writes its table into docs/BENCHMARKS.md. Failing mutants are saved so that
each can become a regression test.

    python bench/zip_differential.py --cases 200000 --seed 1
    python bench/zip_differential.py --cases 20000 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- BEGIN zip_differential (written by bench/zip_differential.py) -->"
END = "<!-- END zip_differential -->"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = ap.parse_args()

    from tests.scan import _zipdiff

    started = time.monotonic()
    n, opened, failures = _zipdiff.run(args.cases, args.seed)
    elapsed = time.monotonic() - started
    out_dir = Path(tempfile.mkdtemp(prefix="tw-zipdiff-"))
    for i, data, _ in failures:
        (out_dir / f"mutant-{i}.zip").write_bytes(data)
    lines = [
        BEGIN,
        f"`python bench/zip_differential.py --cases {args.cases} --seed {args.seed}` "
        f"({datetime.date.today().isoformat()})",
        "",
        "| mutants | opened by torch or zipfile | failures | seconds |",
        "|---:|---:|---:|---:|",
        f"| {n} | {opened} | {len(failures)} | {elapsed:.0f} |",
        "",
        "A failure is a member that PyTorch's reader or Python's zipfile reads but TrainWarden "
        "never scanned, or a reader whose members differ from TrainWarden's reading without a "
        "HIGH finding.",
        END,
    ]
    table = "\n".join(lines)
    print(table)
    for i, _, problems in failures[:20]:
        print(f"mutant {i}: {'; '.join(problems)[:300]}")
    if failures:
        print(f"failing mutants saved in {out_dir}")
    if not args.no_write:
        text = BENCHMARKS.read_text()
        if BEGIN in text:
            text = re.sub(
                re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: table, text, flags=re.S
            )
        else:
            text = text.rstrip("\n") + "\n\n## ZIP reader differential fuzzing\n\n" + table + "\n"
        BENCHMARKS.write_text(text)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
