"""The snapshot memo: a warm verify reuses the last results only while nothing they came from
changed, and gives the same findings as a verify that hashes every file."""

from __future__ import annotations

import marshal
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

import trainwarden.attest._snapshot as snapshot_mod
from trainwarden.attest._cache import HashCache
from trainwarden.attest._memo import SnapshotMemo
from trainwarden.attest._syspath import walk_roots as real_walk_roots
from trainwarden.attest._verify import verify_environment
from trainwarden.findings import Finding

from .venvs import Venv, build_wheel, pip_install


def _key(findings: tuple[Finding, ...]) -> list[tuple[str, str, str, str]]:
    return sorted((f.rule_id, f.severity.name, f.location, f.message) for f in findings)


def _verify(
    venv: Venv, env: dict[str, str], cache: HashCache, workers: int | None = None
) -> tuple[Finding, ...]:
    return verify_environment(str(venv.python), environ=env, cache=cache, workers=workers).findings


def _no_file_state(*_: Any, **__: Any) -> NoReturn:
    raise AssertionError("the per-file results were computed although the memo matched")


def _rules_at(findings: tuple[Finding, ...], location: Path) -> set[str]:
    return {f.rule_id for f in findings if f.location == str(location)}


def _same_size_edit(path: Path, text: str) -> None:
    before = path.stat()
    assert len(text.encode()) == before.st_size
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _cache_file(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir(mode=0o700, exist_ok=True)
    return d / "hashes.bin"


def test_findings_are_identical_uncached_serial_parallel_cold_and_from_the_memo(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    venv = make_venv()
    _same_size_edit(venv.installed("twdemo/core.py"), "def step(x):\n    return x * 9\n")
    (venv.site / "planted.py").write_text("X = 1\n")
    (venv.site / "zz-hook.pth").write_text("import os\n")
    venv.installed("twdemo/data.txt").unlink()
    path = _cache_file(tmp_path)
    serial = _verify(venv, clean_env, HashCache(None), workers=1)
    parallel = _verify(venv, clean_env, HashCache(None), workers=8)
    cold = _verify(venv, clean_env, HashCache(path))
    assert Path(str(path) + ".memo").is_file()
    with monkeypatch.context() as m:
        m.setattr(snapshot_mod, "_file_state", _no_file_state)
        warm = _verify(venv, clean_env, HashCache(path))
    rules = {f.rule_id for f in serial}
    assert {"TWA-REC-001", "TWA-REC-002", "TWA-ORPH-001", "TWA-PTH-001"} <= rules, rules
    assert _key(serial) == _key(parallel) == _key(cold) == _key(warm)


@pytest.mark.parametrize("change", ["edit", "add", "remove", "chmod"])
def test_any_change_after_the_memo_was_written_is_seen(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path, change: str
) -> None:
    venv = make_venv()
    path = _cache_file(tmp_path)
    clean = _verify(venv, clean_env, HashCache(path))
    target = venv.installed("twdemo/core.py")
    if change == "edit":
        _same_size_edit(target, "def step(x):\n    return x * 9\n")
    elif change == "add":
        target = venv.site / "twdemo" / "planted.py"
        target.write_text("X = 1\n")
    elif change == "remove":
        target.unlink()
    else:
        target.chmod(0o000)
    try:
        warm = _verify(venv, clean_env, HashCache(path))
        fresh = _verify(venv, clean_env, HashCache(None))
    finally:
        if change == "chmod":
            target.chmod(0o644)
    assert _rules_at(clean, target) == set()
    if os.geteuid() == 0 and change == "chmod":
        # root reads a mode-000 file anyway; the metadata change still forces a new check.
        assert _key(warm) == _key(fresh)
        return
    assert _rules_at(warm, target) != set()
    assert _key(warm) == _key(fresh)


def test_a_recorded_file_outside_site_packages_edited_after_the_memo_is_seen(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    # A console script lives in bin/, which no walk covers: the memo must re-check it itself.
    venv = make_venv()
    wheel = build_wheel(
        tmp_path, name="twtool", extra={"twtool-1.0.data/scripts/twtool": "#!python\nX = 1\n"}
    )
    pip_install(venv.python, wheel)
    script = venv.root / "bin" / "twtool"
    assert script.is_file()
    path = _cache_file(tmp_path)
    assert _rules_at(_verify(venv, clean_env, HashCache(path)), script) == set()
    text = script.read_text()
    _same_size_edit(script, text.replace("X = 1", "X = 2"))
    assert "TWA-REC-001" in _rules_at(_verify(venv, clean_env, HashCache(path)), script)


def _poisoned_memo(
    venv: Venv, env: dict[str, str], tmp_path: Path, cache_file: Path
) -> tuple[Path, Path]:
    """A memo whose fingerprint matches the tampered environment but whose results are those of
    the clean one: what an attacker who can write the memo file would leave there."""
    clean_dir = tmp_path / "clean-cache"
    clean_dir.mkdir(mode=0o700)
    clean_file = clean_dir / "h.bin"
    _verify(venv, env, HashCache(clean_file))
    target = venv.installed("twdemo/core.py")
    _same_size_edit(target, "def step(x):\n    return x * 9\n")
    _verify(venv, env, HashCache(cache_file))
    magic = b"TWMEMO5\n"
    clean_memo = Path(str(clean_file) + ".memo").read_bytes()[len(magic) :]
    clean_slots, _, _, _ = marshal.loads(clean_memo)  # noqa: S302 - the memo this test just wrote
    memo_file = Path(str(cache_file) + ".memo")
    assert memo_file.read_bytes().startswith(magic)
    tampered, weights, sites, path_walk = marshal.loads(memo_file.read_bytes()[len(magic) :])  # noqa: S302
    ((slot, (fingerprint, outside, _)),) = tampered.items()
    poisoned = {slot: (fingerprint, outside, clean_slots[slot][2])}
    memo_file.write_bytes(magic + marshal.dumps((poisoned, weights, sites, path_walk)))
    return memo_file, target


def test_a_memo_writable_by_others_is_not_used(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    venv = make_venv()
    cache_file = _cache_file(tmp_path)
    memo_file, target = _poisoned_memo(venv, clean_env, tmp_path, cache_file)
    memo_file.chmod(0o666)
    assert SnapshotMemo(memo_file).path is None
    assert "TWA-REC-001" in _rules_at(_verify(venv, clean_env, HashCache(cache_file)), target)


def test_a_memo_in_a_directory_writable_by_others_is_not_used(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    venv = make_venv()
    cache_file = _cache_file(tmp_path)
    memo_file, target = _poisoned_memo(venv, clean_env, tmp_path, cache_file)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    shutil.copy(memo_file, shared / memo_file.name)
    shutil.copy(cache_file, shared / cache_file.name)
    findings = _verify(venv, clean_env, HashCache(shared / cache_file.name))
    assert "TWA-REC-001" in _rules_at(findings, target)


def test_the_memo_is_trusted_exactly_like_the_hash_cache(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    # The control for the two tests above: a poisoned memo that is yours and private is used,
    # as a poisoned hash cache would be. Whoever can write your cache directory is you.
    venv = make_venv()
    cache_file = _cache_file(tmp_path)
    _memo_file, target = _poisoned_memo(venv, clean_env, tmp_path, cache_file)
    assert "TWA-REC-001" not in _rules_at(_verify(venv, clean_env, HashCache(cache_file)), target)


def test_the_walk_done_while_the_interpreter_describes_itself_stands_only_for_the_same_walk(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This process walks the last walk's roots outside site-packages before the interpreter has
    # said what they are. A memo that names other roots, or skips a directory the real walk
    # enters, must not decide what the snapshot holds.
    venv = make_venv()
    extra = tmp_path / "extra"
    (extra / "pkg").mkdir(parents=True)
    (extra / "top.py").write_text("X = 1\n")
    hidden = extra / "pkg" / "hidden.py"
    hidden.write_text("Y = 2\n")
    env = {**clean_env, "PYTHONPATH": str(extra)}
    cache_file = _cache_file(tmp_path)
    snapshot_mod.take_snapshot(str(venv.python), environ=env, cache=HashCache(cache_file))
    memo_file = Path(str(cache_file) + ".memo")
    roots, skip = SnapshotMemo(memo_file).path_walk
    assert roots[0] == str(extra), roots

    walks: list[list[str]] = []

    def counted(roots: list[str], skip: set[str]) -> Any:
        if roots:
            walks.append(list(roots))
        return real_walk_roots(roots, skip)

    monkeypatch.setattr(snapshot_mod, "walk_roots", counted)

    def files(memo_roots: list[str], memo_skip: list[str]) -> set[str]:
        memo = SnapshotMemo(memo_file)
        memo.path_walk = ([], [])
        memo.set_path_walk(memo_roots, memo_skip)
        memo.save()
        walks.clear()
        snap = snapshot_mod.take_snapshot(
            str(venv.python), environ=env, cache=HashCache(cache_file)
        )
        return {f.path for f in snap.path_files}

    # The same walk: done once, early, and used.
    assert str(hidden) in files(roots, skip)
    assert walks == [roots]
    # A memo that skips a directory the walk enters: walked again, the file is there.
    assert str(hidden) in files(roots, sorted({*skip, str(extra / "pkg")}))
    assert walks == [roots, roots]
    # A memo that names other roots: walked again; what only the guess walked is not there.
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "decoy.py").write_text("Z = 3\n")
    got = files([str(decoy), *roots[1:]], skip)
    assert str(decoy / "decoy.py") not in got and str(hidden) in got
    assert walks == [[str(decoy), *roots[1:]], roots]
