"""The standard library, lib-dynload and other sys.path entries are walked, vouched for by the
package manager that installed them, compared with a baseline, and checked for shadowing.

Every edit happens in a throwaway base interpreter the test builds (``basepy``), never in the
real one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from trainwarden.attest import _syspath as syspath
from trainwarden.attest._cache import HashCache
from trainwarden.attest._signing import LoadedSnapshot
from trainwarden.attest._snapshot import Snapshot, take_snapshot
from trainwarden.attest._verify import VerifyReport, verify_environment
from trainwarden.findings import Finding, Severity

from .basepy import BasePython


def _verify(
    python: Path, env: dict[str, str], cache: HashCache, baseline: Snapshot | None = None
) -> VerifyReport:
    loaded = LoadedSnapshot(baseline, "baseline.json", False, None) if baseline else None
    return verify_environment(str(python), environ=env, cache=cache, baseline=loaded)


def _hits(report: VerifyReport, rule: str) -> list[Finding]:
    return [f for f in report.findings if f.rule_id == rule]


def _edit_random(base: BasePython) -> Path:
    random_py = base.stdlib / "random.py"
    text = random_py.read_text()
    random_py.write_text(text.replace("def seed(", "def seed(  ", 1))  # a real content change
    return random_py


def test_stdlib_and_lib_dynload_are_in_the_snapshot(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache
) -> None:
    snap = take_snapshot(str(base_python.venv_python), environ=clean_env, cache=cache)
    assert snap.interpreter.base_prefix == str(base_python.prefix)
    assert snap.path_roots == {
        str(base_python.stdlib): "stdlib",
        str(base_python.stdlib / "lib-dynload"): "stdlib",
    }
    paths = {f.path for f in snap.path_files}
    assert str(base_python.stdlib / "random.py") in paths
    assert str(base_python.stdlib / "encodings" / "utf_8.py") in paths
    dynload = list((base_python.stdlib / "lib-dynload").iterdir())
    assert {str(p) for p in dynload} <= paths
    # No package manager knows this copy: every file is unvouched and said so.
    assert {f.status for f in snap.path_files} == {"unvouched"}


def test_edited_stdlib_module_and_shadowing_module_against_a_baseline(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache
) -> None:
    baseline = take_snapshot(str(base_python.venv_python), environ=clean_env, cache=cache)
    assert (
        _verify(base_python.venv_python, clean_env, cache, baseline).at_least(Severity.MEDIUM) == []
    )
    random_py = _edit_random(base_python)
    planted = base_python.stdlib / "twdemo.py"  # shadows the installed distribution twdemo
    planted.write_text("VALUE = 2\n")
    report = _verify(base_python.venv_python, clean_env, cache, baseline)
    base_hits = {f.location: f.severity for f in _hits(report, "TWA-BASE-013")}
    assert base_hits == {
        "<base>/lib/" + random_py.relative_to(base_python.prefix / "lib").as_posix(): (
            Severity.CRITICAL
        ),
        "<base>/lib/" + planted.relative_to(base_python.prefix / "lib").as_posix(): (
            Severity.CRITICAL
        ),
    }
    shadow = _hits(report, "TWA-PATH-002")
    assert [(f.severity, f.evidence["module"]) for f in shadow] == [(Severity.CRITICAL, "twdemo")]
    assert f"{base_python.site}" in shadow[0].evidence["shadowed"]


def test_shadowing_module_in_stdlib_is_critical_without_a_baseline(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache
) -> None:
    (base_python.stdlib / "twdemo").mkdir()
    (base_python.stdlib / "twdemo" / "__init__.py").write_text("VALUE = 3\n")
    report = _verify(base_python.venv_python, clean_env, cache)
    assert [f.evidence["module"] for f in _hits(report, "TWA-PATH-002")] == ["twdemo"]
    assert report.at_least(Severity.HIGH) == _hits(report, "TWA-PATH-002")


def test_a_backport_shadowed_by_the_real_stdlib_module_is_not_reported(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache
) -> None:
    # A site-packages "random" loses to the standard one: normal, nothing planted in the stdlib.
    (base_python.site / "random.py").write_text("X = 1\n")
    report = _verify(base_python.venv_python, clean_env, cache)
    assert _hits(report, "TWA-PATH-002") == []


def _conda_meta(base: BasePython) -> dict[str, str]:
    rows = []
    for p in sorted(base.prefix.rglob("*")):
        if p.is_file() and not p.is_symlink():
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
            rows.append({"_path": p.relative_to(base.prefix).as_posix(), "sha256": sha})
    meta = base.prefix / "conda-meta"
    meta.mkdir()
    doc = {"name": "python", "version": "3.11", "paths_data": {"paths_version": 1, "paths": rows}}
    (meta / "python-3.11-0.json").write_text(json.dumps(doc))
    return {r["_path"]: r["sha256"] for r in rows}


def test_conda_vouches_for_the_stdlib_and_an_edit_is_critical_without_a_baseline(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache
) -> None:
    _conda_meta(base_python)
    clean = _verify(base_python.venv_python, clean_env, cache)
    assert clean.at_least(Severity.MEDIUM) == []
    sources = {f.source for f in clean.snapshot.path_files}
    assert sources == {"conda:python"}
    assert {f.status for f in clean.snapshot.path_files} == {"ok"}
    random_py = _edit_random(base_python)
    report = _verify(base_python.venv_python, clean_env, cache)
    hits = _hits(report, "TWA-PATH-001")
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(random_py))]
    assert hits[0].evidence["vouched_by"] == "conda:python"


def test_what_conda_vouches_for_is_read_afresh_on_a_memo_hit_with_helpers(
    base_python: BasePython,
    clean_env: dict[str, str],
    cache: HashCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The package managers' records lie outside every walk: a warm verify whose memo matches
    # (computed while the helpers walk) must still compare with the records as they are now.
    from trainwarden.attest import _snapshot as snapshot_mod

    monkeypatch.setattr(snapshot_mod, "PARALLEL_MIN_FILES", 0)
    monkeypatch.setattr(snapshot_mod, "helper_count", lambda cap=None: 2)
    recorded = _conda_meta(base_python)
    assert _verify(base_python.venv_python, clean_env, cache).at_least(Severity.MEDIUM) == []
    _verify(base_python.venv_python, clean_env, HashCache(cache.path))  # the memo holds it now
    meta = next((base_python.prefix / "conda-meta").glob("*.json"))
    rel = (base_python.stdlib / "random.py").relative_to(base_python.prefix).as_posix()
    meta.write_text(meta.read_text().replace(recorded[rel], "0" * 64))

    def no_file_state(*_: object, **__: object) -> None:
        raise AssertionError("the per-file results were computed although the memo matched")

    monkeypatch.setattr(snapshot_mod, "_file_state", no_file_state)
    report = _verify(base_python.venv_python, clean_env, HashCache(cache.path))
    hits = _hits(report, "TWA-PATH-001")
    assert [f.location for f in hits] == [str(base_python.stdlib / "random.py")]
    assert hits[0].evidence["vouched_by"] == "conda:python"


def test_dpkg_md5sums_vouch_and_an_edit_is_critical_without_a_baseline(
    base_python: BasePython,
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A dpkg database of our own, in dpkg's format (md5, path relative to /).
    info = tmp_path / "dpkg-info"
    info.mkdir()
    lines = [
        f"{hashlib.md5(p.read_bytes()).hexdigest()}  {str(p).lstrip('/')}"  # noqa: S324 - dpkg's format
        for p in sorted(base_python.stdlib.rglob("*.py"))
    ]
    (info / "libpython3-stdlib:amd64.md5sums").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(syspath, "DPKG_INFO_DIR", str(info))
    monkeypatch.setattr(syspath, "DPKG_PREFIXES", (str(base_python.prefix) + "/",))
    clean = take_snapshot(str(base_python.venv_python), environ=clean_env, cache=cache)
    random_row = next(f for f in clean.path_files if f.path.endswith("/random.py"))
    assert (random_row.status, random_row.source) == ("ok", "dpkg:libpython3-stdlib")
    random_py = _edit_random(base_python)
    report = _verify(base_python.venv_python, clean_env, cache)
    hits = _hits(report, "TWA-PATH-001")
    assert [f.location for f in hits] == [str(random_py)]
    assert hits[0].evidence["vouched_by"] == "dpkg:libpython3-stdlib"
    summary = _hits(report, "TWA-PATH-003")[0]
    assert summary.evidence["vouched"]["dpkg"] == len(lines)
    assert _hits(report, "TWA-PATH-005") == []
    # A module dpkg never installed, added to the dpkg-managed standard library: HIGH without a
    # baseline and without shadowing anything.
    planted = base_python.stdlib / "twextra.py"
    planted.write_text("X = 1\n")
    report = _verify(base_python.venv_python, clean_env, cache)
    hits = _hits(report, "TWA-PATH-005")
    assert [(f.severity, f.location) for f in hits] == [(Severity.HIGH, str(planted))]


@pytest.mark.skipif(
    not (os.path.exists("/usr/bin/python3.11") and os.path.isdir("/var/lib/dpkg/info")),
    reason="no Debian system Python 3.11 on this machine",
)
def test_debian_system_python_is_vouched_by_dpkg(
    clean_env: dict[str, str], cache: HashCache
) -> None:
    # Read only: the real system interpreter is attested, never edited.
    snap = take_snapshot("/usr/bin/python3.11", environ=clean_env, cache=cache)
    os_py = next(f for f in snap.path_files if f.path == "/usr/lib/python3.11/os.py")
    assert os_py.source is not None and os_py.source.startswith("dpkg:libpython3.11")
    assert os_py.status == "ok"


def test_walk_limit_is_a_high_finding(
    base_python: BasePython,
    clean_env: dict[str, str],
    cache: HashCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_walk = syspath.walk_roots
    monkeypatch.setattr(
        "trainwarden.attest._snapshot.walk_roots",
        lambda roots, skip: real_walk(roots, skip, limit=20),
    )
    report = _verify(base_python.venv_python, clean_env, cache)
    cut = _hits(report, "TWA-PATH-004")
    assert cut and {f.severity for f in cut} == {Severity.HIGH}


def test_baseline_across_nodes_with_different_prefixes_is_clean(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    other = tmp_path / "node2"
    shutil.copytree(base_python.prefix.parent, other, symlinks=True)
    # The copied venv's symlink and pyvenv.cfg still point at node 1's base: repoint them.
    ver = base_python.stdlib.name
    (other / "venv" / "bin" / "python").unlink()
    (other / "venv" / "bin" / "python").symlink_to(other / "base" / "bin" / ver)
    cfg = other / "venv" / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(str(base_python.prefix), str(other / "base")))
    a = take_snapshot(str(base_python.venv_python), environ=clean_env, cache=cache)
    b = take_snapshot(str(other / "venv" / "bin" / "python"), environ=clean_env, cache=cache)
    from trainwarden.attest._diff import diff_snapshots

    assert diff_snapshots(a, b).path_files == {}


def test_planted_stdlib_module_is_reported_even_when_pythonpath_wins_today(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    (base_python.stdlib / "twdemo.py").write_text("VALUE = 2\n")
    pp = tmp_path / "pp"
    pp.mkdir(mode=0o700)
    (pp / "twdemo.py").write_text("VALUE = 3\n")
    report = _verify(base_python.venv_python, {**clean_env, "PYTHONPATH": str(pp)}, cache)
    hits = _hits(report, "TWA-PATH-002")
    assert [f.location for f in hits] == [str(base_python.stdlib / "twdemo")]
    assert hits[0].evidence["shadowed"] == [str(base_python.site)]
