"""`ledger verify --url`: an auditor with a reader token and the pinned verifier key checks a
live server's entries, checkpoints and proofs, and catches a rewrite made in its database."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.ledger import LedgerError
from trainwarden.service._tools import verify_url

from .conftest import Server


def _fill(srv: Server) -> tuple[str, str]:
    run, token = srv.create_run(ranks=0)
    with srv.client(token) as c:
        for b in range(4):
            events = [{"seq": b * 5 + i, "kind": "k", "record": {"i": i}} for i in range(1, 6)]
            assert c.post(
                f"/v1/runs/{run}/events", json={"writer": "w", "events": events}
            ).is_success
    with srv.client(srv.admin_token) as c:
        reader = str(c.post("/v1/tokens", json={"role": "reader"}).json()["token"])
        # The background checkpointer covers the log on its own (every half second).
        for _ in range(600):
            # 404 (no checkpoint signed yet) until the first tick.
            if c.get("/v1/checkpoint").json().get("size") == 20:
                break
            time.sleep(0.05)
        assert c.get("/v1/checkpoint").json()["size"] == 20
    return run, reader


def test_live_server_verifies_and_a_rewrite_is_caught(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    srv = start_server(extra=["--no-deadman"])
    _, reader = _fill(srv)
    vkey = str(srv.state / "keys" / "ledger.vkey")
    report = verify_url(srv.url, reader, key=vkey, saved=[])
    assert report.ok, [str(p) for p in report.problems]
    assert report.size == 20 and report.inclusion_proofs == 20 and not report.rows_authenticated
    saved = report.latest
    assert saved is not None
    # Someone with database access rewrites entry 7 consistently (content, index, leaf hash).
    db = sqlite3.connect(srv.db_url[len("sqlite:///") :])
    (entry,) = db.execute("SELECT entry FROM tw_entries WHERE idx = 7").fetchone()
    forged = bytes(entry).replace(b'"i":3', b'"i":9')
    db.execute(
        "UPDATE tw_entries SET entry = ?, leaf_hash = ? WHERE idx = 7",
        (forged, hashlib.sha256(b"\x00" + forged).digest()),
    )
    db.commit()
    db.close()
    bad = verify_url(srv.url, reader, key=vkey, saved=[saved.note])
    assert not bad.ok
    first = bad.first_bad
    assert first is not None and first.index is not None and first.index <= 7
    assert any("does not match the recomputed tree" in p.message for p in bad.problems)


def test_verify_url_needs_a_pinned_key(start_server: Callable[..., Server]) -> None:
    srv = start_server(extra=["--no-deadman"])
    with pytest.raises(LedgerError, match="--key"):
        verify_url(srv.url, srv.admin_token, key=None, saved=[])
