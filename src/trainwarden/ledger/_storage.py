"""The storage interface every backend implements, and the SQL both real backends share.

Appends are sequenced inside one database transaction per batch that holds the log head's lock,
so several servers sharing one database never assign the same index twice or fork the tree."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trainwarden.ledger._rollup import (
    FINEST,
    METRIC_COLUMNS,
    METRICS,
    Derived,
    disagreeing,
    rank_list,
    rollup_columns,
)
from trainwarden.ledger._types import (
    SERVICE_WRITER,
    AppendResult,
    LedgerError,
    Role,
    RunInfo,
    StoredEntry,
    TokenInfo,
)

__all__ = [
    "CheckpointRow",
    "PendingEntry",
    "RunStats",
    "Sealer",
    "SqlStorage",
    "Storage",
    "open_storage",
]


@dataclass(frozen=True)
class PendingEntry:
    """An event validated and canonicalised outside the transaction, waiting for its index."""

    run: str
    writer: str
    seq: int | None
    kind: str
    fields: dict[str, bytes]


@dataclass(frozen=True)
class CheckpointRow:
    seq: int
    size: int
    root: bytes
    note: str
    issued: float


@dataclass(frozen=True)
class RunStats:
    """Derived counters of one run (see :mod:`trainwarden.ledger._rollup`): never verified."""

    entries: int
    first_ts: float | None
    latest_step: int | None
    hosts: tuple[str, ...]
    ranks: tuple[int, ...]
    fp_ranks: tuple[int, ...]


# Given the index a pending entry receives, return (entry bytes, leaf hash, mac).
Sealer = Callable[[int, PendingEntry], tuple[bytes, bytes, bytes]]


class Storage(Protocol):
    """What the log needs from a database. Implementations must be safe to call from several
    threads; ``append`` is atomic (all of a batch or nothing)."""

    url: str

    def append(self, batch: Sequence[PendingEntry], seal: Sealer) -> AppendResult: ...

    def size(self) -> int: ...

    def run_bytes(self, run_id: str) -> int: ...

    def leaf_hashes(self, start: int, end: int) -> list[bytes]: ...

    def entries(self, start: int, end: int) -> list[StoredEntry]: ...

    def iter_entries(self, chunk: int = 5000) -> Iterator[StoredEntry]: ...

    def query(
        self,
        *,
        run: str | None,
        kind: str | None,
        writer: str | None,
        after: int,
        limit: int,
    ) -> list[StoredEntry]: ...

    def add_checkpoint(self, size: int, root: bytes, note: str, issued: float) -> bool: ...

    def checkpoints(self, after: int = 0, limit: int = 2**62) -> list[CheckpointRow]: ...

    def latest_checkpoint(self) -> CheckpointRow | None: ...

    def create_run(self, run: RunInfo) -> None: ...

    def get_run(self, run_id: str) -> RunInfo | None: ...

    def list_runs(self) -> list[RunInfo]: ...

    def set_run_status(self, run_id: str, status: str) -> None: ...

    def add_token(self, token: TokenInfo) -> None: ...

    def find_token(self, token_hash: bytes) -> TokenInfo | None: ...

    def revoke_token(self, token_id: str) -> bool: ...

    def list_tokens(self) -> list[TokenInfo]: ...

    # Derived data (trainwarden.ledger._rollup), for the dashboard; never verified.

    def run_stats(self, run_id: str) -> RunStats | None: ...

    def notes(self, run_id: str, after: int, limit: int) -> list[StoredEntry]: ...

    def metric_entries(self, run_id: str, start: int, end: int) -> list[tuple[str, bytes]]: ...

    def rollup_buckets(self, run_id: str, width: int, cap: int) -> int: ...

    def rollup(self, run_id: str, width: int, since: int = -1) -> list[tuple[Any, ...]]: ...

    def rollup_spans(self, run_id: str, buckets: Sequence[int]) -> list[tuple[int, int]]: ...

    def fingerprint_tally(self, run_id: str) -> tuple[int, list[tuple[int, int, int]]]: ...

    def close(self) -> None: ...


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tw_head (id INTEGER PRIMARY KEY, size BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tw_entries (
        idx BIGINT PRIMARY KEY, run_id TEXT NOT NULL, writer TEXT NOT NULL, seq BIGINT,
        kind TEXT NOT NULL, entry {blob} NOT NULL, leaf_hash {blob} NOT NULL, mac {blob} NOT NULL,
        UNIQUE (run_id, writer, seq))""",
    """CREATE INDEX IF NOT EXISTS tw_entries_kind ON tw_entries (kind, idx)""",
    # Derived data for the dashboard (trainwarden.ledger._rollup), written in the transaction
    # of the entries it comes from; never read by verification.
    """CREATE INDEX IF NOT EXISTS tw_entries_notes ON tw_entries (run_id, idx)
        WHERE kind <> 'step' AND kind <> 'timing'""",
    """CREATE TABLE IF NOT EXISTS tw_run_stats (
        run_id TEXT PRIMARY KEY, entries BIGINT NOT NULL, first_ts DOUBLE PRECISION,
        latest_step BIGINT, fp_steps BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tw_run_sets (
        run_id TEXT NOT NULL, what TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (run_id, what, value))""",
    """CREATE TABLE IF NOT EXISTS tw_buckets (
        run_id TEXT NOT NULL, width BIGINT NOT NULL, bucket BIGINT NOT NULL, rank BIGINT NOT NULL,
        first_idx BIGINT NOT NULL, last_idx BIGINT NOT NULL, {metric_columns},
        PRIMARY KEY (run_id, width, bucket, rank))""",
    """CREATE TABLE IF NOT EXISTS tw_fp (
        run_id TEXT NOT NULL, step BIGINT NOT NULL, hash BIGINT NOT NULL, n BIGINT NOT NULL,
        ranks TEXT NOT NULL, PRIMARY KEY (run_id, step, hash))""",
    # The steps where a rank's fingerprint disagreed with its step's majority, kept up to date
    # as a step's reports arrive, and per rank how many there are and the first.
    """CREATE TABLE IF NOT EXISTS tw_fp_bad (
        run_id TEXT NOT NULL, rank BIGINT NOT NULL, step BIGINT NOT NULL,
        PRIMARY KEY (run_id, rank, step))""",
    """CREATE TABLE IF NOT EXISTS tw_fp_rank (
        run_id TEXT NOT NULL, rank BIGINT NOT NULL, steps BIGINT NOT NULL,
        from_step BIGINT NOT NULL, PRIMARY KEY (run_id, rank))""",
    """CREATE TABLE IF NOT EXISTS tw_checkpoints (
        seq {serial} PRIMARY KEY, size BIGINT NOT NULL, root {blob} NOT NULL,
        note TEXT NOT NULL, issued DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tw_runs (
        run_id TEXT PRIMARY KEY, name TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        interval_s DOUBLE PRECISION NOT NULL, ranks INTEGER NOT NULL, status TEXT NOT NULL,
        meta TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tw_tokens (
        token_id TEXT PRIMARY KEY, token_hash {blob} NOT NULL UNIQUE, role TEXT NOT NULL,
        run_id TEXT, created DOUBLE PRECISION NOT NULL, revoked INTEGER NOT NULL,
        rank_first BIGINT, rank_last BIGINT)""",
]

