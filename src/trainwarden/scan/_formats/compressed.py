"""Single-stream compression (gzip, bzip2, xz, lzma-alone, zlib, lz4 frame, joblib's legacy
``ZF`` files): decompressed in a streaming way under ``Limits.max_decompressed_bytes``, then the
content is dispatched again (joblib's compressed dumps land here).
"""

from __future__ import annotations

import bz2
import importlib.util
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats._spill import Spill, ZlibStream, decompress_into
from trainwarden.scan._types import ScanContext

__all__ = ["HANDLER", "CompressedHandler"]

_CHUNK = 1 << 20


def _kind(data: bytes) -> str | None:
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:3] == b"BZh" and data[3:4].isdigit():
        return "bzip2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if data[:4] == b"\x04\x22\x4d\x18":
        return "lz4"
    if data[:2] == b"ZF":
        return "joblib-zfile"
    if len(data) >= 13 and data[0] == 0x5D and data[1] == 0x00:
        return "lzma"
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and data[0] >> 4 <= 7
    if zlib_header and ((data[0] << 8) | data[1]) % 31 == 0:
        return "zlib"
    return None


def _starts_cleanly(kind: str, head: bytes) -> bool:
    try:
        if kind == "zlib":
            zlib.decompressobj().decompress(head, 64)
        else:
            lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(head, 64)
    except (zlib.error, lzma.LZMAError, EOFError, ValueError):
        return False
    return True


class CompressedHandler:
    name = "compressed"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        kind = _kind(bytes(data[:16]))
        if kind in ("zlib", "lzma"):
            # Two-byte magics: require that the start really decompresses.
            return _starts_cleanly(kind, bytes(data[:4096]))
        return kind is not None

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        kind = _kind(bytes(data[:16]))
        if kind is None:  # pragma: no cover - sniff guarantees a kind
            return
        ctx.note_format(kind)
        if kind == "lz4":
            if importlib.util.find_spec("lz4") is None:
                ctx.add(
                    Finding(
                        "TWS-CANNOT-INSPECT",
                        Severity.HIGH,
                        "lz4-compressed content cannot be inspected: the lz4 package is not "
                        "installed (pip install lz4)",
                        location,
                        {"format": "lz4"},
                    )
                )
                return
            lz4_frame = importlib.import_module("lz4.frame")
            make: Callable[[], Any] = lz4_frame.LZ4FrameDecompressor
            body: Any = data
        elif kind == "joblib-zfile":
            # joblib < 0.10: b"ZF" + 16-byte hex length header, then a zlib stream.
            make, body = (lambda: ZlibStream(15)), data[18:]
        else:
            make = {
                "gzip": lambda: ZlibStream(31),
                "zlib": lambda: ZlibStream(15),
                "bzip2": bz2.BZ2Decompressor,
                "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ),
                "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE),
            }[kind]
            body = data
        limits = ctx.limits
        budget = max(0, limits.max_decompressed_bytes - ctx.decompressed)
        with Spill() as sink:
            try:
                error = decompress_into(
                    body, make, budget, sink, multi=kind in ("gzip", "bzip2", "xz")
                )
            except OverflowError:
                ctx.limit(
                    "max_decompressed_bytes",
                    f"{kind} stream decompresses to more than {limits.max_decompressed_bytes} "
                    "bytes (decompression bomb?); not inspected",
                    location,
                )
                return
            if not ctx.charge_decompressed(sink.size, location):
                return
            if error is not None:
                trailing = "follow the compressed stream" in error
                ctx.add(
                    Finding(
                        "TWS-COMPRESSED-CORRUPT",
                        Severity.MEDIUM if trailing else Severity.HIGH,
                        f"{kind} stream is damaged ({error}); the {sink.size} bytes before the "
                        "damage were scanned",
                        location,
                        {"format": kind, "error": error, "decompressed": sink.size},
                    )
                )
            ctx.scan_member(sink.value(), f"{location}:<{kind}>")


HANDLER = CompressedHandler()
