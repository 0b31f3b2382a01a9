"""Opening input files without blocking on pipes or devices, with one message for every command.

A path is opened first (non-blocking, so a FIFO cannot hang the open) and judged by ``fstat`` of
the descriptor actually opened: a path swapped between a check and the open cannot slip through.
"""

from __future__ import annotations

import os
import stat

__all__ = [
    "NOT_REGULAR_HINT",
    "NotRegularFileError",
    "kind_of",
    "not_regular_message",
    "open_regular",
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


def open_regular(path: str | os.PathLike[str]) -> int:
    """Open ``path`` read-only and return the descriptor; refuse anything but a regular file.

    Raises :class:`NotRegularFileError` (the descriptor is closed) for directories, FIFOs,
    devices and sockets, and ``OSError`` as ``os.open`` does for missing or unreadable paths.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
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
