"""The per-file results of the last snapshot, reused while nothing they were computed from changed.

A warm verify still ``lstat``'s every file (a write to a file changes neither its directory nor
anything but its own inode), but when the (path, device, inode, size, mtime_ns, ctime_ns) of every
walked file, the interpreter's description and the few files read outside the walk are exactly
what they were when the results were computed, the results are the same: nothing is hashed, no
RECORD is parsed and no per-file status is rebuilt. Any difference in any of those is a miss, and
the snapshot is computed file by file as without the memo.

The memo file sits beside the hash cache and is trusted under the same conditions (owned by you,
not writable by group or others); marshal keeps it to plain data. Each slot's results are kept as
their own marshal blob, unpacked only when that slot's fingerprint matches, so a memo holding
several interpreters' results costs one interpreter's unpacking.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainwarden.attest._cache import HashCache, cache_key_packer, unsafe_reason

__all__ = ["SnapshotMemo", "lstat_keys", "walk_fingerprint"]

_MAGIC = b"TWMEMO5\n"
_MAX_SLOTS = 8


def walk_fingerprint(parts: Iterable[bytes], *walks: Mapping[str, os.stat_result]) -> bytes:
    """sha256 over ``parts`` and, for each walk in order, every path and its metadata key."""
    pack = cache_key_packer()
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    for w in walks:
        names = "\0".join(w).encode("utf-8", "surrogateescape")
        h.update(len(names).to_bytes(8, "little"))
        h.update(names)
        h.update(
            b"".join(
                [
                    pack(s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                    for s in w.values()
                ]
            )
        )
    return h.digest()


def lstat_keys(paths: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
    """``(path, key)`` for each path (``b""`` for a path that cannot be lstat'ed)."""
    pack = cache_key_packer()
    out: list[tuple[str, bytes]] = []
    for p in paths:
        try:
            s = os.lstat(p)
        except OSError:
            out.append((p, b""))
            continue
        out.append((p, pack(s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)))
    return tuple(out)


def _strings(x: object) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) for s in x)


class SnapshotMemo:
    """Results stored under a slot (which interpreter and layout) with the fingerprint of what
    they were computed from; at most a few slots are kept. ``None`` path: never stored."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        # slot -> (fingerprint, files read outside the walk, marshal blob of the results)
        self._slots: dict[bytes, tuple[bytes, tuple[tuple[str, bytes], ...], bytes]] = {}
        # How many files each unit of the site directories held at the last walk: the order the
        # parallel walk hands them out in (largest first). Never decides a result.
        self.weights: dict[str, int] = {}
        # The site directories of that walk, in order: the next verify starts its helpers on
        # them before the interpreter has described itself (checked against it afterwards).
        self.sites: list[str] = []
        # The roots outside the site directories that walk walked, and the directories it did
        # not enter: this process walks them again while the interpreter describes itself
        # (checked against its description afterwards).
        self.path_walk: tuple[list[str], list[str]] = ([], [])
        self._dirty = False
        self.hit = False
        if path is not None:
            self._load(path)

    @classmethod
    def beside(cls, cache: HashCache) -> SnapshotMemo:
        """The memo file next to ``cache``'s file; none for an in-memory or untrusted cache."""
        if cache.path is None or not cache.trusted:
            return cls(None)
        return cls(cache.path.with_name(cache.path.name + ".memo"))

    def _load(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return
        with os.fdopen(fd, "rb") as f:
            if unsafe_reason(os.fstat(f.fileno()), path) or unsafe_reason(
                os.stat(path.parent), path.parent
            ):
                self.path = None  # never trusted, never overwritten
                return
            data = f.read()
        try:
            if not data.startswith(_MAGIC):
                return
            slots = marshal.loads(memoryview(data)[len(_MAGIC) :])  # noqa: S302 - trusted, see above
        except (ValueError, EOFError, TypeError):
            return
        if (
            isinstance(slots, tuple)
            and len(slots) == 4
            and isinstance(slots[0], dict)
            and isinstance(slots[1], dict)
            and _strings(slots[2])
            and isinstance(slots[3], tuple)
            and len(slots[3]) == 2
            and all(_strings(x) for x in slots[3])
        ):
            self._slots, self.weights, self.sites, self.path_walk = slots

    def get(self, slot: bytes, fingerprint: bytes) -> Any | None:
        """The stored results if ``fingerprint`` matches and every file read outside the walk
        still has the metadata it had; else None."""
        entry = self._slots.get(slot)
        if entry is None or entry[0] != fingerprint:
            return None
        got = self.peek(slot)
        if got is None or got[0] != fingerprint:
            return None
        self.hit = True
        return got[1]

    def peek(self, slot: bytes) -> tuple[bytes, Any] | None:
        """``(fingerprint, results)`` stored for ``slot`` if every file read outside the walk
        still has the metadata it had; else None. The results stand only for a walk whose
        fingerprint is the one returned: the caller compares (and sets :attr:`hit`)."""
        entry = self._slots.get(slot)
        if entry is None:
            return None
        outside = entry[1]
        if lstat_keys(p for p, _ in outside) != outside:
            return None
        try:
            payload = marshal.loads(entry[2])  # noqa: S302 - trusted, see _load
        except (ValueError, EOFError, TypeError):
            return None
        return entry[0], payload

    def put(
        self,
        slot: bytes,
        fingerprint: bytes,
        outside: tuple[tuple[str, bytes], ...],
        payload: Any,
    ) -> None:
        """Store ``payload`` (plain data) for ``slot``; what marshal cannot keep is not stored
        (and is computed again next time)."""
        try:
            blob = marshal.dumps(payload)
        except ValueError:
            return
        self._slots.pop(slot, None)
        self._slots[slot] = (fingerprint, outside, blob)
        while len(self._slots) > _MAX_SLOTS:
            del self._slots[next(iter(self._slots))]
        self._dirty = True

    def set_weights(self, weights: dict[str, int], sites: list[str]) -> None:
        """Remember the file count of each unit and the site directories walked (see
        :attr:`weights` and :attr:`sites`)."""
        if weights != self.weights or sites != self.sites:
            self.weights, self.sites = weights, list(sites)
            self._dirty = True

    def set_path_walk(self, roots: list[str], skip: list[str]) -> None:
        """Remember the roots and skip set of the walk outside the site directories (see
        :attr:`path_walk`)."""
        if (roots, skip) != self.path_walk:
            self.path_walk = (list(roots), list(skip))
            self._dirty = True

    def save(self) -> None:
        """Write the memo atomically if it changed; failures only cost time next run."""
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".attest-memo-", dir=self.path.parent)
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC)
                f.write(marshal.dumps((self._slots, self.weights, self.sites, self.path_walk)))
            os.replace(tmp, self.path)
        except (OSError, ValueError):
            Path(tmp).unlink(missing_ok=True)
            return
        self._dirty = False
