"""Run quotas: the bytes a run may store and the rate it may append at. A batch over a limit is
refused whole before anything is written, the refusal is itself recorded in the log, and the
writer's spool keeps what was refused. Through the service object over SQLite and a real
PostgreSQL (with a clock the test moves, so no test waits on time), and through a real server."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trainwarden.ledger import Ledger, open_storage
from trainwarden.ledger._checkpoint import load_or_create_signer
from trainwarden.ledger._client import LedgerSink
from trainwarden.ledger._log import SERVICE_WRITER
from trainwarden.ledger._storage import Storage
from trainwarden.ledger._types import Event, RunQuota
from trainwarden.service._core import LedgerService, Principal, ServiceError

from .conftest import SRC, Server, pg_schema_url

ORIGIN = "quota.test/ledger"


class Clock:
    """The service's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return pg_schema_url(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def make_service(db: str, tmp_path: Path) -> Iterator[Callable[..., LedgerService]]:
    """Factory: a service over the test database (call again for a restarted server)."""
    opened: list[Storage] = []
    signer = load_or_create_signer(tmp_path / "keys", ORIGIN)

    def make(quota: RunQuota, clock: Callable[[], float] = time.monotonic) -> LedgerService:
        st = open_storage(db)
        opened.append(st)
        return LedgerService(Ledger(st, signer), deadman=False, quota=quota, clock=clock)

    yield make
    for st in opened:
        st.close()


def _run(service: LedgerService) -> tuple[str, Principal]:
    run, token = service.create_run("quota", 60.0, 1, {})
    return run.run_id, service.authenticate(f"Bearer {token}")


def _events(first: int, n: int, pad: int = 400) -> list[Event]:
    return [Event(seq, "step", {"step": seq, "pad": "x" * pad}) for seq in range(first, first + n)]


def _flags(service: LedgerService, run: str, kind: str) -> list[Any]:
    rows = service.ledger.storage.query(run=run, kind=kind, writer=None, after=-1, limit=1000)
    assert all(r.writer == SERVICE_WRITER for r in rows)
    return rows


def test_a_batch_over_the_byte_quota_is_refused_whole_before_anything_is_written(
    make_service: Callable[..., LedgerService],
) -> None:
    clock = Clock()
    service = make_service(RunQuota(max_bytes=20_000, events_per_s=0, bytes_per_s=0), clock)
    run, writer = _run(service)
    other, other_writer = _run(service)
    storage = service.ledger.storage
    seq = 1
    refused: ServiceError | None = None
    for _ in range(100):
        size = storage.size()
        try:
            service.append(writer, run, "w", _events(seq, 5))
        except ServiceError as e:
            refused = e
            break
        seq += 5
    assert refused is not None, "the run was never refused"
    assert (refused.status, refused.code) == (507, "run_quota")
    assert run in str(refused) and "20000" in str(refused)
    # Nothing of the batch was stored; the refusal itself is one service entry.
    assert storage.size() == size + 1
    assert storage.run_bytes(run) <= 20_000
    (flag,) = _flags(service, run, "ledger.quota_exceeded")
    assert b'"max_bytes":20000' in flag.entry
    stored = storage.run_bytes(run)
    # Refused again: still nothing written, and no second flag within the minute.
    with pytest.raises(ServiceError, match="quota"):
        service.append(writer, run, "w", _events(seq, 5))
    assert len(_flags(service, run, "ledger.quota_exceeded")) == 1
    clock.now += 61
    with pytest.raises(ServiceError, match="quota"):
        service.append(writer, run, "w", _events(seq, 5))
    assert len(_flags(service, run, "ledger.quota_exceeded")) == 2
    # The flags are the service's entries, outside the run's quota.
    assert storage.run_bytes(run) == stored
    # Another run has its own quota.
    service.append(other_writer, other, "w", _events(1, 5))


def test_the_quota_counts_what_the_database_holds_after_a_restart_and_duplicates_count_nothing(
    make_service: Callable[..., LedgerService],
) -> None:
    quota = RunQuota(max_bytes=30_000, events_per_s=0, bytes_per_s=0)
    first = make_service(quota)
    run, writer = _run(first)
    first.append(writer, run, "w", _events(1, 20))
    stored = first.ledger.storage.run_bytes(run)
    assert 0 < stored < 30_000
    # A resend of stored events stores nothing and charges nothing.
    for _ in range(40):
        first.append(writer, run, "w", _events(1, 20))
    assert first.ledger.storage.run_bytes(run) == stored
    first.append(writer, run, "w", _events(21, 1))
    # A second server (or this one restarted) starts from what is stored, not from zero: a
    # batch that fits an empty quota but not what is left is refused.
    again = make_service(quota)
    left = 30_000 - again.ledger.storage.run_bytes(run)
    pad = left  # one event whose record alone is larger than what is left
    with pytest.raises(ServiceError) as got:
        again.append(writer, run, "w", _events(22, 1, pad=pad))
    assert got.value.code == "run_quota"
    again.append(writer, run, "w", _events(22, 1, pad=10))