_ENTRY_COLS = "idx, run_id, writer, seq, kind, entry, leaf_hash, mac"
_NOTES = "kind <> 'step' AND kind <> 'timing'"
# Derived tables are dropped and derived again from the entries when this version changes
# (their layout is no promise to anyone: nothing but the dashboard reads them).
DERIVED_VERSION = 3
_DERIVED_TABLES = (
    "tw_derived",
    "tw_rollup",
    "tw_buckets",
    "tw_fp",
    "tw_fp_bad",
    "tw_fp_rank",
    "tw_run_stats",
    "tw_run_sets",
)
_COLUMN_TYPES = {
    "n": "BIGINT NOT NULL",
    "lo": "DOUBLE PRECISION",
    "slo": "BIGINT",
    "hi": "DOUBLE PRECISION",
    "shi": "BIGINT",
}
_METRIC_DDL = ", ".join(f"{m}_{c} {_COLUMN_TYPES[c]}" for m in METRICS for c in METRIC_COLUMNS)
_ROLLUP_COLS = "first_idx, last_idx, " + ", ".join(rollup_columns())


_ROLLUP_READ = [
    f"CASE WHEN {m}_lo IS NULL OR {m}_slo IS NULL OR {m}_hi IS NULL OR {m}_shi IS NULL "
    f"THEN 0 ELSE {m}_n END, COALESCE({m}_lo, 0), COALESCE({m}_slo, 0), "
    f"COALESCE({m}_hi, 0), COALESCE({m}_shi, 0)"
    for m in METRICS
]


def _metric_upsert(m: str) -> str:
    t = "tw_buckets"
    lo, hi = f"{m}_lo", f"{m}_hi"
    # An absent metric has NULL bounds: NULL < x is not true, so the present side wins. On
    # equal values the earlier step wins, whatever order the entries arrived in.
    take_lo = (
        f"excluded.{lo} < {t}.{lo} OR {t}.{lo} IS NULL OR "
        f"(excluded.{lo} = {t}.{lo} AND excluded.{m}_slo < {t}.{m}_slo)"
    )
    take_hi = (
        f"excluded.{hi} > {t}.{hi} OR {t}.{hi} IS NULL OR "
        f"(excluded.{hi} = {t}.{hi} AND excluded.{m}_shi < {t}.{m}_shi)"
    )
    return (
        f"{m}_n = {t}.{m}_n + excluded.{m}_n, "
        f"{lo} = CASE WHEN {take_lo} THEN excluded.{lo} ELSE {t}.{lo} END, "
        f"{m}_slo = CASE WHEN {take_lo} THEN excluded.{m}_slo ELSE {t}.{m}_slo END, "
        f"{hi} = CASE WHEN {take_hi} THEN excluded.{hi} ELSE {t}.{hi} END, "
        f"{m}_shi = CASE WHEN {take_hi} THEN excluded.{m}_shi ELSE {t}.{m}_shi END"
    )


