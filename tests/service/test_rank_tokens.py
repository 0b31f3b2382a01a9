"""Writer tokens bound to ranks: a node's token writes only its own ranks' events, so code that
got into one node cannot forge another rank's records or keep a stopped rank looking alive. Over
SQLite and a real PostgreSQL, a log created before such tokens existed, and a real server driven
through the command line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trainwarden.ledger import Ledger, open_storage
from trainwarden.ledger._checkpoint import load_or_create_signer
from trainwarden.ledger._storage import SqlStorage, Storage
from trainwarden.ledger._types import Event, Role
from trainwarden.service._core import LedgerService, ServiceError

from .conftest import Server, pg_schema_url

ORIGIN = "ranks.test/ledger"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return pg_schema_url(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def make_service(db: str, tmp_path: Path) -> Iterator[Callable[[], LedgerService]]:
    opened: list[Storage] = []
    signer = load_or_create_signer(tmp_path / "keys", ORIGIN)

    def make() -> LedgerService:
        st = open_storage(db)
        opened.append(st)
        return LedgerService(Ledger(st, signer), deadman=False)

    yield make
    for st in opened:
        st.close()


def _ev(seq: int, rank: int | None, kind: str = "step") -> Event:
    return Event(seq, kind, {"step": seq}, rank=rank)


def test_a_token_bound_to_ranks_writes_only_their_events_and_a_refused_batch_writes_nothing(
    make_service: Callable[[], LedgerService],
) -> None:
    service = make_service()
    run, run_token = service.create_run("ranks", 60.0, 8, {})
    node, info = service.issue_token(Role.writer, run.run_id, (2, 3))
    assert info.ranks == (2, 3)
    p = service.authenticate(f"Bearer {node}")
    assert p.ranks == (2, 3)
    service.append(p, run.run_id, "node1", [_ev(1, 2), _ev(2, 3)])
    storage = service.ledger.storage
    size = storage.size()
    for bad in (
        [_ev(3, 2), _ev(4, 4)],  # one event of another rank spoils the whole batch
        [_ev(3, 1, "run.heartbeat")],  # keeping another rank alive
        [_ev(3, None)],  # an event for no rank would count for the writer name
    ):
        with pytest.raises(ServiceError) as got:
            service.append(p, run.run_id, "node1", bad)
        assert (got.value.status, got.value.code) == (403, "wrong_rank"), bad
        assert "ranks 2-3" in str(got.value)
        assert storage.size() == size
    # The run's own token still writes for any rank, or none.
    whole = service.authenticate(f"Bearer {run_token}")
    assert whole.ranks is None
    service.append(whole, run.run_id, "launcher", [_ev(1, 7), _ev(2, None)])
    # The binding is stored: a restarted server (a new storage object) enforces it.
    again = make_service()
    q = again.authenticate(f"Bearer {node}")
    assert q.ranks == (2, 3)
    with pytest.raises(ServiceError, match="for ranks 2"):
        again.append(q, run.run_id, "node1", [_ev(3, 0)])
    listed = {t.token_id: t.ranks for t in again.ledger.storage.list_tokens()}
    assert listed[info.token_id] == (2, 3)


@pytest.mark.parametrize(
    ("role", "ranks", "says"),
    [
        (Role.reader, (0, 1), "only a writer"),
        (Role.writer, (5, 2), "first <= last"),
        (Role.writer, (-1, 2), "first <= last"),
        (Role.writer, (0, 2**31), "first <= last"),
    ],
)
def test_a_binding_that_means_nothing_is_refused(
    make_service: Callable[[], LedgerService], role: Role, ranks: tuple[int, int], says: str
) -> None:
    service = make_service()
    run, _ = service.create_run("ranks", 60.0, 8, {})
    before = len(service.ledger.storage.list_tokens())
    with pytest.raises(ServiceError, match=says):
        service.issue_token(role, run.run_id if role is Role.writer else None, ranks)
    assert len(service.ledger.storage.list_tokens()) == before


def test_a_log_created_before_rank_tokens_gets_them_and_its_tokens_stay_whole_run_tokens(
    db: str, tmp_path: Path
) -> None:
    signer = load_or_create_signer(tmp_path / "keys", ORIGIN)
    st = open_storage(db)
    old = LedgerService(Ledger(st, signer), deadman=False)
    run, token = old.create_run("old", 60.0, 2, {})
    # The table as it was before: no rank columns.
    assert isinstance(st, SqlStorage)
    for column in ("rank_first", "rank_last"):
        st._write(f"ALTER TABLE tw_tokens DROP COLUMN {column}")
    st.close()
    st = open_storage(db)
    try:
        service = LedgerService(Ledger(st, signer), deadman=False)
        p = service.authenticate(f"Bearer {token}")
        assert p.ranks is None
        service.append(p, run.run_id, "w", [_ev(1, 0), _ev(2, 1)])
        node, _ = service.issue_token(Role.writer, run.run_id, (1, 1))
        with pytest.raises(ServiceError, match="ranks 1-1"):
            service.append(service.authenticate(f"Bearer {node}"), run.run_id, "n", [_ev(1, 0)])
    finally:
        st.close()
    # A second opening finds the columns and adds nothing.
    open_storage(db).close()


def test_the_command_line_issues_a_node_token_the_server_enforces(
    start_server: Callable[..., Server], cli: Callable[..., Any]
) -> None:
    srv = start_server(extra=["--no-deadman"])
    run, _ = srv.create_run(ranks=16)
    env = {"TRAINWARDEN_LEDGER_URL": srv.url, "TRAINWARDEN_LEDGER_TOKEN": srv.admin_token}
    made = cli(
        ["ledger", "token", "create", "--role", "writer", "--run", run, "--ranks", "8-15"], env=env
    )
    assert made.returncode == 0, made.stderr
    node = made.stdout.strip()
    with srv.client(node) as c:
        assert c.get("/v1/whoami").json()["ranks"] == [8, 15]
        ok = c.post(
            f"/v1/runs/{run}/events",
            json={"writer": "node1", "events": [{"seq": 1, "kind": "k", "record": {}, "rank": 8}]},
        )
        assert ok.status_code == 200, ok.text
        r = c.post(
            f"/v1/runs/{run}/events",
            json={"writer": "node1", "events": [{"seq": 2, "kind": "k", "record": {}, "rank": 0}]},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_rank", r.text
    listed = cli(["ledger", "token", "list"], env=env)
    assert [t["ranks"] for t in json.loads(listed.stdout) if t["run_id"] == run] == [
        None,
        [8, 15],
    ]
    for bad, says in (
        (["--role", "writer", "--run", run, "--ranks", "15-8"], "--ranks"),
        (["--role", "writer", "--run", run, "--ranks", "x"], "--ranks"),
        (["--role", "writer", "--run", run, "--ranks", "-3"], "--ranks"),
        (["--role", "reader", "--ranks", "1"], "binds a writer token"),
    ):
        got = cli(["ledger", "token", "create", *bad], env=env)
        assert got.returncode == 2, (bad, got.stderr)
        assert says in got.stderr and "Traceback" not in got.stderr
        assert len(got.stderr.strip().splitlines()) <= 2, got.stderr
    assert os.environ.get("TRAINWARDEN_LEDGER_TOKEN") != srv.admin_token
