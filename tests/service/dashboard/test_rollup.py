"""The run page's plots from the derived rollups, over real SQLite and PostgreSQL ledgers: every
alert point and every bucket's minimum and maximum kept exactly, the same page data from both
backends, and rollups that an insider edits change only the plots the page calls unverified."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from trainwarden.ledger._checkpoint import load_or_create_signer
from trainwarden.ledger._log import Ledger
from trainwarden.ledger._merkle import ProofError, leaf_hash, verify_inclusion
from trainwarden.ledger._storage import open_storage
from trainwarden.ledger._types import Event, RunInfo
from trainwarden.service._dashboard.model import RunsModel
from trainwarden.service._dashboard.routes import render_run_page

RANKS = 3
STEPS = 100
ALERTS = (37, 70)


def _value(step: int, rank: int) -> float:
    # Quarters: exact in binary and in six significant digits, so the page shows them as is.
    return ((step * 37 + rank * 11) % 50) * 0.25


def _events() -> list[Event]:
    out: list[Event] = []
    seq = 0
    for s in range(STEPS):
        for r in range(RANKS):
            seq += 1
            h = f"{s:x}" if not (r == 2 and s >= 80) else f"{s + 999:x}"
            rec = {"step": s, "rank": r, "loss": _value(s, r), "weights_hash": h}
            out.append(Event(seq, "step", rec, rank=r, host=f"n{r}"))
        if s in ALERTS:
            seq += 1
            alert = {"rule_id": "TWM-X", "severity": "HIGH", "step": s, "rank": 1, "message": "x"}
            out.append(Event(seq, "alert", alert, rank=1, host="n1"))
    return out


def _ledger(url: str, tmp_path: Path) -> Ledger:
    return Ledger(open_storage(url), load_or_create_signer(tmp_path / "keys", "test/log"))


def _write(ledger: Ledger, batch: int = 7) -> RunInfo:
    run = RunInfo("run_roll", "roll", 1000.0, 60.0, RANKS, "open", {"owner": "bob"})
    ledger.storage.create_run(run)
    evs = _events()
    # Small batches: the rollup rows of one bucket are merged across transactions.
    for i in range(0, len(evs), batch):
        ledger.append(run.run_id, "w", evs[i : i + batch])
    ledger.checkpoint()
    return run


def _pg_url(dsn: str) -> str:
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}"


@pytest.mark.parametrize(("buckets", "width"), [(4, 64), (8, 16)])
def test_rollup_plots_keep_every_alert_point_and_each_buckets_envelope(
    tmp_path: Path, buckets: int, width: int
) -> None:
    ledger = _ledger(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    run = _write(ledger)
    plots, _ = RunsModel(ledger.storage).index(run).plots(buckets=buckets, exact_limit=0)
    assert plots["source"] == "rollup"
    loss = plots["metrics"]["loss"]
    assert loss["ranks"] == list(range(RANKS))
    assert loss["points"] == STEPS
    x = loss["x"]
    assert x == sorted(x)
    # The finest level with at most ``buckets`` buckets is ``width`` steps wide.
    starts = range(0, STEPS, width)
    assert len(x) == 2 * len(starts) + len(ALERTS)
    for s in ALERTS:
        # Each alert step is a slot of its own carrying every rank's exact value.
        i = max(i for i in range(len(x)) if x[i] == s)
        assert [loss["y"][r][i] for r in range(RANKS)] == [_value(s, r) for r in range(RANKS)]
    for b0 in starts:
        b = range(b0, min(b0 + width, STEPS))
        # Where each rank had its minimum and maximum (the earliest step on a tie).
        ext = {}
        for r in range(RANKS):
            smin = min(b, key=lambda s: (_value(s, r), s))
            smax = min(b, key=lambda s: (-_value(s, r), s))
            ext[r] = (smin, smax)
        lo = min(min(e) for e in ext.values())
        hi = max(max(e) for e in ext.values())
        # The bucket's two slots sit at those steps, before an alert slot at the same step.
        i_lo = x.index(lo)
        i_hi = x.index(hi, i_lo + 1) if hi == lo else x.index(hi)
        for r, (smin, smax) in ext.items():
            vmin, vmax = _value(smin, r), _value(smax, r)
            got = (loss["y"][r][i_lo], loss["y"][r][i_hi])
            # The rank's minimum and maximum of the bucket, in the order they occurred.
            assert got == ((vmin, vmax) if smin <= smax else (vmax, vmin)), (b0, r)


def test_rollup_plots_merge_sparse_steps_down_to_the_bucket_limit(tmp_path: Path) -> None:
    ledger = _ledger(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    run = RunInfo("run_sparse", "sparse", 1000.0, 60.0, 1, "open", {})
    ledger.storage.create_run(run)
    steps = [i * 10**9 for i in range(40)] + [10**15]
    evs = [Event(i + 1, "step", {"step": s, "loss": float(i)}, rank=0) for i, s in enumerate(steps)]
    ledger.append(run.run_id, "w", evs)
    loss = (
        RunsModel(ledger.storage).index(run).plots(buckets=5, exact_limit=0)[0]["metrics"]["loss"]
    )
    # 41 far-apart steps are 41 buckets at every width; merged into 5 groups of 9 (the last 5).
    assert len(loss["x"]) == 10
    assert loss["y"][0] == [0.0, 8.0, 9.0, 17.0, 18.0, 26.0, 27.0, 35.0, 36.0, 40.0]
    assert loss["x"][-1] == 10**15


def _page_data(url: str, tmp_path: Path) -> list[Any]:
    ledger = _ledger(url, tmp_path)
    try:
        run = _write(ledger)
        model = RunsModel(ledger.storage)
        idx = model.index(run)
        s = model.summaries()[0]
        summary = (s.status, s.hosts, s.ranks, s.latest_step, s.counts, s.entries, s.started)
        timeline = [(t.index, t.rule_id, t.step, t.rank) for t in idx.timeline]
        rolled = idx.plots(buckets=4, exact_limit=0)[0]
        exact = idx.plots()[0]
        return [summary, timeline, rolled, exact]
    finally:
        ledger.storage.close()


def test_postgresql_and_sqlite_give_the_same_page_data(tmp_path: Path, pg_dsn: str) -> None:
    lite = _page_data(f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "a")
    pg = _page_data(_pg_url(pg_dsn), tmp_path / "b")
    assert lite == pg
    summary, _, rolled, exact = lite
    assert summary[0] == "tampering detected" and summary[5] == STEPS * RANKS + len(ALERTS)
    assert rolled["source"] == "rollup" and exact["source"] == "entries"
    # Both paths find the rank whose weights diverged, from the same step.
    want = [{"rank": 2, "from_step": 80, "steps": 20}]
    assert rolled["fingerprint"]["diverged"] == exact["fingerprint"]["diverged"] == want
    assert rolled["fingerprint"]["ranks"] == exact["fingerprint"]["ranks"] == RANKS


def test_a_ledger_written_before_the_rollups_is_derived_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    ledger = _ledger(f"sqlite:///{db}", tmp_path)
    run = _write(ledger)
    want = RunsModel(ledger.storage).index(run).plots(buckets=4, exact_limit=0)[0]
    ledger.storage.close()
    tables = ("tw_buckets", "tw_run_stats", "tw_run_sets", "tw_fp", "tw_fp_bad", "tw_fp_rank")
    with sqlite3.connect(db) as conn:
        for t in (*tables, "tw_derived_version"):
            conn.execute(f"DROP TABLE {t}")
    conn.close()
    again = _ledger(f"sqlite:///{db}", tmp_path)
    assert RunsModel(again.storage).index(run).plots(buckets=4, exact_limit=0)[0] == want
    again.storage.close()


def test_derived_tables_of_an_older_layout_are_derived_again_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    ledger = _ledger(f"sqlite:///{db}", tmp_path)
    run = _write(ledger)
    want = RunsModel(ledger.storage).index(run).plots(buckets=4, exact_limit=0)[0]
    ledger.storage.close()
    # The first layout: one rollup row per metric, a marker table without a version, and
    # stale rows that must not survive.
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE tw_derived_version")
        conn.execute("DELETE FROM tw_buckets")
        conn.execute("UPDATE tw_run_stats SET entries = 1")
        conn.execute("CREATE TABLE tw_derived (id INTEGER PRIMARY KEY, upto BIGINT NOT NULL)")
        conn.execute("INSERT INTO tw_derived VALUES (1, 1000000)")
        conn.execute("CREATE TABLE tw_rollup (run_id TEXT, metric TEXT, n BIGINT)")
    conn.close()
    again = _ledger(f"sqlite:///{db}", tmp_path)
    assert RunsModel(again.storage).index(run).plots(buckets=4, exact_limit=0)[0] == want
    raw = again.storage.raw()  # type: ignore[attr-defined]
    names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not names & {"tw_derived", "tw_rollup"}
    assert raw.execute("SELECT entries FROM tw_run_stats").fetchone()[0] == STEPS * RANKS + 2
    again.storage.close()


def test_an_edited_rollup_changes_only_the_plots_the_page_calls_unverified(
    tmp_path: Path,
) -> None:
    db = tmp_path / "l.db"
    ledger = _ledger(f"sqlite:///{db}", tmp_path)
    run = _write(ledger)
    alert_idx = next(t.index for t in RunsModel(ledger.storage).index(run).timeline)
    # The insider rewrites the alert's row and makes the derived tables agree with the story.
    with sqlite3.connect(db) as conn:
        (body,) = conn.execute(
            "SELECT entry FROM tw_entries WHERE idx = ?", (alert_idx,)
        ).fetchone()
        conn.execute(
            "UPDATE tw_entries SET entry = ? WHERE idx = ?",
            (bytes(body).replace(b'"HIGH"', b'"INFO"'), alert_idx),
        )
        conn.execute("UPDATE tw_buckets SET loss_hi = 1000000.0 WHERE rank = 0")
        conn.execute("DELETE FROM tw_fp_rank")
    conn.close()
    model = RunsModel(open_storage(f"sqlite:///{db}"))
    idx = model.index(run)
    html = render_run_page(idx)
    plots = idx.plots(exact_limit=0)[0]
    # The plots do read the edited rollups ...
    assert 1_000_000.0 in plots["metrics"]["loss"]["y"][0]
    assert plots["fingerprint"]["diverged"] == []
    # ... and the page says they are unverified plot data.
    assert "Unverified plot data" in html
    # The rewritten alert's bytes, the ones the page's proof endpoint serves, do not lead to
    # the signed root: the browser's mark is NOT VERIFIED, whatever the rollups say.
    cp = ledger.latest_checkpoint()
    assert cp is not None
    size, proof = ledger.inclusion_proof(alert_idx, cp.size)
    (row,) = model.storage.entries(alert_idx, alert_idx + 1)
    with pytest.raises(ProofError):
        verify_inclusion(alert_idx, size, leaf_hash(row.entry), proof, cp.root)
    # The untouched entries still verify: the edit of the derived tables touched no leaf.
    (other,) = model.storage.entries(0, 1)
    size, proof = ledger.inclusion_proof(0, cp.size)
    verify_inclusion(0, size, leaf_hash(other.entry), proof, cp.root)
    model.storage.close()
    ledger.storage.close()


def test_the_runs_list_reads_counters_not_entries(tmp_path: Path) -> None:
    ledger = _ledger(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    run = _write(ledger)
    model = RunsModel(ledger.storage)
    (s,) = model.summaries()
    assert (s.hosts, s.ranks, s.latest_step) == (("n0", "n1", "n2"), (0, 1, 2), STEPS - 1)
    assert s.counts["HIGH"] == len(ALERTS)
    # The run's index holds only the entries other than step records.
    assert model.index(run).entries == len(ALERTS)
    ledger.append(run.run_id, "w", [Event(10_000, "step", {"step": 500, "loss": 1.0}, rank=7)])
    (s,) = model.summaries()
    assert s.latest_step == 500 and 7 in s.ranks and s.entries == STEPS * RANKS + 3


def test_a_wrapped_record_with_out_of_range_numbers_is_stored_and_shown(tmp_path: Path) -> None:
    ledger = _ledger(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    run = RunInfo("run_big", "big", 1000.0, 60.0, 1, "open", {})
    ledger.storage.create_run(run)
    big = 10**30
    text = f'{{"step": {big}, "rank": {big}, "loss": 1.5, "weights_hash": "{"f" * 40}"}}'
    # An integer no float can hold, where the plots expect a number.
    huge = text.replace('"loss": 1.5', f'"loss": {10**400}').replace(f"{big}", "4")
    evs = [
        Event(1, "step", {"noncanonical": text}),
        Event(2, "step", {"step": 3, "rank": -5, "loss": 2.5}),
        Event(3, "alert", {"noncanonical": text.replace("loss", "severity")}),
        Event(4, "step", {"noncanonical": huge}),
    ]
    # Derived rows never make the log refuse an entry.
    assert ledger.append(run.run_id, "w", evs).new == 4
    idx = RunsModel(ledger.storage).index(run)
    for exact_limit in (0, 4000):
        loss = idx.plots(exact_limit=exact_limit)[0]["metrics"]["loss"]
        assert 3 in loss["x"] and loss["ranks"] == [0] and loss["y"][0][-1] == 2.5
    assert idx.summary().entries == 4
    assert "big" in render_run_page(idx)


@pytest.mark.parametrize(("buckets", "last_step"), [(8, 120), (4, 300)])
def test_plots_after_new_entries_equal_a_fresh_read(
    tmp_path: Path, buckets: int, last_step: int
) -> None:
    """The plots re-read only the rollup rows new entries changed; they must equal what a
    fresh model reads from scratch (the same bucket width, or a coarser one once the run has
    grown past the bucket limit)."""
    ledger = _ledger(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    run = _write(ledger)
    model = RunsModel(ledger.storage)
    before = model.index(run).plots(buckets=buckets, exact_limit=0)[0]
    seq = 10_000
    evs: list[Event] = []
    # A new extreme inside an old bucket, a new alert at an old step, and new steps.
    evs.append(Event(seq, "step", {"step": 50, "rank": 1, "loss": 99.0}, rank=1))
    alert = {"rule_id": "TWM-Y", "severity": "HIGH", "step": 50, "rank": 1, "message": "y"}
    evs.append(Event(seq + 1, "alert", alert, rank=1))
    seq += 2
    for s in range(STEPS, last_step):
        for r in range(RANKS):
            evs.append(Event(seq, "step", {"step": s, "rank": r, "loss": _value(s, r)}, rank=r))
            seq += 1
    for i in range(0, len(evs), 50):
        ledger.append(run.run_id, "w", evs[i : i + 50])
    # Count the rollup rows each read returns (the storage itself is the real one).
    storage = ledger.storage
    real_rollup = storage.rollup
    got: list[int] = []

    def rollup(run_id: str, width: int, since: int = -1) -> list[tuple[Any, ...]]:
        rows = real_rollup(run_id, width, since)
        got.append(len(rows))
        return rows

    storage.rollup = rollup  # type: ignore[method-assign]
    after = model.index(run).plots(buckets=buckets, exact_limit=0)[0]
    incremental = sum(got)
    fresh = RunsModel(storage).index(run).plots(buckets=buckets, exact_limit=0)[0]
    assert after == fresh
    assert after != before
    if buckets == 8:
        # The same width: only the rows of the changed buckets came back (one old bucket of
        # rank 1, two new buckets of every rank), not all of them.
        assert incremental == 1 + 2 * RANKS < got[-1]
    loss = after["metrics"]["loss"]
    assert 99.0 in loss["y"][1] and loss["x"][-1] >= last_step - 16
    # The new alert's step carries every rank's exact value at that step.
    i = max(i for i, x in enumerate(loss["x"]) if x == 50)
    assert [loss["y"][r][i] for r in range(RANKS)] == [_value(50, 0), 99.0, _value(50, 2)]