def test_a_run_over_its_rate_is_told_when_to_retry_and_then_accepted(
    make_service: Callable[..., LedgerService],
) -> None:
    clock = Clock()
    service = make_service(RunQuota(max_bytes=0, events_per_s=10, bytes_per_s=0, burst_s=2), clock)
    run, writer = _run(service)
    other, other_writer = _run(service)
    storage = service.ledger.storage
    service.append(writer, run, "w", _events(1, 20))  # the whole burst: 2 s at 10 a second
    size = storage.size()
    with pytest.raises(ServiceError) as got:
        service.append(writer, run, "w", _events(21, 5))
    assert (got.value.status, got.value.code) == (429, "rate_limited")
    assert got.value.retry_after is not None and math.isclose(got.value.retry_after, 0.5)
    assert storage.size() == size + 1  # only the flag
    assert len(_flags(service, run, "ledger.rate_limited")) == 1
    # Other runs are not slowed by this one.
    service.append(other_writer, other, "w", _events(1, 20))
    clock.now += 0.5
    service.append(writer, run, "w", _events(21, 5))
    # A batch larger than the whole burst is accepted once the bucket is full again: no batch
    # the service takes can wait for ever.
    clock.now += 2
    service.append(writer, run, "w", _events(26, 50))
    with pytest.raises(ServiceError, match="retry in"):
        service.append(writer, run, "w", _events(76, 1))
    # The byte rate limits on its own as well.
    bytes_only = make_service(
        RunQuota(max_bytes=0, events_per_s=0, bytes_per_s=1000, burst_s=1), clock
    )
    run2, writer2 = _run(bytes_only)
    bytes_only.append(writer2, run2, "w", _events(1, 1, pad=600))
    with pytest.raises(ServiceError) as got:
        bytes_only.append(writer2, run2, "w", _events(2, 1, pad=600))
    assert got.value.code == "rate_limited"


@pytest.mark.parametrize(
    "bad",
    [
        {"max_bytes": -1},
        {"max_bytes": 1.5},
        {"max_bytes": True},
        {"events_per_s": -0.1},
        {"events_per_s": math.nan},
        {"bytes_per_s": math.inf},
        {"burst_s": 0},
        {"burst_s": "10"},
    ],
)
def test_a_quota_that_is_no_limit_at_all_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        RunQuota(**bad)


def test_a_real_server_refuses_over_quota_with_json_and_the_sink_keeps_every_event(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    srv = start_server(
        extra=[
            "--no-deadman",
            "--run-max-bytes",
            "20000",
            "--run-events-per-s",
            "0",
            "--run-bytes-per-s",
            "0",
        ]
    )
    run, token = srv.create_run(ranks=0)
    sink = LedgerSink(srv.url, token, writer="w", spool_dir=tmp_path / "spool", max_backoff=0.2)
    try:
        for step in range(200):
            sink.emit("step", {"step": step, "pad": "x" * 400})
        assert not sink.flush(timeout=5)
        assert sink.last_error is not None and "507" in sink.last_error
        assert "run_quota" in sink.last_error
        pending = sink.pending
        assert pending > 0
    finally:
        sink.close(timeout=0.5)
    # What was refused is still in the spool: a sink on the same spool would resend it.
    spooled = (sink.spool_dir / "spool.jsonl").read_bytes().splitlines()
    assert len(spooled) == 200
    with srv.client(srv.admin_token) as c:
        got = c.get("/v1/entries", params={"run": run, "kind": "step", "limit": 1000}).json()
        assert len(got["entries"]) == 200 - pending
        flags = c.get("/v1/entries", params={"kind": "ledger.quota_exceeded"}).json()
        assert [e["run"] for e in flags["entries"]] == [run]
        assert 'reason="run_quota"' in c.get("/metrics").text


def test_a_real_server_answers_a_rate_limited_batch_with_retry_after(
    start_server: Callable[..., Server],
) -> None:
    # One event of burst, refilled at one event in 100 s: the second request is refused
    # however slowly the test runs.
    srv = start_server(extra=["--no-deadman", "--run-events-per-s", "0.01", "--run-burst-s", "100"])
    run, token = srv.create_run(ranks=0)
    with srv.client(token) as w:
        ok = w.post(
            f"/v1/runs/{run}/events",
            json={"writer": "w", "events": [{"seq": 1, "kind": "k", "record": {}}]},
        )
        assert ok.status_code == 200, ok.text
        r = w.post(
            f"/v1/runs/{run}/events",
            json={"writer": "w", "events": [{"seq": 2, "kind": "k", "record": {}}]},
        )
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 100


@pytest.mark.parametrize(
    "flag", [["--run-burst-s", "0"], ["--run-events-per-s", "nan"], ["--run-max-bytes", "-5"]]
)
def test_serve_refuses_a_quota_that_is_no_limit_in_one_line(
    flag: list[str], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trainwarden", "serve", "--state-dir", str(tmp_path), *flag],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert flag[0] in proc.stderr
    assert not (tmp_path / "ledger.db").exists()
