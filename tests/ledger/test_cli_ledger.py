"""`trainwarden ledger verify` and `ledger token` on the command line: exit codes, the first bad
entry in text and JSON, and no traceback."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trainwarden.ledger import Event
from trainwarden.service._server import ServeConfig, build_service


def _make_log(state: Path) -> str:
    db = f"sqlite:///{state / 'ledger.db'}"
    service, _, _ = build_service(ServeConfig(db_url=db, state_dir=state, origin="cli.test/log"))
    led = service.ledger
    for b in range(3):
        led.append(
            "run-1", "w", [Event(seq=b * 3 + i, kind="k", record={"i": i}) for i in (1, 2, 3)]
        )
        led.checkpoint()
    led.storage.close()
    return db


def test_verify_clean_then_tampered(cli: Callable[..., Any], tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = _make_log(state)
    ok = cli(["ledger", "verify", "--db", db, "--state-dir", str(state)])
    assert ok.returncode == 0, ok.stderr
    assert "ledger OK: 9 entries, 3 checkpoints" in ok.stdout
    saved = tmp_path / "saved.note"
    conn = sqlite3.connect(state / "ledger.db")
    (note,) = conn.execute("SELECT note FROM tw_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    saved.write_text(note)
    conn.execute("DELETE FROM tw_entries WHERE idx = 4")
    conn.commit()
    conn.close()
    bad = cli(
        [
            "ledger",
            "verify",
            "--db",
            db,
            "--state-dir",
            str(state),
            "--saved",
            str(saved),
            "--format",
            "json",
        ]
    )
    assert bad.returncode == 1, bad.stderr
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and doc["first_bad"]["index"] == 4
    text = cli(["ledger", "verify", "--db", db, "--state-dir", str(state)])
    assert text.returncode == 1 and "first bad entry 4" in text.stderr
    assert "Traceback" not in text.stderr


def test_verify_usage_errors(cli: Callable[..., Any], tmp_path: Path) -> None:
    r = cli(["ledger", "verify"])
    assert r.returncode == 2 and "exactly one of --db and --url" in r.stderr
    r = cli(
        [
            "ledger",
            "verify",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--state-dir",
            str(tmp_path / "nothing"),
        ]
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_token_create_list_revoke_on_the_database(cli: Callable[..., Any], tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = _make_log(state)
    args = ["--db", db, "--state-dir", str(state)]
    made = cli(["ledger", "token", "create", "--role", "reader", *args])
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("tw_")
    listed = json.loads(cli(["ledger", "token", "list", *args]).stdout)
    assert token not in json.dumps(listed)
    reader = [t for t in listed if t["role"] == "reader"]
    assert len(reader) == 1 and not reader[0]["revoked"]
    rev = cli(["ledger", "token", "revoke", reader[0]["token_id"], *args])
    assert rev.returncode == 0
    listed = json.loads(cli(["ledger", "token", "list", *args]).stdout)
    assert [t["revoked"] for t in listed if t["role"] == "reader"] == [True]
    bad = cli(["ledger", "token", "create", "--role", "writer", *args])
    assert bad.returncode == 2 and "writer token needs a run" in bad.stderr


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("UPDATE tw_entries SET idx = 'abc' WHERE idx = 4", "index column holds 'abc'"),
        ("UPDATE tw_entries SET idx = 4.5 WHERE idx = 4", "index column holds '4.5'"),
        ("UPDATE tw_entries SET idx = x'00' WHERE idx = 4", "not an integer"),
        ("UPDATE tw_entries SET seq = 'x' WHERE idx = 4", "stored seq column differs"),
        ("UPDATE tw_entries SET leaf_hash = 5 WHERE idx = 4", "stored leaf hash differs"),
        ("UPDATE tw_head SET size = 'big'", "log head holds no entry count"),
        # Deriving the dashboard's tables up to this head once took 2**63 / 20,000 steps.
        ("UPDATE tw_head SET size = 9223372036854775807", "the log head says"),
        ("UPDATE tw_checkpoints SET size = 'x' WHERE seq = 1", "stored columns differ"),
        ("UPDATE tw_checkpoints SET root = 'r' WHERE seq = 1", "stored columns differ"),
        ("UPDATE tw_checkpoints SET note = x'ff00' WHERE seq = 1", "checkpoint #1"),
    ],
)
def test_a_value_of_the_wrong_type_written_into_a_column_is_reported_not_a_crash(
    cli: Callable[..., Any], tmp_path: Path, sql: str, says: str
) -> None:
    # SQLite keeps whatever type is written into a column: someone editing the file by hand can
    # put text where the service writes integers or bytes. That is tampering (exit 1), named.
    state = tmp_path / "state"
    db = _make_log(state)
    conn = sqlite3.connect(state / "ledger.db")
    conn.execute(sql)
    conn.commit()
    conn.close()
    r = cli(["ledger", "verify", "--db", db, "--state-dir", str(state)])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert says in r.stderr, r.stderr


def test_text_stored_where_the_entry_bytes_were_is_the_same_entry(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    # The same bytes read back as text are the same entry: no rewrite, nothing to report.
    state = tmp_path / "state"
    db = _make_log(state)
    conn = sqlite3.connect(state / "ledger.db")
    conn.execute("UPDATE tw_entries SET entry = CAST(entry AS TEXT) WHERE idx = 4")
    conn.commit()
    assert conn.execute("SELECT typeof(entry) FROM tw_entries WHERE idx = 4").fetchone() == (
        "text",
    )
    conn.close()
    r = cli(["ledger", "verify", "--db", db, "--state-dir", str(state)])
    assert r.returncode == 0, r.stderr


_COLUMNS = {
    "tw_entries": ["idx", "run_id", "writer", "seq", "kind", "entry", "leaf_hash", "mac"],
    "tw_checkpoints": ["size", "root", "note", "issued"],
    "tw_head": ["size"],
    "tw_derived_version": ["version", "upto"],
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=st.sampled_from(sorted(_COLUMNS)),
    data=st.data(),
    value=st.one_of(
        st.none(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.binary(max_size=40),
    ),
)
def test_any_value_written_into_any_column_is_verified_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, table: str, data: st.DataObject, value: Any
) -> None:
    from trainwarden.ledger import LedgerError
    from trainwarden.service._tools import verify_db

    state = tmp_path_factory.mktemp("hostile-db")
    db = _make_log(state)
    column = data.draw(st.sampled_from(_COLUMNS[table]))
    conn = sqlite3.connect(state / "ledger.db")
    try:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = 1", (value,))  # noqa: S608 - names from the fixed table above
        conn.commit()
    except sqlite3.DatabaseError:
        event("SQLite refused the edit")
        return  # SQLite itself refused the edit (a constraint): nothing to verify
    finally:
        conn.close()
    try:
        report = verify_db(db, key=None, state_dir=state, saved=[])
    except LedgerError:
        event("refused in one line")
        return  # a one-line refusal (exit 2), never an internal error
    event("verified: " + ("ok" if report.ok else "tampering reported"))
    assert isinstance(report.ok, bool)
