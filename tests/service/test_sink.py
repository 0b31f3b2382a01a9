"""LedgerSink without and with a server: emit never waits on the network, the spool is durable
and a new sink on the same spool ships what the previous one left."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.ledger import LedgerSink, open_storage
from trainwarden.ledger._client import configured_sink
from trainwarden.sink import EventSink

from .conftest import Server, free_port


def test_emit_with_no_server_spools_and_returns(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sink = LedgerSink(url, "tw_x", writer="w", spool_dir=tmp_path, max_backoff=0.1)
    assert isinstance(sink, EventSink)
    t0 = time.monotonic()
    for i in range(50):
        sink.emit("test.event", {"n": i, "obj": object()})
    # Fifty fsynced appends with the server unreachable: bounded by disk, not by any timeout.
    assert time.monotonic() - t0 < sink.timeout
    spool = next(tmp_path.rglob("spool.jsonl"))
    lines = spool.read_bytes().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, 51))
    assert json.loads(lines[0])["record"]["obj"].startswith("<object")
    sink.close(timeout=0.2)
    assert sink.pending == 50 and sink.last_error


def test_new_sink_ships_what_the_old_one_left(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    srv = start_server(extra=["--no-deadman"])
    _run, token = srv.create_run(ranks=0)
    dead = LedgerSink(f"http://127.0.0.1:{free_port()}", token, writer="w", spool_dir=tmp_path)
    for i in range(5):
        dead.emit("test.event", {"n": i})
    dead.close(timeout=0.1)
    # Simulate a process killed mid-write: a torn last line that emit never acknowledged.
    spool = next(tmp_path.rglob("spool.jsonl"))
    with open(spool, "ab") as fh:
        fh.write(b'{"seq":6,"kind":"test.ev')
    # Same spool key needs the same URL and token: move the spool under the live server's key.
    live_root = tmp_path / "live"
    probe = LedgerSink(srv.url, token, writer="probe", spool_dir=live_root)
    probe.close(timeout=0.1)
    key_dir = next(p for p in live_root.iterdir() if p.is_dir())
    spool.parent.rename(key_dir / "w")
    sink = LedgerSink(srv.url, token, writer="w", spool_dir=live_root)
    sink.emit("test.event", {"n": 5})
    assert sink.flush(timeout=30), sink.last_error
    sink.close()
    st = open_storage(srv.db_url)
    try:
        got = [
            (e.seq, json.loads(e.entry)["record"]["n"])
            for e in st.iter_entries()
            if e.writer == "w"
        ]
    finally:
        st.close()
    assert got == [(i + 1, i) for i in range(6)]


def test_configured_sink_follows_the_environment(tmp_path: Path) -> None:
    assert configured_sink(env={}) is None
    assert configured_sink(ledger=False, env={"TRAINWARDEN_LEDGER_URL": "x"}) is None
    from trainwarden.ledger import LedgerError

    with pytest.raises(LedgerError, match="TRAINWARDEN_LEDGER_URL"):
        configured_sink(ledger=True, env={})
    sink = configured_sink(
        env={
            "TRAINWARDEN_LEDGER_URL": f"http://127.0.0.1:{free_port()}",
            "TRAINWARDEN_LEDGER_TOKEN": "tw_x",
            "TRAINWARDEN_LEDGER_SPOOL": str(tmp_path),
        }
    )
    assert isinstance(sink, LedgerSink)
    sink.close(timeout=0.1)


def test_events_carry_the_process_rank_and_a_bound_token_ships_them(
    start_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rank 3 reports a record about rank 5 (the subject of a cross-rank alert, or a user's own
    # field): the event is rank 3's, so rank 3's bound token ships it and rank 5 does not look
    # alive to the dead-man switch because of it.
    srv = start_server(extra=["--no-deadman"])
    run, _ = srv.create_run(ranks=8)
    with srv.client(srv.admin_token) as c:
        got = c.post("/v1/tokens", json={"role": "writer", "run_id": run, "ranks": [3, 3]})
        assert got.status_code == 201, got.text
        token = got.json()["token"]
    monkeypatch.setenv("RANK", "3")
    sink = LedgerSink(srv.url, token, writer="node0-rank3", spool_dir=tmp_path)
    sink.emit("alert", {"rank": 5, "rule_id": "X", "severity": "HIGH"})
    sink.emit("step", {"step": 1})
    assert sink.flush(timeout=30), sink.last_error
    sink.close()
    st = open_storage(srv.db_url)
    try:
        ranks = [
            json.loads(e.entry)["rank"] for e in st.iter_entries() if e.writer == "node0-rank3"
        ]
    finally:
        st.close()
    assert ranks == [3, 3]
