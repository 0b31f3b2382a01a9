"""The storage interface every backend implements, and the SQL both real backends share.

Appends are sequenced inside one database transaction per batch that holds the log head's lock,
so several servers sharing one database never assign the same index twice or fork the tree."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trainwarden.ledger._rollup import FINEST, METRICS, Derived
from trainwarden.ledger._types import (
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

    def metric_entries(self, run_id: str, start: int, end: int) -> list[StoredEntry]: ...

    def rollup_buckets(self, run_id: str, metric: str, width: int, cap: int) -> int: ...

    def rollup(self, run_id: str, metric: str, width: int) -> list[tuple[Any, ...]]: ...

    def rollup_spans(self, run_id: str, buckets: Sequence[int]) -> list[tuple[int, int]]: ...

    def fingerprint_tally(self, run_id: str) -> tuple[int, list[tuple[int, int, int, str]]]: ...

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
    """CREATE TABLE IF NOT EXISTS tw_derived (id INTEGER PRIMARY KEY, upto BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tw_run_stats (
        run_id TEXT PRIMARY KEY, entries BIGINT NOT NULL, first_ts DOUBLE PRECISION,
        latest_step BIGINT)""",
    """CREATE TABLE IF NOT EXISTS tw_run_sets (
        run_id TEXT NOT NULL, what TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (run_id, what, value))""",
    """CREATE TABLE IF NOT EXISTS tw_rollup (
        run_id TEXT NOT NULL, metric TEXT NOT NULL, width BIGINT NOT NULL, bucket BIGINT NOT NULL,
        rank BIGINT NOT NULL, n BIGINT NOT NULL, vmin DOUBLE PRECISION NOT NULL,
        smin BIGINT NOT NULL, vmax DOUBLE PRECISION NOT NULL, smax BIGINT NOT NULL,
        first_idx BIGINT NOT NULL, last_idx BIGINT NOT NULL,
        PRIMARY KEY (run_id, metric, width, bucket, rank))""",
    """CREATE TABLE IF NOT EXISTS tw_fp (
        run_id TEXT NOT NULL, step BIGINT NOT NULL, hash BIGINT NOT NULL, n BIGINT NOT NULL,
        ranks TEXT NOT NULL, PRIMARY KEY (run_id, step, hash))""",
    """CREATE TABLE IF NOT EXISTS tw_checkpoints (
        seq {serial} PRIMARY KEY, size BIGINT NOT NULL, root {blob} NOT NULL,
        note TEXT NOT NULL, issued DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tw_runs (
        run_id TEXT PRIMARY KEY, name TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        interval_s DOUBLE PRECISION NOT NULL, ranks INTEGER NOT NULL, status TEXT NOT NULL,
        meta TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tw_tokens (
        token_id TEXT PRIMARY KEY, token_hash {blob} NOT NULL UNIQUE, role TEXT NOT NULL,
        run_id TEXT, created DOUBLE PRECISION NOT NULL, revoked INTEGER NOT NULL)""",
]

_ENTRY_COLS = "idx, run_id, writer, seq, kind, entry, leaf_hash, mac"
_NOTES = "kind <> 'step' AND kind <> 'timing'"
_SPAN_SQL = (
    "SELECT MIN(first_idx), MAX(last_idx) FROM tw_rollup WHERE run_id = ? AND metric IN ("  # noqa: S608 - constant metric names only; values are bound parameters
    + ", ".join(f"'{m}'" for m in METRICS)
    + ") AND width = ? AND bucket = ?"
)

_UPSERT_STATS = """INSERT INTO tw_run_stats (run_id, entries, first_ts, latest_step)
    VALUES (?,?,?,?) ON CONFLICT (run_id) DO UPDATE SET
    entries = tw_run_stats.entries + excluded.entries,
    first_ts = CASE WHEN tw_run_stats.first_ts IS NULL
        OR excluded.first_ts < tw_run_stats.first_ts THEN excluded.first_ts
        ELSE tw_run_stats.first_ts END,
    latest_step = CASE WHEN tw_run_stats.latest_step IS NULL
        OR excluded.latest_step > tw_run_stats.latest_step THEN excluded.latest_step
        ELSE tw_run_stats.latest_step END"""
_UPSERT_SETS = """INSERT INTO tw_run_sets (run_id, what, value) VALUES (?,?,?)
    ON CONFLICT (run_id, what, value) DO NOTHING"""
_UPSERT_ROLLUP = """INSERT INTO tw_rollup (run_id, metric, width, bucket, rank, n, vmin, smin,
    vmax, smax, first_idx, last_idx) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT (run_id, metric, width, bucket, rank) DO UPDATE SET
    n = tw_rollup.n + excluded.n,
    vmin = CASE WHEN excluded.vmin < tw_rollup.vmin THEN excluded.vmin ELSE tw_rollup.vmin END,
    smin = CASE WHEN excluded.vmin < tw_rollup.vmin THEN excluded.smin ELSE tw_rollup.smin END,
    vmax = CASE WHEN excluded.vmax > tw_rollup.vmax THEN excluded.vmax ELSE tw_rollup.vmax END,
    smax = CASE WHEN excluded.vmax > tw_rollup.vmax THEN excluded.smax ELSE tw_rollup.smax END,
    first_idx = CASE WHEN excluded.first_idx < tw_rollup.first_idx THEN excluded.first_idx
        ELSE tw_rollup.first_idx END,
    last_idx = CASE WHEN excluded.last_idx > tw_rollup.last_idx THEN excluded.last_idx
        ELSE tw_rollup.last_idx END"""
_UPSERT_FP = """INSERT INTO tw_fp (run_id, step, hash, n, ranks) VALUES (?,?,?,?,?)
    ON CONFLICT (run_id, step, hash) DO UPDATE SET n = tw_fp.n + excluded.n,
    ranks = tw_fp.ranks || ',' || excluded.ranks"""


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
    )


class SqlStorage:
    """The SQL shared by the SQLite and PostgreSQL backends; subclasses supply the connection,
    the transaction that locks the head, and the parameter style."""

    url: str
    _blob = "BLOB"
    _serial = "INTEGER"

    def _q(self, sql: str) -> str:
        return sql

    def _tx(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:  # pragma: no cover
        raise NotImplementedError

    def _schema(self) -> list[str]:
        return [s.format(blob=self._blob, serial=self._serial) for s in _SCHEMA]

    # -- log -------------------------------------------------------------------------------

    def append(self, batch: Sequence[PendingEntry], seal: Sealer) -> AppendResult:
        with self._tx() as cur:
            cur.execute(self._lock_head_sql())
            (size,) = cur.fetchone()
            size = int(size)
            cur.execute("SELECT upto FROM tw_derived WHERE id = 1")
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
        )

    def _lock_head_sql(self) -> str:
        return "SELECT size FROM tw_head WHERE id = 1"

    # -- derived data (trainwarden.ledger._rollup) ------------------------------------------

    def _write_derived(self, cur: Any, d: Derived, upto: int) -> None:
        if d.stats:
            cur.executemany(
                self._q(_UPSERT_STATS), [(run, *st) for run, st in sorted(d.stats.items())]
            )
        if d.sets:
            cur.executemany(self._q(_UPSERT_SETS), sorted(d.sets))
        if d.buckets:
            cur.executemany(self._q(_UPSERT_ROLLUP), list(d.rollup_rows()))
        if d.fps:
            cur.executemany(
                self._q(_UPSERT_FP), [(*k, n, ranks) for k, (n, ranks) in d.fps.items()]
            )
        cur.execute(self._q("UPDATE tw_derived SET upto = ? WHERE id = 1"), (upto,))

    def catch_up_derived(self, chunk: int = 20_000) -> int:
        """Derive the rows of entries appended before the derived tables existed (once, when a
        ledger written by an earlier version is opened); return how many entries were read."""
        done = 0
        while True:
            with self._tx() as cur:
                cur.execute(self._lock_head_sql())
                (size,) = cur.fetchone()
                cur.execute("SELECT upto FROM tw_derived WHERE id = 1")
                upto = int(cur.fetchone()[0])
                if upto >= int(size):
                    return done
                end = min(int(size), upto + chunk)
                cur.execute(
                    self._q(
                        "SELECT idx, run_id, kind, entry FROM tw_entries WHERE idx >= ? "
                        "AND idx < ? ORDER BY idx"
                    ),
                    (upto, end),
                )
                d = Derived()
                for idx, run, kind, entry in cur.fetchall():
                    d.add(int(idx), str(run), str(kind), bytes(entry))
                self._write_derived(cur, d, end)
                done += end - upto

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

    def metric_entries(self, run_id: str, start: int, end: int) -> list[StoredEntry]:
        """The run's ``step`` and ``timing`` entries with ``start <= index <= end``."""
        return [
            _entry(r)
            for r in self._read(
                self._q(
                    f"SELECT {_ENTRY_COLS} FROM tw_entries WHERE idx >= ? AND idx <= ? "  # noqa: S608 - constant column names only; values are bound parameters
                    "AND run_id = ? AND kind IN ('step', 'timing') ORDER BY idx"
                ),
                (start, end, run_id),
            )
        ]

    def rollup_buckets(self, run_id: str, metric: str, width: int, cap: int) -> int:
        """How many buckets of ``width`` the metric has, counted up to ``cap + 1``."""
        rows = self._read(
            self._q(
                "SELECT COUNT(*) FROM (SELECT DISTINCT bucket FROM tw_rollup WHERE run_id = ? "
                "AND metric = ? AND width = ? LIMIT ?) AS b"
            ),
            (run_id, metric, width, cap + 1),
        )
        return int(rows[0][0])

    def rollup(self, run_id: str, metric: str, width: int) -> list[tuple[Any, ...]]:
        """(bucket, rank, n, vmin, smin, vmax, smax) of every bucket of ``width``, in order."""
        return self._read(
            self._q(
                "SELECT bucket, rank, n, vmin, smin, vmax, smax FROM tw_rollup "
                "WHERE run_id = ? AND metric = ? AND width = ? ORDER BY bucket, rank"
            ),
            (run_id, metric, width),
        )

    def rollup_spans(self, run_id: str, buckets: Sequence[int]) -> list[tuple[int, int]]:
        """(first index, last index) of the finest rollup rows of these buckets."""
        out: list[tuple[int, int]] = []
        for b in sorted(set(buckets)):
            rows = self._read(
                self._q(_SPAN_SQL),
                (run_id, FINEST, b),
            )
            if rows and rows[0][0] is not None:
                out.append((int(rows[0][0]), int(rows[0][1])))
        return out

    def fingerprint_tally(self, run_id: str) -> tuple[int, list[tuple[int, int, int, str]]]:
        """(steps with a fingerprint, [(step, n, reports at the step, ranks)] of every
        fingerprint at a step where the ranks did not all agree), in step order."""
        rows = self._read(
            self._q("SELECT COUNT(DISTINCT step) FROM tw_fp WHERE run_id = ?"), (run_id,)
        )
        steps = int(rows[0][0])
        split = self._read(
            self._q(
                "SELECT f.step, f.n, t.total, f.ranks FROM tw_fp f JOIN "
                "(SELECT step, SUM(n) AS total FROM tw_fp WHERE run_id = ? GROUP BY step "
                "HAVING COUNT(*) > 1) t ON f.step = t.step WHERE f.run_id = ? "
                "ORDER BY f.step, f.hash"
            ),
            (run_id, run_id),
        )
        return steps, [(int(s), int(n), int(t), str(r)) for s, n, t, r in split]

    def size(self) -> int:
        rows = self._read("SELECT size FROM tw_head WHERE id = 1")
        return int(rows[0][0])

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
                yield _entry(r)
            after = int(rows[-1][0])

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
        return [CheckpointRow(int(r[0]), int(r[1]), bytes(r[2]), r[3], float(r[4])) for r in rows]

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
                "INSERT INTO tw_tokens (token_id, token_hash, role, run_id, created, revoked) "
                "VALUES (?,?,?,?,?,?)"
            ),
            (
                token.token_id,
                token.token_hash,
                token.role.value,
                token.run_id,
                token.created,
                int(token.revoked),
            ),
        )

    def find_token(self, token_hash: bytes) -> TokenInfo | None:
        rows = self._read(
            self._q(
                "SELECT token_id, token_hash, role, run_id, created, revoked FROM tw_tokens "
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
            "SELECT token_id, token_hash, role, run_id, created, revoked FROM tw_tokens "
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
