"""An attacker with write access to the database (but not the signing key) edits, deletes,
reorders or inserts rows, or swaps and rolls back checkpoints; verification must fail and name
the right entry. Hypothesis chooses the victims; both backends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwarden.ledger import Event, Ledger, Verifier
from trainwarden.ledger._storage import SqlStorage
from trainwarden.ledger._verify import VerifyReport, verify_log

N = 16

_settings = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Row = list[Any]


def _build(make: Callable[..., Ledger]) -> Ledger:
    led = make(clean=True)
    for b in range(N // 4):
        run = f"run-{b % 3}"
        led.append(
            run,
            "rank0",
            [
                Event(seq=b * 4 + s, kind="monitor.step", record={"v": b * 4 + s})
                for s in (1, 2, 3, 4)
            ],
        )
        if b % 2 == 1:
            led.checkpoint()
    led.checkpoint()
    return led


def _exec(led: Ledger, sql: str, params: tuple[Any, ...] = ()) -> None:
    st = led.storage
    assert isinstance(st, SqlStorage)
    st._write(st._q(sql), params)


def _rows(led: Ledger) -> list[Row]:
    st = led.storage
    assert isinstance(st, SqlStorage)
    return [
        list(r)
        for r in st._read(
            "SELECT idx, run_id, writer, seq, kind, entry, leaf_hash, mac FROM tw_entries "
            "ORDER BY idx"
        )
    ]


def _rewrite(led: Ledger, rows: list[Row], *, renumber: bool) -> None:
    """Replace the whole table with ``rows``, as an attacker rebuilding it would."""
    _exec(led, "DELETE FROM tw_entries")
    for i, r in enumerate(rows):
        if renumber:
            r = [i, *r[1:]]
        _exec(
            led,
            "INSERT INTO tw_entries (idx, run_id, writer, seq, kind, entry, leaf_hash, mac) "
            "VALUES (?,?,?,?,?,?,?,?)",
            tuple(r),
        )
    _exec(led, "UPDATE tw_head SET size = ? WHERE id = 1", (len(rows),))


def _forge(row: Row, *, index: int, record: dict[str, Any], seq: int | None = None) -> Row:
    """Rewrite a row's content consistently (canonical JSON, index field, leaf hash); only the
    row authenticator, which needs the server's key, stays wrong."""
    import rfc8785

    obj = json.loads(bytes(row[5]))
    obj["record"] = record
    obj["index"] = index
    if seq is not None:
        obj["seq"] = seq
    entry = rfc8785.dumps(obj)
    leaf = hashlib.sha256(b"\x00" + entry).digest()
    return [index, row[1], row[2], obj["seq"], row[4], entry, leaf, row[7]]


def _report(led: Ledger, *, keyed: bool = True, saved: str | None = None) -> VerifyReport:
    st = led.storage
    return verify_log(
        st.iter_entries(),
        st.size(),
        st.checkpoints(),
        Verifier.from_vkey(led.signer.vkey()),
        row_key=led.signer.entry_key() if keyed else None,
        saved=saved,
    )


def _first(rep: VerifyReport) -> int | None:
    assert not rep.ok
    first = rep.first_bad
    assert first is not None
    return first.index


def test_untouched_log_verifies(make_ledger: Callable[..., Ledger]) -> None:
    led = _build(make_ledger)
    rep = _report(led)
    assert rep.ok, rep.problems
    assert rep.size == N and rep.inclusion_proofs == N and rep.consistency_proofs >= 1


@_settings
@given(victim=st.integers(0, N - 1), rehash=st.booleans())
def test_edited_row_is_named(make_ledger: Callable[..., Ledger], victim: int, rehash: bool) -> None:
    led = _build(make_ledger)
    rows = _rows(led)
    if rehash:
        rows[victim] = _forge(rows[victim], index=victim, record={"v": -1})
    else:
        rows[victim][5] = bytes(rows[victim][5]).replace(b'"v":', b'"v":1', 1)
    _rewrite(led, rows, renumber=False)
    rep = _report(led)
    assert _first(rep) == victim
    assert rep.first_bad is not None and rep.first_bad.run == rows[victim][1]
    # Without the server's row key the index is bounded by the checkpoints, never missed.
    unkeyed = _report(led, keyed=False)
    assert not unkeyed.ok
    bound = _first(unkeyed)
    assert bound is not None and bound <= victim


@_settings
@given(victim=st.integers(0, N - 1), renumber=st.booleans())
def test_deleted_row_is_named(
    make_ledger: Callable[..., Ledger], victim: int, renumber: bool
) -> None:
    led = _build(make_ledger)
    rows = _rows(led)
    del rows[victim]
    if renumber:
        # A careful attacker also fixes the index field and the leaf hash of every later row.
        rows = [
            _forge(r, index=i, record=json.loads(bytes(r[5]))["record"]) if i >= victim else r
            for i, r in enumerate(rows)
        ]
    _rewrite(led, rows, renumber=renumber)
    assert _first(_report(led)) == victim


@_settings
@given(i=st.integers(0, N - 1), j=st.integers(0, N - 1))
def test_reordered_rows_are_named(make_ledger: Callable[..., Ledger], i: int, j: int) -> None:
    if i == j:
        j = (i + 1) % N
    lo, hi = min(i, j), max(i, j)
    led = _build(make_ledger)
    rows = _rows(led)
    rows[lo], rows[hi] = rows[hi], rows[lo]
    _rewrite(led, rows, renumber=True)
    assert _first(_report(led)) == lo


