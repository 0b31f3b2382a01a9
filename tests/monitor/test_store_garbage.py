"""Every rank can write the process group's store, so what a peer published there is untrusted:
a rank (or code in it) that writes garbage where its heartbeat or liveness record belongs must
not crash or switch off the checks of the other ranks. A real TCPStore on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from torch._C._distributed_c10d import TCPStore

from trainwarden.monitor._checks.cross_rank import _peer_state
from trainwarden.monitor._checks.liveness import peer_info
from trainwarden.monitor._watchdog import HeartbeatBoard

GARBAGE = [
    b"[1, 2]",
    b"not json",
    b"\xff\xfe",
    b"[" * 100_000 + b"]" * 100_000,
    b'"a string"',
    b"null",
    b'{"host": ["x"], "pid": "12"}',
]


@pytest.fixture
def store() -> Iterator[Any]:
    s = TCPStore("127.0.0.1", 0, 1, True, wait_for_workers=False)
    yield s


@pytest.mark.parametrize("raw", GARBAGE)
def test_a_peer_record_that_is_no_object_reads_as_nothing(raw: bytes) -> None:
    got = peer_info(raw)
    assert isinstance(got, dict)
    assert got == ({"host": ["x"], "pid": "12"} if raw.startswith(b'{"host"') else {})


@pytest.mark.parametrize("raw", GARBAGE)
def test_a_garbage_heartbeat_makes_the_peer_unknown_not_a_crash(store: Any, raw: bytes) -> None:
    store.set("trainwarden/hb/1", raw)
    state = _peer_state(store, 1)
    assert state["state"] in ("unknown", "remote"), state


@pytest.mark.parametrize("raw", GARBAGE)
def test_the_lost_rank_report_survives_a_garbage_heartbeat(store: Any, raw: bytes) -> None:
    board = HeartbeatBoard(store, 0, 2)
    board.publish(5, time.time())
    store.set("trainwarden/hb/1", raw)
    report = board.report(stale_after_s=30.0)
    # Either the garbage is read as no heartbeat, or the report says why it could not decide;
    # it never raises into the watchdog.
    assert report.reporter == 0
    assert report.error is None or "heartbeat" in report.error
