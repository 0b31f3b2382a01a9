"""The derived tables the dashboard reads, against a recompute from the stored entries, on SQLite
and PostgreSQL: every rollup row (count, minimum and maximum with their steps, first and last
index) at every bucket width, and the fingerprint disagreements kept at ingest, with ranks whose
reports of one step arrive in different batches, out of order, and flip the step's majority."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from trainwarden.ledger import Ledger
from trainwarden.ledger._rollup import (
    METRICS,
    WIDTHS,
    fingerprint_value,
    metric_values,
    parse_entry,
    rollup_columns,
)
from trainwarden.ledger._storage import SqlStorage
from trainwarden.ledger._types import Event, RunInfo

RANKS = 5
STEPS = 150


def _run(ledger: Ledger, run_id: str) -> RunInfo:
    run = RunInfo(run_id, run_id, 1000.0, 60.0, RANKS, "open", {})
    ledger.storage.create_run(run)
    return run


def _write_interleaved(ledger: Ledger, run: RunInfo, events: list[tuple[int, Event]]) -> None:
    """Append (rank, event) pairs as each rank's writer would: small batches of one writer at a
    time, the writers taking turns in a shuffled order."""
    rng = random.Random(7)  # noqa: S311 - a reproducible order, not a secret
    queues: dict[int, list[Event]] = {}
    for rank, ev in events:
        queues.setdefault(rank, []).append(ev)
    while queues:
        rank = rng.choice(sorted(queues))
        n = rng.randint(1, 9)
        batch, queues[rank] = queues[rank][:n], queues[rank][n:]
        if not queues[rank]:
            del queues[rank]
        ledger.append(run.run_id, f"rank{rank}", batch)


def _metric_events(rng: random.Random) -> list[tuple[int, Event]]:
    out: list[tuple[int, Event]] = []
    seq = dict.fromkeys(range(RANKS), 0)
    for s in range(STEPS):
        for r in range(RANKS):
            seq[r] += 1
            # Few distinct values, so that minima and maxima tie across steps and batches.
            rec: dict[str, Any] = {"step": s, "rank": r, "loss": rng.choice([0.5, 1.0, 1.5, 2.0])}
            if rng.random() < 0.7:
                rec["grad_norm"] = [rng.choice([1.25, 2.5, 3.75])]
            if rng.random() < 0.5:
                rec["timing"] = {"step": rng.choice([0.25, 0.5]), "forward": 0.125}
            out.append((r, Event(seq[r], "step", rec, rank=r)))
            if r == 1 and s % 7 == 0:
                seq[r] += 1
                timing = {"step": s, "backward": rng.choice([0.75, 1.25]), "optimizer": 0.5}
                out.append((r, Event(seq[r], "timing", timing, rank=r)))
    # A rank that resends an old step much later (a new seq: a new entry).
    seq[3] += 1
    out.append((3, Event(seq[3], "step", {"step": 5, "loss": 9.0}, rank=3)))
    return out


def _recompute_rollups(storage: SqlStorage, run_id: str) -> dict[tuple[int, int, int], list[Any]]:
    """(width, bucket, rank) -> [first_idx, last_idx, per metric n, lo, slo, hi, shi] from the
    entries: the minimum and maximum of each metric with the earliest step holding them."""
    vals: dict[tuple[int, int, int], dict[str, list[tuple[float, int]]]] = {}
    idx: dict[tuple[int, int, int], list[int]] = {}
    for e in storage.iter_entries():
        if e.run != run_id:
            continue
        _, rec, rank, _ = parse_entry(e.entry)
        step, values = metric_values(e.kind, rec)
        if step is None or not values:
            continue
        for w in WIDTHS:
            key = (w, step // w, rank if rank is not None else 0)
            idx.setdefault(key, []).append(e.index)
            for m, v in values:
                vals.setdefault(key, {}).setdefault(m, []).append((v, step))
    out: dict[tuple[int, int, int], list[Any]] = {}
    for key, at in idx.items():
        row: list[Any] = [min(at), max(at)]
        for m in METRICS:
            got = vals[key].get(m)
            if not got:
                row += [0, None, None, None, None]
                continue
            lo = min(v for v, _ in got)
            hi = max(v for v, _ in got)
            row += [len(got), lo, min(s for v, s in got if v == lo)]
            row += [hi, min(s for v, s in got if v == hi)]
        out[key] = row
    return out


def _stored_rollups(storage: SqlStorage, run_id: str) -> dict[tuple[int, int, int], list[Any]]:
    cols = ", ".join(rollup_columns())
    rows = storage._read(
        storage._q(
            f"SELECT width, bucket, rank, first_idx, last_idx, {cols} FROM tw_buckets "  # noqa: S608 - constant column names
            "WHERE run_id = ?"
        ),
        (run_id,),
    )
    return {(int(r[0]), int(r[1]), int(r[2])): list(r[3:]) for r in rows}


def test_rollup_rows_equal_a_recompute_from_the_entries(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger()
    run = _run(ledger, "run_rows")
    _write_interleaved(ledger, run, _metric_events(random.Random(1)))  # noqa: S311 - test data
    # A second run in the same log keeps its own rows.
    other = _run(ledger, "run_other")
    ledger.append(other.run_id, "w", [Event(1, "step", {"step": 3, "loss": 100.0}, rank=0)])
    storage = ledger.storage
    assert isinstance(storage, SqlStorage)
    want = _recompute_rollups(storage, run.run_id)
    got = _stored_rollups(storage, run.run_id)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    assert _stored_rollups(storage, other.run_id) == _recompute_rollups(storage, other.run_id)


def _fingerprint_events(rng: random.Random) -> list[tuple[int, Event]]:
    out: list[tuple[int, Event]] = []
    for s in range(60):
        for r in range(RANKS):
            h = s
            if r == 4 and s >= 20:
                h = s + 1000  # diverged from step 20 on
            if s % 11 == 0 and r < 3:
                h = s + 2000  # 3 of 5 agree on another fingerprint: ranks 3 and 4 disagree
            if s == 33:
                h = s + 10 * r  # no two agree: every rank disagrees
            if s == 40 and r in (0, 1):
                h = s + 3000  # 2-2-1: no majority
            out.append((r, Event(s * RANKS + r + 1, "step", {"step": s, "weights_hash": f"{h:x}"})))
            if r == 4 and s in (50, 51):
                # The diverged rank repeats its report: 7 reports against the others' 4, but it
                # is still one rank against four.
                for _ in range(6):
                    out.append((r, Event(0, "step", {"step": s, "weights_hash": f"{h:x}"})))
            if r == 1 and s == 56:
                # Two fingerprints for one step from one rank: it disagrees with itself.
                out.append((r, Event(0, "step", {"step": s, "weights_hash": f"{s + 5000:x}"})))
    # Every rank's writer sends its reports in its own batches, so a step's tally grows over
    # several transactions and its majority can change on the way.
    rng.shuffle(out)
    by_rank: dict[int, list[Event]] = {}
    for r, ev in out:
        by_rank.setdefault(r, []).append(ev)
    return [
        (r, Event(i + 1, ev.kind, ev.record, rank=r))
        for r, evs in by_rank.items()
        for i, ev in enumerate(evs)
    ]


def _recompute_disagreement(storage: SqlStorage, run_id: str) -> tuple[int, dict[int, list[int]]]:
    """(steps with a fingerprint, rank -> steps where it disagreed) from the entries: a rank that
    reported two fingerprints for a step disagrees and does not vote; the others each vote once
    and disagree unless they hold the fingerprint more than half of the voters hold."""
    held: dict[int, dict[int, set[int]]] = {}
    for e in storage.iter_entries():
        if e.run != run_id or e.kind != "step":
            continue
        _, rec, rank, _ = parse_entry(e.entry)
        step, _ = metric_values(e.kind, rec)
        h = fingerprint_value(rec)
        if step is None or h is None:
            continue
        held.setdefault(step, {}).setdefault(rank if rank is not None else 0, set()).add(h)
    bad: dict[int, list[int]] = {}
    for step, by_rank in sorted(held.items()):
        if len(set().union(*by_rank.values())) < 2:
            continue
        voters = [qs for qs in by_rank.values() if len(qs) == 1]
        for r, hs in sorted(by_rank.items()):
            if len(hs) > 1 or voters.count(hs) * 2 <= len(voters):
                bad.setdefault(r, []).append(step)
    return len(held), bad


def test_fingerprint_disagreements_kept_at_ingest_equal_a_recompute(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger()
    run = _run(ledger, "run_fp")
    _write_interleaved(ledger, run, _fingerprint_events(random.Random(2)))  # noqa: S311 - test data
    storage = ledger.storage
    assert isinstance(storage, SqlStorage)
    steps, bad = _recompute_disagreement(storage, run.run_id)
    got_steps, per_rank = storage.fingerprint_tally(run.run_id)
    assert got_steps == steps == 60
    assert sorted(per_rank) == sorted((r, s[0], len(s)) for r, s in bad.items())
    stored = storage._read(
        storage._q("SELECT rank, step FROM tw_fp_bad WHERE run_id = ?"), (run.run_id,)
    )
    assert sorted((int(r), int(s)) for r, s in stored) == sorted(
        (r, s) for r, ss in bad.items() for s in ss
    )
    # The cases the events were built for.
    assert bad[4][0] == 0 and 20 in bad[4] and 19 not in bad[4]
    assert all(33 in bad[r] and 40 in bad[r] for r in range(RANKS))
    assert 11 in bad[3] and 11 not in bad.get(0, [])
    assert 50 in bad[4] and 51 in bad[4] and 50 not in bad[0] and 51 not in bad[3]
    assert 56 in bad[1] and 56 not in bad[0] and 56 not in bad.get(2, [])
