"""The allowlist proof at a larger setting than CI's (run on demand, never in CI).

Runs ``tests/loading/_allowlist_probe.py`` (every allowlist entry through the safe loader's gate
under an audit-hook recorder, Hypothesis arguments) with ``--examples`` per group search and
``--replay`` replayed arguments per entry, split over ``--shards`` processes run in parallel, and
prints one Markdown table: entries, groups, examples, violations, wall time. Exits 1 on any
violation. ``--ci`` first runs the CI setting (the values tests/loading/test_allowlist_proof.py
uses) in the same run, for comparison.

    PYTHONPATH=src python bench/allowlist_proof.py --examples 200 --replay 20 --shards 2 --ci
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "loading" / "_allowlist_probe.py"


def run(examples: int, replay: int, shards: int) -> tuple[dict[str, Any], float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(TW_PROBE_EXAMPLES=str(examples), TW_PROBE_REPLAY=str(replay))
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, str(PROBE)],
            env={**env, "TW_PROBE_SHARD": f"{i}/{shards}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(shards)
    ]
    total: dict[str, Any] = {"entries": 0, "examples": 0, "groups": 0, "violations": {}}
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"probe failed: {err[-2000:]}")
        part = json.loads(out.strip().splitlines()[-1])
        total["entries"] += part["entries"]
        total["examples"] += part["examples"]
        total["groups"] += part["groups"]  # a group split over shards is searched in each
        total["objects"] = part["objects"]
        total["violations"].update(part["violations"])
    return total, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=200, help="Hypothesis examples per group")
    ap.add_argument("--replay", type=int, default=20, help="replayed arguments per entry")
    ap.add_argument("--shards", type=int, default=2, help="parallel processes")
    ap.add_argument("--ci", action="store_true", help="also run the CI setting, for comparison")
    args = ap.parse_args()
    settings = [(args.examples, args.replay, args.shards)]
    if args.ci:
        settings.insert(0, (8, 3, 1))
    rows = [
        "| setting | entries (objects) | group searches | examples | violations | wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    bad = False
    for examples, replay, shards in settings:
        total, wall = run(examples, replay, shards)
        bad |= bool(total["violations"])
        rows.append(
            f"| {examples} per group, {replay} replayed per entry, {shards} process(es) "
            f"| {total['entries']} ({total['objects']}) | {total['groups']} "
            f"| {total['examples']} | {len(total['violations'])} | {wall:.1f} |"
        )
    print("\n".join(rows))
    for name, found in sorted(total["violations"].items()):
        print(f"VIOLATION {name}: {found}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
