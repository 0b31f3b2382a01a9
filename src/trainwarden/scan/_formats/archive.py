"""tar archives (plain, and the legacy torch tar checkpoint) and 7z archives (with py7zr).

Members are scanned by content, one nesting level deeper, under the member, size and
decompression limits; an archive that cannot be opened is a finding.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats._spill import Spill
from trainwarden.scan._formats.torch_legacy import scan_legacy_tar
from trainwarden.scan._types import ScanContext

__all__ = ["SEVENZIP", "TAR", "SevenZipHandler", "TarHandler"]

_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"
_LEGACY_NAMES = frozenset({"sys_info", "pickle", "storages", "tensors"})
_COPY_CHUNK = 16 << 20


class _BufferFile(io.RawIOBase):
    """A read-only file over bytes or an mmap, without copying it."""

    def __init__(self, data: Any) -> None:
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        chunk = self._data[self._pos : self._pos + len(b)]
        n = len(chunk)
        b[:n] = chunk
        self._pos += n
        return n


def _is_tar(head: bytes) -> bool:
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    # Old V7 tar: no magic, but the header checksum must match.
    try:
        stored = int(head[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(head[:148]) + 8 * 32 + sum(head[156:512])
    return stored == computed and head[0] != 0


def _malformed(ctx: ScanContext, location: str, kind: str, err: object) -> None:
    ctx.add(
        Finding(
            "TWS-ARCHIVE-MALFORMED",
            Severity.HIGH,
            f"unreadable {kind} archive: {err}",
            location,
            {"format": kind, "error": str(err)},
        )
    )


class TarHandler:
    name = "tar"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return _is_tar(bytes(data[:512]))

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        import tarfile  # here: tar files are rare, and tarfile (with shutil) is not small

        limits = ctx.limits
        try:
            with tarfile.open(fileobj=_BufferFile(data), mode="r:") as tf:
                infos: list[tarfile.TarInfo] = []
                for info in tf:
                    if len(infos) >= limits.max_members:
                        _limit(ctx, location, "max_members", "too many tar members")
                        break
                    if info.isfile():
                        infos.append(info)
                names = {i.name for i in infos}
                if names == _LEGACY_NAMES and len(infos) == len(names):
                    members = {}
                    for info in infos:
                        f = tf.extractfile(info)
                        members[info.name] = f.read() if f is not None else b""
                    scan_legacy_tar(members, location, ctx)
                    return
                total = 0
                for info in infos:
                    total += info.size
                    if total > limits.max_decompressed_bytes:
                        _limit(ctx, location, "max_decompressed_bytes", "tar content too large")
                        break
                    f = tf.extractfile(info)
                    if f is None:
                        continue
                    with Spill() as sink:
                        while chunk := f.read(_COPY_CHUNK):
                            sink.write(chunk)
                        ctx.scan_member(sink.value(), f"{location}:{info.name}")
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            _malformed(ctx, location, "tar", e)


def _limit(ctx: ScanContext, location: str, which: str, message: str) -> None:
    ctx.limit(which, message, location)


class SevenZipHandler:
    name = "7z"

    def sniff(self, data: bytes) -> bool:
        return bytes(data[:6]) == _7Z_MAGIC

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        if importlib.util.find_spec("py7zr") is None:
            ctx.add(
                Finding(
                    "TWS-CANNOT-INSPECT",
                    Severity.HIGH,
                    "7z archive cannot be inspected: py7zr is not installed "
                    "(pip install 'trainwarden[formats]')",
                    location,
                    {"format": "7z"},
                )
            )
            return
        import py7zr

        limits = ctx.limits
        try:
            with py7zr.SevenZipFile(io.BytesIO(data), mode="r") as z:
                infos = [i for i in z.list() if not i.is_directory]
                if len(infos) > limits.max_members:
                    _limit(ctx, location, "max_members", "too many 7z members")
                    return
                declared = sum(int(i.uncompressed or 0) for i in infos)
                if declared > limits.max_decompressed_bytes:
                    _limit(
                        ctx,
                        location,
                        "max_decompressed_bytes",
                        f"7z archive declares {declared} bytes of content",
                    )
                    return
                factory = _LimitedFactory(limits.max_decompressed_bytes)
                z.extract(factory=factory)
        except _TooBig:
            _limit(ctx, location, "max_decompressed_bytes", "7z content exceeds the limit")
            return
        except Exception as e:  # py7zr raises many unrelated types on corrupt input
            _malformed(ctx, location, "7z", f"{type(e).__name__}: {e}")
            return
        for name, content in factory.files.items():
            ctx.scan_member(content, f"{location}:{name}")


class _TooBig(Exception):
    pass


class _LimitedFactory:
    """py7zr WriterFactory keeping members in memory under a byte budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.products: dict[str, _LimitedIO] = {}

    def create(self, filename: str) -> _LimitedIO:
        product = _LimitedIO(self, filename)
        self.products[filename] = product
        return product

    @property
    def files(self) -> dict[str, bytes]:
        return {name: bytes(p.buf) for name, p in self.products.items()}


class _LimitedIO:
    def __init__(self, owner: _LimitedFactory, name: str) -> None:
        self.owner = owner
        self.name = name
        self.buf = bytearray()

    def write(self, s: bytes | bytearray) -> int:
        self.owner.total += len(s)
        if self.owner.total > self.owner.limit:
            raise _TooBig
        self.buf += s
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return len(self.buf)

    def close(self) -> None:
        return None


TAR = TarHandler()
SEVENZIP = SevenZipHandler()