_UPSERT_STATS = """INSERT INTO tw_run_stats (run_id, entries, first_ts, latest_step, fp_steps)
    VALUES (?,?,?,?,?) ON CONFLICT (run_id) DO UPDATE SET
    entries = tw_run_stats.entries + excluded.entries,
    fp_steps = tw_run_stats.fp_steps + excluded.fp_steps,
    first_ts = CASE WHEN tw_run_stats.first_ts IS NULL
        OR excluded.first_ts < tw_run_stats.first_ts THEN excluded.first_ts
        ELSE tw_run_stats.first_ts END,
    latest_step = CASE WHEN tw_run_stats.latest_step IS NULL
        OR excluded.latest_step > tw_run_stats.latest_step THEN excluded.latest_step
        ELSE tw_run_stats.latest_step END"""
_UPSERT_SETS = """INSERT INTO tw_run_sets (run_id, what, value) VALUES (?,?,?)
    ON CONFLICT (run_id, what, value) DO NOTHING"""
_UPSERT_ROLLUP = (
    f"INSERT INTO tw_buckets (run_id, width, bucket, rank, {_ROLLUP_COLS}) VALUES ("  # noqa: S608 - constant column names only; values are bound parameters
    + ",".join("?" * (4 + len(rollup_columns()) + 2))
    + ") ON CONFLICT (run_id, width, bucket, rank) DO UPDATE SET "
    "first_idx = CASE WHEN excluded.first_idx < tw_buckets.first_idx THEN excluded.first_idx "
    "ELSE tw_buckets.first_idx END, "
    "last_idx = CASE WHEN excluded.last_idx > tw_buckets.last_idx THEN excluded.last_idx "
    "ELSE tw_buckets.last_idx END, " + ", ".join(_metric_upsert(m) for m in METRICS)
)
_UPSERT_FP = """INSERT INTO tw_fp (run_id, step, hash, n, ranks) VALUES (?,?,?,?,?)
    ON CONFLICT (run_id, step, hash) DO UPDATE SET n = excluded.n, ranks = excluded.ranks"""
_UPSERT_FP_RANK = """INSERT INTO tw_fp_rank (run_id, rank, steps, from_step) VALUES (?,?,?,?)
    ON CONFLICT (run_id, rank) DO UPDATE SET steps = excluded.steps,
    from_step = excluded.from_step"""


def _entry(row: Sequence[Any]) -> StoredEntry:
    return StoredEntry(
        index=int(row[0]),
        run=str(row[1]),
        writer=str(row[2]),
        seq=None if row[3] is None else int(row[3]),
        kind=str(row[4]),
        entry=bytes(row[5]),
        leaf_hash=bytes(row[6]),
        mac=bytes(row[7]),
    )


# Verification reads rows an attacker may have edited by hand, and SQLite keeps whatever type
# was written into a column: what verification reads is converted without trusting the type.
# A value of the wrong type becomes one that cannot match (and is reported as a mismatch).


def _as_int(x: Any, default: int = -1) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else default


def _as_bytes(x: Any) -> bytes:
    if isinstance(x, bytes | bytearray | memoryview):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8", "surrogatepass")
    return b""


def _as_text(x: Any) -> str:
    if isinstance(x, bytes | bytearray | memoryview):
        return bytes(x).decode("utf-8", "replace")
    return str(x)


def _stored_entry(row: Sequence[Any]) -> StoredEntry:
    """A row as verification sees it (see :func:`_as_int`): never an error."""
    idx = row[0]
    problem = None
    if not isinstance(idx, int) or isinstance(idx, bool):
        problem = (
            f"a row's index column holds {_as_text(idx)[:60]!r} ({type(idx).__name__}), not an"
            " integer: the database was edited by hand"
        )
    return StoredEntry(
        index=_as_int(idx),
        run=_as_text(row[1]),
        writer=_as_text(row[2]),
        seq=None if row[3] is None else _as_int(row[3]),
        kind=_as_text(row[4]),
        entry=_as_bytes(row[5]),
        leaf_hash=_as_bytes(row[6]),
        mac=_as_bytes(row[7]),
        problem=problem,
    )


def _run(row: Sequence[Any]) -> RunInfo:
    return RunInfo(
        run_id=row[0],
        name=row[1],
        created=float(row[2]),
        interval_s=float(row[3]),
        ranks=int(row[4]),
        status=row[5],
        meta=json.loads(row[6]),
    )


