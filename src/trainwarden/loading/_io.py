"""Reading a file exactly once into private memory, and a file object over that memory."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from trainwarden.loading.types import LoadError

__all__ = ["MemReader", "read_once", "sha256_of"]


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


def read_once(path: str | os.PathLike[str]) -> memoryview:
    """Read the whole regular file into new private memory (one pass, no later re-open).

    Everything a load checks (manifest digest, scan) and everything it unpickles comes from the
    returned buffer, so a file swapped on disk after this call cannot change what is loaded.
    """
    p = Path(path)
    try:
        with p.open("rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            view = _allocate(size)
            got = 0
            while got < size:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
            extra = fh.read(1)
    except IsADirectoryError:
        raise LoadError(
            f"{p} is a folder, not a file", hint="load one of its files (for example its .bin/.pt)"
        ) from None
    except FileNotFoundError:
        raise LoadError(f"{p} does not exist", hint="check the path") from None
    except OSError as e:
        raise LoadError(f"cannot read {p}: {e.strerror or e}", hint="check permissions") from e
    if got != size or extra:
        raise LoadError(
            f"{p} changed size while it was being read",
            hint="another process is writing it; load it once the writer is done",
        )
    return view


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
