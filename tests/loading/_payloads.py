"""Benign payload builders for the safe-loading tests.

Every payload here would, at most, create the canary file it is given (under the test's tmp_path).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

__all__ = ["ExecPayload", "SystemPayload", "call_pickle"]


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def call_pickle(module: str, name: str, *args: str) -> bytes:
    """A protocol-2 pickle, written opcode by opcode, that calls ``module.name(*args)``."""
    body = b"\x80\x02" + _global(module, name) + b"(" + b"".join(_str(a) for a in args)
    return body + b"tR."


class SystemPayload:
    """Pickles to ``os.system("touch CANARY")`` (benign: it would only create the canary)."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.canary}",))


class ExecPayload:
    """Pickles to ``exec("open(CANARY, 'w').close()")``."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.canary)!r}, 'w').close()",))


class NonSeekable:
    """A pipe-like stream: readable, not seekable, so nothing can be pre-read and put back;
    optionally with a file name."""

    def __init__(self, data: bytes, name: str | None = None) -> None:
        self._buf = io.BytesIO(data)
        if name is not None:
            self.name = name

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)

    def readline(self) -> bytes:
        return self._buf.readline()

    def readinto(self, b: bytearray) -> int:
        return self._buf.readinto(b)

    def seekable(self) -> bool:
        return False