@_settings
@given(pos=st.integers(0, N))
def test_inserted_row_is_named(make_ledger: Callable[..., Ledger], pos: int) -> None:
    led = _build(make_ledger)
    rows = _rows(led)
    template = rows[min(pos, N - 1)]
    rows.insert(pos, _forge(template, index=pos, record={"v": "inserted"}, seq=1000 + pos))
    rows = [
        _forge(r, index=k, record=json.loads(bytes(r[5]))["record"]) if k > pos else r
        for k, r in enumerate(rows)
    ]
    _rewrite(led, rows, renumber=True)
    assert _first(_report(led)) == pos


@_settings
@given(pick=st.data())
def test_swapped_checkpoints_fail(make_ledger: Callable[..., Ledger], pick: st.DataObject) -> None:
    led = _build(make_ledger)
    cps = led.storage.checkpoints()
    a = pick.draw(st.integers(0, len(cps) - 2))
    b = pick.draw(st.integers(a + 1, len(cps) - 1))
    for src, dst in ((cps[a], cps[b]), (cps[b], cps[a])):
        _exec(
            led,
            "UPDATE tw_checkpoints SET size = ?, root = ?, note = ? WHERE seq = ?",
            (src.size, src.root, src.note, dst.seq),
        )
    rep = _report(led)
    assert not rep.ok
    assert any("rolls the log back" in p.message for p in rep.problems)


def test_checkpoint_signed_by_another_key_fails(
    make_ledger: Callable[..., Ledger], tmp_path_factory: Any
) -> None:
    from trainwarden.ledger._checkpoint import load_or_create_signer

    led = _build(make_ledger)
    evil = load_or_create_signer(tmp_path_factory.mktemp("evil"), led.signer.name)
    cp = led.storage.latest_checkpoint()
    assert cp is not None
    forged = evil.sign(cp.size, cp.root)
    _exec(led, "UPDATE tw_checkpoints SET note = ? WHERE seq = ?", (forged.note, cp.seq))
    rep = _report(led)
    assert any("no signature by key" in p.message for p in rep.problems)


@_settings
@given(keep=st.integers(1, N - 1))
def test_rollback_is_caught_by_a_saved_checkpoint(
    make_ledger: Callable[..., Ledger], keep: int
) -> None:
    led = _build(make_ledger)
    saved = led.checkpoint().note
    # The attacker truncates the log to `keep` entries and keeps only checkpoints that still
    # verify, so the stored data alone is consistent again.
    _rewrite(led, _rows(led)[:keep], renumber=False)
    _exec(led, "DELETE FROM tw_checkpoints WHERE size > ?", (keep,))
    assert _report(led).ok
    rep = _report(led, saved=saved)
    assert _first(rep) == keep
    assert any("rolled back" in p.message for p in rep.problems)


@_settings
@given(victim=st.integers(0, N - 1))
def test_history_rebuilt_from_scratch_is_caught_by_a_saved_checkpoint(
    make_ledger: Callable[..., Ledger], victim: int
) -> None:
    led = _build(make_ledger)
    saved = led.checkpoint().note
    rows = _rows(led)
    rows[victim] = _forge(rows[victim], index=victim, record={"v": "rewritten"})
    _rewrite(led, rows, renumber=False)
    _exec(led, "DELETE FROM tw_checkpoints")
    # Even when the attacker could sign new checkpoints over the rebuilt log, the saved
    # checkpoint no longer matches it.
    rep = _report(led, keyed=False, saved=saved)
    assert any("history rewritten" in p.message for p in rep.problems)


@_settings
@given(
    value=st.floats(min_value=2.0**53, max_value=1e21, exclude_max=True)
    | st.sampled_from([2.0**53, 2.0**53 + 2, 2692329619381729300.0, 1e20, -(2.0**60)])
)
def test_a_large_float_in_a_record_verifies(
    make_ledger: Callable[..., Ledger], value: float
) -> None:
    """RFC 8785 writes a double from 2**53 to 1e21 as plain digits (a loss that exploded, a
    norm): read back, those digits are that double, not an integer beyond the I-JSON range."""
    led = make_ledger(clean=True)
    led.append("run-0", "rank0", [Event(seq=1, kind="monitor.step", record={"loss": value})])
    led.checkpoint()
    rep = _report(led)
    assert rep.ok, rep.problems


def test_an_integer_written_over_a_large_float_is_named(make_ledger: Callable[..., Ledger]) -> None:
    """The same digits and one more: 2**53 + 1 is no double; the edit is not canonical."""
    led = make_ledger(clean=True)
    led.append("run-0", "rank0", [Event(seq=1, kind="monitor.step", record={"loss": 2.0**53})])
    led.checkpoint()
    rows = _rows(led)
    entry = bytes(rows[0][5]).replace(b"9007199254740992", b"9007199254740993")
    rows[0][5] = entry
    rows[0][6] = hashlib.sha256(b"\x00" + entry).digest()
    _rewrite(led, rows, renumber=False)
    rep = _report(led, keyed=False)
    assert _first(rep) == 0
    assert any("9007199254740993 is outside the I-JSON range" in p.message for p in rep.problems)
