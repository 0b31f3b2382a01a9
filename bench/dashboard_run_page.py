"""Benchmark: how long the dashboard's run page takes for a large run (default 100,000 steps x
64 ranks of monitor step records, 6.4 million ledger entries) in a real SQLite ledger served by
``trainwarden serve`` on 127.0.0.1, and how much it sends; side by side with what a client
without the dashboard has to do (page through the run's entries over ``/v1/entries``).

The run is written in-process through :class:`trainwarden.ledger.Ledger` (the real log: canonical
JSON, Merkle tree, signed checkpoint), then the server is started over that file and the page
is fetched with a reader's session cookie:

- cold: the first view, which reads every entry of the run into the dashboard's index;
- warm: the same page again (nothing new in the log);
- after new steps: one more step of every rank appended over HTTP before each fetch, so the
  index takes the new entries and the plots are downsampled again.

    python bench/dashboard_run_page.py --steps 100000 --ranks 64 --write-section docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SECTION = "dashboard_run_page"
ORIGIN = "bench.example/trainwarden-ledger"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _step(step: int, rank: int, diverged: int, spike: set[int]) -> dict[str, Any]:
    loss = 4.0 / (1 + step / 5000) + 0.001 * ((step * 7919 + rank * 104729) % 97)
    h = step * 1_000_003 + (7 if rank == 17 and step >= diverged else 0)
    return {
        "step": step,
        "rank": rank,
        "loss": round(loss, 6),
        "grad_norm": round(1.0 + 0.01 * ((step + rank) % 50) + (9.0 if step in spike else 0), 6),
        "timing": {
            "step": 0.25 + 0.0001 * (rank % 8),
            "forward": 0.08,
            "backward": 0.12,
            "optimizer": 0.05,
        },
        "weights_hash": f"{h & 0xFFFFFFFFFFFFFFFF:016x}",
    }


def build(db: Path, state: Path, steps: int, ranks: int) -> tuple[str, str, str, float]:
    """Write the run; return (run id, reader token, writer token, seconds taken)."""
    from trainwarden.ledger.checkpoint import load_or_create_signer
    from trainwarden.ledger.log import Ledger
    from trainwarden.ledger.storage import open_storage
    from trainwarden.ledger.types import Event, Role
    from trainwarden.service.core import LedgerService

    state.mkdir(parents=True, exist_ok=True)
    (state / "origin").write_text(ORIGIN + "\n")
    signer = load_or_create_signer(state / "keys", ORIGIN)
    ledger = Ledger(open_storage(f"sqlite:///{db}"), signer)
    service = LedgerService(ledger, deadman=False)
    run, writer = service.create_run("bench-100k", 3600.0, ranks, {"owner": "bench"})
    reader, _ = service.issue_token(Role.reader, None)
    diverged = int(steps * 0.61)
    alerts = {int(steps * f) for f in (0.1, 0.3, 0.5, 0.7, 0.9)}
    t0 = time.monotonic()
    batch: list[Event] = []
    seq = 0
    for s in range(1, steps + 1):
        for r in range(ranks):
            seq += 1
            rec = _step(s, r, diverged, alerts)
            batch.append(Event(seq, "step", rec, rank=r, host=f"n{r // 8}"))
        if s in alerts:
            seq += 1
            rec = {
                "rule_id": "TWM-GRAD-SPIKE",
                "severity": "HIGH",
                "step": s,
                "rank": s % ranks,
                "message": f"gradient norm spike at step {s}",
                "evidence": {"grad_norm": 10.0},
            }
            batch.append(Event(seq, "alert", rec, rank=s % ranks, host=f"n{(s % ranks) // 8}"))
        if len(batch) >= 4000:
            ledger.append(run.run_id, "bench", batch)
            batch = []
        if s % 5000 == 0:
            print(f"  {s}/{steps} steps written ({time.monotonic() - t0:.0f} s)", flush=True)
    if batch:
        ledger.append(run.run_id, "bench", batch)
    ledger.checkpoint()
    took = time.monotonic() - t0
    ledger.storage.close()
    return run.run_id, reader, writer, took


def synthetic(steps: int, ranks: int, repeat: int) -> dict[str, Any]:
    """The run page's view alone at full size: a run index whose series are filled directly
    (no ledger read), rendered as the server renders it: plots downsampled from scratch
    (``fresh``) and served from the cache (``warm``)."""
    from array import array

    import numpy as np

    from trainwarden.ledger.types import RunInfo
    from trainwarden.service.dashboard.model import PHASES, RunIndex, TimelineItem, _Series
    from trainwarden.service.dashboard.routes import render_run_page

    idx = RunIndex(RunInfo("run_synthetic", "synthetic", time.time(), 60.0, ranks, "open"))
    rng = np.random.default_rng(0)
    steps_arr = array("q", range(1, steps + 1))
    for metric in ("loss", "grad_norm", "step_s", *PHASES):
        for r in range(ranks):
            ser = _Series()
            ser.steps = array("q", steps_arr)
            ser.values = array("d")
            ser.values.frombytes(rng.random(steps).tobytes())
            idx.series[metric][r] = ser
    for r in range(ranks):
        h = np.arange(1, steps + 1, dtype=np.int64) * 1_000_003
        if r == 17:
            h[int(steps * 0.61) :] += 7
        idx.fp_steps[r] = array("q", steps_arr)
        idx.fp_hashes[r] = array("q")
        idx.fp_hashes[r].frombytes(h.tobytes())
    idx.background = False
    for i, f in enumerate((0.1, 0.3, 0.5, 0.7, 0.9)):
        s = int(steps * f)
        idx.timeline.append(
            TimelineItem(i, "alert", "TWM-GRAD-SPIKE", "HIGH", s, s % ranks, "n0", "spike", {})
        )
    idx.version = 1
    fresh, warm = [], []
    size = 0
    for _ in range(repeat):
        idx.version += 1
        t = time.perf_counter()
        size = len(render_run_page(idx))
        fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        render_run_page(idx)
        warm.append(time.perf_counter() - t)
    return {"fresh": fresh, "warm": warm, "bytes": size}


def _login(c: httpx.Client, reader: str) -> None:
    page = c.get("/ui/login")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m is not None
    r = c.post("/ui/login", data={"token": reader, "csrf": m.group(1)})
    assert r.status_code == 303, r.text


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tw-dash-bench-"))
    db, state = tmp / "ledger.db", tmp / "state"
    print(f"writing {args.steps} steps x {args.ranks} ranks to {db}", flush=True)
    run_id, reader, writer, build_s = build(db, state, args.steps, args.ranks)
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    log = (tmp / "server.log").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "trainwarden", "serve", "--db", f"sqlite:///{db}"),
            *("--state-dir", str(state), "--port", str(port), "--no-deadman"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"build_s": build_s, "entries": args.steps * args.ranks}
    try:
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 3600:
                raise SystemExit(f"server did not start: {(tmp / 'server.log').read_text()}")
            time.sleep(0.5)
        out["server_start_s"] = time.monotonic() - t0
        with httpx.Client(base_url=url, timeout=3600) as c:
            _login(c, reader)
            t = time.perf_counter()
            r = c.get(f"/ui/runs/{run_id}")
            out["cold_s"] = time.perf_counter() - t
            assert r.status_code == 200, r.status_code
            out["page_bytes"] = len(r.content)
            assert "TWM-GRAD-SPIKE" in r.text
            warm = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = c.get(f"/ui/runs/{run_id}")
                warm.append(time.perf_counter() - t)
            out["warm_s"] = warm
            fresh = []
            seq = args.steps * args.ranks + len({0.1, 0.3, 0.5, 0.7, 0.9})
            w = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {writer}"})
            for i in range(args.repeat):
                s = args.steps + 1 + i
                evs = []
                for rk in range(args.ranks):
                    seq += 1
                    evs.append(
                        {"seq": seq, "kind": "step", "rank": rk, "record": _step(s, rk, 0, set())}
                    )
                got = w.post(f"/v1/runs/{run_id}/events", json={"writer": "bench", "events": evs})
                assert got.status_code == 200, got.text
                t = time.perf_counter()
                r = c.get(f"/ui/runs/{run_id}")
                fresh.append(time.perf_counter() - t)
            w.close()
            out["fresh_s"] = fresh
            # What a client without the dashboard does: page through the run's entries.
            reader_c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {reader}"})
            t = time.perf_counter()
            after, n = -1, 0
            for _ in range(args.api_pages):
                page = reader_c.get(
                    "/v1/entries", params={"run": run_id, "after": after, "limit": 1000}
                ).json()
                n += len(page["entries"])
                if page["next_after"] is None:
                    break
                after = page["next_after"]
            api_s = time.perf_counter() - t
            reader_c.close()
            out["api_entries"] = n
            out["api_s"] = api_s
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return out


def table(args: argparse.Namespace, res: dict[str, Any]) -> str:
    med_w = statistics.median(res["warm_s"])
    med_f = statistics.median(res["fresh_s"])
    per_entry = res["api_s"] / max(1, res["api_entries"])
    full_api = per_entry * res["entries"]
    load = os.getloadavg()[0]
    cmd = (
        f"python bench/dashboard_run_page.py --steps {args.steps} --ranks {args.ranks}"
        f" --repeat {args.repeat} --api-pages {args.api_pages} --full-steps {args.full_steps}"
        f" --full-ranks {args.full_ranks} --write-section docs/BENCHMARKS.md"
    )
    rows = [
        f"<!-- BEGIN {SECTION} (written by bench/dashboard_run_page.py) -->",
        f"### Dashboard run page, {args.steps:,} steps x {args.ranks} ranks"
        f" ({dt.date.today().isoformat()})",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}; shared with other work (load average at the end"
        f" {load:.1f}), so the figures are upper bounds.",
        "",
        f"The run: {res['entries']:,} step entries plus 5 alerts in one SQLite ledger, written"
        f" in-process in {res['build_s']:.0f} s; `trainwarden serve` took"
        f" {res['server_start_s']:.0f} s to start over it (it rebuilds the Merkle tree).",
        "",
        "| what | seconds | sent to the browser |",
        "|---|---:|---:|",
        f"| run page, first view (reads all {res['entries']:,} entries into the index) |"
        f" {res['cold_s']:.1f} | {res['page_bytes'] / 1e6:.2f} MB |",
        f"| run page, warm (median of {args.repeat}) | {med_w:.3f} | same |",
        f"| run page after {args.ranks} new step entries (median of {args.repeat}; the"
        " timeline is current, the plots are the previous ones while a thread redraws them) |"
        f" {med_f:.3f} | same |",
        f"| peer: `/v1/entries` pages of 1000, {res['api_entries']:,} entries |"
        f" {res['api_s']:.1f} | - |",
        f"| peer extrapolated to the whole run ({res['entries']:,} entries) | {full_api:.0f} | - |",
        f"| view alone at {args.full_steps:,} x {args.full_ranks}, plots downsampled afresh"
        f" (median of {args.repeat}) | {statistics.median(res['full']['fresh']):.3f} |"
        f" {res['full']['bytes'] / 1e6:.2f} MB |",
        f"| view alone at {args.full_steps:,} x {args.full_ranks}, plots from the cache"
        f" (median of {args.repeat}) | {statistics.median(res['full']['warm']):.3f} | same |",
        "",
        "The page carries every metric downsampled to at most two points per rank per bucket"
        " (200 buckets) plus the exact alert steps, not every point. The first view pays for"
        " reading the run once; after that the index is kept in the server's memory and only"
        " new entries are read. A restart of the server pays the first view again.",
        "",
        f"Not measured here: the first view of a {args.full_steps:,} x {args.full_ranks} run in a"
        " real ledger. Writing its entries at the rate of the run above"
        f" ({res['entries'] / res['build_s']:,.0f}/s) and reading them at the first view's"
        f" ({res['entries'] / res['cold_s']:,.0f}/s) would take"
        f" {args.full_steps * args.full_ranks / (res['entries'] / res['build_s']) / 60:.0f} and"
        f" {args.full_steps * args.full_ranks / (res['entries'] / res['cold_s']) / 60:.0f}"
        " minutes on this shared machine. The last two rows time the page at that size once"
        " its index is built: from the cache, and with the plots redrawn (which a thread does"
        " while the page is answered with the previous plots).",
        f"<!-- END {SECTION} -->",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--api-pages", type=int, default=100)
    ap.add_argument("--full-steps", type=int, default=100_000)
    ap.add_argument("--full-ranks", type=int, default=64)
    ap.add_argument("--write-section", type=Path)
    args = ap.parse_args()
    res = measure(args)
    print(f"view alone at {args.full_steps} x {args.full_ranks}", flush=True)
    res["full"] = synthetic(args.full_steps, args.full_ranks, args.repeat)
    text = table(args, res)
    print(text)
    if args.write_section:
        doc = args.write_section.read_text()
        begin = doc.find(f"<!-- BEGIN {SECTION} ")
        end_marker = f"<!-- END {SECTION} -->"
        if begin >= 0:
            end = doc.index(end_marker, begin) + len(end_marker)
            doc = doc[:begin] + text + doc[end:]
        else:
            doc = doc.rstrip("\n") + "\n\n" + text + "\n"
        args.write_section.write_text(doc)


if __name__ == "__main__":
    main()
