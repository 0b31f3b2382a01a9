"""The tree print: helper processes and the serial walk agree on every tree, any change to any
file's metadata or name changes it, and a helper that fails makes the verify walk serially
(never a memo hit it cannot vouch for)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import trainwarden.attest._snapshot as snapshot_mod
import trainwarden.attest._treeprint as treeprint_mod
from trainwarden.attest._cache import HashCache
from trainwarden.attest._snapshot import _walk
from trainwarden.attest._treeprint import ParallelPrint, print_from_stats
from trainwarden.attest._verify import verify_environment
from trainwarden.findings import Finding

from .test_memo import _cache_file, _key, _no_file_state
from .venvs import Venv


def _serial(site_dirs: list[str]) -> tuple[bytes, dict[str, int]]:
    stats: dict[str, os.stat_result] = {}
    site_set = set(site_dirs)
    for sd in site_dirs:
        _walk(sd, stats, site_set - {sd})
    return print_from_stats(site_dirs, stats)


def _parallel(
    site_dirs: list[str], helpers: int = 2, weights: dict[str, int] | None = None
) -> tuple[bytes | None, dict[str, int]]:
    site_set = set(site_dirs)
    with ParallelPrint(site_dirs, {sd: site_set - {sd} for sd in site_dirs}, helpers, weights) as p:
        return p.result(), p.counts


def _tree(root: Path) -> list[str]:
    """Two site directories, one nested in the other's unit, with what a walk can meet."""
    outer = root / "site"
    inner = outer / "pkg" / "vendor-site"
    for d in (outer / "pkg" / "sub" / "deep", inner / "inner_pkg", outer / "empty", outer / "b"):
        d.mkdir(parents=True)
    (outer / "top.pth").write_text("import os\n")
    (outer / "pkg" / "__init__.py").write_text("X = 1\n")
    (outer / "pkg" / "sub" / "deep" / "m.py").write_text("Y = 2\n")
    (outer / "b" / "c.py").write_text("Z = 3\n")
    (inner / "inner_pkg" / "i.py").write_text("I = 4\n")
    (inner / "loose.py").write_text("L = 5\n")
    (outer / "pkg" / "link_to_dir").symlink_to(outer / "b")
    (outer / "dangling").symlink_to(root / "nowhere")
    # A name that is not UTF-8: the helpers see bytes, the serial walk surrogate-escaped text.
    os.mkdir(os.path.join(os.fsencode(outer), b"caf\xe9"))
    with open(os.path.join(os.fsencode(outer), b"caf\xe9", b"x\xff.py"), "wb") as f:
        f.write(b"W = 6\n")
    return [str(outer), str(inner)]


@pytest.mark.parametrize("helpers", [1, 2, 3])
def test_helpers_and_the_serial_walk_agree(tmp_path: Path, helpers: int) -> None:
    site_dirs = _tree(tmp_path)
    serial, serial_counts = _serial(site_dirs)
    parallel, parallel_counts = _parallel(site_dirs, helpers)
    assert parallel == serial
    assert parallel_counts == serial_counts
    # The nested site directory's files are its own units, not its parent's.
    assert serial_counts[os.path.join(site_dirs[1], "inner_pkg")] == 1
    assert serial_counts[os.path.join(site_dirs[0], "pkg")] == 3  # __init__, deep/m.py, link


def test_the_order_units_are_handed_out_in_changes_nothing(tmp_path: Path) -> None:
    site_dirs = _tree(tmp_path)
    serial, counts = _serial(site_dirs)
    backwards = {u: -n for u, n in counts.items()}
    assert _parallel(site_dirs, 2, counts)[0] == serial
    assert _parallel(site_dirs, 2, backwards)[0] == serial


