"""Bytecode Python would import from the job's code is compared with its source, whether git
ignores it or not."""

from __future__ import annotations

import importlib.util
import marshal
import os
import py_compile
import subprocess
from collections.abc import Callable
from pathlib import Path

from trainwarden.attest.cache import HashCache
from trainwarden.attest.verify import VerifyReport, verify_environment
from trainwarden.findings import Finding, Severity

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


def _plant(source: Path, body: str, *, unchecked_hash: bool = False) -> Path:
    """A pyc for ``source`` whose header Python accepts but whose code is ``body``."""
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.parent.mkdir(exist_ok=True)
    code = compile(body, str(source), "exec")
    st = source.stat()
    if unchecked_hash:
        header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
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
    for mode in (
        py_compile.PycInvalidationMode.TIMESTAMP,
        py_compile.PycInvalidationMode.UNCHECKED_HASH,
    ):
        py_compile.compile(str(code / "train.py"), invalidation_mode=mode, doraise=True)
        report = _verify(venv, clean_env, cache, code)
        assert [f for f in report.findings if f.rule_id.startswith("TWA-BYTE")] == []
        assert report.snapshot.bytecode_checked == 1


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
