"""The storage contract, run against SQLite and a real PostgreSQL: atomic idempotent batches,
sequence gaps reported, and two servers sharing one database never forking the tree."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from trainwarden.ledger import Event, Ledger, LedgerError, Verifier
from trainwarden.ledger._verify import verify_log


def _events(start: int, n: int, kind: str = "monitor.step") -> list[Event]:
    return [Event(seq=s, kind=kind, record={"step": s}, rank=0) for s in range(start, start + n)]


def _verify(ledger: Ledger) -> None:
    st = ledger.storage
    rep = verify_log(
        st.iter_entries(),
        st.size(),
        st.checkpoints(),
        Verifier.from_vkey(ledger.signer.vkey()),
        row_key=ledger.signer.entry_key(),
    )
    assert rep.ok, [str(p) for p in rep.problems]


def test_append_is_idempotent_by_writer_and_seq(make_ledger: Callable[[], Ledger]) -> None:
    led = make_ledger()
    r1 = led.append("run-a", "rank0", _events(1, 5))
    assert (r1.indices, r1.new, r1.duplicates, r1.size) == ([0, 1, 2, 3, 4], 5, 0, 5)
    r2 = led.append("run-a", "rank0", _events(3, 5))
    assert (r2.indices, r2.new, r2.duplicates) == ([2, 3, 4, 5, 6], 2, 3)
    # The same seq from another writer or another run is a different event.
    r3 = led.append("run-a", "rank1", _events(1, 1))
    r4 = led.append("run-b", "rank0", _events(1, 1))
    assert (r3.indices, r4.indices) == ([7], [8])
    assert led.storage.size() == 9
    led.checkpoint()
    _verify(led)


def test_gap_in_sequence_is_reported(make_ledger: Callable[[], Ledger]) -> None:
    led = make_ledger()
    led.append("r", "w", _events(1, 3))
    res = led.append("r", "w", _events(7, 2))
    assert res.gaps == [(4, 7)]


def test_rejected_batch_writes_nothing(make_ledger: Callable[[], Ledger]) -> None:
    led = make_ledger()
    led.append("r", "w", _events(1, 2))
    bad = [*_events(3, 2), Event(seq=5, kind="x", record={"n": 2**60})]
    with pytest.raises(LedgerError, match="event 5"):
        led.append("r", "w", bad)
    with pytest.raises(LedgerError, match="kind"):
        led.append("r", "w", [Event(seq=3, kind="bad kind", record={})])
    with pytest.raises(LedgerError, match="exceeds"):
        led.append("r", "w", [Event(seq=3, kind="k", record={"x": "a" * 70_000})])
    assert led.storage.size() == 2
    assert [e.seq for e in led.storage.entries(0, 10)] == [1, 2]


def test_two_servers_on_one_database_never_fork(make_ledger: Callable[[], Ledger]) -> None:
    servers = [make_ledger(), make_ledger(), make_ledger()]
    errors: list[BaseException] = []

    def work(i: int, led: Ledger) -> None:
        try:
            for b in range(15):
                led.append("run", f"w{i}", _events(1 + b * 4, 4))
                if b % 5 == 0:
                    led.checkpoint()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(servers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sizes = {s.sync() for s in servers}
    assert sizes == {180}
    assert len({s.root() for s in servers}) == 1
    for s in servers:
        s.checkpoint()
    _verify(servers[0])
    seqs = sorted((e.writer, e.seq) for e in servers[0].storage.entries(0, 180))
    assert seqs == sorted((f"w{i}", s) for i in range(3) for s in range(1, 61))
