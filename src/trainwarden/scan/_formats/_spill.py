"""Bounded decompression: a byte sink that spills to an unlinked temporary file beyond a memory
threshold, and a streaming decompression loop that stops at the byte limit, so decompression
bombs and multi-GB members never exhaust memory."""

from __future__ import annotations

import contextlib
import lzma
import mmap
import zlib
from collections.abc import Callable
from typing import IO, Any

__all__ = [
    "MEMORY_THRESHOLD",
    "RATIO_FLOOR",
    "RatioError",
    "Spill",
    "ZlibStream",
    "decompress_into",
]

_CHUNK = 1 << 20

# Kept small: the bytes are copied once more when handed to a handler, and a scan's peak memory
# must stay far below what a node can spare.
MEMORY_THRESHOLD = 32 * 1024 * 1024

#: Output size below which the compression ratio is not judged (small, very regular members such
#: as zero-filled buffers compress 1000:1 legitimately).
RATIO_FLOOR = 64 * 1024 * 1024


class RatioError(OverflowError):
    """The output grew past ``max_ratio`` times the compressed input consumed so far."""


class Spill:
    """Collects bytes; :meth:`value` returns ``bytes`` (small) or a read-only mmap (large).

    Use as a context manager: the mmap and the temporary file are released on exit.
    """

    def __init__(self, threshold: int | None = None) -> None:
        self.threshold = MEMORY_THRESHOLD if threshold is None else threshold
        self.size = 0
        self._buf = bytearray()
        self._file: IO[bytes] | None = None
        self._map: mmap.mmap | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is None:
            self._buf += data
            if len(self._buf) > self.threshold:
                # Owned by this object and closed in close(): a with-block cannot span calls.
                import tempfile  # here: most members never spill to disk

                self._file = tempfile.TemporaryFile(prefix="trainwarden-scan-")  # noqa: SIM115
                self._file.write(self._buf)
                self._buf = bytearray()
        else:
            self._file.write(data)

    def value(self) -> Any:
        """The collected bytes: ``bytes``, or an mmap valid until :meth:`close`."""
        if self._file is None:
            return bytes(self._buf)
        if self._map is None:
            self._file.flush()
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def close(self) -> None:
        if self._map is not None:
            # If a view into the map is still referenced somewhere, the map is closed by garbage
            # collection once it goes, and the unlinked file with it.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buf = bytearray()

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ZlibStream:
    """zlib decompressobj with the ``max_length``/``eof``/``needs_input`` API of bz2/lzma."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self.needs_input = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        buf = self._d.unconsumed_tail + data
        out = self._d.decompress(buf, max_length)
        self.needs_input = not self._d.unconsumed_tail
        return out

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


def decompress_into(
    data: Any,
    make: Callable[[], Any],
    limit: int,
    sink: Spill,
    *,
    multi: bool = False,
    max_ratio: float | None = None,
) -> str | None:
    """Decompress ``data`` into ``sink`` with decompressors from ``make`` (max_length API).

    Returns None, or an error text for corrupt, truncated or trailing input (``sink`` then holds
    what came out before the damage). Raises ``OverflowError`` once the output would exceed
    ``limit`` bytes, and ``RatioError`` once more than :data:`RATIO_FLOOR` bytes came out at
    more than ``max_ratio`` times the input read; never holds more than one chunk of output at a
    time.
    """
    n = len(data)
    pos = 0
    magic = bytes(data[:2])
    try:
        while True:
            dec = make()
            while not dec.eof:
                if dec.needs_input:
                    if pos >= n:
                        return "truncated compressed stream"
                    chunk = bytes(data[pos : pos + _CHUNK])
                    pos += len(chunk)
                else:
                    chunk = b""
                piece = dec.decompress(chunk, max(1, min(_CHUNK, limit + 1 - sink.size)))
                sink.write(piece)
                if sink.size > limit:
                    raise OverflowError(limit)
                if (
                    max_ratio is not None
                    and sink.size > RATIO_FLOOR
                    and sink.size > max_ratio * max(pos, 1)
                ):
                    raise RatioError(sink.size / max(pos, 1))
            pos -= len(dec.unused_data)
            if pos >= n:
                return None
            rest = bytes(data[pos : pos + 4096])
            if multi and rest[:2] == magic:
                continue
            if not bytes(data[pos : pos + _CHUNK]).strip(b"\x00"):
                return None
            return f"{n - pos} bytes of other data follow the compressed stream"
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
        return str(e) or type(e).__name__
