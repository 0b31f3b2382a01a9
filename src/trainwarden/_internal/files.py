"""Opening input files without blocking on pipes or devices, and writing files atomically.

A path is opened first (non-blocking, so a FIFO cannot hang the open) and judged by ``fstat`` of
the descriptor actually opened: a path swapped between a check and the open cannot slip through.
Every file TrainWarden writes (reports, manifests, keys, snapshots, caches) goes through
:func:`atomic_path` or :func:`write_atomic`: a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "NOT_REGULAR_HINT",
    "FileTooLargeError",
    "LineTooLongError",
    "NotRegularFileError",
    "atomic_path",
    "kind_of",
    "not_regular_message",
    "open_regular",
    "read_limited",
    "read_lines",
    "write_atomic",
]

NOT_REGULAR_HINT = "give a regular file or a directory, not a device, pipe or socket"


def kind_of(mode: int) -> str:
    """A short name for the file type in ``mode`` ("regular file", "named pipe (FIFO)", ...)."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def not_regular_message(verb: str, path: object, mode: int) -> str:
    """``cannot VERB PATH: not a regular file (a KIND)``, the same in every command."""
    return f"cannot {verb} {path}: not a regular file (a {kind_of(mode)})"


class NotRegularFileError(OSError):
    """The path names a directory, pipe, device or socket; ``kind`` says which."""

    def __init__(self, path: object, mode: int) -> None:
        super().__init__(f"{path}: not a regular file (a {kind_of(mode)})")
        self.path = path
        self.mode = mode
        self.kind = kind_of(mode)


def open_regular(path: str | os.PathLike[str], *, follow: bool = True) -> int:
    """Open ``path`` read-only and return the descriptor; refuse anything but a regular file.

    Raises :class:`NotRegularFileError` (the descriptor is closed) for directories, FIFOs,
    devices and sockets, and ``OSError`` as ``os.open`` does for missing or unreadable paths.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        # A symbolic link in the last component fails the open (ELOOP): nothing is read through it.
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class FileTooLargeError(OSError):
    """The file is larger than what its reader accepts (``limit`` bytes)."""

    def __init__(self, path: object, size: int, limit: int) -> None:
        super().__init__(f"{path}: {size} bytes, over the limit of {limit} bytes for this file")
        self.path = path
        self.size = size
        self.limit = limit


def read_limited(path: str | os.PathLike[str], limit: int, *, follow: bool = True) -> bytes:
    """The whole of the regular file at ``path``, refused when it holds more than ``limit``
    bytes: a manifest, key, policy or snapshot planted as a FIFO, a device or a sparse file of
    many gigabytes costs neither a hang nor the memory to hold it. Raises
    :class:`NotRegularFileError` or :class:`FileTooLargeError` (both ``OSError``, so callers
    that report an unreadable file report these too). ``follow=False``: a symbolic link is
    refused (``OSError``, ELOOP) instead of read through."""
    fd = open_regular(path, follow=follow)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileTooLargeError(path, size, limit)
        data = f.read(limit + 1)  # it may have grown since the fstat
    if len(data) > limit:
        raise FileTooLargeError(path, len(data), limit)
    return data


class LineTooLongError(OSError):
    """A line of a line-oriented file is longer than its reader accepts."""

    def __init__(self, path: object, line: int, limit: int) -> None:
        super().__init__(f"{path}: line {line} is longer than {limit} bytes")
        self.path = path
        self.line = line
        self.limit = limit


def read_lines(path: str | os.PathLike[str], max_line: int) -> Iterator[bytes]:
    """The lines of the regular file at ``path`` (without their line ends), read one at a time:
    memory holds one line of at most ``max_line`` bytes, and a longer one (a sparse file of
    zeros has a single line of its whole size) raises :class:`LineTooLongError` when it is
    reached, after reading ``max_line`` bytes of it. A FIFO or device raises
    :class:`NotRegularFileError` before anything is read."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        n = 0
        while True:
            line = f.readline(max_line + 1)
            if not line:
                return
            n += 1
            if len(line) > max_line and not (len(line) == max_line + 1 and line.endswith(b"\n")):
                raise LineTooLongError(path, n, max_line)
            yield line[:-1] if line.endswith(b"\n") else line


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o644, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched. The file
    gets ``mode`` (``0o600`` for private keys) before it becomes visible under ``path``.
    """
    import tempfile  # not at the top: `random` is a measurable share of CLI start-up

    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, make_parents: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, mode, make_parents=make_parents) as tmp:
        tmp.write_bytes(data)
