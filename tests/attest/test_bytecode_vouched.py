"""A signed baseline vouches for bytecode with exactly the content it found to match its source,
so a node verifying against it compiles only bytecode that differs; nothing else vouches.

Each test plays the attacker against what the reuse trusts: the pyc's body, the source, the
baseline's list of verdicts and its signature."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import itertools
import json
import marshal
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import trainwarden.attest._bytecode as bytecode_module
from trainwarden.attest import AttestationError
from trainwarden.attest._bytecode import content_key, forget_verdicts
from trainwarden.attest._cache import HashCache
from trainwarden.attest._signing import LoadedSnapshot, generate_key, load_snapshot, sign_statement
from trainwarden.attest._snapshot import Snapshot, _compiler_id, take_snapshot
from trainwarden.attest._verify import VerifyReport, verify_environment, vouched_bytecode
from trainwarden.findings import Severity

from .venvs import Venv

_TAG = importlib.util.cache_from_source("x.py").rsplit("/", 1)[-1].split(".")[1]


class _Compiled:
    """Records every pair handed to the real checker (which still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pyc: list[str] = []
        real = bytecode_module.check_bytecode

        def spy(pairs: Sequence[tuple[str, str | None]], *args: Any, **kwargs: Any) -> Any:
            self.pyc.extend(p for p, _ in pairs)
            return real(pairs, *args, **kwargs)

        monkeypatch.setattr(bytecode_module, "check_bytecode", spy)

    def under(self, root: Path) -> list[str]:
        return sorted(p for p in self.pyc if p.startswith(str(root)))


def _baseline(
    venv: Venv, env: dict[str, str], cache: HashCache, tmp_path: Path
) -> tuple[Path, Path, Snapshot]:
    """The golden node's snapshot, signed: (file, public key, snapshot)."""
    key = tmp_path / "keys" / "attest.key"
    pub, _ = generate_key(key)
    snap = take_snapshot(str(venv.python), environ=env, cache=cache)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(sign_statement(snap.to_statement(), key)))
    return path, pub, snap


def _verify(venv: Venv, env: dict[str, str], cache: HashCache, base: LoadedSnapshot) -> Any:
    """Verify as a node that has never seen these files: a private copy of the (standard
    library only) cache, no snapshot memo, no verdict remembered in this process."""
    assert cache.path is not None
    _LAST.append(next(_NODES))
    private = cache.path.parent / f"node-{_LAST[-1]}"
    private.mkdir(mode=0o700)
    shutil.copyfile(cache.path, private / "hashes.bin")
    forget_verdicts()
    return verify_environment(
        str(venv.python),
        baseline=base,
        environ=env,
        cache=HashCache(private / "hashes.bin"),
        require_signature=True,
    )


_NODES = itertools.count()
_LAST: list[int] = []


def _last_node() -> int:
    return _LAST[-1]


def _byte(report: VerifyReport) -> list[tuple[str, Severity, str]]:
    return [(f.rule_id, f.severity, f.location) for f in report.findings if "BYTE" in f.rule_id]


def _pycs(venv: Venv) -> list[str]:
    return sorted(str(p) for p in (venv.site / "twdemo" / "__pycache__").glob(f"*.{_TAG}.pyc"))


def _evil_body() -> bytes:
    return marshal.dumps(compile("def step(x):\n    return x - 1\n", "core.py", "exec"))


