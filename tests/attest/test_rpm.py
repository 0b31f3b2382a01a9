"""RPM's database vouches for the standard library like dpkg's md5sums: a real database built
with rpmbuild and rpm --justdb (Debian's ``rpm`` package provides both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainwarden.attest import _syspath as syspath
from trainwarden.attest._cache import HashCache
from trainwarden.attest._snapshot import take_snapshot
from trainwarden.attest._verify import verify_environment
from trainwarden.findings import Severity

from .basepy import BasePython
from .rpmdb import make_rpm_db


def _use_db(monkeypatch: pytest.MonkeyPatch, db: Path, base: BasePython) -> None:
    monkeypatch.setattr(syspath, "RPM_DBPATHS", (str(db),))
    monkeypatch.setattr(syspath, "RPM_PREFIXES", (str(base.prefix) + "/",))


def test_rpm_vouches_for_the_stdlib_and_an_edit_is_critical_without_a_baseline(
    base_python: BasePython,
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = sorted(p for p in base_python.stdlib.rglob("*") if p.is_file() and not p.is_symlink())
    _use_db(monkeypatch, make_rpm_db(tmp_path, files), base_python)
    clean = take_snapshot(str(base_python.venv_python), environ=clean_env, cache=cache)
    random_py = base_python.stdlib / "random.py"
    row = next(f for f in clean.path_files if f.path == str(random_py))
    assert (row.status, row.source) == ("ok", "rpm:twstdlib")
    vouched = [f for f in clean.path_files if f.source == "rpm:twstdlib"]
    assert len(vouched) == len(files)
    text = random_py.read_text()
    random_py.write_text(text.replace("def seed(", "def seed(  ", 1))
    report = verify_environment(str(base_python.venv_python), environ=clean_env, cache=cache)
    hits = [f for f in report.findings if f.rule_id == "TWA-PATH-001"]
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(random_py))]
    assert hits[0].evidence["vouched_by"] == "rpm:twstdlib"
    assert hits[0].evidence["expected"].startswith("sha256:")
    # A module RPM never installed, added to the RPM-managed standard library: HIGH.
    planted = base_python.stdlib / "twextra.py"
    planted.write_text("X = 1\n")
    report = verify_environment(str(base_python.venv_python), environ=clean_env, cache=cache)
    assert [(f.severity, f.location) for f in report.findings if f.rule_id == "TWA-PATH-005"] == [
        (Severity.HIGH, str(planted))
    ]


def test_an_rpm_database_that_cannot_be_read_is_reported_not_ignored(
    base_python: BasePython,
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = make_rpm_db(tmp_path, [base_python.stdlib / "random.py"])
    _use_db(monkeypatch, db, base_python)
    monkeypatch.setattr(syspath, "RPM_BINARY", str(tmp_path / "no-rpm"))
    report = verify_environment(str(base_python.venv_python), environ=clean_env, cache=cache)
    hits = [f for f in report.findings if f.rule_id == "TWA-REC-005"]
    assert [f.location for f in hits] == [str(db)]
    assert "not there to read it" in hits[0].message
    assert not any(
        f.source is not None and f.source.startswith("rpm:") for f in report.snapshot.path_files
    )
