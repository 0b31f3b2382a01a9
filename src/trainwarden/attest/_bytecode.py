"""Bytecode that Python would import, compared with its source by the target interpreter.

Python runs ``__pycache__/NAME.TAG.pyc`` instead of ``NAME.py`` whenever the pyc header matches
the source's mtime and size (or its hash, or never checks for "unchecked" hash-based pycs); the
bytecode body itself is never compared with the source. A planted pyc with a copied header runs
while the reviewed source stays intact, and ``.gitignore`` usually hides ``__pycache__``. Every
such file on the job's path (site-packages, the standard library, every other ``sys.path``
entry) and in its code directories, ignored by git or not, is compared with the compiled source
in the interpreter the job runs (:mod:`trainwarden.attest._bytecode_check`, run as
``python -I -S -B``); a ``NAME.pyc`` with no ``NAME.py`` beside it is imported as is and cannot
be checked, so it is reported.

Compiling every source is the cost (a few milliseconds a file), so a verdict is remembered under
the interpreter's digest and the (device, inode, size, mtime_ns, ctime_ns) of the bytecode and of
its source as the checker read them: in the hash cache, and for the life of this process. A
write to either file changes its ctime, which no user can set back, so a remembered verdict is
never applied to other bytes.

A ``match`` is also known by content (:func:`content_key`: the compiler, the optimisation level,
the sha256 of the pyc after its header and of the source), which a snapshot records; a node
verifying against a baseline whose signature was verified takes the baseline's matches for
identical content instead of compiling (:class:`Vouched`). Without such a baseline every
bytecode file not remembered is compiled.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISLNK
from typing import NamedTuple

from trainwarden.attest._cache import HashCache, PycHead, cache_key_packer
from trainwarden.attest._envvars import helper_environment

__all__ = [
    "MAX_BYTECODE_FILES",
    "BytecodeResult",
    "Vouched",
    "bytecode_pairs",
    "check_bytecode",
    "content_key",
    "find_bytecode",
    "forget_verdicts",
    "verify_bytecode",
]

_CHECKER = Path(__file__).with_name("_bytecode_check.py")
# Bytecode files compiled and compared in one run (remembered verdicts do not count); past it
# every file not compared is an error finding, never a quiet pass.
MAX_BYTECODE_FILES = 400_000
_CHUNK = 1_000
_CHUNK_TIMEOUT = 600
# Verdicts remembered for the life of the process (a long-lived service, the test suite):
# (status, detail, content key of a match or "").
_VERDICTS: dict[bytes, tuple[str, str, str]] = {}
_MAX_VERDICTS = 1_000_000
# Verdicts that depend only on the bytes read; "error" (a crash, a timeout) is retried.
_REMEMBERED = frozenset({"match", "mismatch", "ignored", "sourceless"})
# The checker's limit on what it reads; a larger source is an error there, never a match.
_MAX_SOURCE = 64 * 1024 * 1024


def forget_verdicts() -> None:
    """Drop the verdicts this process remembers (a benchmark's cold run)."""
    _VERDICTS.clear()


class BytecodeResult(NamedTuple):
    """One bytecode file: ``status`` is ``match``, ``mismatch``, ``ignored``, ``sourceless``
    or ``error``; ``source`` is the file it was compared with."""

    pyc: str
    source: str | None
    status: str
    detail: str


# A checker's answer: the result, the metadata of the bytecode and source it read, and for a
# match the sha256 of the bytecode's body and of the source.
_Checked = tuple[BytecodeResult, list[int], list[int], bytes, bytes]


def bytecode_pairs(
    stats: Mapping[str, os.stat_result], cache_tag: str
) -> list[tuple[str, str | None]]:
    """``(pyc, source)`` for every bytecode file among the walked ``stats`` that Python could
    import: ``__pycache__/NAME.TAG.pyc`` (and ``.opt-1``/``.opt-2``, loaded under ``-O``) for
    this interpreter's cache tag whose ``NAME.py`` exists, and any other ``NAME.pyc`` with no
    ``NAME.py`` beside it (``source`` None: Python imports it as is)."""
    sep = os.sep
    cache_dir = sep + "__pycache__"
    names = (f"{cache_tag}.pyc", f"{cache_tag}.opt-1.pyc", f"{cache_tag}.opt-2.pyc")
    out: list[tuple[str, str | None]] = []
    for path in stats:
        if not path.endswith(".pyc"):
            continue
        d, _, name = path.rpartition(sep)
        if d.endswith(cache_dir):
            stem, _, rest = name.partition(".")
            if rest not in names:
                continue  # another interpreter's or another level's bytecode: never imported
            source = d[: -len(cache_dir)] + sep + stem + ".py"
            if source in stats:
                out.append((path, source))
        elif path[:-1] not in stats:
            out.append((path, None))
    out.sort()
    return out


def find_bytecode(roots: Sequence[str], cache_tag: str) -> list[tuple[str, str | None]]:
    """:func:`bytecode_pairs` of every file below ``roots`` (``.git`` is not entered)."""
    from trainwarden.attest._syspath import walk_roots

    stats, _ = walk_roots([r for r in roots if os.path.isdir(r)], set())
    return bytecode_pairs(stats, cache_tag)


def check_bytecode(
    pairs: Sequence[tuple[str, str | None]],
    python: str | None,
    env: Mapping[str, str],
    *,
    workers: int | None = None,
) -> list[_Checked]:
    """Compare each pair in the target interpreter (chunks in parallel processes); each result
    comes with the metadata of the bytecode and source the checker read (``[]`` if unread) and,
    for a ``match``, the sha256 of the bytecode's body and of the source (``b""`` otherwise). A
    checker that fails or times out makes each pair of its chunk an ``error`` (fail closed)."""
    if not pairs:
        return []
    if len(pairs) > MAX_BYTECODE_FILES:
        why = f"more than {MAX_BYTECODE_FILES} bytecode files to compare"
        return [(BytecodeResult(p, s, "error", why), [], [], b"", b"") for p, s in pairs]
    exe = python or sys.executable
    helper_env = helper_environment(env)
    chunks = [list(pairs[i : i + _CHUNK]) for i in range(0, len(pairs), _CHUNK)]

    def run(chunk: list[tuple[str, str | None]]) -> list[_Checked]:
        try:
            proc = subprocess.run(  # noqa: S603 - the interpreter under attestation, isolated
                [exe, "-I", "-S", "-B", str(_CHECKER)],
                input=json.dumps([list(p) for p in chunk]),
                capture_output=True,
                text=True,
                timeout=_CHUNK_TIMEOUT,
                check=False,
                env=helper_env,
            )
            rows = json.loads(proc.stdout) if proc.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            rows, why = None, f"{type(e).__name__}: {e}"
        else:
            why = f"checker exited {proc.returncode}: {proc.stderr.strip()[-200:]}"
        if not isinstance(rows, list) or len(rows) != len(chunk):
            return [(BytecodeResult(p, s, "error", why), [], [], b"", b"") for p, s in chunk]
        out: list[_Checked] = []
        for (pyc, source), row in zip(chunk, rows, strict=True):
            ok = isinstance(row, list) and len(row) == 7 and row[0] == pyc
            if not ok or row[1] not in (*_REMEMBERED, "error"):
                why = "checker answered out of order"
                out.append((BytecodeResult(pyc, source, "error", why), [], [], b"", b""))
                continue
            res = BytecodeResult(pyc, source, str(row[1]), str(row[2]))
            out.append((res, _ints(row[3]), _ints(row[4]), _sha(row[5]), _sha(row[6])))
        return out

    n = max(1, min(len(chunks), workers or min(8, os.cpu_count() or 1)))
    results: list[_Checked] = []
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="tw-pyc") as pool:
        for part in pool.map(run, chunks):
            results.extend(part)
    return results


