"""Reading a file exactly once into private memory, and a file object over that memory."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from trainwarden._internal.files import NOT_REGULAR_HINT, NotRegularFileError, open_regular
from trainwarden.loading._types import LoadError

__all__ = ["MemReader", "map_once", "read_once", "sha256_of"]


def _allocate(size: int) -> memoryview:
    # Large files go into uninitialised memory (numpy.empty): zero-filling a bytearray first
    # would cost as much as the read itself.
    if size >= _LARGE:
        try:
            import numpy as np
        except ImportError:
            pass
        else:
            return np.empty(size, dtype=np.uint8).data
    return memoryview(bytearray(size))


_LARGE = 1 << 20


def _open(p: Path) -> int:
    try:
        return open_regular(p)
    except NotRegularFileError as e:
        if e.kind == "directory":
            raise LoadError(
                f"cannot load {p}: not a regular file (a directory)",
                hint="load one of its files (for example its .bin/.pt)",
            ) from None
        raise LoadError(
            f"cannot load {p}: not a regular file (a {e.kind})", hint=NOT_REGULAR_HINT
        ) from None
    except FileNotFoundError:
        raise LoadError(f"{p} does not exist", hint="check the path") from None
    except OSError as e:
        raise LoadError(f"cannot read {p}: {e.strerror or e}", hint="check permissions") from e


def _refuse_empty(p: Path, size: int) -> None:
    if size == 0:
        raise LoadError(
            f"cannot load {p}: the file is empty (0 bytes), not a model file",
            hint="the file was truncated or never written; write or download it again",
        )


def read_once(path: str | os.PathLike[str]) -> memoryview:
    """Read the whole regular file into new private memory (one pass, no later re-open).

    Everything a load checks (manifest digest, scan) and everything it unpickles comes from the
    returned buffer, so a file swapped on disk after this call cannot change what is loaded.
    Pipes, devices, sockets, directories and empty files are refused before anything is read.
    """
    p = Path(path)
    fd = _open(p)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as fh:
            size = os.fstat(fd).st_size
            _refuse_empty(p, size)
            view = _allocate(size)
            got = 0
            while got < size:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
            extra = fh.read(1)
    except OSError as e:
        raise LoadError(f"cannot read {p}: {e.strerror or e}", hint="check permissions") from e
    finally:
        os.close(fd)
    if got != size or extra:
        raise LoadError(
            f"{p} changed size while it was being read",
            hint="another process is writing it; load it once the writer is done",
        )
    return view


def map_once(path: str | os.PathLike[str]) -> memoryview:
    """Map the regular file privately (copy-on-write) and return a view of the mapping.

    Pages are read from the file when first touched, so memory use follows what is read, not the
    file size. Writes through the view never reach the file. Unlike :func:`read_once`, a writer
    that changes the file later changes the pages not yet read: callers copy out whatever they
    must analyse before they trust it.
    """
    import mmap

    p = Path(path)
    fd = _open(p)
    try:
        size = os.fstat(fd).st_size
        _refuse_empty(p, size)
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    except (OSError, ValueError) as e:
        raise LoadError(f"cannot map {p}: {e}", hint="load it without mmap=True") from e
    finally:
        os.close(fd)
    return memoryview(mm)


def sha256_mapped(view: memoryview, chunk: int = 64 << 20) -> str:
    """The sha256 of a :func:`map_once` view, releasing each chunk's pages once hashed."""
    import mmap

    h = hashlib.sha256()
    obj = view.obj
    for start in range(0, len(view), chunk):
        h.update(view[start : start + chunk])
        if isinstance(obj, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            # Untouched copy-on-write pages: dropping them only forgets what was read.
            obj.madvise(mmap.MADV_DONTNEED, start, min(chunk, len(view) - start))
    return h.hexdigest()


def sha256_of(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class MemReader(io.RawIOBase):
    """A read-only, seekable binary file over a buffer (no copy of the buffer is made)."""

    def __init__(self, buf: bytes | bytearray | memoryview, name: str = "<memory>") -> None:
        super().__init__()
        self._mv = memoryview(buf).cast("B")
        self._pos = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = len(self._mv) + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), len(self._mv) - self._pos)
        if n <= 0:
            return 0
        memoryview(b).cast("B")[:n] = self._mv[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._mv) if size is None or size < 0 else min(len(self._mv), self._pos + size)
        if end <= self._pos:
            return b""
        out = self._mv[self._pos : end].tobytes()
        self._pos = end
        return out

    def readall(self) -> bytes:
        return self.read(-1)

    def getbuffer(self) -> memoryview:
        return self._mv
