"""Parallel file hashing with a per-user cache keyed on (device, inode, size, mtime_ns, ctime_ns).

A cache hit means the file's inode metadata is unchanged since it was hashed. ``ctime`` is in the
key because ``mtime`` can be set back with ``os.utime`` by anyone who can write the file, while
``ctime`` is set by the kernel on every content or metadata change and cannot be chosen by a user.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import struct
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

from trainwarden._internal.files import write_atomic

__all__ = [
    "HashCache",
    "PycHead",
    "RecordRow",
    "RecordRows",
    "cache_key_packer",
    "default_cache_dir",
    "hash_files",
    "hash_other",
    "unsafe_reason",
]

_MAGIC = b"TWHC4\n"
_KEY = struct.Struct("<QQqqq")
_REC = _KEY.size + 32
_SMALL = 256 * 1024
_MAX_PYC = 64 * 1024 * 1024
_BATCH = 128
_MAX_ENTRIES = 2_000_000
_MAX_RECORDS = 50_000
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)

# A parsed RECORD: (rows as (path, algorithm, digest, size), problem text).
RecordRow = tuple[str, str | None, bytes | None, int | None]
RecordRows = tuple[tuple[RecordRow, ...], str]
# File digests, parsed RECORDs, and bytecode verdicts ({key: (status, detail, content key)}).
_Tables = tuple[
    dict[bytes, bytes], dict[str, tuple[bytes, RecordRows]], dict[bytes, tuple[str, str, str]]
]
# What the hash pass read of a bytecode file: (its first 16 bytes, the sha256 of the rest, the
# metadata key of the descriptor read).
PycHead = tuple[bytes, bytes, bytes]


def default_cache_dir() -> Path:
    """``$TRAINWARDEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/trainwarden``, else ``~/.cache/...``."""
    env = os.environ.get("TRAINWARDEN_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trainwarden"


def cache_key_packer() -> Callable[[int, int, int, int, int], bytes]:
    """``pack(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) -> key`` for lookup_table()."""
    return _KEY.pack


def _key(st: os.stat_result) -> bytes:
    return _KEY.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class HashCache:
    """sha256 digests of files, keyed on inode metadata; stored in one binary file.

    ``hits`` and ``misses`` count lookups since construction (a miss means the file was read).

    The cache is ignored (``trusted`` is False, ``reason`` says why) when its file or directory is
    writable by another user or owned by someone else: a poisoned cache would hide a modified file.
    ``path=None`` gives an in-memory cache that is never saved.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._parsed: _Tables | None = None
        self._raw: bytes | None = None
        self._new = 0
        self.hits = 0
        self.misses = 0
        self.trusted = True
        self.reason = ""
        if path is not None:
            self._load(path)

    @classmethod
    def default(cls) -> HashCache:
        """The cache file in :func:`default_cache_dir`."""
        return cls(default_cache_dir() / "attest-sha256.bin")

    def _load(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            self.trusted, self.reason = False, f"cannot open {path}: {e}"
            return
        with os.fdopen(fd, "rb") as f:
            problem = _unsafe(os.fstat(f.fileno()), path) or _unsafe(
                os.stat(path.parent), path.parent
            )
            if problem:
                self.trusted, self.reason = False, problem
                return
            data = f.read()
        if not data.startswith(_MAGIC):
            self.reason = f"{path} is not a trainwarden hash cache; starting a new one"
            return
        # Parsed on first use: a verify whose snapshot memo matches never looks a digest up.
        self._raw = data

    def _tables(self) -> _Tables:
        if self._parsed is not None:
            return self._parsed
        data, self._raw = self._raw, None
        entries: dict[bytes, bytes] = {}
        records: dict[str, tuple[bytes, RecordRows]] = {}
        verdicts: dict[bytes, tuple[str, str, str]] = {}
        if data is not None:
            # One marshal blob: loading 50k entries is a single C call, not a loop per entry.
            # marshal is only safe on trusted input, which _load's ownership and mode checks
            # ensure.
            try:
                loaded = marshal.loads(memoryview(data)[len(_MAGIC) :])  # noqa: S302 - trusted, see above
                if (
                    not isinstance(loaded, tuple)
                    or len(loaded) != 3
                    or not all(isinstance(t, dict) for t in loaded)
                ):
                    raise ValueError("bad layout")
                entries, records, verdicts = loaded
            except (ValueError, EOFError, TypeError):
                self.reason = f"{self.path} is not a trainwarden hash cache; starting a new one"
        self._parsed = (entries, records, verdicts)
        return self._parsed

    @property
    def _entries(self) -> dict[bytes, bytes]:
        return self._tables()[0]

    @property
    def _records(self) -> dict[str, tuple[bytes, RecordRows]]:
        return self._tables()[1]

    def bytecode_verdicts(self) -> dict[bytes, tuple[str, str, str]]:
        """The bytecode verdict table (:mod:`trainwarden.attest._bytecode` keys and fills it);
        empty and never saved for an untrusted cache."""
        return self._tables()[2] if self.trusted else {}

    def note_added(self, n: int) -> None:
        """Tell the cache that ``n`` entries were added to one of its tables (it is saved)."""
        self._new += n

    def __len__(self) -> int:
        return len(self._entries)

    def lookup_table(self) -> Mapping[bytes, bytes]:
        """Read-only view for hot loops that pack keys with :func:`cache_key_packer` themselves
        (an untrusted cache gives an empty table). Lookups through it are not counted."""
        return MappingProxyType(self._entries if self.trusted else {})

    def holds(self, st: os.stat_result) -> bool:
        """Whether a digest is stored for exactly this metadata (not counted as a lookup)."""
        return self.trusted and _key(st) in self._entries

    def holds_all(
        self, files: Iterable[tuple[str, os.stat_result]], skip: Container[str] = ()
    ) -> bool:
        """Whether :meth:`holds` is true of every file not in ``skip`` (one pass, no per-file
        method call: it runs over every file hashed in a cold run)."""
        if not self.trusted:
            return all(p in skip for p, _ in files)
        entries, pack = self._entries, _KEY.pack
        return all(
            p in skip
            or pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) in entries
            for p, st in files
        )

    def get(self, st: os.stat_result) -> bytes | None:
        """The cached sha256 for a file with exactly this metadata, or None."""
        d = self._entries.get(_key(st)) if self.trusted else None
        if d is None:
            self.misses += 1
        else:
            self.hits += 1
        return d

    def record_get(self, record_path: str, st: os.stat_result) -> RecordRows | None:
        """The parsed rows of the RECORD file ``record_path`` if its metadata is exactly ``st``
        (the same (device, inode, size, mtime_ns, ctime_ns) key as file digests)."""
        if not self.trusted:
            return None
        hit = self._records.get(record_path)
        return hit[1] if hit is not None and hit[0] == _key(st) else None

    def record_put(self, record_path: str, st: os.stat_result, rows: RecordRows) -> None:
        """Remember the parse of ``record_path`` read from a descriptor whose fstat is ``st``."""
        self._records[record_path] = (_key(st), rows)
        self._new += 1

    def put(self, st: os.stat_result, digest: bytes) -> None:
        """Remember ``digest`` for the file whose (fstat) metadata is ``st``."""
        self._entries[_key(st)] = digest
        self._new += 1

    def save(self) -> None:
        """Write the cache atomically if anything was added (never when untrusted).

        A failure to write is not an error (the cache only saves time): ``reason`` says why.
        """
        if self.path is None or not self._new or not self.trusted:
            return
        entries = dict(list(self._entries.items())[-_MAX_ENTRIES:])
        records = dict(list(self._records.items())[-_MAX_RECORDS:])
        verdicts = dict(list(self._tables()[2].items())[-_MAX_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # The cache is private (it decides what is hashed again): owner-only, like its folder.
            write_atomic(
                self.path, _MAGIC + marshal.dumps((entries, records, verdicts)), mode=0o600
            )
        except OSError as e:
            # The cache only saves time; a read-only home must not fail the attestation.
            self.reason = f"could not save the hash cache {self.path}: {e}"
            return
        self._new = 0


def unsafe_reason(st: os.stat_result, path: Path) -> str:
    """Why a cache file (or its directory) with metadata ``st`` must not be trusted, or ""."""
    return _unsafe(st, path)


def _unsafe(st: os.stat_result, path: Path) -> str:
    if hasattr(os, "getuid") and st.st_uid not in (os.getuid(), 0):
        return f"{path} is owned by uid {st.st_uid}, not by you; the hash cache is ignored"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others; the hash cache is ignored"
    return ""


def _read_all(fd: int, size: int) -> bytes:
    """The file's bytes: one ``read`` when it returns exactly the ``fstat`` size (asking for one
    byte more, so a file that grew is read on), else reads until end of file."""
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data
    parts = [data]
    while data:
        data = os.read(fd, _SMALL)
        parts.append(data)
    return b"".join(parts)


def _hash_one(
    path: str, algorithm: str, head: list[PycHead] | None = None
) -> tuple[bytes | None, os.stat_result | None, str]:
    # Raw descriptor calls: no buffered file object, and no second fstat or end-of-file read
    # for the ~60k small files of an environment.
    try:
        # O_NONBLOCK: opening a FIFO planted among the files must not wait for a writer (a
        # regular file's reads ignore the flag, so it is left set: no extra call per file).
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        return None, None, f"{type(e).__name__}: {e.strerror or e}"
    st: os.stat_result | None = None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, st, "not a regular file"
        if head is not None and st.st_size <= _MAX_PYC:
            # Bytecode: the whole file and the body after its header from one read, so that the
            # header and the body's digest describe the bytes whose digest is returned.
            data = _read_all(fd, st.st_size)
            head.append((data[:16], hashlib.sha256(memoryview(data)[16:]).digest(), _key(st)))
            h = hashlib.sha256(data)
        elif st.st_size <= _SMALL:
            data = _read_all(fd, st.st_size)
            # The named constructor skips hashlib.new's name lookup (~50k calls per environment).
            h = hashlib.sha256(data) if algorithm == "sha256" else hashlib.new(algorithm, data)
        else:
            with open(fd, "rb", closefd=False) as f:
                h = hashlib.file_digest(f, algorithm)
    except OSError as e:
        return None, st, f"{type(e).__name__}: {e.strerror or e}"
    finally:
        os.close(fd)
    return h.digest(), st, ""


def hash_files(
    files: Sequence[tuple[str, os.stat_result]],
    cache: HashCache,
    *,
    workers: int | None = None,
    pyc_heads: dict[str, PycHead] | None = None,
) -> tuple[dict[str, bytes], dict[str, str]]:
    """sha256 every ``(path, lstat)``; return ``({path: digest}, {path: error})``.

    Cache hits are decided on the given lstat; misses are read in parallel threads (hashlib
    releases the GIL on large buffers) and stored under the metadata of the descriptor actually
    read, so a file swapped between the walk and the read is never cached under the old inode.
    With ``pyc_heads``, each ``.pyc`` file read (not a cache hit) also gets its :data:`PycHead`
    there, from the same read.
    """
    digests: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    misses: list[tuple[str, int]] = []
    # The lookup is inlined: it runs once per installed file on every warm verify.
    entries = cache._entries if cache.trusted else {}
    pack = _KEY.pack
    for path, st in files:
        d = entries.get(pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        if d is not None:
            digests[path] = d
        else:
            misses.append((path, st.st_size))
    cache.hits += len(digests)
    cache.misses += len(misses)
    if not misses:
        return digests, errors
    misses.sort(key=lambda m: m[1], reverse=True)
    big = [p for p, size in misses if size > _SMALL]
    small = [p for p, size in misses if size <= _SMALL]
    batches: list[list[str]] = [[p] for p in big]
    batches.extend(small[i : i + _BATCH] for i in range(0, len(small), _BATCH))

    heads: list[tuple[str, PycHead]] = []

    def run(batch: list[str]) -> list[tuple[str, bytes | None, os.stat_result | None, str]]:
        if pyc_heads is None:
            return [(p, *_hash_one(p, "sha256")) for p in batch]
        out: list[tuple[str, bytes | None, os.stat_result | None, str]] = []
        for p in batch:
            if p.endswith(".pyc"):
                got: list[PycHead] = []
                out.append((p, *_hash_one(p, "sha256", got)))
                heads.extend((p, g) for g in got)  # list.extend is atomic under the GIL
            else:
                out.append((p, *_hash_one(p, "sha256")))
        return out

    # One thread per CPU: more only hand the interpreter lock around (eight threads on two
    # cores hashed a torch environment slower than two).
    n = workers or min(8, os.cpu_count() or 1)
    # What put() does, inlined: it runs once per file read.
    store, added = cache._entries, 0
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="tw-hash") as pool:
        for results in pool.map(run, batches):
            for path, digest, fst, error in results:
                if digest is None or fst is None:
                    errors[path] = error
                    continue
                digests[path] = digest
                k = pack(fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns, fst.st_ctime_ns)
                store[k] = digest
                added += 1
    cache._new += added
    if pyc_heads is not None:
        pyc_heads.update(heads)
    return digests, errors


def hash_other(paths: Iterable[str], algorithm: str) -> dict[str, bytes]:
    """Uncached digests with another algorithm (RECORD files that use sha384/sha512)."""
    out: dict[str, bytes] = {}
    for p in paths:
        d, _, _ = _hash_one(p, algorithm)
        if d is not None:
            out[p] = d
    return out
