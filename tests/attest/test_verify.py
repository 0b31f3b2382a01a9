"""attest snapshot/verify on real virtual environments with a wheel installed by pip."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.attest._cache import HashCache
from trainwarden.attest._record import FileStatus, parse_record
from trainwarden.attest._signing import LoadedSnapshot
from trainwarden.attest._snapshot import Snapshot, take_snapshot
from trainwarden.attest._verify import VerifyReport, verify_environment
from trainwarden.findings import Finding, Severity

from .venvs import Venv, build_wheel, pip_install


def _verify(
    venv: Venv,
    env: dict[str, str],
    cache: HashCache,
    baseline: Snapshot | None = None,
) -> VerifyReport:
    loaded = LoadedSnapshot(baseline, "baseline.json", False, None) if baseline else None
    return verify_environment(str(venv.python), environ=env, cache=cache, baseline=loaded)


def _hits(report: VerifyReport, rule: str) -> list[Finding]:
    return [f for f in report.findings if f.rule_id == rule]


def _canary_pth_line(canary: Path) -> str:
    # Would create the canary if anything executed it; attestation must only read it.
    return f"import pathlib; pathlib.Path({str(canary)!r}).touch()\n"


def test_clean_venv_has_no_finding_at_medium_or_above(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    report = _verify(venv, clean_env, cache)
    assert report.at_least(Severity.MEDIUM) == []
    # The only notes a clean venv gets: pip's compiled bytecode has no RECORD hash, and which
    # package manager (none, for this interpreter) vouched for the standard library.
    assert {f.rule_id for f in report.findings} == {"TWA-REC-003", "TWA-PATH-003"}
    demo = next(d for d in report.snapshot.distributions if d.name == "twdemo")
    status = {f.path: f.status for f in demo.files}
    for rel in ("twdemo/__init__.py", "twdemo/core.py", "twdemo/data.txt"):
        assert status[rel] is FileStatus.OK
    assert status["twdemo-1.0.dist-info/INSTALLER"] is FileStatus.OK
    assert status["twdemo-1.0.dist-info/RECORD"] is FileStatus.NO_HASH
    assert demo.counts()["modified"] == demo.counts()["missing"] == 0
    assert demo.installer == "pip"
    assert report.snapshot.orphans == ()
    assert report.snapshot.interpreter.venv is True


def test_modified_installed_file_is_critical(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    target = venv.installed("twdemo/core.py")
    target.write_text("def step(x):\n    return x - 1\n")
    report = _verify(venv, clean_env, cache)
    hits = _hits(report, "TWA-REC-001")
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(target))]
    assert hits[0].evidence["distribution"] == "twdemo"


def test_mtime_set_back_is_still_detected_through_ctime(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    target = venv.installed("twdemo/core.py")
    assert _verify(venv, clean_env, cache).at_least(Severity.MEDIUM) == []
    before = target.stat()
    # Same size, same mtime: only the kernel-maintained ctime reveals the write.
    target.write_text("def step(x):\n    return x * 9\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    report = _verify(venv, clean_env, cache)
    assert [f.location for f in _hits(report, "TWA-REC-001")] == [str(target)]


def test_warm_cache_reads_nothing_unchanged(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    venv = make_venv()
    path = tmp_path / "c" / "hashes.bin"
    first = HashCache(path)
    take_snapshot(str(venv.python), environ=clean_env, cache=first)
    assert first.misses > 0 and path.exists()
    second = HashCache(path)
    take_snapshot(str(venv.python), environ=clean_env, cache=second)
    assert second.misses == 0 and second.hits == first.misses
    venv.installed("twdemo/data.txt").write_text("changed\n")
    third = HashCache(path)
    snap = take_snapshot(str(venv.python), environ=clean_env, cache=third)
    assert third.misses == 1
    demo = next(d for d in snap.distributions if d.name == "twdemo")
    assert {f.path: f.status for f in demo.files}["twdemo/data.txt"] is FileStatus.MODIFIED


def test_edited_record_is_parsed_again_with_a_warm_cache(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    # The RECORD parse is cached; an attacker who edits a file and its RECORD row together must
    # not be judged against the cached (old) RECORD, and an honest RECORD edit must be seen.
    venv = make_venv()
    path = tmp_path / "c" / "hashes.bin"
    take_snapshot(str(venv.python), environ=clean_env, cache=HashCache(path))
    record = next(venv.site.glob("twdemo-*.dist-info")) / "RECORD"
    wrong = base64.urlsafe_b64encode(hashlib.sha256(b"other").digest()).rstrip(b"=").decode()
    lines = record.read_text().splitlines()
    edited = [
        f"twdemo/data.txt,sha256={wrong},{ln.rsplit(',', 1)[1]}"
        if ln.startswith("twdemo/data.txt,")
        else ln
        for ln in lines
    ]
    assert edited != lines
    record.write_text("\n".join(edited) + "\n")
    warm = HashCache(path)
    snap = take_snapshot(str(venv.python), environ=clean_env, cache=warm)
    demo = next(d for d in snap.distributions if d.name == "twdemo")
    assert {f.path: f.status for f in demo.files}["twdemo/data.txt"] is FileStatus.MODIFIED


def test_group_writable_cache_is_not_trusted(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    (d / "hashes.bin").write_bytes(b"TWHC1\n")
    os.chmod(d / "hashes.bin", 0o666)  # noqa: S103 - the unsafe mode is what is tested
    cache = HashCache(d / "hashes.bin")
    assert not cache.trusted and "writable" in cache.reason


def test_deleted_file_is_missing(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    target = venv.installed("twdemo/data.txt")
    target.unlink()
    report = _verify(venv, clean_env, cache)
    assert [(f.severity, f.location) for f in _hits(report, "TWA-REC-002")] == [
        (Severity.HIGH, str(target))
    ]


def test_orphan_pth_with_import_line_is_critical_and_never_runs(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    canary = tmp_path / "canary-pth"
    pth = venv.site / "zz_evil.pth"
    pth.write_text("# looks harmless\n" + _canary_pth_line(canary))
    report = _verify(venv, clean_env, cache)
    hits = _hits(report, "TWA-PTH-001")
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(pth))]
    assert "pathlib" in hits[0].message
    assert not canary.exists()
    # A .pth that only adds a directory is reported, less loudly.
    extra = tmp_path / "extra-dir"
    extra.mkdir()
    (venv.site / "paths.pth").write_text(str(extra) + "\n")
    report = _verify(venv, clean_env, cache)
    assert [f.severity for f in _hits(report, "TWA-PTH-002")] == [Severity.MEDIUM]
    assert str(extra) in report.snapshot.sys_path
    assert not canary.exists()


def test_sitecustomize_in_site_packages_is_critical_and_never_runs(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    canary = tmp_path / "canary-sc"
    sc = venv.site / "sitecustomize.py"
    sc.write_text(f"import pathlib\npathlib.Path({str(canary)!r}).touch()\n")
    report = _verify(venv, clean_env, cache)
    hits = _hits(report, "TWA-CUST-001")
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(sc))]
    assert hits[0].evidence["active"] is True
    # It is also an orphan, but reported once as what it is.
    assert _hits(report, "TWA-ORPH-001") == []
    assert not canary.exists()


def test_sitecustomize_on_pythonpath_is_found(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    extra = tmp_path / "pp"
    extra.mkdir()
    (extra / "usercustomize.py").write_text("VALUE = 1\n")
    env = {**clean_env, "PYTHONPATH": str(extra)}
    report = _verify(venv, env, cache)
    env_hits = _hits(report, "TWA-ENV-001")
    assert [(f.severity, f.location) for f in env_hits] == [(Severity.MEDIUM, "env:PYTHONPATH")]
    cust = _hits(report, "TWA-CUST-001")
    assert [f.location for f in cust] == [str(extra / "usercustomize.py")]
    assert report.snapshot.sys_path[0] == str(extra)


def test_ld_preload_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    env = {**clean_env, "LD_PRELOAD": "/nonexistent/libhook.so"}
    report = _verify(venv, env, cache)
    assert [(f.severity, f.location) for f in _hits(report, "TWA-ENV-001")] == [
        (Severity.HIGH, "env:LD_PRELOAD")
    ]
    assert report.snapshot.environment["LD_PRELOAD"] == "/nonexistent/libhook.so"


def test_orphan_module_in_site_packages(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    (venv.site / "shadow.py").write_text("X = 1\n")
    (venv.site / "notes.txt").write_text("n\n")
    report = _verify(venv, clean_env, cache)
    got = {(f.location, f.severity) for f in _hits(report, "TWA-ORPH-001")}
    assert got == {
        (str(venv.site / "shadow.py"), Severity.HIGH),
        (str(venv.site / "notes.txt"), Severity.LOW),
    }


def test_a_package_linked_into_site_packages_from_elsewhere_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    """``import pkg`` runs what the link leads to, which the walk never enters: as the insider
    who plants a link to a folder it controls, it must not be a LOW note."""
    venv = make_venv()
    elsewhere = tmp_path / "elsewhere" / "pkg"
    elsewhere.mkdir(parents=True)
    (elsewhere / "__init__.py").write_text("X = 1\n")
    (venv.site / "pkg").symlink_to(elsewhere, target_is_directory=True)
    report = _verify(venv, clean_env, cache)
    assert [(f.location, f.severity) for f in _hits(report, "TWA-ORPH-001")] == [
        (str(venv.site / "pkg"), Severity.HIGH)
    ]


def _rewrite_record(venv: Venv, rel: str, data: bytes) -> None:
    record = venv.site / "twdemo-1.0.dist-info" / "RECORD"
    entries, problems = parse_record(record.read_text(), str(record))
    assert problems == []
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    lines = []
    for e in entries:
        if e.path == rel:
            lines.append(f"{e.path},sha256={digest},{len(data)}")
        elif e.digest is not None:
            b64 = base64.urlsafe_b64encode(e.digest).rstrip(b"=").decode()
            lines.append(f"{e.path},{e.algorithm}={b64},{e.size}")
        else:
            lines.append(f"{e.path},,")
    record.write_text("\n".join(lines) + "\n")


def test_baseline_catches_a_rewritten_record_and_new_hooks(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    baseline = take_snapshot(str(venv.python), environ=clean_env, cache=cache)
    payload = b"def step(x):\n    return -x\n"
    venv.installed("twdemo/core.py").write_bytes(payload)
    _rewrite_record(venv, "twdemo/core.py", payload)
    (venv.site / "sitecustomize.py").write_text("VALUE = 2\n")
    pip_install(venv.python, build_wheel(tmp_path, name="twextra", version="0.1"))
    report = _verify(venv, clean_env, cache, baseline=baseline)
    assert _hits(report, "TWA-REC-001") == []  # RECORD agrees with the tampered file
    base1 = _hits(report, "TWA-BASE-001")
    assert [(f.severity, f.location) for f in base1] == [
        (Severity.CRITICAL, "twdemo:twdemo/core.py")
    ]
    assert [f.severity for f in _hits(report, "TWA-BASE-008")] == [Severity.CRITICAL]
    assert [(f.severity, f.location) for f in _hits(report, "TWA-BASE-004")] == [
        (Severity.HIGH, "twextra")
    ]
    assert report.diff is not None
    files = next(d for d in report.diff.distributions if d.name == "twdemo")
    assert files.change == "files"
    assert [c[0] for c in files.changed if c[0] == "twdemo/core.py"] == ["twdemo/core.py"]


def test_baseline_of_same_state_is_clean(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    baseline = take_snapshot(str(venv.python), environ=clean_env, cache=cache)
    report = _verify(venv, clean_env, cache, baseline=baseline)
    assert report.at_least(Severity.MEDIUM) == []
    assert report.diff is not None and report.diff.empty


def test_statement_round_trip(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    snap = take_snapshot(str(venv.python), environ=clean_env, cache=cache)
    st = snap.to_statement()
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    names = [s["name"] for s in st["subject"]]
    assert names[0] == f"python:{venv.python}"
    assert all(len(s["digest"]["sha256"]) == 64 for s in st["subject"])
    again = Snapshot.from_statement(st)
    assert again == snap


def test_bad_interpreter_is_a_clear_error(tmp_path: Path, cache: HashCache) -> None:
    from trainwarden.attest import AttestationError

    with pytest.raises(AttestationError, match="cannot run interpreter"):
        take_snapshot(str(tmp_path / "no-python"), cache=cache)


def _append_record_row(venv: Venv, rel: str, data: bytes) -> None:
    record = venv.site / "twdemo-1.0.dist-info" / "RECORD"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    with record.open("a") as f:
        f.write(f"{rel},sha256={digest},{len(data)}\n")


def test_sitecustomize_shipped_by_a_distribution_is_medium(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    data = b"VALUE = 3\n"
    (venv.site / "sitecustomize.py").write_bytes(data)
    _append_record_row(venv, "sitecustomize.py", data)
    report = _verify(venv, clean_env, cache)
    assert _hits(report, "TWA-CUST-001") == []
    hits = _hits(report, "TWA-CUST-002")
    assert [(f.severity, f.location) for f in hits] == [
        (Severity.MEDIUM, str(venv.site / "sitecustomize.py"))
    ]
    assert "twdemo" in hits[0].message


def test_missing_or_malformed_record_is_reported(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    record = venv.site / "twdemo-1.0.dist-info" / "RECORD"
    text = record.read_text()
    record.write_text(text.replace("sha256=", "sha256", 1))
    report = _verify(venv, clean_env, cache)
    (hit,) = _hits(report, "TWA-REC-004")
    assert hit.severity is Severity.MEDIUM and "bad hash field" in hit.message
    assert str(record) in hit.message
    record.unlink()
    report = _verify(venv, clean_env, cache)
    (hit,) = _hits(report, "TWA-REC-004")
    assert "missing or unreadable" in hit.message
    # Without RECORD its files are unowned: they show up as orphans, importable ones as HIGH.
    orphans = {f.location for f in _hits(report, "TWA-ORPH-001") if f.severity is Severity.HIGH}
    assert str(venv.site / "twdemo" / "core.py") in orphans


def test_helper_processes_never_get_injection_variables() -> None:
    from trainwarden.attest._envvars import INJECTION_VARIABLES, helper_environment

    env = {"LD_PRELOAD": "/x.so", "LD_AUDIT": "/y.so", "PATH": "/bin", "LD_LIBRARY_PATH": "/l"}
    cleaned = helper_environment(env)
    assert cleaned == {"PATH": "/bin", "LD_LIBRARY_PATH": "/l"}
    assert {"LD_PRELOAD", "LD_AUDIT", "DYLD_INSERT_LIBRARIES"} <= INJECTION_VARIABLES


def test_job_sys_path_follows_pythonpath_and_pth_entries(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    from trainwarden.attest._snapshot import job_sys_path

    venv = make_venv()
    extra, shared = tmp_path / "pp", tmp_path / "shared-libs"
    extra.mkdir()
    shared.mkdir()
    (venv.site / "shared.pth").write_text(f"# comment\n{shared}\n/does/not/exist\n")
    path = job_sys_path(str(venv.python), {**clean_env, "PYTHONPATH": str(extra)})
    assert path[0] == str(extra)
    assert path.index(str(venv.site)) < path.index(str(shared))
    assert "/does/not/exist" not in path


def test_unwritable_cache_directory_is_a_warning_not_an_error(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    venv = make_venv()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be\n")
    cache = HashCache(blocker / "sub" / "hashes.bin")
    report = _verify(venv, clean_env, cache)
    assert report.at_least(Severity.MEDIUM) == []
    assert "could not save the hash cache" in cache.reason


def test_record_with_hex_digests_as_some_distro_builds_write() -> None:
    data = b"print('x')\n"
    hexd = hashlib.sha256(data).hexdigest()
    b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    entries, problems = parse_record(f"a.py,sha256={hexd},11\nb.py,sha256={b64},11\n", "RECORD")
    assert problems == []
    assert entries[0].digest == entries[1].digest == hashlib.sha256(data).digest()


def test_dpkg_file_lists_attribute_os_packages(tmp_path: Path) -> None:
    from trainwarden.attest._ospkg import dpkg_owners

    info = tmp_path / "dpkg-info"
    info.mkdir()
    (info / "python3-yaml:amd64.list").write_text(
        "/.\n/usr/lib/python3/dist-packages\n/usr/lib/python3/dist-packages/yaml/__init__.py\n"
    )
    (info / "coreutils.list").write_text("/usr/bin/ls\n")
    got = dpkg_owners(
        ["/usr/lib/python3/dist-packages/yaml/__init__.py", "/usr/bin/ls", "/nowhere"],
        info_dir=str(info),
    )
    # Only lists that install into a *-packages directory are read.
    assert got == {"/usr/lib/python3/dist-packages/yaml/__init__.py": "python3-yaml"}
    assert dpkg_owners(["/x"], info_dir=str(tmp_path / "no-dpkg")) == {}
