"""Every decision of the bytecode comparison, one small tree each: which pairs are compiled
(spied on, the real checker runs), which verdicts are remembered and under what, and when a
signed baseline's content key stands in for compiling. Written as the insider who read
``verify_bytecode``: each test names a shortcut and shows that a file it should not cover is
compiled after all.

Fast on purpose (a few checker processes): the mutation target ``attest-bytecode``
(``bench/mutation.py``) runs this file alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import py_compile
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from trainwarden.attest import _bytecode
from trainwarden.attest._bytecode import (
    BytecodeResult,
    Vouched,
    bytecode_pairs,
    content_key,
    verify_bytecode,
)
from trainwarden.attest._cache import HashCache, PycHead, cache_key_packer

_TAG = sys.implementation.cache_tag
_MAGIC = importlib.util.MAGIC_NUMBER
# What identifies the compiler (in a snapshot: the interpreter's sha256 and cache tag).
_COMPILER = hashlib.sha256(b"the interpreter").digest() + _TAG.encode()
_pack = cache_key_packer()

Pair = tuple[str, str | None]


def _key(st: os.stat_result) -> bytes:
    return _pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[Pair]]]:
    """The pairs handed to the real checker, per call (an empty call compiles nothing); no
    verdict remembered by this process before or after."""
    calls: list[list[Pair]] = []
    real = _bytecode.check_bytecode

    def spy(
        pairs: Sequence[Pair],
        python: str | None,
        env: Mapping[str, str],
        *,
        workers: int | None = None,
    ) -> list[_bytecode._Checked]:
        calls.append(list(pairs))
        return real(pairs, python, env, workers=workers)

    monkeypatch.setattr(_bytecode, "check_bytecode", spy)
    _bytecode.forget_verdicts()
    yield calls
    _bytecode.forget_verdicts()


def _module(root: Path, name: str = "m", text: str = "X = 1\n", opt: int = 0) -> tuple[str, str]:
    """A source and the pyc Python itself writes for it (timestamp header)."""
    src = root / f"{name}.py"
    src.write_text(text)
    return _compile(src, py_compile.PycInvalidationMode.TIMESTAMP, opt), str(src)


def _compile(src: Path, mode: py_compile.PycInvalidationMode, opt: int = 0) -> str:
    pyc = py_compile.compile(str(src), doraise=True, optimize=opt, invalidation_mode=mode)
    assert pyc is not None
    return pyc


def _stats(pairs: Sequence[Pair]) -> dict[str, os.stat_result]:
    return {p: os.lstat(p) for pair in pairs for p in pair if p is not None}


def _run(
    pairs: Sequence[Pair],
    cache: HashCache,
    *,
    compiler: bytes | None = _COMPILER,
    stats: Mapping[str, os.stat_result] | None = None,
    vouched: Vouched | None = None,
    python: str = sys.executable,
) -> tuple[list[BytecodeResult], bool, set[str]]:
    return verify_bytecode(
        pairs,
        _stats(pairs) if stats is None else stats,
        compiler,
        python,
        {},
        cache,
        workers=1,
        vouched=vouched,
    )


def _content(pyc: str, src: str, compiler: bytes = _COMPILER) -> str:
    body = hashlib.sha256(Path(pyc).read_bytes()[16:]).digest()
    return content_key(compiler, pyc, body, hashlib.sha256(Path(src).read_bytes()).digest())


def _statuses(results: Sequence[BytecodeResult]) -> list[str]:
    return [r.status for r in results]


# --- remembered verdicts ---------------------------------------------------------------------


def test_a_verdict_is_remembered_under_the_compiler_and_both_files_metadata(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    results, consistent, matches = _run([(pyc, src)], cache)
    assert compiled == [[(pyc, src)]]
    assert results == [BytecodeResult(pyc, src, "match", "")]
    assert consistent
    ck = _content(pyc, src)
    assert matches == {ck}
    key = _COMPILER + _key(os.lstat(pyc)) + _key(os.lstat(src))
    assert cache.bytecode_verdicts() == {key: ("match", "", ck)}
    # the next run (this process's memory dropped) takes it from the cache: nothing compiled
    _bytecode.forget_verdicts()
    again = _run([(pyc, src)], cache)
    assert compiled[1:] == [[]]
    assert again == (results, True, {ck})


def test_this_process_remembers_verdicts_for_a_new_cache_which_stores_them(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    _run([(pyc, src)], HashCache(None))
    store = tmp_path / "cache" / "hashes.bin"
    store.parent.mkdir(mode=0o700)
    fresh = HashCache(store)
    results, consistent, matches = _run([(pyc, src)], fresh)
    assert compiled[1:] == [[]]
    assert _statuses(results) == ["match"] and consistent and matches == {_content(pyc, src)}
    fresh.save()  # what it took from this process's memory counts as new: it is written
    assert list(HashCache(store).bytecode_verdicts().values()) == [
        ("match", "", _content(pyc, src))
    ]


def test_verdicts_compiled_into_a_cache_file_are_written(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    store = tmp_path / "cache" / "hashes.bin"
    store.parent.mkdir(mode=0o700)
    cache = HashCache(store)
    _run([(pyc, src)], cache)
    cache.save()
    assert list(HashCache(store).bytecode_verdicts().values()) == [
        ("match", "", _content(pyc, src))
    ]


@pytest.mark.parametrize("which", ["pyc", "source"])
def test_a_remembered_verdict_needs_the_same_metadata_of_both_files(
    tmp_path: Path, compiled: list[list[Pair]], which: str
) -> None:
    """chmod changes only the ctime (content and header untouched): still another key."""
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    _run([(pyc, src)], cache)
    os.chmod(pyc if which == "pyc" else src, 0o600)
    results, _, _ = _run([(pyc, src)], cache)
    assert compiled[1:] == [[(pyc, src)]]
    assert _statuses(results) == ["match"]
    assert len(cache.bytecode_verdicts()) == 2


def test_a_verdict_is_not_applied_under_another_compiler(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    _run([(pyc, src)], cache)
    _run([(pyc, src)], cache, compiler=hashlib.sha256(b"another").digest() + _TAG.encode())
    assert compiled[1:] == [[(pyc, src)]]


def test_without_a_compiler_id_everything_is_compiled_and_nothing_remembered(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    for _ in range(2):
        results, consistent, matches = _run([(pyc, src)], cache, compiler=None)
        assert _statuses(results) == ["match"] and consistent
        assert matches == set()  # no content key without knowing the compiler
    assert compiled == [[(pyc, src)], [(pyc, src)]]
    assert cache.bytecode_verdicts() == {}


@pytest.mark.parametrize("linked", ["pyc", "source"])
def test_links_are_compared_every_time(
    tmp_path: Path, compiled: list[list[Pair]], linked: str
) -> None:
    """A link's own metadata says nothing of its target: a verdict is never taken for it."""
    pyc, src = _module(tmp_path)
    if linked == "pyc":
        real = tmp_path / "real.pyc"
        os.replace(pyc, real)
        os.symlink(real, pyc)
    else:
        real = tmp_path / "real.py"
        os.replace(src, real)
        os.symlink(real, src)
    cache = HashCache(None)
    for _ in range(2):
        _run([(pyc, src)], cache)
    assert compiled == [[(pyc, src)], [(pyc, src)]]


