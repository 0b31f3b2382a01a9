"""TrainWarden's ZIP reader, and the views of the readers a victim runs.

``ZipArchive.parse`` is our reading: the central directory is authoritative (offset, sizes,
method, flags), offsets are taken relative to where the archive starts (so archives written back
to back and data before an archive are handled), and the local header only supplies the name and
extra-field lengths used to find the data; every disagreement between the two headers is reported.
``miniz_view`` reads the archive as PyTorch's reader (miniz) does and ``zipfile_view`` as Python's
``zipfile`` does; the handler compares all three.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainwarden.scan._formats._spill import Spill, ZlibStream, decompress_into

__all__ = [
    "DamagedMember",
    "ZipArchive",
    "ZipEntry",
    "ZipError",
    "miniz_view",
    "read_member",
    "zipfile_view",
]

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_LOC64 = b"PK\x06\x07"
_CEN = b"PK\x01\x02"
_LOC = b"PK\x03\x04"
_EOCD_S = struct.Struct("<4s4H2LH")
_LOC64_S = struct.Struct("<4sLQL")
_EOCD64_S = struct.Struct("<4sQ2H2L4Q")
_CEN_S = struct.Struct("<4s6H3L5H2L")
_LOC_S = struct.Struct("<4s5H3L2H")
_COPY_CHUNK = 16 << 20


class ZipError(Exception):
    """The archive structure cannot be read (reported as a finding by the handler)."""


class DamagedMember(ZipError):
    """The compressed data is damaged; the sink holds what came out before the damage, which
    is what readers that stop at the declared size (zipfile, miniz) hand to their callers."""


@dataclass
class ZipEntry:
    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    data_offset: int = -1
    local_name: bytes | None = None
    local_flags: int = 0
    local_method: int = 0
    problems: list[str] = field(default_factory=list)
    local_loaded: bool = False


@dataclass
class ZipArchive:
    entries: list[ZipEntry]
    cd_offset: int
    prefix: int  # bytes before the first entry as implied by the directory (0 for torch files)
    problems: list[str]
    buf: object = field(repr=False, default=b"")
    size: int = 0
    end: int = 0  # offset just past the end-of-central-directory record

    @classmethod
    def parse(cls, data: object, max_entries: int, end: int | None = None) -> ZipArchive:
        """Parse the archive whose end record is the last one before ``end`` (default: the end
        of the data); ``prefix`` is where that archive starts in ``data``."""
        buf = data  # bytes or mmap; only small slices are copied
        n = len(buf) if end is None else end  # type: ignore[arg-type]
        lo = max(0, n - (65535 + 22))
        tail = bytes(buf[lo:n])  # type: ignore[index]
        idx = tail.rfind(_EOCD)
        if idx < 0 or idx + 22 > len(tail):
            raise ZipError("no end-of-central-directory record")
        eocd_pos = lo + idx
        (_, disk, cd_disk, n_disk, n_total, cd_size, cd_off, clen) = _EOCD_S.unpack_from(tail, idx)
        problems: list[str] = []
        if disk != 0 or cd_disk != 0 or n_disk != n_total:
            raise ZipError("multi-disk archives are not supported")
        if idx + 22 + clen != len(tail) and end is None:
            problems.append(
                f"the archive comment length ({clen}) disagrees with the bytes after the end record"
            )
        has_loc64 = eocd_pos >= 20 and bytes(buf[eocd_pos - 20 : eocd_pos - 16]) == _LOC64  # type: ignore[index]
        needs64 = n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF
        if needs64 and not has_loc64:
            raise ZipError("zip64 archive without a zip64 locator")
        if has_loc64:
            _, _, eocd64_off, _ = _LOC64_S.unpack(bytes(buf[eocd_pos - 20 : eocd_pos]))  # type: ignore[index]
            # The zip64 record normally sits right before the locator. Prefer that position:
            # an archive embedded at an offset (archives written back to back, as in
            # torch.distributed.checkpoint shards) records offsets relative to its own start,
            # so the locator's offset would point into an earlier archive.
            rec_pos = eocd_pos - 20 - 56
            rec = bytes(buf[rec_pos : rec_pos + 56]) if rec_pos >= 0 else b""  # type: ignore[index]
            if len(rec) < 56 or rec[:4] != _EOCD64:
                rec_pos = eocd64_off
                rec = bytes(buf[rec_pos : rec_pos + 56])  # type: ignore[index]
                if len(rec) < 56 or rec[:4] != _EOCD64:
                    raise ZipError("bad zip64 end-of-central-directory record")
            (_, _, _, _, _, _, _, n_total, cd_size, cd_off) = _EOCD64_S.unpack(rec)
            cd_end = rec_pos
        else:
            cd_end = eocd_pos
        if n_total > max_entries:
            raise ZipError(f"{n_total} entries exceed the member limit of {max_entries}")
        # miniz reads the directory at the recorded offset; Python's zipfile shifts everything
        # by the bytes found before it. Both views are checked.
        prefix = cd_end - cd_size - cd_off
        if prefix < 0 or cd_off + cd_size > n:
            raise ZipError("central directory lies outside the file")
        cd = bytes(buf[cd_off + prefix : cd_off + prefix + cd_size])  # type: ignore[index]
        entries: list[ZipEntry] = []
        pos = 0
        for _ in range(n_total):
            if pos + 46 > len(cd) or cd[pos : pos + 4] != _CEN:
                raise ZipError("truncated or corrupt central directory")
            f = _CEN_S.unpack_from(cd, pos)
            flags, method, crc, csize, usize = f[3], f[4], f[7], f[8], f[9]
            nlen, xlen, mlen, hoff = f[10], f[11], f[12], f[16]
            raw_name = cd[pos + 46 : pos + 46 + nlen]
            extra = cd[pos + 46 + nlen : pos + 46 + nlen + xlen]
            pos += 46 + nlen + xlen + mlen
            if usize == 0xFFFFFFFF or csize == 0xFFFFFFFF or hoff == 0xFFFFFFFF:
                usize, csize, hoff = _zip64_extra(extra, usize, csize, hoff)
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
            entries.append(ZipEntry(name, raw_name, flags, method, crc, csize, usize, hoff))
        if pos != len(cd):
            problems.append("the central directory size disagrees with its entries")
        return cls(entries, cd_off, prefix, problems, buf, len(buf), eocd_pos + 22 + clen)  # type: ignore[arg-type]

    def load_local(self, e: ZipEntry) -> None:
        """Read ``e``'s local header (lazily: a checkpoint's storages are never touched)."""
        if not e.local_loaded:
            e.local_loaded = True
            _read_local(self.buf, self.size, e, self.prefix)


def _zip64_extra(extra: bytes, usize: int, csize: int, hoff: int) -> tuple[int, int, int]:
    p = 0
    while p + 4 <= len(extra):
        hid, hlen = struct.unpack_from("<2H", extra, p)
        body = extra[p + 4 : p + 4 + hlen]
        if hid == 1:
            q = 0
            vals = []
            while q + 8 <= len(body):
                vals.append(struct.unpack_from("<Q", body, q)[0])
                q += 8
            it = iter(vals)
            if usize == 0xFFFFFFFF:
                usize = next(it, usize)
            if csize == 0xFFFFFFFF:
                csize = next(it, csize)
            if hoff == 0xFFFFFFFF:
                hoff = next(it, hoff)
            return usize, csize, hoff
        p += 4 + hlen
    raise ZipError("zip64 sizes without a zip64 extra field")


def _read_local(buf: object, n: int, e: ZipEntry, prefix: int) -> None:
    off = e.header_offset + prefix
    head = bytes(buf[off : off + 30])  # type: ignore[index]
    if len(head) < 30 or head[:4] != _LOC:
        e.problems.append("no local header at the offset the central directory gives")
        return
    f = _LOC_S.unpack(head)
    e.local_flags, e.local_method = f[2], f[3]
    nlen, xlen = f[9], f[10]
    e.local_name = bytes(buf[off + 30 : off + 30 + nlen])  # type: ignore[index]
    e.data_offset = off + 30 + nlen + xlen
    if e.local_name != e.raw_name:
        e.problems.append(
            f"local header names {e.local_name!r} but the central directory names {e.raw_name!r}"
        )
    if (e.local_flags & ~0x8) != (e.flags & ~0x8):
        e.problems.append(
            f"local header flags 0x{e.local_flags:04x} differ from the central directory's "
            f"0x{e.flags:04x}"
        )
    if e.local_method != e.method:
        e.problems.append(
            f"local header compression method {e.local_method} differs from the central "
            f"directory's {e.method}"
        )
    if e.data_offset + e.csize > n:
        e.problems.append("member data runs past the end of the file")


def read_member(
    buf: object, e: ZipEntry, limit: int, sink: Spill, max_ratio: float | None = None
) -> None:
    """Write the member's bytes into ``sink``, decompressed, with at most ``limit`` bytes.

    Raises ``ZipError`` for unsupported methods, encryption or damaged data, ``OverflowError``
    for output over ``limit`` and ``RatioError`` for output over ``max_ratio`` times the input.
    """
    if e.data_offset < 0:
        raise ZipError("member has no readable local header")
    if e.flags & 0x1:
        raise ZipError("member is encrypted")
    start, end = e.data_offset, e.data_offset + e.csize
    if e.method == 0:
        if e.csize > limit:
            raise OverflowError(limit)
        for pos in range(start, end, _COPY_CHUNK):
            sink.write(bytes(buf[pos : min(end, pos + _COPY_CHUNK)]))  # type: ignore[index]
        return
    raw = memoryview(buf)[start:end]  # type: ignore[arg-type]
    try:
        make: Callable[[], Any]
        if e.method == 8:
            make = lambda: ZlibStream(-15)  # noqa: E731 - a factory per stream
            body: Any = raw
        elif e.method == 12:
            make, body = bz2.BZ2Decompressor, raw
        elif e.method == 14:
            # ZIP's LZMA: 2-byte version, 2-byte props size, props, then raw LZMA1.
            if len(raw) < 4:
                raise ZipError("truncated LZMA member")
            psize = struct.unpack_from("<H", raw, 2)[0]
            props = bytes(raw[4 : 4 + psize])
            try:
                filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]
            except lzma.LZMAError as err:
                raise ZipError(f"invalid LZMA properties: {err}") from err

            def make() -> Any:
                return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])

            body = raw[4 + psize :]
        else:
            raise ZipError(f"unsupported compression method {e.method}")
        error = decompress_into(body, make, limit, sink, max_ratio=max_ratio)
        if error is not None and "follow the compressed stream" not in error:
            raise DamagedMember(f"damaged compressed member: {error}")
    finally:
        raw.release()


def _locate_eocd_miniz(buf: object, n: int) -> int:
    """Offset of the end record miniz uses: the last signature with 22 bytes after it, searched
    back at most 64 KiB + 22 from the end."""
    lo = max(0, n - (65535 + 22))
    tail = bytes(buf[lo:n])  # type: ignore[index]
    idx = tail.rfind(_EOCD, 0, max(0, len(tail) - 22 + 4))
    if idx < 0:
        raise ZipError("no end-of-central-directory record")
    return lo + idx


def miniz_view(buf: object, max_entries: int) -> ZipArchive:
    """The archive as PyTorch's reader (miniz) sees it: the zip64 record at the offset its
    locator gives, the central directory and local headers at their recorded absolute offsets
    (no adjustment for bytes before the archive). Raises ZipError where miniz refuses to open.
    """
    n = len(buf)  # type: ignore[arg-type]
    if n < 22:
        raise ZipError("too small")
    eocd_pos = _locate_eocd_miniz(buf, n)
    rec = bytes(buf[eocd_pos : eocd_pos + 22])  # type: ignore[index]
    (_, disk, cd_disk, n_disk, n_total, cd_size, cd_off, _clen) = _EOCD_S.unpack(rec)
    if eocd_pos >= 20 + 56:
        loc = bytes(buf[eocd_pos - 20 : eocd_pos])  # type: ignore[index]
        if loc[:4] == _LOC64:
            _, _, rec64_off, total_disks = _LOC64_S.unpack(loc)
            if rec64_off > n - 56:
                raise ZipError("zip64 locator points past the end")
            rec64 = bytes(buf[rec64_off : rec64_off + 56])  # type: ignore[index]
            if rec64[:4] == _EOCD64:
                f = _EOCD64_S.unpack(rec64)
                rec_size, disk, cd_disk, n_disk, n_total, cd_size, cd_off = (
                    f[1],
                    f[4],
                    f[5],
                    f[6],
                    f[7],
                    f[8],
                    f[9],
                )
                if rec_size < 44 or total_disks != 1:
                    raise ZipError("bad zip64 record")
                if n_total > 0xFFFFFFFF or n_disk > 0xFFFFFFFF or cd_size > 0xFFFFFFFF:
                    raise ZipError("zip64 counts beyond miniz's limits")
    if n_total != n_disk:
        raise ZipError("multi-disk archive")
    if (disk | cd_disk) != 0 and (disk != 1 or cd_disk != 1):
        raise ZipError("multi-disk archive")
    if n_total > max_entries:
        raise ZipError(f"{n_total} entries exceed the member limit of {max_entries}")
    if cd_size < n_total * 46 or cd_off + cd_size > n:
        raise ZipError("central directory lies outside the file")
    cd = bytes(buf[cd_off : cd_off + cd_size])  # type: ignore[index]
    entries: list[ZipEntry] = []
    pos = 0
    for _ in range(n_total):
        if len(cd) - pos < 46 or cd[pos : pos + 4] != _CEN:
            raise ZipError("corrupt central directory")
        f = _CEN_S.unpack_from(cd, pos)
        flags, method, crc, csize, usize = f[3], f[4], f[7], f[8], f[9]
        nlen, xlen, mlen, disk_start, hoff = f[10], f[11], f[12], f[13], f[16]
        total = 46 + nlen + xlen + mlen
        if total > len(cd) - pos:
            raise ZipError("corrupt central directory")
        raw_name = cd[pos + 46 : pos + 46 + nlen]
        extra = cd[pos + 46 + nlen : pos + 46 + nlen + xlen]
        # miniz's sanity checks use the 32-bit directory fields, before any zip64 extension.
        if (
            csize != 0xFFFFFFFF
            and usize != 0xFFFFFFFF
            and ((method == 0 and usize != csize) or (usize and not csize))
        ):
            raise ZipError("corrupt sizes")
        if disk_start == 0xFFFF or (disk_start != disk and disk_start != 1):
            raise ZipError("multi-disk archive")
        if csize != 0xFFFFFFFF and hoff + 30 + csize > n:
            raise ZipError("member outside the file")
        if xlen and max(csize, usize, hoff) == 0xFFFFFFFF:
            usize, csize, hoff = _zip64_extra(extra, usize, csize, hoff)
        if flags & 0x2000:
            raise ZipError("masked local headers")
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        entries.append(ZipEntry(name, raw_name, flags, method, crc, csize, usize, hoff))
        pos += total
    return ZipArchive(entries, cd_off, 0, [], buf, n, eocd_pos + 22)


class _BufferFile(io.RawIOBase):
    """A read-only, seekable file over bytes or an mmap without copying it."""

    def __init__(self, buf: object) -> None:
        self._buf = buf
        self._n = len(buf)  # type: ignore[arg-type]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self._n)[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self._n if size is None or size < 0 else min(self._n, self._pos + size)
        out = bytes(self._buf[self._pos : end])  # type: ignore[index]
        self._pos = max(self._pos, end)
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def zipfile_view(buf: object, max_entries: int) -> list[ZipEntry]:
    """The members Python's ``zipfile`` (numpy.load of an .npz, most Python tools) would read,
    with their data offsets; members it would refuse to open are left out. Raises ZipError when
    zipfile refuses the archive."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf = zipfile.ZipFile(_BufferFile(buf))
    except Exception as err:  # zipfile raises many kinds on hostile input; it then reads nothing
        raise ZipError(f"zipfile refuses it: {type(err).__name__}: {err}") from err
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise ZipError(f"{len(infos)} entries exceed the member limit of {max_entries}")
    n = len(buf)  # type: ignore[arg-type]
    out: list[ZipEntry] = []
    for zi in infos:
        head = bytes(buf[zi.header_offset : zi.header_offset + 30])  # type: ignore[index]
        if zi.header_offset < 0 or len(head) < 30 or head[:4] != _LOC:
            continue
        f = _LOC_S.unpack(head)
        lflags, nlen, xlen = f[2], f[9], f[10]
        lname = bytes(buf[zi.header_offset + 30 : zi.header_offset + 30 + nlen])  # type: ignore[index]
        try:
            lname_str = lname.decode("utf-8" if lflags & 0x800 else "cp437")
        except UnicodeDecodeError:
            continue
        if lname_str != zi.orig_filename or zi.flag_bits & 0x21:
            continue  # zipfile raises on open: name mismatch, encryption, patched data
        e = ZipEntry(
            zi.filename,
            zi.orig_filename.encode("utf-8", "surrogateescape"),
            zi.flag_bits,
            zi.compress_type,
            zi.CRC,
            zi.compress_size,
            zi.file_size,
            zi.header_offset,
        )
        e.local_loaded = True
        e.local_name, e.local_flags, e.local_method = lname, lflags, zi.compress_type
        e.data_offset = zi.header_offset + 30 + nlen + xlen
        if e.data_offset > n:
            continue
        # zipfile yields the first file_size bytes of a stored member whatever its compressed
        # size says, and reads compressed input until the end of the file at most.
        e.csize = min(e.usize if e.method == 0 else e.csize, n - e.data_offset)
        out.append(e)
    return out
