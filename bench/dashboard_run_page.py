"""Benchmark: how long the dashboard's run page and runs list take for a large run (``--full``:
100,000 steps x 64 ranks of monitor step records, 6.4 million ledger entries; default 2,000 x 64
for a quick run) in a real SQLite ledger served by ``trainwarden serve`` on 127.0.0.1, and how
much the page sends; side by side with what a client without the dashboard has to do (page
through the run's entries over ``/v1/entries``).

The run is written through :meth:`trainwarden.service._core.LedgerService.append`, the call the
``POST /v1/runs/{id}/events`` route makes (writer token, batches of 4,000 events: canonical JSON,
Merkle tree, row MACs and the dashboard's derived rollups in the same transaction), in-process
to spare the HTTP framing; then the server is started over that file and the pages are fetched
with a reader's session cookie:

- first view: the first fetch after the server started (no index in memory);
- warm: the same page again (nothing new in the log);
- after new steps: one more step of every rank appended over HTTP before each fetch.

    python bench/dashboard_run_page.py --full --write-section docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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
FULL = (100_000, 64)


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
    from trainwarden.ledger._checkpoint import load_or_create_signer
    from trainwarden.ledger._log import Ledger
    from trainwarden.ledger._storage import open_storage
    from trainwarden.ledger._types import Event, Role, RunQuota
    from trainwarden.service._core import LedgerService

    state.mkdir(parents=True, exist_ok=True)
    (state / "origin").write_text(ORIGIN + "\n")
    signer = load_or_create_signer(state / "keys", ORIGIN)
    ledger = Ledger(open_storage(f"sqlite:///{db}"), signer)
    # No quota: the run is written as fast as this process can (a server would pace it).
    service = LedgerService(ledger, deadman=False, quota=RunQuota(0, 0, 0))
    run, writer = service.create_run("bench-run", 3600.0, ranks, {"owner": "bench"})
    reader, _ = service.issue_token(Role.reader, None)
    principal = service.authenticate(f"Bearer {writer}")
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
            service.append(principal, run.run_id, "bench", batch)
            batch = []
        if s % 5000 == 0:
            print(f"  {s}/{steps} steps written ({time.monotonic() - t0:.0f} s)", flush=True)
    if batch:
        service.append(principal, run.run_id, "bench", batch)
    ledger.checkpoint()
    took = time.monotonic() - t0
    ledger.storage.close()
    return run.run_id, reader, writer, took


def _login(c: httpx.Client, reader: str) -> None:
    page = c.get("/ui/login")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m is not None
    r = c.post("/ui/login", data={"token": reader, "csrf": m.group(1)})
    assert r.status_code == 303, r.text


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="tw-dash-bench-"))
    db, state = tmp / "ledger.db", tmp / "state"
    built = tmp / "built.json"
    if built.exists():
        # A ledger this script built before (--keep): measure the pages again without
        # rewriting it.
        info = json.loads(built.read_text())
        if (info["steps"], info["ranks"]) != (args.steps, args.ranks):
            raise SystemExit(f"{built}: built for {info['steps']} x {info['ranks']}")
        run_id, reader, writer, build_s = info["run"], info["reader"], info["writer"], info["s"]
        db_bytes = info["db_bytes"]
    else:
        tmp.mkdir(parents=True, exist_ok=True)
        print(f"writing {args.steps} steps x {args.ranks} ranks to {db}", flush=True)
        run_id, reader, writer, build_s = build(db, state, args.steps, args.ranks)
        db_bytes = sum(p.stat().st_size for p in tmp.glob("ledger.db*"))
        info = {"steps": args.steps, "ranks": args.ranks, "run": run_id, "reader": reader}
        info.update(writer=writer, s=build_s, db_bytes=db_bytes, seq=0)
        built.write_text(json.dumps(info))
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
    out: dict[str, Any] = {
        "build_s": build_s,
        "entries": args.steps * args.ranks,
        "db_bytes": db_bytes,
        "alerts": info.get("n_alerts", 5),
    }
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
            out["source"] = "rollup" if '"source": "rollup"' in r.text else "entries"
            t = time.perf_counter()
            r = c.get("/ui/runs")
            out["list_cold_s"] = time.perf_counter() - t
            assert r.status_code == 200 and "bench-run" in r.text, r.status_code
            lw = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                c.get("/ui/runs")
                lw.append(time.perf_counter() - t)
            out["list_warm_s"] = lw
            warm = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = c.get(f"/ui/runs/{run_id}")
                warm.append(time.perf_counter() - t)
            out["warm_s"] = warm
            fresh = []
            seq = args.steps * args.ranks + 5 + int(info["seq"])
            w = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {writer}"}, timeout=3600
            )
            for _ in range(args.repeat):
                s = args.steps + 1 + (seq - args.steps * args.ranks - 5) // args.ranks
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
            info["seq"] = seq - args.steps * args.ranks - 5
            built.write_text(json.dumps(info))
            out["fresh_s"] = fresh
            print(f"pages: {out}", flush=True)
            # What a client without the dashboard does: page through the run's entries.
            reader_c = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {reader}"}, timeout=3600
            )
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
    cmd = f"python bench/dashboard_run_page.py --steps {args.steps} --ranks {args.ranks}"
    if args.steps == FULL[0] and args.ranks == FULL[1]:
        cmd = "python bench/dashboard_run_page.py --full"
    cmd += (
        f" --repeat {args.repeat} --api-pages {args.api_pages} --write-section docs/BENCHMARKS.md"
    )
    rows = [
        f"<!-- BEGIN {SECTION} (written by bench/dashboard_run_page.py) -->",
        f"### Dashboard run page, {args.steps:,} steps x {args.ranks} ranks"
        f" ({dt.date.today().isoformat()})",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}, shared with other engineers' builds and tests while"
        f" this ran (load average at the end {load:.1f}), so every figure is an upper bound.",
        "",
        f"The run: {res['entries']:,} step entries plus {res['alerts']} alerts in one SQLite"
        " ledger, written"
        " through the service's append (the call behind `POST /v1/runs/{id}/events`, batches of"
        f" 4,000 events, in-process) in {res['build_s']:.0f} s"
        f" ({res['entries'] / res['build_s']:,.0f} entries/s, rollups included); the database"
        f" is {res['db_bytes'] / 1e9:.2f} GB. `trainwarden serve` took"
        f" {res['server_start_s']:.0f} s to start over it (it rebuilds the Merkle tree in"
        " memory).",
        "",
        "| what | seconds | sent to the browser |",
        "|---|---:|---:|",
        f"| run page, first view after the server started (plots from the {res['source']}) |"
        f" {res['cold_s']:.3f} | {res['page_bytes'] / 1e6:.2f} MB |",
        f"| run page, warm (median of {args.repeat}) | {med_w:.3f} | same |",
        f"| run page after {args.ranks} new step entries (median of {args.repeat}) |"
        f" {med_f:.3f} | same |",
        f"| runs list, first view | {res['list_cold_s']:.3f} | - |",
        f"| runs list, warm (median of {args.repeat}) |"
        f" {statistics.median(res['list_warm_s']):.3f} | - |",
        f"| peer: `/v1/entries` pages of 1000, {res['api_entries']:,} entries |"
        f" {res['api_s']:.1f} | - |",
        f"| peer extrapolated to the whole run ({res['entries']:,} entries) | {full_api:.0f} | - |",
        "",
        "The first view reads the run's entries other than step records (alerts, attestations,"
        " artifacts), the per-run counters, O(buckets x ranks) rollup rows (one per bucket and"
        " rank, holding every metric), the step entries of the alert steps' 16-step buckets"
        " (their exact values), and one row per rank whose weight fingerprint disagreed (kept"
        " at ingest); never every entry. After new entries the page re-reads only the rollup"
        " rows they changed. The rollups are written in the transaction that appends the"
        " entries; they are unverified plot data.",
        f"<!-- END {SECTION} -->",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2_000)
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--full", action="store_true", help="100,000 steps x 64 ranks")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--api-pages", type=int, default=20)
    ap.add_argument("--write-section", type=Path)
    ap.add_argument(
        "--keep", type=Path, help="build the ledger in this folder, or reuse the one built there"
    )
    args = ap.parse_args()
    if args.full:
        args.steps, args.ranks = FULL
    res = measure(args)
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
