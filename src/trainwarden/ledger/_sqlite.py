"""SQLite backend: one file in WAL mode with ``synchronous=FULL``, so an acknowledged batch
survives a crash of the process or the machine."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from trainwarden.ledger._storage import SqlStorage
from trainwarden.ledger._types import LedgerError

__all__ = ["SqliteStorage"]


class SqliteStorage(SqlStorage):
    """The default backend. One connection, serialised by a lock: SQLite has one writer anyway."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._tx() as cur:
                self._create(cur)
            self.catch_up_derived()
        except sqlite3.Error as e:
            raise LedgerError(f"{self.path}: cannot open the ledger database: {e}") from e

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _lock_head_sql(self) -> str:
        # BEGIN IMMEDIATE already holds the database's write lock.
        return "SELECT size FROM tw_head WHERE id = 1"

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._tx() as cur:
            cur.execute(sql, tuple(params))
            return cur.rowcount

    def raw(self) -> sqlite3.Connection:
        """The underlying connection (tests use it to tamper with rows)."""
        return self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()
