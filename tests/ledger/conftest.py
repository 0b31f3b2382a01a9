"""Fixtures for ledger tests: every storage test runs against SQLite and a real PostgreSQL.

PostgreSQL comes from ``TRAINWARDEN_TEST_PG_DSN`` (``.ci/run`` starts one and sets it); when
unset, the suite starts its own with ``.ci/start-postgres.sh``. Only an explicit
``TRAINWARDEN_TEST_PG_UNAVAILABLE=1`` (which CI never sets) skips the PostgreSQL half; any other
failure to get a server fails the tests loudly.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trainwarden.ledger import Ledger, Signer, open_storage
from trainwarden.ledger._checkpoint import load_or_create_signer
from trainwarden.ledger._storage import SqlStorage, Storage

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "test.trainwarden.example/ledger"


def _pg_schema_url(dsn: str) -> str:
    """A fresh schema in the test database; the URL selects it by search_path."""
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    return _pg_schema_url(dsn)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return load_or_create_signer(tmp_path / "keys", ORIGIN)


@pytest.fixture
def make_ledger(db_url: str, signer: Signer) -> Iterator[Callable[..., Ledger]]:
    """Factory: a Ledger over the test database (call again for a second server);
    ``make(clean=True)`` first empties the log (hypothesis examples reuse one database)."""
    opened: list[Storage] = []

    def make(*, clean: bool = False) -> Ledger:
        st = open_storage(db_url)
        opened.append(st)
        if clean:
            assert isinstance(st, SqlStorage)
            for sql in (
                "DELETE FROM tw_entries",
                "DELETE FROM tw_checkpoints",
                "UPDATE tw_head SET size = 0 WHERE id = 1",
            ):
                st._write(sql)
        return Ledger(st, signer)

    yield make
    for st in opened:
        st.close()
