"""Loader variables are rated by what they change on this machine, not by their name."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from trainwarden.attest._cache import HashCache
from trainwarden.attest._effects import resolve_effects, unsafe_reason
from trainwarden.attest._verify import VerifyReport, verify_environment
from trainwarden.findings import Finding, Severity

from .venvs import Venv


def _verify(venv: Venv, env: dict[str, str], cache: HashCache) -> VerifyReport:
    return verify_environment(str(venv.python), environ=env, cache=cache)


def _env_hits(report: VerifyReport, name: str) -> list[Finding]:
    return [f for f in report.findings if f.location == f"env:{name}"]


def _private(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def test_pythonpath_entry_that_shadows_an_installed_module_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    shadow_dir = _private(tmp_path / "pp")
    (shadow_dir / "twdemo").mkdir()
    (shadow_dir / "twdemo" / "__init__.py").write_text("VALUE = 99\n")
    report = _verify(venv, {**clean_env, "PYTHONPATH": str(shadow_dir)}, cache)
    hits = _env_hits(report, "PYTHONPATH")
    assert [f.severity for f in hits] == [Severity.HIGH]
    assert "twdemo" in hits[0].message
    # The default threshold (high) fails the run: exit code 1 in the CLI.
    assert report.at_least(Severity.HIGH) == hits


def test_pythonpath_entry_that_shadows_a_standard_module_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    shadow_dir = _private(tmp_path / "pp")
    (shadow_dir / "random.py").write_text("X = 1\n")
    report = _verify(venv, {**clean_env, "PYTHONPATH": str(shadow_dir)}, cache)
    hits = _env_hits(report, "PYTHONPATH")
    assert [f.severity for f in hits] == [Severity.HIGH]
    assert "random" in hits[0].message and "stdlib" in hits[0].message


def test_pythonpath_entry_that_only_adds_modules_is_medium_and_a_missing_one_low(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    adds = _private(tmp_path / "pp")
    (adds / "my_job_helpers.py").write_text("X = 1\n")
    report = _verify(venv, {**clean_env, "PYTHONPATH": str(adds)}, cache)
    assert [f.severity for f in _env_hits(report, "PYTHONPATH")] == [Severity.MEDIUM]
    missing = _private(tmp_path / "private") / "not-there"
    report = _verify(venv, {**clean_env, "PYTHONPATH": str(missing)}, cache)
    assert [f.severity for f in _env_hits(report, "PYTHONPATH")] == [Severity.LOW]


def test_pythonpath_entry_others_can_write_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    report = _verify(venv, {**clean_env, "PYTHONPATH": str(shared)}, cache)
    hits = _env_hits(report, "PYTHONPATH")
    assert [f.severity for f in hits] == [Severity.HIGH]
    assert "writable by another user" in hits[0].message


def test_inductor_cache_redirected_by_tmpdir_to_a_shared_directory_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: anyone can create torchinductor_<user> there first
    report = _verify(venv, {**clean_env, "TMPDIR": str(shared)}, cache)
    hits = [f for f in report.findings if f.rule_id == "TWA-ENV-002"]
    assert [(f.severity, f.location) for f in hits] == [(Severity.HIGH, "env:TMPDIR")]
    assert "TorchInductor" in hits[0].message


def test_cache_dirs_redirected_to_private_directories_are_low(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    env = {
        **clean_env,
        "TORCHINDUCTOR_CACHE_DIR": str(_private(tmp_path / "ind")),
        "TRITON_CACHE_DIR": str(_private(tmp_path / "tri")),
        "XDG_CACHE_HOME": str(_private(tmp_path / "xdg")),
    }
    report = _verify(venv, env, cache)
    assert report.at_least(Severity.MEDIUM) == []
    assert [f.severity for f in _env_hits(report, "TORCHINDUCTOR_CACHE_DIR")] == [Severity.LOW]
    assert [f.severity for f in _env_hits(report, "TRITON_CACHE_DIR")] == [Severity.LOW]


def test_triton_cache_in_a_directory_another_user_owns_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    if os.getuid() == 0:
        os.chown(theirs, 4321, 4321)  # another user's directory
    else:
        theirs.chmod(0o777)
    report = _verify(venv, {**clean_env, "TRITON_CACHE_DIR": str(theirs)}, cache)
    assert [f.severity for f in _env_hits(report, "TRITON_CACHE_DIR")] == [Severity.HIGH]


def test_default_inductor_cache_squatted_by_another_user_is_high(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    import pwd

    squatted = shared / f"torchinductor_{pwd.getpwuid(os.getuid()).pw_name}"
    squatted.mkdir()
    squatted.chmod(0o777)
    # TMPDIR equal to the resolved default is judged as the default: squatted means HIGH.
    effects = resolve_effects({"TMPDIR": str(shared)}, pythonpath=[], shadows=[], uid=os.getuid())
    inductor = [e for e in effects if "TorchInductor" in e.effect]
    assert [e.severity for e in inductor] == ["HIGH"]


def test_ld_library_path_shadowing_a_system_library_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    libdir = _private(tmp_path / "lib")
    system = next(
        n
        for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")
        if os.path.isdir(d)
        for n in sorted(os.listdir(d))
        if n.startswith("libm.so")
    )
    (libdir / system).write_bytes(b"\x7fELF not really")
    report = _verify(venv, {**clean_env, "LD_LIBRARY_PATH": str(libdir)}, cache)
    assert [f.severity for f in _env_hits(report, "LD_LIBRARY_PATH")] == [Severity.HIGH]
    empty = _private(tmp_path / "empty")
    report = _verify(venv, {**clean_env, "LD_LIBRARY_PATH": str(empty)}, cache)
    assert [f.severity for f in _env_hits(report, "LD_LIBRARY_PATH")] == [Severity.LOW]


def test_unsafe_reason_respects_the_sticky_bit(tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    mine = _private(sticky / "mine")
    assert unsafe_reason(str(mine), os.getuid()) == ""
    assert "create it first" in unsafe_reason(str(sticky / "absent"), os.getuid())
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    inner = _private(loose / "inner")
    assert "replace" in unsafe_reason(str(inner), os.getuid())


def test_pythonpath_portion_of_a_namespace_package_shadowing_a_subpackage_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    # Like nvidia/* in a torch environment: a namespace package (no __init__) whose subpackages
    # come from the first portion on the path that has them.
    venv = make_venv()
    (venv.site / "twns" / "cublas").mkdir(parents=True)
    (venv.site / "twns" / "cublas" / "__init__.py").write_text("REAL = True\n")
    pp = _private(tmp_path / "pp")
    (pp / "twns" / "cublas").mkdir(parents=True)
    (pp / "twns" / "cublas" / "__init__.py").write_text("REAL = False\n")
    ran = subprocess.run(
        [str(venv.python), "-c", "import twns.cublas as c; print(c.REAL)"],
        env={**clean_env, "PYTHONPATH": str(pp)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert ran.stdout.strip() == "False"  # the shadow is real
    report = _verify(venv, {**clean_env, "PYTHONPATH": str(pp)}, cache)
    hits = _env_hits(report, "PYTHONPATH")
    assert [f.severity for f in hits] == [Severity.HIGH]
    assert "twns.cublas" in hits[0].message


def test_cache_dir_through_a_symlink_into_a_shared_directory_is_high(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    target = _private(shared / "cache")  # private itself, but its parent is open to everyone
    link = _private(tmp_path / "mine") / "triton"
    link.symlink_to(target)
    report = _verify(venv, {**clean_env, "TRITON_CACHE_DIR": str(link)}, cache)
    assert [f.severity for f in _env_hits(report, "TRITON_CACHE_DIR")] == [Severity.HIGH]
