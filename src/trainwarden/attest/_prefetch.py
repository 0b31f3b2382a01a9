"""Hashing in helper processes while this process parses RECORDs (a cold or first verify).

A verify that must read most files (``--no-cache``, a first run, an upgraded environment) spends
most of its time in ``open``/``read``/sha256 per file. Threads share one interpreter lock, and on
a small machine they spend more time handing it over than hashing (measured: eight threads on two
cores were slower than two). :class:`Prefetch` hands the files to helper processes instead, this
interpreter started isolated (``-I -S``), that run trainwarden's own per-file hash
(``trainwarden.attest._cache``, imported from the package this process runs, placed after the
standard library on the helper's path). Each digest comes back with the ``fstat`` key of the
descriptor the helper read, and :meth:`Prefetch.store` puts it in the hash cache under that key,
exactly where the in-process hash would have put it; the pass that follows then finds every
unchanged file there and reads nothing again. A file the helpers could not read, or one that
changed after the walk (its key differs from the walk's), is hashed in this process as before,
and a helper that fails only means more of that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trainwarden
from trainwarden.attest._cache import HashCache, PycHead
from trainwarden.attest._treeprint import HelperPool

__all__ = ["Prefetch"]

_CHUNK = 256

# Run by each helper: take chunk numbers until the pipe is empty; hash each file of the chunk as
# the in-process pass does (one read: for bytecode also its header and the digest of its body).
_HASHER = r"""
import marshal, os, struct, sys
paths, root, chunk, heads, tok = marshal.loads(sys.stdin.buffer.read())
sys.path.append(root)
from trainwarden.attest._cache import _hash_one, _key
out = []
while True:
    t = os.read(tok, 4)
    if len(t) != 4:
        break
    start = struct.unpack("<I", t)[0] * chunk
    for j in range(start, min(len(paths), start + chunk)):
        p = paths[j]
        got = [] if heads and p.endswith(".pyc") else None
        d, st, _ = _hash_one(p, "sha256", got)
        if d is not None and st is not None:
            out.append((j, d, _key(st), got[0] if got else None))
sys.stdout.buffer.write(marshal.dumps(out))
"""


class Prefetch:
    """sha256 of ``files`` (paths with their walk ``lstat``) by ``helpers`` processes, largest
    files first; with ``heads``, bytecode files also get their :data:`PycHead`."""

    def __init__(
        self, files: Sequence[tuple[str, os.stat_result]], helpers: int, *, heads: bool
    ) -> None:
        ordered = sorted(files, key=lambda f: f[1].st_size, reverse=True)
        self._paths = [p for p, _ in ordered]
        root = os.path.dirname(os.path.dirname(os.path.abspath(trainwarden.__file__)))
        chunks = range((len(self._paths) + _CHUNK - 1) // _CHUNK)
        paths = self._paths
        self._pool: HelperPool | None = None
        if len(chunks) * 4 > 65536:
            return
        try:
            self._pool = HelperPool(
                _HASHER, lambda tok: (paths, root, _CHUNK, heads, tok), chunks, helpers
            )
        except (OSError, ValueError):
            self._pool = None

    def store(self, cache: HashCache, pyc_heads: dict[str, PycHead] | None) -> set[bytes]:
        """Wait for the helpers and put what they hashed in ``cache`` (and the bytecode heads
        in ``pyc_heads``); the cache keys stored (none if the helpers failed)."""
        keys: set[bytes] = set()
        if self._pool is None:
            return keys
        outputs = self._pool.outputs()
        self._pool = None
        if outputs is None or not cache.trusted:
            return keys
        store, paths = cache._entries, self._paths
        heads: list[tuple[str, PycHead]] = []
        try:
            for rows in outputs:
                for j, digest, key, head in rows:
                    if not (isinstance(digest, bytes) and isinstance(key, bytes)):
                        continue
                    store[key] = digest
                    keys.add(key)
                    if (
                        pyc_heads is not None
                        and isinstance(head, tuple)
                        and len(head) == 3
                        and all(isinstance(x, bytes) for x in head)
                    ):
                        heads.append((paths[j], (head[0], head[1], head[2])))
        except (ValueError, TypeError, IndexError):
            pass
        cache.note_added(len(keys))
        if pyc_heads is not None:
            pyc_heads.update(heads)
        return keys

    def close(self) -> None:
        """Kill helpers still running."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
