"""PostgreSQL backend (psycopg 3): several servers share one log; each batch is one transaction
that locks the head row, so appends from different servers are sequenced by the database."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from trainwarden.ledger._storage import SqlStorage
from trainwarden.ledger._types import LedgerError

__all__ = ["PostgresStorage"]


class PostgresStorage(SqlStorage):
    """A PostgreSQL log. One connection per storage object, serialised by a lock."""

    _blob = "BYTEA"
    _serial = "BIGSERIAL"
    _if_missing = " IF NOT EXISTS"

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._lock = threading.RLock()
        try:
            self._db = psycopg.connect(url, autocommit=True)
            with self._tx() as cur:
                # Serialise schema creation between servers starting at once.
                cur.execute("SELECT pg_advisory_xact_lock(7263541)")
                self._create(cur)
            self.catch_up_derived()
        except psycopg.Error as e:
            raise LedgerError(f"cannot open the PostgreSQL ledger: {e}") from e

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            yield cur

    def _lock_head_sql(self) -> str:
        return "SELECT size FROM tw_head WHERE id = 1 FOR UPDATE"

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._tx() as cur:
            cur.execute(self._q(sql), tuple(params))
            return list(cur.fetchall())

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._tx() as cur:
            cur.execute(self._q(sql), tuple(params))
            return int(cur.rowcount)

    def raw(self) -> Any:
        """The underlying connection (tests use it to tamper with rows)."""
        return self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()