def _ints(x: object) -> list[int]:
    return [int(v) for v in x] if isinstance(x, list) and len(x) == 5 else []


def _sha(x: object) -> bytes:
    if isinstance(x, str) and len(x) == 64:
        try:
            return bytes.fromhex(x)
        except ValueError:
            return b""
    return b""


def content_key(compiler: bytes, pyc: str, body_sha256: bytes, source_sha256: bytes) -> str:
    """The content address of a ``match`` verdict: the compiler, the optimisation level the pyc's
    name selects, the sha256 of the bytecode after its 16-byte header and of the source. The
    header is not in it: it only decides whether Python uses the file, which is checked on the
    node itself."""
    h = hashlib.sha256(compiler)
    h.update(_level(pyc) + body_sha256 + source_sha256)
    return h.hexdigest()


def _level(pyc: str) -> bytes:
    # The same rule as the checker's: the level the compiled source is compared at.
    if ".opt-" not in pyc:
        return b"\x00"
    name = os.path.basename(pyc)
    return b"\x02" if ".opt-2." in name else b"\x01" if ".opt-1." in name else b"\x00"


def _used_by_python(head: bytes, magic: bytes, sst: os.stat_result) -> bool:
    """Whether Python imports a pyc with this 16-byte header for a source with metadata
    ``sst``, by the checker's rules (a hash-based pyc is used whatever its source hash)."""
    if len(head) < 16 or head[:4] != magic:
        return False
    if int.from_bytes(head[4:8], "little") & 0b1:
        return True
    mtime = int.from_bytes(head[8:12], "little")
    size = int.from_bytes(head[12:16], "little")
    return mtime == (int(sst.st_mtime) & 0xFFFFFFFF) and size == (sst.st_size & 0xFFFFFFFF)


