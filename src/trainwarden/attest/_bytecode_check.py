"""Compares bytecode files with their source, run by the interpreter being attested.

Executed as ``python -I -S -B bytecode_check.py`` with a JSON list of ``[pyc, source]`` pairs on
stdin (``source`` null for bytecode imported without a source); prints one ``[pyc, status,
detail, pyc_metadata, source_metadata, body_sha256, source_sha256]`` row per pair (the two
digests, of the bytecode after its 16-byte header and of the source as read, only for
``match``: what a content-addressed verdict is keyed on). Nothing here imports trainwarden or
executes the code it reads: the source is compiled (never run) and the bytecode is unmarshalled
(never run), and the two code objects are compared. Status: ``match``, ``mismatch``,
``ignored`` (Python would not use this file: wrong magic, or a timestamp header that does not
match the source), ``sourceless`` or ``error``. A checked hash-based pyc whose source hash
differs is still compared: ``--check-hash-based-pycs never`` makes Python load it as is.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import stat
import sys

try:
    import hashlib
except ImportError:  # a minimal standard library: no content keys, every verdict still made
    hashlib = None  # type: ignore[assignment]

_MAX = 64 * 1024 * 1024


def _optimize(pyc: str) -> int:
    name = os.path.basename(pyc)
    if ".opt-2." in name:
        return 2
    if ".opt-1." in name:
        return 1
    return 0


def _read(path: str) -> tuple[bytes, list[int], os.stat_result]:
    # The metadata of the descriptor actually read goes back with the verdict: the caller only
    # remembers a verdict whose files still had the metadata its walk saw.
    # O_NONBLOCK: a FIFO named like bytecode or source must not be waited on.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        return f.read(_MAX + 1), key, st


# Everything that makes a code object the program it is (names that do not exist on the running
# version read as None on both sides).
_CODE_ATTRS = (
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_nlocals",
    "co_stacksize",
    "co_flags",
    "co_code",
    "co_names",
    "co_varnames",
    "co_freevars",
    "co_cellvars",
    "co_name",
    "co_qualname",
    "co_firstlineno",
    "co_linetable",
    "co_exceptiontable",
)


def _const_key(c: object) -> object:
    # Constants by type and exact value: 1, 1.0 and True differ, as do 0.0 and -0.0, and a NaN
    # equals the same NaN (a plain == would call two NaN constants different).
    # marshal (built in, unlike struct) writes a float's exact IEEE bits after one type byte,
    # whose reference flag depends on reference counts and is left out.
    t = type(c)
    if t is float or t is complex:
        return (t, marshal.dumps(c)[1:])  # type: ignore[arg-type]
    if t is tuple:
        return (t, tuple(_const_key(x) for x in c))  # type: ignore[attr-defined]
    if t is frozenset:
        return (t, frozenset(_const_key(x) for x in c))  # type: ignore[attr-defined]
    return (t, c)


def same_code(a: object, b: object) -> bool:
    """Whether two code objects are the same program, nested code objects included."""
    code = type(same_code.__code__)
    if type(a) is not code or type(b) is not code:
        return False
    if any(getattr(a, n, None) != getattr(b, n, None) for n in _CODE_ATTRS):
        return False
    ca, cb = getattr(a, "co_consts", ()), getattr(b, "co_consts", ())
    if len(ca) != len(cb):
        return False
    for x, y in zip(ca, cb):  # noqa: B905 - lengths compared; runs on Python < 3.10
        if type(x) is code or type(y) is code:
            if not same_code(x, y):
                return False
        elif _const_key(x) != _const_key(y):
            return False
    return True


def check(pyc: str, source: str | None) -> tuple[str, str, list[int], list[int], str, str]:
    """Status, detail, the metadata of the bytecode and source read (``[]`` if unread), and for
    ``match`` the sha256 of the bytecode's body and of the source (``""`` otherwise)."""
    data, pyc_key, _ = _read(pyc)
    status, detail, src_key, src = _compare(pyc, source, data)
    if status != "match" or hashlib is None:
        return status, detail, pyc_key, src_key, "", ""
    body = hashlib.sha256(memoryview(data)[16:]).hexdigest()
    return status, detail, pyc_key, src_key, body, hashlib.sha256(src).hexdigest()


def _compare(pyc: str, source: str | None, data: bytes) -> tuple[str, str, list[int], bytes]:
    """Status, detail, the source's metadata and the source bytes compared (if read)."""
    if len(data) > _MAX:
        return "error", "larger than 64 MiB", [], b""
    if source is None:
        return "sourceless", "imported without a source to compare with", [], b""
    if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
        return "ignored", "magic number of another Python version", [], b""
    flags = int.from_bytes(data[4:8], "little")
    src, src_key, src_st = _read(source)
    if len(src) > _MAX:
        return "error", "source larger than 64 MiB", src_key, src
    stale = ""
    if flags & 0b1:
        if flags & 0b10 and data[8:16] != importlib.util.source_hash(src):
            stale = " (its source hash differs: loaded under --check-hash-based-pycs never)"
    else:
        # Exactly what the import system compares (``int(st_mtime)``, float included) and the
        # size, both modulo 2**32: a rounding of our own would let a header Python accepts pass
        # here as "not used".
        mtime = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        if mtime != (int(src_st.st_mtime) & 0xFFFFFFFF) or size != (src_st.st_size & 0xFFFFFFFF):
            return "ignored", "timestamp header does not match the source", src_key, src
    try:
        # Unmarshalling builds a code object without running it; a crafted blob can at worst
        # crash this helper process, which the caller reports as an error (fail closed).
        code = marshal.loads(data[16:])  # noqa: S302 - see above
    except (ValueError, EOFError, TypeError) as e:
        return "error", f"bytecode does not unmarshal: {e}", src_key, src
    try:
        compiled = compile(src, source, "exec", dont_inherit=True, optimize=_optimize(pyc))
    except (SyntaxError, ValueError) as e:
        detail = f"the source does not compile ({e}) but the bytecode loads"
        return "mismatch", detail, src_key, src
    # Code objects compare recursively (nested functions and classes are constants of their
    # parent); marshal output is not compared, as it is not deterministic.
    if same_code(code, compiled):
        return "match", "", src_key, src
    detail = "the code in the bytecode differs from the compiled source" + stale
    return "mismatch", detail, src_key, src


def main() -> None:
    pairs = json.loads(sys.stdin.read())
    out = []
    for pyc, source in pairs:
        try:
            status, detail, pyc_key, src_key, body, src = check(pyc, source)
        except (OSError, RecursionError, MemoryError) as e:
            status, detail, pyc_key, src_key = "error", f"{type(e).__name__}: {e}", [], []
            body = src = ""
        out.append([pyc, status, detail, pyc_key, src_key, body, src])
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
