"""Bytecode Python would import is compared with its source wherever it lies (the job's code,
site-packages, the standard library, PYTHONPATH), whether git ignores it or not, with or
without a baseline."""

from __future__ import annotations

import importlib.util
import marshal
import os
import py_compile
import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from pathlib import Path

from trainwarden.attest._bytecode import verify_bytecode
from trainwarden.attest._cache import HashCache
from trainwarden.attest._verify import VerifyReport, verify_environment
from trainwarden.findings import Finding, Severity

from .basepy import BasePython
from .venvs import Venv

_TAG = importlib.util.cache_from_source("x.py").rsplit("/", 1)[-1].split(".")[1]


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root), *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("LR = 0.1\n")
    (code / ".gitignore").write_text("__pycache__/\n*.pyc\n")
    _git(code, "init", "-q")
    _git(code, "add", ".")
    _git(code, "commit", "-qm", "reviewed")
    return code


def _plant(
    source: Path,
    body: str,
    *,
    unchecked_hash: bool = False,
    checked_hash: bool = False,
    optimization: str = "",
) -> Path:
    """A pyc for ``source`` whose header Python accepts but whose code is ``body``."""
    pyc = Path(importlib.util.cache_from_source(str(source), optimization=optimization))
    pyc.parent.mkdir(exist_ok=True)
    code = compile(body, str(source), "exec", dont_inherit=True)
    st = source.stat()
    if unchecked_hash or checked_hash:
        flags = 0b11 if checked_hash else 0b01
        header = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
        header += importlib.util.source_hash(source.read_bytes())
    else:
        header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
        header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        header += (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.write_bytes(header + marshal.dumps(code))
    return pyc


def _verify(venv: Venv, env: dict[str, str], cache: HashCache, code: Path) -> VerifyReport:
    return verify_environment(str(venv.python), environ=env, cache=cache, code_dirs=[code])


def _hits(report: VerifyReport, rule: str) -> list[Finding]:
    return [f for f in report.findings if f.rule_id == rule]


def test_planted_pyc_in_a_git_ignored_pycache_is_critical(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    code = _code_dir(tmp_path)
    pyc = _plant(code / "train.py", "LR = 10.0\n")
    # The attack is real: Python runs the planted bytecode, and git sees a clean tree.
    ran = subprocess.run(
        [str(venv.python), "-c", "import train; print(train.LR)"],
        cwd=code,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**clean_env, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert ran.stdout.strip() == "10.0"
    report = _verify(venv, clean_env, cache, code)
    assert report.snapshot.code[0].dirty is False  # ignored: git alone would not see it
    hits = _hits(report, "TWA-BYTE-001")
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(pyc))]


def test_unchecked_hash_pyc_with_other_code_is_critical(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    code = _code_dir(tmp_path)
    pyc = _plant(code / "train.py", "LR = 10.0\n", unchecked_hash=True)
    hits = _hits(_verify(venv, clean_env, cache, code), "TWA-BYTE-001")
    assert [f.location for f in hits] == [str(pyc)]


def test_bytecode_compiled_from_the_source_is_clean(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    code = _code_dir(tmp_path)
    without = _verify(venv, clean_env, cache, code).snapshot.bytecode_checked
    for mode in (
        py_compile.PycInvalidationMode.TIMESTAMP,
        py_compile.PycInvalidationMode.UNCHECKED_HASH,
    ):
        py_compile.compile(str(code / "train.py"), invalidation_mode=mode, doraise=True)
        report = _verify(venv, clean_env, cache, code)
        assert [f for f in report.findings if f.rule_id.startswith("TWA-BYTE")] == []
        assert report.snapshot.bytecode_checked == without + 1


def test_stale_pyc_python_would_not_use_is_not_reported(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    code = _code_dir(tmp_path)
    pyc = _plant(code / "train.py", "LR = 10.0\n")
    st = (code / "train.py").stat()
    os.utime(code / "train.py", ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    report = _verify(venv, clean_env, cache, code)
    assert _hits(report, "TWA-BYTE-001") == []
    assert pyc.exists()


def test_sourceless_pyc_is_refused(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    code = _code_dir(tmp_path)
    loose = code / "helpers.pyc"
    loose.write_bytes(
        importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(compile("X = 1\n", "h", "exec"))
    )
    hits = _hits(_verify(venv, clean_env, cache, code), "TWA-BYTE-002")
    assert [(f.severity, f.location) for f in hits] == [(Severity.HIGH, str(loose))]


def test_garbage_bytecode_is_high_not_a_pass(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    code = _code_dir(tmp_path)
    pyc = _plant(code / "train.py", "LR = 0.1\n")
    pyc.write_bytes(pyc.read_bytes()[:16] + b"\xff\x00garbage")
    hits = _hits(_verify(venv, clean_env, cache, code), "TWA-BYTE-003")
    assert [(f.severity, f.location) for f in hits] == [(Severity.HIGH, str(pyc))]


def test_planted_pyc_on_pythonpath_is_critical(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o700)
    (lib / "jobutil.py").write_text("SEED = 0\n")
    pyc = _plant(lib / "jobutil.py", "SEED = 1234\n")
    report = verify_environment(
        str(venv.python), environ={**clean_env, "PYTHONPATH": str(lib)}, cache=cache
    )
    assert [f.location for f in _hits(report, "TWA-BYTE-001")] == [str(pyc)]
    assert _TAG in pyc.name


def _runs(python: Path, module: str, attr: str, env: dict[str, str], *flags: str) -> str:
    """What ``module.attr`` is when the job's interpreter imports it (no bytecode written)."""
    ran = subprocess.run(
        [str(python), *flags, "-c", f"import {module}; print({module}.{attr})"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    return ran.stdout.strip()


def test_planted_pyc_in_site_packages_without_a_baseline_is_critical(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    core = venv.installed("twdemo/core.py")
    pyc = _plant(core, "def step(x):\n    return x - 1\n")
    assert _runs(venv.python, "twdemo.core", "step(1)", clean_env) == "0"  # the attack works
    report = verify_environment(str(venv.python), environ=clean_env, cache=cache)
    hits = _hits(report, "TWA-BYTE-001")
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(pyc))]
    assert hits[0].evidence["source"] == str(core)


def test_optimized_pyc_loaded_under_dash_o_is_checked(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    core = venv.installed("twdemo/core.py")
    pyc = _plant(core, "def step(x):\n    return x - 1\n", optimization="1")
    assert _runs(venv.python, "twdemo.core", "step(1)", clean_env, "-O") == "0"
    report = verify_environment(str(venv.python), environ=clean_env, cache=cache)
    assert [f.location for f in _hits(report, "TWA-BYTE-001")] == [str(pyc)]


def test_checked_hash_pyc_with_a_stale_hash_is_still_compared(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    core = venv.installed("twdemo/core.py")
    pyc = _plant(core, "def step(x):\n    return x - 1\n", checked_hash=True)
    data = bytearray(pyc.read_bytes())
    data[8:16] = bytes(8)  # a source hash that does not match
    pyc.write_bytes(bytes(data))
    flag = "--check-hash-based-pycs"
    assert _runs(venv.python, "twdemo.core", "step(1)", clean_env, flag, "never") == "0"
    report = verify_environment(str(venv.python), environ=clean_env, cache=cache)
    assert [f.location for f in _hits(report, "TWA-BYTE-001")] == [str(pyc)]


def test_sourceless_pyc_in_site_packages_is_refused(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    loose = venv.installed("twdemo/extra.pyc")
    loose.write_bytes(
        importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(compile("X = 1\n", "e", "exec"))
    )
    assert _runs(venv.python, "twdemo.extra", "X", clean_env) == "1"
    report = verify_environment(str(venv.python), environ=clean_env, cache=cache)
    assert [f.location for f in _hits(report, "TWA-BYTE-002")] == [str(loose)]


def test_planted_pyc_in_the_base_interpreters_stdlib_is_critical(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache
) -> None:
    # A pure-Python standard module that the attestation helpers themselves never import.
    real = Path(sysconfig.get_paths()["stdlib"]) / "colorsys.py"
    source = base_python.stdlib / "colorsys.py"
    shutil.copy2(real, source)
    assert _runs(base_python.venv_python, "colorsys", "rgb_to_hsv(1, 0, 0)", clean_env) != ""
    pyc = _plant(source, source.read_text() + "\nPLANTED = 1\n")
    assert _runs(base_python.venv_python, "colorsys", "PLANTED", clean_env) == "1"
    report = verify_environment(str(base_python.venv_python), environ=clean_env, cache=cache)
    hits = _hits(report, "TWA-BYTE-001")
    assert [(f.severity, f.location) for f in hits] == [(Severity.CRITICAL, str(pyc))]


def test_clean_environment_bytecode_is_all_compared_and_clean(
    base_python: BasePython, clean_env: dict[str, str], cache: HashCache
) -> None:
    source = base_python.stdlib / "colorsys.py"
    shutil.copy2(Path(sysconfig.get_paths()["stdlib"]) / "colorsys.py", source)
    py_compile.compile(str(source), doraise=True)
    core = base_python.site / "twdemo" / "core.py"
    py_compile.compile(str(core), doraise=True)
    report = verify_environment(str(base_python.venv_python), environ=clean_env, cache=cache)
    assert [f for f in report.findings if f.rule_id.startswith("TWA-BYTE")] == []
    assert report.snapshot.bytecode_checked >= 2


def test_remembered_verdict_is_not_reused_for_a_same_size_pyc_with_its_mtime_restored(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    venv = make_venv()
    core = venv.installed("twdemo/core.py")
    honest = core.read_text()
    pyc = _plant(core, honest)
    first = verify_environment(str(venv.python), environ=clean_env, cache=cache)
    assert _hits(first, "TWA-BYTE-001") == []
    assert len(cache.bytecode_verdicts()) > 0  # the clean verdict is remembered
    before = pyc.stat()
    forged = _plant(core, honest.replace("x + 1", "x - 1"))
    assert forged == pyc and pyc.stat().st_size == before.st_size
    os.utime(pyc, ns=(before.st_atime_ns, before.st_mtime_ns))
    # Same path, inode, size and mtime: only the ctime, which no user can set, tells them apart.
    again = verify_environment(str(venv.python), environ=clean_env, cache=HashCache(cache.path))
    assert [f.location for f in _hits(again, "TWA-BYTE-001")] == [str(pyc)]


def test_verdict_from_files_changed_since_the_walk_is_not_remembered(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("X = 1\n")
    pyc = Path(str(py_compile.compile(str(source), doraise=True)))
    walked = {str(source): os.lstat(source), str(pyc): os.lstat(pyc)}
    # The pyc is rewritten after the walk and before the check: the checker reads the forgery.
    _plant(source, "X = 2\n")
    cache = HashCache(None)
    pairs = [(str(pyc), str(source))]
    results, consistent, _ = verify_bytecode(pairs, walked, b"i" * 32, None, {}, cache)
    assert [r.status for r in results] == ["mismatch"]  # right for this run
    assert consistent is False and cache.bytecode_verdicts() == {}
    # With the walk's metadata matching what was read, the verdict is remembered.
    walked = {str(source): os.lstat(source), str(pyc): os.lstat(pyc)}
    results, consistent, _ = verify_bytecode(pairs, walked, b"i" * 32, None, {}, cache)
    assert [r.status for r in results] == ["mismatch"] and consistent is True
    assert list(cache.bytecode_verdicts().values()) == [("mismatch", results[0].detail, "")]