class Vouched(NamedTuple):
    """``match`` verdicts of a trusted baseline (content keys, see :func:`content_key`), with
    what is needed to apply them here: the interpreter's magic number, and the header and body
    digest of each bytecode file as the hash pass read it."""

    keys: frozenset[str]
    magic: bytes
    heads: Mapping[str, PycHead]


def verify_bytecode(
    pairs: Sequence[tuple[str, str | None]],
    stats: Mapping[str, os.stat_result],
    interpreter: bytes | None,
    python: str | None,
    env: Mapping[str, str],
    cache: HashCache,
    *,
    workers: int | None = None,
    vouched: Vouched | None = None,
) -> tuple[list[BytecodeResult], bool, set[str]]:
    """A result for each pair; whether every verdict computed here was computed from files with
    exactly the metadata in ``stats`` (the walk's lstat); and the content keys
    (:func:`content_key`) of the pairs that match.

    ``interpreter`` identifies the compiler (the interpreter binary's sha256 and cache tag);
    without it nothing is remembered and no content key is known. Pairs where either file is a
    symbolic link are always compared (the link's own metadata says nothing of its target).

    ``vouched`` must come from a baseline whose signature was verified: a pair whose content key
    it holds is a ``match`` without compiling, provided the pyc was read by the hash pass with
    exactly the walk's metadata, the source's digest is in the hash cache under exactly the
    walk's metadata, and the header says Python uses the file. Anything else is compiled.
    """
    if not pairs:
        # Nothing to compare: do not make the cache parse its tables (a warm verify whose memo
        # matched has not needed them so far).
        return [], True, set()
    pack = cache_key_packer()
    table = cache.bytecode_verdicts()
    digests = cache.lookup_table() if vouched is not None else {}
    compiler = hashlib.sha256(interpreter or b"")
    results: dict[str, BytecodeResult] = {}
    keys: dict[str, bytes] = {}
    matches: set[str] = set()
    todo: list[tuple[str, str | None]] = []
    added = 0
    for pyc, source in pairs:
        st = stats.get(pyc)
        sst = stats.get(source) if source is not None else None
        if interpreter is None or st is None or S_ISLNK(st.st_mode):
            todo.append((pyc, source))
            continue
        if source is not None and (sst is None or S_ISLNK(sst.st_mode)):
            todo.append((pyc, source))
            continue
        pyc_key = pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        key = interpreter + pyc_key
        src_key = b""
        if sst is not None:
            src_key = pack(sst.st_dev, sst.st_ino, sst.st_size, sst.st_mtime_ns, sst.st_ctime_ns)
            key += src_key
        hit = table.get(key)
        if hit is None:
            hit = _VERDICTS.get(key)
            if hit is not None:
                table[key] = hit
                added += 1
        if hit is None and vouched is not None and source is not None and sst is not None:
            head = vouched.heads.get(pyc)
            src_digest = digests.get(src_key)
            if (
                head is not None
                and head[2] == pyc_key
                and src_digest is not None
                and sst.st_size <= _MAX_SOURCE
                and _used_by_python(head[0], vouched.magic, sst)
            ):
                h = compiler.copy()  # content_key(), without hashing the compiler again
                h.update(_level(pyc) + head[1] + src_digest)
                ck = h.hexdigest()
                if ck in vouched.keys:
                    hit = ("match", "", ck)
                    table[key] = hit
                    if len(_VERDICTS) < _MAX_VERDICTS:
                        _VERDICTS[key] = hit
                    added += 1
        if hit is not None:
            results[pyc] = BytecodeResult(pyc, source, hit[0], hit[1])
            if hit[0] == "match" and hit[2]:
                matches.add(hit[2])
            continue
        keys[pyc] = key
        todo.append((pyc, source))
    consistent = True
    for res, pyc_meta, src_meta, body, src_sha in check_bytecode(
        todo, python, env, workers=workers
    ):
        results[res.pyc] = res
        if res.status not in _REMEMBERED:
            consistent = False  # a crash or a timeout is retried on the next run
            continue
        ck = ""
        if res.status == "match" and interpreter is not None and body and src_sha:
            # Content-addressed: true of the bytes the checker read, whatever their metadata.
            ck = content_key(interpreter, res.pyc, body, src_sha)
            matches.add(ck)
        want = keys.get(res.pyc)
        if want is None or interpreter is None:
            continue
        if res.source is not None and not src_meta:
            continue  # decided on the bytecode alone (another version's magic number)
        read = interpreter + (pack(*pyc_meta) if pyc_meta else b"")
        if res.source is not None:
            read += pack(*src_meta)
        if read != want:
            # A file changed between the walk and the check: right for this run, but not under
            # the walk's metadata.
            consistent = False
            continue
        verdict = (res.status, res.detail, ck)
        table[want] = verdict
        if len(_VERDICTS) < _MAX_VERDICTS:
            _VERDICTS[want] = verdict
        added += 1
    if added and cache.trusted:
        cache.note_added(added)
    return [results[p] for p, _ in pairs], consistent, matches