def test_a_pair_whose_files_were_not_walked_is_compiled_and_not_remembered(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    for stats in ({pyc: os.lstat(pyc)}, {src: os.lstat(src)}, {}):
        results, _, _ = _run([(pyc, src)], cache, stats=stats)
        assert _statuses(results) == ["match"]
    assert compiled == [[(pyc, src)]] * 3
    assert cache.bytecode_verdicts() == {}


def test_a_file_changed_after_the_walk_gives_this_run_its_verdict_and_remembers_none(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    for changed in (pyc, src):
        walked = _stats([(pyc, src)])
        os.chmod(changed, 0o600)  # a new ctime, nothing else
        cache = HashCache(None)
        results, consistent, matches = _run([(pyc, src)], cache, stats=walked)
        assert _statuses(results) == ["match"]
        assert consistent is False
        assert matches == {_content(pyc, src)}  # true of the bytes read, whatever their metadata
        assert cache.bytecode_verdicts() == {}


def test_a_planted_pyc_is_a_mismatch_which_is_remembered(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    head = Path(pyc).read_bytes()[:16]
    Path(pyc).write_bytes(head + marshal.dumps(compile("X = 2\n", src, "exec")))
    cache = HashCache(None)
    results, consistent, matches = _run([(pyc, src)], cache)
    assert _statuses(results) == ["mismatch"] and consistent and matches == set()
    assert [v[:1] + v[2:] for v in cache.bytecode_verdicts().values()] == [("mismatch", "")]
    _bytecode.forget_verdicts()
    assert _statuses(_run([(pyc, src)], cache)[0]) == ["mismatch"]
    assert compiled[1:] == [[]]


def test_sourceless_bytecode_is_remembered_under_its_own_metadata(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc = tmp_path / "lone.pyc"
    pyc.write_bytes(_MAGIC + bytes(12) + marshal.dumps(compile("", "lone", "exec")))
    cache = HashCache(None)
    results, consistent, _ = _run([(str(pyc), None)], cache)
    assert _statuses(results) == ["sourceless"] and consistent
    assert list(cache.bytecode_verdicts()) == [_COMPILER + _key(os.lstat(pyc))]
    _bytecode.forget_verdicts()
    _run([(str(pyc), None)], cache)
    assert compiled[1:] == [[]]


def test_bytecode_of_another_python_version_is_decided_without_its_source_and_not_kept(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    """The checker answers "ignored" from the magic number alone, without reading the source: no
    source metadata comes back, so nothing can be remembered under the walk's."""
    pyc, src = _module(tmp_path)
    data = Path(pyc).read_bytes()
    Path(pyc).write_bytes(b"\x00\x00\r\n" + data[4:])
    cache = HashCache(None)
    results, consistent, _ = _run([(pyc, src)], cache)
    assert _statuses(results) == ["ignored"] and consistent
    assert cache.bytecode_verdicts() == {}


def test_a_checker_that_cannot_run_is_an_error_that_is_retried(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    results, consistent, matches = _run([(pyc, src)], cache, python=str(tmp_path / "no-python"))
    assert _statuses(results) == ["error"]
    assert "no-python" in results[0].detail
    assert consistent is False and matches == set()
    assert cache.bytecode_verdicts() == {}
    assert _statuses(_run([(pyc, src)], cache)[0]) == ["match"]


def test_results_come_back_in_the_order_of_the_pairs(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    a = _module(tmp_path, "a")
    b = _module(tmp_path, "b", "Y = 2\n")
    cache = HashCache(None)
    _run([a], cache)  # one remembered, one compiled
    results, _, _ = _run([b, a], cache)
    assert [r.pyc for r in results] == [b[0], a[0]]
    assert compiled[1:] == [[b]]


def test_no_pairs_reads_no_cache(tmp_path: Path, compiled: list[list[Pair]]) -> None:
    class Untouchable(HashCache):
        def bytecode_verdicts(self) -> dict[bytes, tuple[str, str, str]]:
            raise AssertionError("the cache's tables were parsed")

    assert verify_bytecode([], {}, _COMPILER, None, {}, Untouchable(None)) == ([], True, set())
    assert compiled == []


# --- a signed baseline's content keys ----------------------------------------------------------


def _vouched(
    pyc: str,
    src: str,
    cache: HashCache,
    *,
    keys: set[str] | None = None,
    head: PycHead | None = None,
    src_digest: bytes | None = None,
    magic: bytes = _MAGIC,
) -> Vouched:
    """What a verify against a signed baseline has: the baseline's content keys, the header and
    body digest the hash pass read of each pyc, and the source's digest in the hash cache."""
    data = Path(pyc).read_bytes()
    if head is None:
        head = (data[:16], hashlib.sha256(data[16:]).digest(), _key(os.lstat(pyc)))
    digest = hashlib.sha256(Path(src).read_bytes()).digest() if src_digest is None else src_digest
    cache.put(os.lstat(src), digest)
    return Vouched(frozenset({_content(pyc, src)} if keys is None else keys), magic, {pyc: head})


def test_a_baseline_content_key_is_a_match_without_compiling_and_is_remembered(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    results, consistent, matches = _run([(pyc, src)], cache, vouched=_vouched(pyc, src, cache))
    assert compiled == [[]]
    assert results == [BytecodeResult(pyc, src, "match", "")] and consistent
    ck = _content(pyc, src)
    assert matches == {ck}
    key = _COMPILER + _key(os.lstat(pyc)) + _key(os.lstat(src))
    assert cache.bytecode_verdicts() == {key: ("match", "", ck)}
    # and this process remembers it for the next cache
    _run([(pyc, src)], HashCache(None))
    assert compiled[1:] == [[]]


def _header(pyc: str, **change: int) -> bytes:
    data = bytearray(Path(pyc).read_bytes()[:16])
    for field, value in change.items():
        at = {"flags": 4, "mtime": 8, "size": 12}[field]
        data[at : at + 4] = value.to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize(
    "spoil",
    [
        "key not in the baseline",
        "no head read",
        "head read under other metadata",
        "source digest not in the cache",
        "source digest another",
        "magic of another version",
        "header mtime not the source's",
        "header size not the source's",
        "source over the checker's limit",
    ],
)
def test_anything_short_of_a_vouched_match_is_compiled(
    tmp_path: Path, compiled: list[list[Pair]], monkeypatch: pytest.MonkeyPatch, spoil: str
) -> None:
    pyc, src = _module(tmp_path)
    data = Path(pyc).read_bytes()
    body = hashlib.sha256(data[16:]).digest()
    pyc_key = _key(os.lstat(pyc))
    cache = HashCache(None)
    kw: dict[str, object] = {}
    if spoil == "key not in the baseline":
        kw["keys"] = {_content(pyc, src, compiler=b"another")}
    elif spoil == "head read under other metadata":
        kw["head"] = (data[:16], body, pyc_key[:-1] + bytes([pyc_key[-1] ^ 1]))
    elif spoil == "source digest another":
        kw["src_digest"] = hashlib.sha256(b"X = 2\n").digest()
    elif spoil == "magic of another version":
        kw["magic"] = b"\x00\x00\r\n"
    elif spoil == "header mtime not the source's":
        kw["head"] = (_header(pyc, mtime=int(os.stat(src).st_mtime) + 1), body, pyc_key)
    elif spoil == "header size not the source's":
        kw["head"] = (_header(pyc, size=os.stat(src).st_size + 1), body, pyc_key)
    elif spoil == "source over the checker's limit":
        monkeypatch.setattr(_bytecode, "_MAX_SOURCE", os.stat(src).st_size - 1)
    vouched = _vouched(pyc, src, cache, **kw)  # type: ignore[arg-type]
    if spoil == "no head read":
        vouched = vouched._replace(heads={})
    if spoil == "source digest not in the cache":
        cache = HashCache(None)
    results, _, _ = _run([(pyc, src)], cache, vouched=vouched)
    assert compiled == [[(pyc, src)]]
    assert _statuses(results) == ["match"]  # the checker's verdict, not the baseline's


def test_a_vouched_hash_based_pyc_is_used_whatever_its_header_dates(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    """A hash-based pyc is imported without comparing mtime and size: the header's other fields
    do not stop the baseline's key from standing."""
    src = tmp_path / "h.py"
    src.write_text("X = 1\n")
    pyc = _compile(src, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    cache = HashCache(None)
    _run([(pyc, str(src))], cache, vouched=_vouched(pyc, str(src), cache))
    assert compiled == [[]]


def test_a_baseline_key_for_one_optimisation_level_does_not_vouch_for_another(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    """The same source compiled at -O: its pyc's key includes the level; a key taken at level 0
    for the same body and source does not cover it."""
    pyc, src = _module(tmp_path, opt=1)
    assert ".opt-1." in pyc
    body = hashlib.sha256(Path(pyc).read_bytes()[16:]).digest()
    level0 = content_key(
        _COMPILER, pyc.replace(".opt-1", ""), body, hashlib.sha256(Path(src).read_bytes()).digest()
    )
    cache = HashCache(None)
    _run([(pyc, src)], cache, vouched=_vouched(pyc, src, cache, keys={level0}))
    assert compiled == [[(pyc, src)]]


def test_sourceless_bytecode_is_never_vouched(tmp_path: Path, compiled: list[list[Pair]]) -> None:
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    vouched = _vouched(pyc, src, cache)
    results, _, _ = _run([(pyc, None)], cache, vouched=vouched)
    assert compiled == [[(pyc, None)]]
    assert _statuses(results) == ["sourceless"]


# --- which bytecode Python would import, and the content key's parts ---------------------------


def test_bytecode_pairs_are_the_files_python_would_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    cache_dir = pkg / "__pycache__"
    cache_dir.mkdir(parents=True)
    names = [
        "pkg/a.py",
        f"pkg/__pycache__/a.{_TAG}.pyc",
        f"pkg/__pycache__/a.{_TAG}.opt-1.pyc",
        f"pkg/__pycache__/a.{_TAG}.opt-2.pyc",
        f"pkg/__pycache__/a.{_TAG}.opt-3.pyc",  # no such level
        "pkg/__pycache__/a.cpython-10.pyc",  # another interpreter's
        f"pkg/__pycache__/gone.{_TAG}.pyc",  # its source is gone: Python never looks here
        "pkg/lone.pyc",  # imported as is
        "pkg/b.py",
        "pkg/b.pyc",  # beside its source: the source wins
        f"pkg/__pycache__/a.{_TAG}.pyc.bak",
    ]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    stats = {str(tmp_path / n): os.lstat(tmp_path / n) for n in names}
    a = str(pkg / "a.py")
    assert bytecode_pairs(stats, _TAG) == sorted(
        [
            (str(cache_dir / f"a.{_TAG}.opt-1.pyc"), a),
            (str(cache_dir / f"a.{_TAG}.opt-2.pyc"), a),
            (str(cache_dir / f"a.{_TAG}.pyc"), a),
            (str(pkg / "lone.pyc"), None),
        ]
    )


def test_a_content_key_is_the_compiler_level_body_and_source() -> None:
    body, source = hashlib.sha256(b"body").digest(), hashlib.sha256(b"source").digest()
    plain = content_key(_COMPILER, f"/x/__pycache__/m.{_TAG}.pyc", body, source)
    expect = hashlib.sha256(_COMPILER + b"\x00" + body + source).hexdigest()
    assert plain == expect
    for name, level in ((f"m.{_TAG}.opt-1.pyc", b"\x01"), (f"m.{_TAG}.opt-2.pyc", b"\x02")):
        got = content_key(_COMPILER, f"/x/__pycache__/{name}", body, source)
        assert got == hashlib.sha256(_COMPILER + level + body + source).hexdigest()
    # a folder named like a level does not set it
    odd = content_key(_COMPILER, f"/x.opt-2.d/__pycache__/m.{_TAG}.pyc", body, source)
    assert odd == plain
    assert content_key(b"other", f"/x/__pycache__/m.{_TAG}.pyc", body, source) != plain
    assert content_key(_COMPILER, f"/x/__pycache__/m.{_TAG}.pyc", source, body) != plain


# --- more pairs at once: no decision stops the others ------------------------------------------


def _link_pair(root: Path) -> tuple[str, str]:
    pyc, src = _module(root, "linked")
    real = root / "linked-real.pyc"
    os.replace(pyc, real)
    os.symlink(real, pyc)
    return pyc, src


def test_every_pair_is_decided_whatever_the_one_before_it_took(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    """Pairs that went to the checker for different reasons, then a remembered one, then a new
    one: each gets its result, in order, and only the right ones are remembered."""
    link = _link_pair(tmp_path)
    unwalked = _module(tmp_path, "unwalked")
    remembered = _module(tmp_path, "remembered")
    other = _module(tmp_path, "other", "V = 9\n")
    data = Path(other[0]).read_bytes()
    alien = _module(tmp_path, "alien")
    Path(alien[0]).write_bytes(b"\x00\x00\r\n" + Path(alien[0]).read_bytes()[4:])
    fresh = _module(tmp_path, "fresh")
    cache = HashCache(None)
    _run([remembered], cache)
    pairs = [link, unwalked, remembered, alien, other, fresh]
    stats = _stats(pairs)
    del stats[unwalked[1]]
    os.chmod(other[0], 0o600)  # changed after the walk
    results, consistent, matches = _run(pairs, cache, stats=stats)
    assert [(r.pyc, r.status) for r in results] == [
        (link[0], "match"),
        (unwalked[0], "match"),
        (remembered[0], "match"),
        (alien[0], "ignored"),
        (other[0], "match"),
        (fresh[0], "match"),
    ]
    assert compiled[1:] == [[link, unwalked, alien, other, fresh]]
    assert consistent is False  # only because of the file changed after the walk
    assert matches == {_content(p, s) for p, s in (link, unwalked, remembered, fresh, other)}
    assert len(Path(other[0]).read_bytes()) == len(data)
    remembered_now = {k[len(_COMPILER) :] for k in cache.bytecode_verdicts()}
    assert remembered_now == {_key(os.lstat(p)) + _key(os.lstat(s)) for p, s in (remembered, fresh)}


def test_links_and_unwalked_files_compared_again_leave_the_run_consistent(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    link = _link_pair(tmp_path)
    _, consistent, _ = _run([link], HashCache(None))
    assert consistent is True


def test_a_remembered_match_without_a_content_key_adds_none(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    """A verdict from a checker that had no hashlib: a match, but no content key to record."""
    pyc, src = _module(tmp_path)
    cache = HashCache(None)
    cache.bytecode_verdicts()[_COMPILER + _key(os.lstat(pyc)) + _key(os.lstat(src))] = (
        "match",
        "",
        "",
    )
    results, _, matches = _run([(pyc, src)], cache)
    assert _statuses(results) == ["match"] and matches == set()
    assert compiled == [[]]


def _file_cache(tmp_path: Path) -> Path:
    store = tmp_path / "cache" / "hashes.bin"
    store.parent.mkdir(mode=0o700)
    return store


def test_verdicts_from_memory_and_from_the_checker_in_one_run_are_all_written(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    a, b = _module(tmp_path, "a"), _module(tmp_path, "b", "Y = 2\n")
    _run([a], HashCache(None))  # this process remembers a
    store = _file_cache(tmp_path)
    cache = HashCache(store)
    _run([a, b], cache)
    cache.save()
    assert sorted(HashCache(store).bytecode_verdicts().values()) == sorted(
        [("match", "", _content(*a)), ("match", "", _content(*b))]
    )


def test_a_vouched_verdict_and_a_compiled_one_in_one_run_are_both_written(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    a, b = _module(tmp_path, "a"), _module(tmp_path, "b", "Y = 2\n")
    store = _file_cache(tmp_path)
    first = HashCache(store)
    vouched = _vouched(*a, first)  # the source's digest is in the cache file already
    first.save()
    cache = HashCache(store)
    _run([a, b], cache, vouched=vouched)
    assert compiled == [[b]]
    cache.save()
    assert len(HashCache(store).bytecode_verdicts()) == 2


def test_a_run_that_learned_nothing_does_not_rewrite_the_cache(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pair = _module(tmp_path)
    store = _file_cache(tmp_path)
    cache = HashCache(store)
    _run([pair], cache)
    cache.save()
    before = os.stat(store).st_ino
    _bytecode.forget_verdicts()
    again = HashCache(store)
    _run([pair], again)
    again.save()
    assert compiled[1:] == [[]]
    assert os.stat(store).st_ino == before


def test_a_full_process_memory_keeps_no_more_verdicts(
    tmp_path: Path, compiled: list[list[Pair]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bytecode, "_MAX_VERDICTS", 0)
    a, b = _module(tmp_path, "a"), _module(tmp_path, "b", "Y = 2\n")
    cache = HashCache(None)
    _run([a, b], cache, vouched=_vouched(*a, cache))  # a vouched, b compiled
    _run([a, b], HashCache(None))
    assert compiled == [[b], [a, b]]


def test_a_source_exactly_at_the_checkers_limit_is_still_vouched(
    tmp_path: Path, compiled: list[list[Pair]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pyc, src = _module(tmp_path)
    monkeypatch.setattr(_bytecode, "_MAX_SOURCE", os.stat(src).st_size)
    cache = HashCache(None)
    _run([(pyc, src)], cache, vouched=_vouched(pyc, src, cache))
    assert compiled == [[]]


# --- the checker process: how it is run, and what of its answer is believed ----------------------


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_the_checker_runs_isolated_with_the_jobs_environment_minus_injection(
    tmp_path: Path, compiled: list[list[Pair]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TW_JOB_MARK", raising=False)
    pair = _module(tmp_path)
    log = tmp_path / "log"
    log.mkdir()
    python = _script(
        tmp_path / "python",
        f'printf "%s\\n" "$@" > {log}/args\nenv > {log}/env\nexec {sys.executable} "$@"\n',
    )
    env = {"TW_JOB_MARK": "job", "LD_AUDIT": str(tmp_path / "nothing.so")}
    results, _, _ = verify_bytecode(
        [pair], _stats([pair]), _COMPILER, python, env, HashCache(None), workers=1
    )
    assert _statuses(results) == ["match"]
    args = (log / "args").read_text().split("\n")
    assert args[:3] == ["-I", "-S", "-B"] and args[3].endswith("_bytecode_check.py")
    seen = dict(
        line.split("=", 1) for line in (log / "env").read_text().splitlines() if "=" in line
    )
    assert seen.get("TW_JOB_MARK") == "job"
    assert "LD_AUDIT" not in seen


def _answering(tmp_path: Path, rows: object, code: int = 0, stderr: str = "") -> str:
    """A "python" whose checker answers ``rows`` (JSON) and exits ``code``."""
    answer = tmp_path / "answer.json"
    answer.write_text(__import__("json").dumps(rows))
    err = f"printf '%s' '{stderr}' >&2\n" if stderr else ""
    return _script(tmp_path / "python", f"cat > /dev/null\ncat {answer}\n{err}exit {code}\n")


def _row(pair: Pair, **change: object) -> list[object]:
    """The row the real checker prints for a match, with ``change`` made to its fields."""
    pyc, src = pair
    fields = ("pyc", "status", "detail", "pyc_meta", "src_meta", "body", "src")
    row: list[object] = [pyc, "match", "", _meta(pyc), _meta(src) if src else [], "ab" * 32]
    row.append("cd" * 32)
    return [change.get(name, value) for name, value in zip(fields, row, strict=True)]


def _meta(path: str) -> list[int]:
    st = os.lstat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def test_a_checker_answer_with_the_metadata_read_is_remembered_with_its_content_key(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pair = _module(tmp_path)
    cache = HashCache(None)
    results, consistent, matches = _run([pair], cache, python=_answering(tmp_path, [_row(pair)]))
    body, src = bytes.fromhex("ab" * 32), bytes.fromhex("cd" * 32)
    ck = content_key(_COMPILER, pair[0], body, src)
    assert (_statuses(results), consistent, matches) == (["match"], True, {ck})
    assert list(cache.bytecode_verdicts().values()) == [("match", "", ck)]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"pyc": "/elsewhere.pyc"}, "checker answered out of order"),
        ({"status": "compiled, trust me"}, "checker answered out of order"),
    ],
)
def test_a_checker_answer_out_of_order_is_an_error_for_that_pair_only(
    tmp_path: Path, compiled: list[list[Pair]], change: dict[str, object], reason: str
) -> None:
    a, b = _module(tmp_path, "a"), _module(tmp_path, "b", "Y = 2\n")
    python = _answering(tmp_path, [_row(a, **change), _row(b)])
    checked = _bytecode.check_bytecode([a, b], python, {}, workers=1)
    assert checked[0] == (BytecodeResult(a[0], a[1], "error", reason), [], [], b"", b"")
    assert checked[1][0] == BytecodeResult(b[0], b[1], "match", "")
    assert len(checked) == 2


@pytest.mark.parametrize("row", [["short", "match"], "not a row", [None] * 8])
def test_a_malformed_checker_row_is_an_error(
    tmp_path: Path, compiled: list[list[Pair]], row: object
) -> None:
    pair = _module(tmp_path)
    if isinstance(row, list) and row and row[0] == "short":
        row = [pair[0], "match"]
    checked = _bytecode.check_bytecode([pair], _answering(tmp_path, [row]), {}, workers=1)
    why = "checker answered out of order"
    assert checked == [(BytecodeResult(pair[0], pair[1], "error", why), [], [], b"", b"")]


def test_a_checker_error_for_one_pair_leaves_the_next_decided_and_remembered(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    a, b = _module(tmp_path, "a"), _module(tmp_path, "b", "Y = 2\n")
    python = _answering(tmp_path, [_row(a, status="error", detail="crashed"), _row(b)])
    cache = HashCache(None)
    results, consistent, _ = _run([a, b], cache, python=python)
    assert _statuses(results) == ["error", "match"] and consistent is False
    assert [k[len(_COMPILER) :] for k in cache.bytecode_verdicts()] == [
        _key(os.lstat(b[0])) + _key(os.lstat(b[1]))
    ]


def test_the_checkers_own_error_verdict_is_kept_with_its_detail(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pair = _module(tmp_path)
    python = _answering(tmp_path, [_row(pair, status="error", detail="could not read it")])
    results, consistent, _ = _run([pair], HashCache(None), python=python)
    assert results == [BytecodeResult(pair[0], pair[1], "error", "could not read it")]
    assert consistent is False


@pytest.mark.parametrize(
    ("change", "metadata_believed"),
    [
        ({"pyc_meta": [1, 2, 3, 4]}, False),  # not five numbers: nothing read, by its word
        ({"pyc_meta": "12345"}, False),
        ({"body": "zz" * 32}, True),  # not hex: no content key
        ({"body": ["ab"] * 64}, True),
        ({"src": "short"}, True),
    ],
)
def test_checker_fields_that_are_not_what_they_should_be_are_not_believed(
    tmp_path: Path, compiled: list[list[Pair]], change: dict[str, object], metadata_believed: bool
) -> None:
    pair = _module(tmp_path)
    cache = HashCache(None)
    python = _answering(tmp_path, [_row(pair, **change)])
    results, consistent, matches = _run([pair], cache, python=python)
    assert _statuses(results) == ["match"]
    ck = content_key(_COMPILER, pair[0], bytes.fromhex("ab" * 32), bytes.fromhex("cd" * 32))
    if metadata_believed:
        # a digest that is not one only loses the content key
        assert consistent is True and matches == set()
        assert list(cache.bytecode_verdicts().values()) == [("match", "", "")]
    else:
        # metadata that cannot be believed remembers nothing (the key is of the bytes read)
        assert consistent is False and matches == {ck}
        assert cache.bytecode_verdicts() == {}


def test_a_checker_that_exits_with_an_error_is_not_believed_even_with_rows(
    tmp_path: Path, compiled: list[list[Pair]]
) -> None:
    pair = _module(tmp_path)
    noise = "x" * 150 + "y" * 150
    python = _answering(tmp_path, [_row(pair)], code=3, stderr=noise)
    checked = _bytecode.check_bytecode([pair], python, {}, workers=1)
    why = f"checker exited 3: {noise[-200:]}"
    assert checked == [(BytecodeResult(pair[0], pair[1], "error", why), [], [], b"", b"")]


def test_a_checker_that_runs_too_long_is_an_error(
    tmp_path: Path, compiled: list[list[Pair]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bytecode, "_CHUNK_TIMEOUT", 0.5)
    pair = _module(tmp_path)
    python = _script(tmp_path / "python", "exec sleep 30\n")
    checked = _bytecode.check_bytecode([pair], python, {}, workers=1)
    assert checked[0][0].status == "error"
    assert checked[0][0].detail.startswith("TimeoutExpired:")


def test_a_checker_that_cannot_start_names_why(tmp_path: Path, compiled: list[list[Pair]]) -> None:
    pair = _module(tmp_path)
    checked = _bytecode.check_bytecode([pair], str(tmp_path / "none"), {}, workers=1)
    assert checked[0][0].detail.startswith("FileNotFoundError:")
    assert checked[0][1:] == ([], [], b"", b"")


def test_more_pairs_than_the_limit_are_each_an_error_and_none_is_compared(
    tmp_path: Path, compiled: list[list[Pair]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bytecode, "MAX_BYTECODE_FILES", 2)
    pairs = [_module(tmp_path, f"m{i}") for i in range(3)]
    why = "more than 2 bytecode files to compare"
    assert _bytecode.check_bytecode(pairs, sys.executable, {}) == [
        (BytecodeResult(p, s, "error", why), [], [], b"", b"") for p, s in pairs
    ]
    assert [r[0].status for r in _bytecode.check_bytecode(pairs[:2], sys.executable, {})] == [
        "match",
        "match",
    ]


def test_pairs_are_checked_in_chunks_each_pair_once(
    tmp_path: Path, compiled: list[list[Pair]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bytecode, "_CHUNK", 2)
    pairs = [_module(tmp_path, f"m{i}") for i in range(5)]
    checked = _bytecode.check_bytecode(pairs, sys.executable, {}, workers=2)
    assert [(r[0].pyc, r[0].status) for r in checked] == [(p, "match") for p, _ in pairs]