def _token(row: Sequence[Any]) -> TokenInfo:
    return TokenInfo(
        token_id=row[0],
        token_hash=bytes(row[1]),
        role=Role(row[2]),
        run_id=row[3],
        created=float(row[4]),
        revoked=bool(row[5]),
        ranks=None if row[6] is None else (int(row[6]), int(row[7])),
    )


class SqlStorage:
    """The SQL shared by the SQLite and PostgreSQL backends; subclasses supply the connection,
    the transaction that locks the head, and the parameter style."""

    url: str
    _blob = "BLOB"
    _serial = "INTEGER"
    # ALTER TABLE ... ADD COLUMN guard where the database has one (servers starting together).
    _if_missing = ""

    def _q(self, sql: str) -> str:
        return sql

    def _tx(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:  # pragma: no cover
        raise NotImplementedError

    def _schema(self) -> list[str]:
        return [
            s.format(blob=self._blob, serial=self._serial, metric_columns=_METRIC_DDL)
            for s in _SCHEMA
        ]

    def _create(self, cur: Any) -> None:
        """Create the schema inside the caller's transaction; derived tables of another
        version are dropped and derived again (see :meth:`catch_up_derived`)."""
        cur.execute(
            "CREATE TABLE IF NOT EXISTS tw_derived_version (id INTEGER PRIMARY KEY, "
            "version BIGINT NOT NULL, upto BIGINT NOT NULL)"
        )
        cur.execute("SELECT version FROM tw_derived_version WHERE id = 1")
        got = cur.fetchone()
        if got is None or _as_int(got[0]) != DERIVED_VERSION:
            for t in _DERIVED_TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {t}")
            cur.execute("DELETE FROM tw_derived_version")
            cur.execute(
                self._q("INSERT INTO tw_derived_version (id, version, upto) VALUES (1, ?, 0)"),
                (DERIVED_VERSION,),
            )
        for stmt in self._schema():
            cur.execute(stmt)
        # Tokens bound to ranks came later: a log created before gets the columns (NULL: a
        # token of the whole run, as every token was).
        cur.execute("SELECT * FROM tw_tokens WHERE 1 = 0")
        have = {d[0] for d in cur.description}
        for column in ("rank_first", "rank_last"):
            if column not in have:
                cur.execute(f"ALTER TABLE tw_tokens ADD COLUMN{self._if_missing} {column} BIGINT")
        cur.execute(
            self._q(
                "INSERT INTO tw_head (id, size) SELECT 1, 0 WHERE NOT EXISTS "
                "(SELECT 1 FROM tw_head WHERE id = 1)"
            )
        )

    # -- log -------------------------------------------------------------------------------

    def append(self, batch: Sequence[PendingEntry], seal: Sealer) -> AppendResult:
        with self._tx() as cur:
            cur.execute(self._lock_head_sql())
            (size,) = cur.fetchone()
            size = int(size)
            cur.execute("SELECT upto FROM tw_derived_version WHERE id = 1")
            got = cur.fetchone()
            # Derived rows follow the log in order; with a backlog (a log written before they
            # existed), catch_up_derived() brings them up to date instead.
            derived = Derived() if got is not None and int(got[0]) == size else None
            existing: dict[tuple[str, str, int], int] = {}
            gaps: list[tuple[int, int]] = []
            keyed = [p for p in batch if p.seq is not None]
            if keyed:
                run, writer = keyed[0].run, keyed[0].writer
                if any(p.run != run or p.writer != writer for p in keyed):
                    raise LedgerError("one batch carries the events of one run and one writer")
                seqs = [int(p.seq) for p in keyed if p.seq is not None]
                cur.execute(
                    self._q(
                        "SELECT seq, idx FROM tw_entries WHERE run_id = ? AND writer = ? "
                        "AND seq >= ? AND seq <= ?"
                    ),
                    (run, writer, min(seqs), max(seqs)),
                )
                for seq, idx in cur.fetchall():
                    existing[(run, writer, int(seq))] = int(idx)
                cur.execute(
                    self._q("SELECT MAX(seq) FROM tw_entries WHERE run_id = ? AND writer = ?"),
                    (run, writer),
                )
                row = cur.fetchone()
                last = 0 if row is None or row[0] is None else int(row[0])
            indices: list[int] = []
            rows: list[tuple[Any, ...]] = []
            seen: dict[tuple[str, str, int], int] = {}
            nxt = size
            for p in batch:
                if p.seq is not None:
                    key = (p.run, p.writer, p.seq)
                    if key in existing:
                        indices.append(existing[key])
                        continue
                    if key in seen:
                        indices.append(seen[key])
                        continue
                    if p.seq > last + 1:
                        gaps.append((last + 1, p.seq))
                    last = max(last, p.seq)
                entry, leaf, mac = seal(nxt, p)
                rows.append((nxt, p.run, p.writer, p.seq, p.kind, entry, leaf, mac))
                if derived is not None:
                    derived.add(nxt, p.run, p.kind, entry)
                if p.seq is not None:
                    seen[(p.run, p.writer, p.seq)] = nxt
                indices.append(nxt)
                nxt += 1
            if rows:
                cur.executemany(
                    self._q(f"INSERT INTO tw_entries ({_ENTRY_COLS}) VALUES (?,?,?,?,?,?,?,?)"),  # noqa: S608 - constant column names only; values are bound parameters
                    rows,
                )
                cur.execute(self._q("UPDATE tw_head SET size = ? WHERE id = 1"), (nxt,))
                if derived is not None:
                    self._write_derived(cur, derived, nxt)
        return AppendResult(
            indices=indices,
            new=len(rows),
            duplicates=len(batch) - len(rows),
            size=nxt,
            gaps=gaps,
            stored_bytes=sum(len(r[5]) for r in rows),
        )

    def _lock_head_sql(self) -> str:
        return "SELECT size FROM tw_head WHERE id = 1"

    # -- derived data (trainwarden.ledger._rollup) ------------------------------------------

    def _write_derived(self, cur: Any, d: Derived, upto: int) -> None:
        new_steps = self._write_fingerprints(cur, d) if d.fps else {}
        if d.stats:
            cur.executemany(
                self._q(_UPSERT_STATS),
                [(run, *st, new_steps.get(run, 0)) for run, st in sorted(d.stats.items())],
            )
        if d.sets:
            cur.executemany(self._q(_UPSERT_SETS), sorted(d.sets))
        if d.buckets:
            cur.executemany(self._q(_UPSERT_ROLLUP), list(d.rollup_rows()))
        cur.execute(self._q("UPDATE tw_derived_version SET upto = ? WHERE id = 1"), (upto,))

    def _write_fingerprints(self, cur: Any, d: Derived) -> dict[str, int]:
        """Merge the batch's fingerprint tallies into the stored ones, and keep the steps where
        each rank disagrees with its step's majority (and the per-rank count and first of
        them) in step: a step's verdict can change as its reports arrive. Returns, per run,
        how many steps got their first fingerprint."""
        by_run: dict[str, list[int]] = {}
        for run, step in d.fps:
            by_run.setdefault(run, []).append(step)
        new_steps: dict[str, int] = {}
        for run, steps in sorted(by_run.items()):
            steps.sort()
            old: dict[int, dict[int, list[Any]]] = {}
            for i in range(0, len(steps), 500):
                chunk = steps[i : i + 500]
                cur.execute(
                    self._q(
                        "SELECT step, hash, n, ranks FROM tw_fp WHERE run_id = ? AND step IN ("  # noqa: S608 - placeholders only; values are bound parameters
                        + ",".join("?" * len(chunk))
                        + ")"
                    ),
                    (run, *chunk),
                )
                for step, h, n, ranks in cur.fetchall():
                    old.setdefault(int(step), {})[int(h)] = [int(n), str(ranks)]
            upserts: list[tuple[Any, ...]] = []
            added: dict[int, list[int]] = {}
            removed: dict[int, list[int]] = {}
            for step in steps:
                before = old.get(step, {})
                after = {h: list(v) for h, v in before.items()}
                for h, (_, ranks) in d.fps[(run, step)].items():
                    # Each rank once per fingerprint, however often it reported it: a rank
                    # cannot make its fingerprint the majority by repeating it.
                    have = after.get(h)
                    known = rank_list(have[1]) if have is not None else []
                    seen = set(known)
                    known += [r for r in rank_list(ranks) if r not in seen]
                    if have is not None and len(known) == have[0]:
                        continue
                    after[h] = [len(known), ",".join(map(str, known))]
                    upserts.append((run, step, h, *after[h]))
                if len(after) < 2 and len(before) < 2:
                    continue
                bad0, bad1 = disagreeing(before), disagreeing(after)
                for r in bad1 - bad0:
                    added.setdefault(r, []).append(step)
                for r in bad0 - bad1:
                    removed.setdefault(r, []).append(step)
            new_steps[run] = sum(1 for s in steps if s not in old)
            cur.executemany(self._q(_UPSERT_FP), upserts)
            if added or removed:
                self._write_disagreement(cur, run, added, removed)
        return new_steps

    def _write_disagreement(
        self, cur: Any, run: str, added: dict[int, list[int]], removed: dict[int, list[int]]
    ) -> None:
        if removed:
            cur.executemany(
                self._q("DELETE FROM tw_fp_bad WHERE run_id = ? AND rank = ? AND step = ?"),
                [(run, r, s) for r, ss in removed.items() for s in ss],
            )
        if added:
            cur.executemany(
                self._q(
                    "INSERT INTO tw_fp_bad (run_id, rank, step) VALUES (?,?,?) "
                    "ON CONFLICT (run_id, rank, step) DO NOTHING"
                ),
                [(run, r, s) for r, ss in added.items() for s in ss],
            )
        upserts: list[tuple[Any, ...]] = []
        gone: list[tuple[Any, ...]] = []
        for r in sorted(set(added) | set(removed)):
            cur.execute(
                self._q("SELECT steps, from_step FROM tw_fp_rank WHERE run_id = ? AND rank = ?"),
                (run, r),
            )
            got = cur.fetchone()
            count, first = (0, None) if got is None else (int(got[0]), int(got[1]))
            count += len(added.get(r, ())) - len(removed.get(r, ()))
            if count <= 0:
                gone.append((run, r))
                continue
            if first is not None and first in removed.get(r, ()):
                cur.execute(
                    self._q("SELECT MIN(step) FROM tw_fp_bad WHERE run_id = ? AND rank = ?"),
                    (run, r),
                )
                first = int(cur.fetchone()[0])
            elif added.get(r):
                first = min(added[r]) if first is None else min(first, *added[r])
            upserts.append((run, r, count, first))
        if gone:
            cur.executemany(self._q("DELETE FROM tw_fp_rank WHERE run_id = ? AND rank = ?"), gone)
        if upserts:
            cur.executemany(self._q(_UPSERT_FP_RANK), upserts)

    def catch_up_derived(self, chunk: int = 20_000) -> int:
        """Derive the rows of entries appended before the derived tables existed (once, when a
        ledger written by an earlier version is opened); return how many entries were read."""
        done = 0
        while True:
            with self._tx() as cur:
                cur.execute(self._lock_head_sql())
                (size,) = cur.fetchone()
                cur.execute("SELECT upto FROM tw_derived_version WHERE id = 1")
                upto = _as_int(cur.fetchone()[0])
                # A head or mark edited by hand into something else than a count: nothing to
                # derive here (verification reports the head).
                size = _as_int(size)
                if upto < 0 or upto >= size:
                    return done
                # Skip a gap in one step: a head edited to 2**63 over a handful of rows must
                # not cost 2**63 / chunk transactions.
                cur.execute(self._q("SELECT MIN(idx) FROM tw_entries WHERE idx >= ?"), (upto,))
                row = cur.fetchone()
                nxt = row[0] if row is not None else None
                if not isinstance(nxt, int | float) or isinstance(nxt, bool) or nxt >= size:
                    self._write_derived(cur, Derived(), size)
                    return done
                start = max(upto, int(nxt))
                end = min(size, start + chunk)
                cur.execute(
                    self._q(
                        "SELECT idx, run_id, kind, entry FROM tw_entries WHERE idx >= ? "
                        "AND idx < ? ORDER BY idx"
                    ),
                    (start, end),
                )
                d = Derived()
                for idx, run, kind, entry in cur.fetchall():
                    d.add(_as_int(idx, start), _as_text(run), _as_text(kind), _as_bytes(entry))
                self._write_derived(cur, d, end)
                done += end - start

    def run_stats(self, run_id: str) -> RunStats | None:
        """The derived counters of a run (entries, first timestamp, latest step, hosts, ranks)."""
        rows = self._read(
            self._q("SELECT entries, first_ts, latest_step FROM tw_run_stats WHERE run_id = ?"),
            (run_id,),
        )
        if not rows:
            return None
        sets: dict[str, list[str]] = {"host": [], "rank": [], "fp_rank": []}
        for what, value in self._read(
            self._q("SELECT what, value FROM tw_run_sets WHERE run_id = ?"), (run_id,)
        ):
            sets.setdefault(str(what), []).append(str(value))
        e, ts, step = rows[0]
        return RunStats(
            entries=int(e),
            first_ts=None if ts is None else float(ts),
            latest_step=None if step is None else int(step),
            hosts=tuple(sorted(sets["host"])),
            ranks=tuple(sorted(int(r) for r in sets["rank"])),
            fp_ranks=tuple(sorted(int(r) for r in sets["fp_rank"])),
        )

    def notes(self, run_id: str, after: int, limit: int) -> list[StoredEntry]:
        """The run's entries other than ``step`` and ``timing`` records, after index ``after``."""
        return [
            _entry(r)
            for r in self._read(
                self._q(
                    f"SELECT {_ENTRY_COLS} FROM tw_entries WHERE run_id = ? AND {_NOTES} "  # noqa: S608 - constant column names only; values are bound parameters
                    "AND idx > ? ORDER BY idx LIMIT ?"
                ),
                (run_id, after, limit),
            )
        ]

    def metric_entries(self, run_id: str, start: int, end: int) -> list[tuple[str, bytes]]:
        """(kind, entry bytes) of the run's ``step`` and ``timing`` entries with
        ``start <= index <= end``, in index order."""
        return [
            (str(kind), bytes(entry))
            for kind, entry in self._read(
                self._q(
                    "SELECT kind, entry FROM tw_entries WHERE idx >= ? AND idx <= ? "
                    "AND run_id = ? AND kind IN ('step', 'timing') ORDER BY idx"
                ),
                (start, end, run_id),
            )
        ]

    def rollup_buckets(self, run_id: str, width: int, cap: int) -> int:
        """How many buckets of ``width`` the run has, counted up to ``cap + 1``."""
        rows = self._read(
            self._q(
                "SELECT COUNT(*) FROM (SELECT DISTINCT bucket FROM tw_buckets WHERE run_id = ? "
                "AND width = ? LIMIT ?) AS b"
            ),
            (run_id, width, cap + 1),
        )
        return int(rows[0][0])

    def rollup(self, run_id: str, width: int, since: int = -1) -> list[tuple[Any, ...]]:
        """(bucket, rank, then per metric n, lo, slo, hi, shi) of the run's buckets of
        ``width`` that an entry with index ``since`` or later contributed to. A metric without
        values there (or whose bounds someone set to NULL) reads as n = 0, never NULL."""
        cols = ", ".join(_ROLLUP_READ)
        return self._read(
            self._q(
                f"SELECT bucket, rank, {cols} FROM tw_buckets "  # noqa: S608 - constant column names only; values are bound parameters
                "WHERE run_id = ? AND width = ? AND last_idx >= ?"
            ),
            (run_id, width, since),
        )

    def rollup_spans(self, run_id: str, buckets: Sequence[int]) -> list[tuple[int, int]]:
        """(first index, last index) of the finest rollup rows of these buckets."""
        out: list[tuple[int, int]] = []
        for b in sorted(set(buckets)):
            rows = self._read(
                self._q(
                    "SELECT MIN(first_idx), MAX(last_idx) FROM tw_buckets WHERE run_id = ? "
                    "AND width = ? AND bucket = ?"
                ),
                (run_id, FINEST, b),
            )
            if rows and rows[0][0] is not None:
                out.append((int(rows[0][0]), int(rows[0][1])))
        return out

    def fingerprint_tally(self, run_id: str) -> tuple[int, list[tuple[int, int, int]]]:
        """(steps with a fingerprint, [(rank, first step, steps)] of every rank that
        disagreed with its step's majority at some step)."""
        rows = self._read(self._q("SELECT fp_steps FROM tw_run_stats WHERE run_id = ?"), (run_id,))
        steps = int(rows[0][0]) if rows else 0
        ranks = self._read(
            self._q("SELECT rank, from_step, steps FROM tw_fp_rank WHERE run_id = ?"), (run_id,)
        )
        return steps, [(int(r), int(f), int(n)) for r, f, n in ranks]

    def size(self) -> int:
        rows = self._read("SELECT size FROM tw_head WHERE id = 1")
        return int(rows[0][0])

    def run_bytes(self, run_id: str) -> int:
        """Bytes of the entries a run's writers stored (what its quota counts; the service's
        own entries about the run are not theirs)."""
        rows = self._read(
            self._q(
                "SELECT COALESCE(SUM(LENGTH(entry)), 0) FROM tw_entries "
                "WHERE run_id = ? AND writer <> ?"
            ),
            (run_id, SERVICE_WRITER),
        )
        # PostgreSQL's SUM of integers is a numeric (a Decimal here).
        return int(rows[0][0] or 0) if rows else 0

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        rows = self._read(
            self._q("SELECT leaf_hash FROM tw_entries WHERE idx >= ? AND idx < ? ORDER BY idx"),
            (start, end),
        )
        return [bytes(r[0]) for r in rows]

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        rows = self._read(
            self._q(
                f"SELECT {_ENTRY_COLS} FROM tw_entries WHERE idx >= ? AND idx < ? ORDER BY idx"  # noqa: S608 - constant column names only; values are bound parameters
            ),
            (start, end),
        )
        return [_entry(r) for r in rows]

    def iter_entries(self, chunk: int = 5000) -> Iterator[StoredEntry]:
        """Every stored row in index order, including rows beyond the head or out of sequence
        (verification must see what is really there)."""
        after = -(2**62)
        while True:
            rows = self._read(
                self._q(f"SELECT {_ENTRY_COLS} FROM tw_entries WHERE idx > ? ORDER BY idx LIMIT ?"),  # noqa: S608 - constant column names only; values are bound parameters
                (after, chunk),
            )
            if not rows:
                return
            for r in rows:
                yield _stored_entry(r)
            # The last index as stored: SQLite orders numbers, then text, then blobs, and
            # compares each with its own kind, so a hand-edited value still moves the cursor on.
            after = rows[-1][0]
            if after is None:
                return

    def query(
        self,
        *,
        run: str | None,
        kind: str | None,
        writer: str | None,
        after: int,
        limit: int,
    ) -> list[StoredEntry]:
        where = ["idx > ?"]
        params: list[Any] = [after]
        for col, val in (("run_id", run), ("kind", kind), ("writer", writer)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        params.append(limit)
        sql = (
            f"SELECT {_ENTRY_COLS} FROM tw_entries WHERE {' AND '.join(where)} ORDER BY idx LIMIT ?"  # noqa: S608 - constant column names only; values are bound parameters
        )
        return [_entry(r) for r in self._read(self._q(sql), params)]

    # -- checkpoints -----------------------------------------------------------------------

    def add_checkpoint(self, size: int, root: bytes, note: str, issued: float) -> bool:
        """Store a checkpoint unless a larger one is already stored (another server got there
        first); checkpoints are stored in non-decreasing size order. Returns whether stored."""
        with self._tx() as cur:
            cur.execute(self._lock_head_sql())
            cur.execute("SELECT MAX(size) FROM tw_checkpoints")
            row = cur.fetchone()
            if row is not None and row[0] is not None and int(row[0]) > size:
                return False
            cur.execute(
                self._q("INSERT INTO tw_checkpoints (size, root, note, issued) VALUES (?,?,?,?)"),
                (size, root, note, issued),
            )
            return True

    def checkpoints(self, after: int = 0, limit: int = 2**62) -> list[CheckpointRow]:
        rows = self._read(
            self._q(
                "SELECT seq, size, root, note, issued FROM tw_checkpoints WHERE seq > ? "
                "ORDER BY seq LIMIT ?"
            ),
            (after, limit),
        )
        return [
            CheckpointRow(
                _as_int(r[0]),
                _as_int(r[1]),
                _as_bytes(r[2]),
                _as_text(r[3]),
                float(r[4]) if isinstance(r[4], int | float) else 0.0,
            )
            for r in rows
        ]

    def latest_checkpoint(self) -> CheckpointRow | None:
        rows = self._read(
            "SELECT seq, size, root, note, issued FROM tw_checkpoints ORDER BY seq DESC LIMIT 1"
        )
        if not rows:
            return None
        r = rows[0]
        return CheckpointRow(int(r[0]), int(r[1]), bytes(r[2]), r[3], float(r[4]))

    # -- runs and tokens -------------------------------------------------------------------

    def create_run(self, run: RunInfo) -> None:
        self._write(
            self._q(
                "INSERT INTO tw_runs (run_id, name, created, interval_s, ranks, status, meta) "
                "VALUES (?,?,?,?,?,?,?)"
            ),
            (
                run.run_id,
                run.name,
                run.created,
                run.interval_s,
                run.ranks,
                run.status,
                json.dumps(run.meta, sort_keys=True),
            ),
        )

    def get_run(self, run_id: str) -> RunInfo | None:
        rows = self._read(
            self._q(
                "SELECT run_id, name, created, interval_s, ranks, status, meta FROM tw_runs "
                "WHERE run_id = ?"
            ),
            (run_id,),
        )
        return _run(rows[0]) if rows else None

    def list_runs(self) -> list[RunInfo]:
        rows = self._read(
            "SELECT run_id, name, created, interval_s, ranks, status, meta FROM tw_runs "
            "ORDER BY created, run_id"
        )
        return [_run(r) for r in rows]

    def set_run_status(self, run_id: str, status: str) -> None:
        self._write(self._q("UPDATE tw_runs SET status = ? WHERE run_id = ?"), (status, run_id))

    def add_token(self, token: TokenInfo) -> None:
        self._write(
            self._q(
                "INSERT INTO tw_tokens (token_id, token_hash, role, run_id, created, revoked, "
                "rank_first, rank_last) VALUES (?,?,?,?,?,?,?,?)"
            ),
            (
                token.token_id,
                token.token_hash,
                token.role.value,
                token.run_id,
                token.created,
                int(token.revoked),
                None if token.ranks is None else token.ranks[0],
                None if token.ranks is None else token.ranks[1],
            ),
        )

    def find_token(self, token_hash: bytes) -> TokenInfo | None:
        rows = self._read(
            self._q(
                "SELECT token_id, token_hash, role, run_id, created, revoked, rank_first, "
                "rank_last FROM tw_tokens "
                "WHERE token_hash = ?"
            ),
            (token_hash,),
        )
        return _token(rows[0]) if rows else None

    def revoke_token(self, token_id: str) -> bool:
        n = self._write(self._q("UPDATE tw_tokens SET revoked = 1 WHERE token_id = ?"), (token_id,))
        return n > 0

    def list_tokens(self) -> list[TokenInfo]:
        rows = self._read(
            "SELECT token_id, token_hash, role, run_id, created, revoked, rank_first, rank_last "
            "FROM tw_tokens "
            "ORDER BY created, token_id"
        )
        return [_token(r) for r in rows]


def open_storage(url: str) -> Storage:
    """Open the database ``url``: ``sqlite:///path/to/ledger.db`` (or a plain path) or
    ``postgresql://user@host/db``. The schema is created when missing."""
    if url.startswith(("postgresql://", "postgres://")):
        from trainwarden.ledger._postgres import PostgresStorage

        return PostgresStorage(url)
    from trainwarden.ledger._sqlite import SqliteStorage

    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url
    if url.startswith("sqlite:") and not url.startswith("sqlite:///"):
        raise LedgerError(f"{url}: a SQLite URL is sqlite:///PATH")
    return SqliteStorage(path)
