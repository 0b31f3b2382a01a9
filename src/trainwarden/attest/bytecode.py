"""Bytecode that Python would import, compared with its source by the target interpreter.

Python runs ``__pycache__/NAME.TAG.pyc`` instead of ``NAME.py`` whenever the pyc header matches
the source's mtime and size (or its hash, or never checks for "unchecked" hash-based pycs); the
bytecode body itself is never compared with the source. A planted pyc with a copied header runs
while the reviewed source stays intact, and ``.gitignore`` usually hides ``__pycache__``. Every
such file under the given roots, ignored by git or not, is compared with the compiled source in
the interpreter the job runs (:mod:`trainwarden.attest.bytecode_check`, run as
``python -I -S -B``); a ``NAME.pyc`` with no ``NAME.py`` beside it is imported as is and cannot
be checked, so it is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from trainwarden.attest.envvars import helper_environment

__all__ = ["MAX_BYTECODE_FILES", "BytecodeResult", "check_bytecode", "find_bytecode"]

_CHECKER = Path(__file__).with_name("bytecode_check.py")
MAX_BYTECODE_FILES = 50_000


class BytecodeResult(NamedTuple):
    """One bytecode file: ``status`` is ``match``, ``mismatch``, ``ignored``, ``sourceless``
    or ``error``; ``source`` is the file it was compared with."""

    pyc: str
    source: str | None
    status: str
    detail: str


def find_bytecode(roots: Sequence[str], cache_tag: str) -> list[tuple[str, str | None]]:
    """``(pyc, source)`` for every bytecode file Python could import below ``roots``: pycs in
    ``__pycache__`` for this interpreter's cache tag whose source exists, and pycs with no
    source beside them (``source`` None)."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    stack = [r for r in roots if os.path.isdir(r)]
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        names = {e.name for e in entries}
        in_cache = os.path.basename(d) == "__pycache__"
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name != ".git":
                    stack.append(e.path)
                continue
            if not e.name.endswith(".pyc"):
                continue
            if in_cache:
                stem, _, rest = e.name.partition(".")
                if not rest.startswith(cache_tag + "."):
                    continue  # another interpreter's bytecode: never imported by this one
                source = os.path.join(os.path.dirname(d), stem + ".py")
                if os.path.isfile(source):
                    out.append((e.path, source))
            elif e.name[:-1] not in names:
                out.append((e.path, None))
    return sorted(out)


def check_bytecode(
    pairs: Sequence[tuple[str, str | None]],
    python: str | None,
    env: Mapping[str, str],
) -> list[BytecodeResult]:
    """Compare each pair in the target interpreter; a checker that fails or times out makes
    every pair an ``error`` (fail closed)."""
    if not pairs:
        return []
    exe = python or sys.executable
    if len(pairs) > MAX_BYTECODE_FILES:
        return [
            BytecodeResult(p, s, "error", f"more than {MAX_BYTECODE_FILES} bytecode files")
            for p, s in pairs
        ]
    try:
        proc = subprocess.run(  # noqa: S603 - the interpreter under attestation, isolated
            [exe, "-I", "-S", "-B", str(_CHECKER)],
            input=json.dumps([list(p) for p in pairs]),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=helper_environment(env),
        )
        rows = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        rows, why = None, f"{type(e).__name__}: {e}"
    else:
        why = f"checker exited {proc.returncode}: {proc.stderr.strip()[-200:]}"
    sources = dict(pairs)
    if not isinstance(rows, list) or len(rows) != len(pairs):
        return [BytecodeResult(p, s, "error", why) for p, s in pairs]
    out: list[BytecodeResult] = []
    for row in rows:
        pyc, status, detail = (str(x) for x in row)
        out.append(BytecodeResult(pyc, sources.get(pyc), status, detail))
    return out
