"""Hashing in helper processes: the same digests, bytecode heads and cache keys as the in-process
hash pass, nothing stored under a walk's metadata that was not read with it, and a helper that
fails only costs time."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import trainwarden.attest._prefetch as prefetch_mod
import trainwarden.attest._snapshot as snapshot_mod
from trainwarden.attest._cache import HashCache, PycHead, hash_files
from trainwarden.attest._prefetch import Prefetch
from trainwarden.attest._verify import verify_environment

from . import test_bytecode_vouched as vouched_tests
from . import test_memo as memo_tests
from .test_memo import _key
from .venvs import Venv


def _tree(root: Path) -> list[tuple[str, os.stat_result]]:
    root.mkdir()
    (root / "empty.py").write_bytes(b"")
    (root / "small.py").write_text("X = 1\n")
    (root / "big.bin").write_bytes(os.urandom(600 * 1024))  # read in pieces (over 256 KiB)
    cache_dir = root / "__pycache__"
    cache_dir.mkdir()
    (cache_dir / "small.cpython-311.pyc").write_bytes(b"\xa7\r\r\n" + bytes(12) + b"body" * 50)
    (root / "unreadable.py").write_text("Y = 2\n")
    (root / "unreadable.py").chmod(0)
    os.mkfifo(root / "fifo")  # not a regular file: an error, never a digest
    files = [(str(p), os.lstat(p)) for p in sorted(root.rglob("*")) if not p.is_dir()]
    return files


def _in_process(files: list[tuple[str, os.stat_result]]) -> tuple[HashCache, dict[str, bytes]]:
    cache = HashCache(None)
    heads: dict[str, PycHead] = {}
    digests, _ = hash_files(files, cache, workers=1, pyc_heads=heads)
    return cache, {**digests, **{f"head:{p}": b"".join(h) for p, h in heads.items()}}


@pytest.mark.parametrize("helpers", [1, 2, 3])
def test_helpers_store_what_the_in_process_pass_would(tmp_path: Path, helpers: int) -> None:
    files = _tree(tmp_path / "t")
    expected_cache, expected = _in_process(files)
    cache = HashCache(None)
    heads: dict[str, PycHead] = {}
    stored = Prefetch(files, helpers, heads=True).store(cache, heads)
    readable = 4 if os.geteuid() != 0 else 5  # root reads a mode-000 file
    assert len(stored) == readable
    assert cache.lookup_table() == expected_cache.lookup_table()
    # The in-process pass now finds every file in the cache: it reads nothing again.
    digests, errors = hash_files(files, cache, workers=1)
    assert cache.misses == len(errors)
    got = {**digests, **{f"head:{p}": b"".join(h) for p, h in heads.items()}}
    assert got == expected
    assert str(tmp_path / "t" / "fifo") in errors


def test_a_file_changed_after_the_walk_is_not_stored_under_the_walk_metadata(
    tmp_path: Path,
) -> None:
    files = _tree(tmp_path / "t")
    target = tmp_path / "t" / "small.py"
    before = target.stat()
    target.write_text("X = 9\n")  # same size; the walk's metadata is now stale
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    cache = HashCache(None)
    Prefetch(files, 2, heads=False).store(cache, None)
    walk = [(p, st) for p, st in files if p == str(target)]
    assert not cache.holds_all(walk)  # stored under what the helper read, not under the walk
    digests, _ = hash_files(walk, cache, workers=1)
    assert cache.misses == 1  # so the in-process pass reads it itself
    assert (
        digests[str(target)]
        == hash_files([(str(target), target.stat())], HashCache(None))[0][str(target)]
    )


@pytest.mark.parametrize(
    "program",
    ["import sys; sys.exit(1)", "import sys; sys.stdout.write('garbage')", "raise SystemExit"],
)
def test_a_helper_that_fails_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, program: str
) -> None:
    files = _tree(tmp_path / "t")
    monkeypatch.setattr(prefetch_mod, "_HASHER", program)
    cache = HashCache(None)
    assert Prefetch(files, 2, heads=True).store(cache, {}) == set()
    assert len(cache) == 0


# ---- through take_snapshot -------------------------------------------------------------------


@pytest.fixture
def helpers_hash(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every verify hashes in helpers (however few files and CPUs); what each store put in the
    cache is collected."""
    monkeypatch.setattr(snapshot_mod, "PREFETCH_MIN_FILES", 0)
    monkeypatch.setattr(snapshot_mod, "helper_count", lambda cap=None: 2)
    stored: list[int] = []
    real = Prefetch.store

    def spy(self: Prefetch, cache: HashCache, heads: dict[str, PycHead] | None) -> set[bytes]:
        keys = real(self, cache, heads)
        stored.append(len(keys))
        return keys

    monkeypatch.setattr(Prefetch, "store", spy)
    yield stored


def test_a_tampered_environment_gives_the_same_findings_with_helpers(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers_hash: list[int],
) -> None:
    memo_tests.test_findings_are_identical_uncached_serial_parallel_cold_and_from_the_memo(
        make_venv, clean_env, tmp_path, monkeypatch
    )
    assert helpers_hash and all(n > 0 for n in helpers_hash)


def test_helpers_that_fail_give_the_same_findings(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    helpers_hash: list[int],
) -> None:
    venv = make_venv()
    target = venv.installed("twdemo/core.py")
    before = target.stat()
    target.write_text("def step(x):\n    return x * 9\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    monkeypatch.setattr(prefetch_mod, "_HASHER", "import sys; sys.exit(1)")
    failed = verify_environment(str(venv.python), environ=clean_env, cache=HashCache(None))
    assert helpers_hash == [0]
    serial = verify_environment(
        str(venv.python), environ=clean_env, cache=HashCache(None), workers=1
    )
    assert "TWA-REC-001" in {f.rule_id for f in failed.findings if f.location == str(target)}
    assert _key(failed.findings) == _key(serial.findings)


@pytest.mark.parametrize(
    "attack",
    [
        # identical bytecode is vouched for by a signed baseline and not compiled
        vouched_tests.test_a_signed_baseline_vouches_for_identical_bytecode_which_is_not_compiled,
        # a planted pyc with the real header copied is still compiled and CRITICAL
        vouched_tests.test_a_planted_pyc_with_the_header_copied_and_another_body_is_compiled,
    ],
    ids=["vouched", "planted"],
)
def test_the_vouched_bytecode_tests_hold_when_the_helpers_read_the_files(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers_hash: list[int],
    attack: Callable[..., None],
) -> None:
    attack(make_venv, clean_env, cache, tmp_path, monkeypatch)
    assert helpers_hash and all(n > 0 for n in helpers_hash)


def test_no_interpreter_to_start_stores_nothing_and_the_verify_is_the_same(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers_hash: list[int],
) -> None:
    files = _tree(tmp_path / "t")
    venv = make_venv()
    (venv.site / "planted.py").write_text("X = 1\n")
    serial = verify_environment(
        str(venv.python), environ=clean_env, cache=HashCache(None), workers=1
    )
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    assert Prefetch(files, 2, heads=True).store(HashCache(None), {}) == set()
    got = verify_environment(str(venv.python), environ=clean_env, cache=HashCache(None))
    assert 0 in helpers_hash
    assert "TWA-ORPH-001" in {f.rule_id for f in got.findings}
    assert _key(got.findings) == _key(serial.findings)
