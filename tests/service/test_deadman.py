"""The dead-man switch, end to end on a real server: a silent rank while others report, a
skipped sequence number, and a run that stops without its closing record are each written into
the ledger by the service; a run that closes properly is not flagged."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from trainwarden.ledger import open_storage

from .conftest import Server


def _service_entries(srv: Server, run: str) -> list[dict[str, Any]]:
    st = open_storage(srv.db_url)
    try:
        return [
            json.loads(e.entry)
            for e in st.iter_entries()
            if e.run == run and e.writer == "trainwarden-ledger"
        ]
    finally:
        st.close()


def test_silence_gaps_and_unclosed_runs_become_entries(
    start_server: Callable[..., Server],
) -> None:
    srv = start_server()
    run, token = srv.create_run(interval_s=0.6, ranks=2)
    seq = 0

    def send(c: Any, run_id: str, kind: str, rank: int, skip: int = 0) -> None:
        nonlocal seq
        seq += 1 + skip
        r = c.post(
            f"/v1/runs/{run_id}/events",
            json={
                "writer": "rank0",
                "events": [{"seq": seq, "kind": kind, "record": {}, "rank": rank}],
            },
        )
        assert r.status_code == 200, r.text

    with srv.client(token) as c:
        # Rank 0 keeps reporting for 2.5 s; rank 1 never does.
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            send(c, run, "monitor.step", 0)
            time.sleep(0.15)
        send(c, run, "monitor.step", 0, skip=3)
    # A run created, fed and closed properly within its interval is never flagged.
    closed, ctoken = srv.create_run(interval_s=0.6, ranks=1)
    with srv.client(ctoken) as c:
        seq = 0
        send(c, closed, "monitor.step", 0)
        send(c, closed, "run.end", 0)
    # Now everything is silent: after three intervals the first run is declared unclosed.
    deadline = time.monotonic() + 20
    kinds: list[str] = []
    while time.monotonic() < deadline:
        kinds = [e["kind"] for e in _service_entries(srv, run)]
        if "ledger.unclosed_run" in kinds:
            break
        time.sleep(0.3)
    flags = _service_entries(srv, run)
    silence = [f for f in flags if f["kind"] == "ledger.silence"]
    assert silence and silence[0]["record"]["source"] == "1"
    assert silence[0]["record"]["never_reported"] is True
    gap = [f for f in flags if f["kind"] == "ledger.sequence_gap"]
    assert len(gap) == 1 and gap[0]["record"]["got_seq"] == gap[0]["record"]["expected_seq"] + 3
    assert "ledger.unclosed_run" in kinds
    assert _service_entries(srv, closed) == []
    with srv.client(srv.admin_token) as c:
        assert c.get(f"/v1/runs/{run}").json()["status"] == "abandoned"
        assert c.get(f"/v1/runs/{closed}").json()["status"] == "closed"