def _same_size_edit(path: Path) -> None:
    before = path.stat()
    path.write_text(path.read_text().replace("1", "9").replace("2", "8"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _new_unit_with_a_file(root: Path) -> None:
    (root / "site/newpkg").mkdir()
    (root / "site/newpkg/__init__.py").write_text("")


def _retarget(root: Path) -> None:
    (root / "site/pkg/link_to_dir").unlink()
    (root / "site/pkg/link_to_dir").symlink_to(root / "site/empty")


_CHANGES: dict[str, Callable[[Path], object]] = {
    # content rewritten, size and mtime put back: only the inode change time differs
    "same-size edit, mtime restored": lambda r: _same_size_edit(r / "site/pkg/sub/deep/m.py"),
    "file added deep in a unit": lambda r: (r / "site/pkg/sub/new.py").write_text(""),
    "file added at the top": lambda r: (r / "site/sitecustomize.py").write_text(""),
    "new unit with a file": lambda r: _new_unit_with_a_file(r),
    "file removed": lambda r: (r / "site/b/c.py").unlink(),
    "file renamed in its directory": lambda r: (r / "site/b/c.py").rename(r / "site/b/d.py"),
    "file moved to another unit": lambda r: (r / "site/b/c.py").rename(r / "site/pkg/c.py"),
    "mode changed": lambda r: (r / "site/pkg/__init__.py").chmod(0o600),
    "link retargeted": lambda r: _retarget(r),
    "file in the nested site directory edited": lambda r: _same_size_edit(
        r / "site/pkg/vendor-site/loose.py"
    ),
}


@pytest.mark.parametrize("change", sorted(_CHANGES))
def test_every_change_changes_the_print_both_ways(tmp_path: Path, change: str) -> None:
    site_dirs = _tree(tmp_path)
    before, _ = _serial(site_dirs)
    _CHANGES[change](tmp_path)
    after_serial, _ = _serial(site_dirs)
    after_parallel, _ = _parallel(site_dirs)
    assert after_serial != before
    assert after_parallel == after_serial


def test_an_empty_directory_changes_neither_print(tmp_path: Path) -> None:
    # Files decide every result; an empty directory holds none (documented in docs/attest.md).
    site_dirs = _tree(tmp_path)
    before, _ = _serial(site_dirs)
    (tmp_path / "site" / "newpkg").mkdir()
    (tmp_path / "site" / "pkg" / "sub" / "empty").mkdir()
    assert _serial(site_dirs)[0] == before
    assert _parallel(site_dirs)[0] == before


def test_a_helper_that_cannot_start_gives_no_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_dirs = _tree(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    assert _parallel(site_dirs)[0] is None


@pytest.mark.parametrize(
    "program",
    [
        "import sys; sys.exit(3)",
        # exits 0 with output that is not the helpers' table
        "import sys; sys.stdin.buffer.read(); sys.stdout.buffer.write(b'not marshal')",
        # a table that leaves units out
        "import marshal, sys; sys.stdin.buffer.read(); sys.stdout.buffer.write(marshal.dumps([]))",
        # a unit number that does not exist
        "import marshal, sys; sys.stdin.buffer.read(); "
        "sys.stdout.buffer.write(marshal.dumps([(10**6, 1, b'x' * 32)]))",
    ],
)
def test_a_helper_that_fails_or_prints_something_else_gives_no_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, program: str
) -> None:
    site_dirs = _tree(tmp_path)
    monkeypatch.setattr(treeprint_mod, "_HELPER", program)
    assert _parallel(site_dirs)[0] is None


# ---- through take_snapshot -------------------------------------------------------------------


def _verify(venv: Venv, env: dict[str, str], cache: HashCache) -> tuple[Finding, ...]:
    return verify_environment(str(venv.python), environ=env, cache=cache).findings


@pytest.fixture
def helpers_used(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes | None]]:
    """Helpers for every site directory however small and however many CPUs: the prints they
    returned are collected (None: they failed)."""
    monkeypatch.setattr(snapshot_mod, "PARALLEL_MIN_FILES", 0)
    monkeypatch.setattr(snapshot_mod, "helper_count", lambda cap=None: 2)
    seen: list[bytes | None] = []
    real = ParallelPrint.result

    def spy(self: ParallelPrint) -> bytes | None:
        got = real(self)
        seen.append(got)
        return got

    monkeypatch.setattr(ParallelPrint, "result", spy)
    yield seen


def test_a_warm_verify_with_helpers_is_a_memo_hit_with_the_same_findings(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers_used: list[bytes | None],
) -> None:
    venv = make_venv()
    (venv.site / "planted.py").write_text("X = 1\n")
    path = _cache_file(tmp_path)
    # The first run: the helpers' print matches no memo, so it walks again here and computes.
    cold = _verify(venv, clean_env, HashCache(path))
    with monkeypatch.context() as m:
        m.setattr(snapshot_mod, "_file_state", _no_file_state)
        warm = _verify(venv, clean_env, HashCache(path))
    assert len(helpers_used) == 2 and all(p is not None for p in helpers_used)
    assert "TWA-ORPH-001" in {f.rule_id for f in cold}
    assert _key(warm) == _key(cold) == _key(_verify(venv, clean_env, HashCache(None)))


@pytest.mark.parametrize("change", ["edit", "add", "remove", "new package"])
def test_a_change_is_seen_by_a_verify_with_helpers(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    helpers_used: list[bytes | None],
    change: str,
) -> None:
    venv = make_venv()
    path = _cache_file(tmp_path)
    _verify(venv, clean_env, HashCache(path))
    _verify(venv, clean_env, HashCache(path))  # the memo now holds the clean results
    target = venv.installed("twdemo/core.py")
    if change == "edit":
        before = target.stat()
        target.write_text("def step(x):\n    return x * 9\n")
        assert target.stat().st_size == before.st_size
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif change == "add":
        target = venv.site / "twdemo" / "planted.py"
        target.write_text("X = 1\n")
    elif change == "remove":
        target.unlink()
    else:
        (venv.site / "evil").mkdir()
        target = venv.site / "evil" / "__init__.py"
        target.write_text("X = 1\n")
    warm = _verify(venv, clean_env, HashCache(path))
    assert helpers_used and all(p is not None for p in helpers_used)
    assert {f.rule_id for f in warm if f.location == str(target)} != set()
    assert _key(warm) == _key(_verify(venv, clean_env, HashCache(None)))


def test_helpers_that_fail_make_the_verify_walk_here_with_the_same_findings(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers_used: list[bytes | None],
) -> None:
    venv = make_venv()
    path = _cache_file(tmp_path)
    clean = _verify(venv, clean_env, HashCache(path))
    target = venv.installed("twdemo/core.py")
    before = target.stat()
    target.write_text("def step(x):\n    return x * 9\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    monkeypatch.setattr(treeprint_mod, "_HELPER", "import sys; sys.exit(1)")
    warm = _verify(venv, clean_env, HashCache(path))
    assert helpers_used[-1] is None
    assert {f.rule_id for f in clean if f.location == str(target)} == set()
    assert "TWA-REC-001" in {f.rule_id for f in warm if f.location == str(target)}


def test_two_interpreters_sharing_one_cache_each_get_their_own_findings(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    helpers_used: list[bytes | None],
) -> None:
    # The helpers start on the site directories of the last walk, before the interpreter has
    # described itself: those of the other venv here, every time.
    one, two = make_venv(), make_venv()
    (two.site / "planted.py").write_text("X = 1\n")
    path = _cache_file(tmp_path)
    expected = {v: _key(_verify(v, clean_env, HashCache(None))) for v in (one, two)}
    assert expected[one] != expected[two]
    for venv in (one, two, one, two, two, one):
        assert _key(_verify(venv, clean_env, HashCache(path))) == expected[venv]
    assert helpers_used and all(p is not None for p in helpers_used)
