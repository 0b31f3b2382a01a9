"""Compares bytecode files with their source, run by the interpreter being attested.

Executed as ``python -I -S -B bytecode_check.py`` with a JSON list of ``[pyc, source]`` pairs on
stdin (``source`` null for bytecode imported without a source); prints one ``[pyc, status,
detail]`` row per pair. Nothing here imports trainwarden or executes the code it reads: the
source is compiled (never run) and the bytecode is unmarshalled (never run), and the two code
objects are compared. Status: ``match``, ``mismatch``, ``ignored`` (Python would not use this
file: wrong magic, or its header does not match the source), ``sourceless`` or ``error``.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import sys

_MAX = 64 * 1024 * 1024


def _optimize(pyc: str) -> int:
    name = os.path.basename(pyc)
    if ".opt-2." in name:
        return 2
    if ".opt-1." in name:
        return 1
    return 0


def check(pyc: str, source: str | None) -> tuple[str, str]:
    """Status and detail for one bytecode file."""
    with open(pyc, "rb") as f:
        data = f.read(_MAX + 1)
    if len(data) > _MAX:
        return "error", "larger than 64 MiB"
    if source is None:
        return "sourceless", "imported without a source to compare with"
    if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
        return "ignored", "magic number of another Python version"
    flags = int.from_bytes(data[4:8], "little")
    with open(source, "rb") as f:
        src = f.read(_MAX + 1)
    if len(src) > _MAX:
        return "error", "source larger than 64 MiB"
    if flags & 0b1:
        if flags & 0b10 and data[8:16] != importlib.util.source_hash(src):
            return "ignored", "checked hash-based pyc whose source hash differs"
    else:
        st = os.stat(source)
        mtime = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        if mtime != (int(st.st_mtime) & 0xFFFFFFFF) or size != (st.st_size & 0xFFFFFFFF):
            return "ignored", "timestamp header does not match the source"
    try:
        # Unmarshalling builds a code object without running it; a crafted blob can at worst
        # crash this helper process, which the caller reports as an error (fail closed).
        code = marshal.loads(data[16:])  # noqa: S302 - see above
    except (ValueError, EOFError, TypeError) as e:
        return "error", f"bytecode does not unmarshal: {e}"
    try:
        compiled = compile(src, source, "exec", dont_inherit=True, optimize=_optimize(pyc))
    except (SyntaxError, ValueError) as e:
        return "mismatch", f"the source does not compile ({e}) but the bytecode loads"
    if code == compiled:
        return "match", ""
    return "mismatch", "the code in the bytecode differs from the compiled source"


def main() -> None:
    pairs = json.loads(sys.stdin.read())
    out = []
    for pyc, source in pairs:
        try:
            status, detail = check(pyc, source)
        except (OSError, RecursionError, MemoryError) as e:
            status, detail = "error", f"{type(e).__name__}: {e}"
        out.append([pyc, status, detail])
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