def test_a_signed_baseline_vouches_for_identical_bytecode_which_is_not_compiled(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    golden, node, other = make_venv(), make_venv(), make_venv()
    path, pub, snap = _baseline(golden, clean_env, cache, tmp_path)
    assert len(_pycs(node)) == 2  # pip compiled twdemo at install time
    compiled = _Compiled(monkeypatch)
    # The same files on another node, not yet known to its cache: none is compiled.
    report = _verify(node, clean_env, cache, load_snapshot(path, key=pub))
    assert compiled.under(node.root) == []
    assert _byte(report) == []
    assert set(report.snapshot.bytecode_matches) == set(snap.bytecode_matches)
    # The node remembers the vouched verdicts in its own hash cache: without the baseline, the
    # memo deleted and nothing remembered in this process, still nothing is compiled.
    assert cache.path is not None
    node_cache = cache.path.parent / f"node-{_last_node()}" / "hashes.bin"
    Path(str(node_cache) + ".memo").unlink()
    forget_verdicts()
    again = verify_environment(str(node.python), environ=clean_env, cache=HashCache(node_cache))
    assert compiled.under(node.root) == []
    assert again.snapshot.bytecode_matches == report.snapshot.bytecode_matches
    # Without the signature checked, the same baseline vouches for nothing: all are compiled.
    unchecked = load_snapshot(path)
    assert vouched_bytecode(unchecked) == frozenset()
    _verify(other, clean_env, cache, unchecked)
    assert compiled.under(other.root) == _pycs(other)


def test_a_planted_pyc_with_the_header_copied_and_another_body_is_compiled(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    golden, node = make_venv(), make_venv()
    path, pub, _ = _baseline(golden, clean_env, cache, tmp_path)
    pyc = Path(importlib.util.cache_from_source(str(node.installed("twdemo/core.py"))))
    pyc.write_bytes(pyc.read_bytes()[:16] + _evil_body())
    ran = subprocess.run(
        [str(node.python), "-c", "import twdemo.core as c; print(c.step(1))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**clean_env, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert ran.stdout.strip() == "0"  # Python runs the planted body
    compiled = _Compiled(monkeypatch)
    report = _verify(node, clean_env, cache, load_snapshot(path, key=pub))
    assert compiled.under(node.root) == [str(pyc)]
    assert _byte(report) == [("TWA-BYTE-001", Severity.CRITICAL, str(pyc))]


def test_a_baseline_verdict_is_not_applied_to_a_different_source(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    golden, node = make_venv(), make_venv()
    path, pub, _ = _baseline(golden, clean_env, cache, tmp_path)
    source = node.installed("twdemo/core.py")
    pyc = Path(importlib.util.cache_from_source(str(source)))
    vouched_body = pyc.read_bytes()[16:]  # the body the baseline vouched for, with its source
    source.write_text("def step(x):\n    return x * 1000\n")
    st = source.stat()
    header = importlib.util.MAGIC_NUMBER + bytes(4)
    header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    header += (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.write_bytes(header + vouched_body)  # Python uses it for the new source
    compiled = _Compiled(monkeypatch)
    report = _verify(node, clean_env, cache, load_snapshot(path, key=pub))
    assert compiled.under(node.root) == [str(pyc)]
    assert _byte(report) == [("TWA-BYTE-001", Severity.CRITICAL, str(pyc))]


def test_verdicts_added_to_a_baseline_are_refused_with_its_signature_or_without_one(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    golden, node = make_venv(), make_venv()
    path, pub, snap = _baseline(golden, clean_env, cache, tmp_path)
    source = node.installed("twdemo/core.py")
    pyc = Path(importlib.util.cache_from_source(str(source)))
    body = _evil_body()
    pyc.write_bytes(pyc.read_bytes()[:16] + body)
    # The attacker writes the content key of the planted pair into the baseline.
    assert snap.interpreter.sha256 is not None
    compiler = _compiler_id(bytes.fromhex(snap.interpreter.sha256), _TAG)
    assert compiler is not None
    forged = content_key(
        compiler,
        str(pyc),
        hashlib.sha256(body).digest(),
        hashlib.sha256(source.read_bytes()).digest(),
    )
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["bytecode_matches"] = sorted(
        [*statement["predicate"]["bytecode_matches"], forged]
    )
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(envelope))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(statement))
    compiled = _Compiled(monkeypatch)
    for base in (load_snapshot(tampered, key=pub), load_snapshot(plain, key=pub)):
        assert forged in base.snapshot.bytecode_matches
        report = _verify(node, clean_env, cache, base)
        assert str(pyc) in compiled.under(node.root)
        assert _byte(report) == [("TWA-BYTE-001", Severity.CRITICAL, str(pyc))]
        assert {f.rule_id for f in report.findings} & {"TWA-SIG-001", "TWA-SIG-002"}
        compiled.pyc.clear()


def test_a_malformed_list_of_verdicts_is_a_malformed_snapshot(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    statement = take_snapshot(str(make_venv().python), environ=clean_env, cache=cache)
    st = statement.to_statement()
    for bad in ("ab" * 32, ["AB" * 32], ["ab" * 31], [7]):
        st["predicate"]["bytecode_matches"] = bad
        with pytest.raises(AttestationError, match="malformed snapshot predicate"):
            Snapshot.from_statement(st)
