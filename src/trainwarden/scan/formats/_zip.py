"""A strict ZIP reader that reads members the way PyTorch's miniz-based reader does.

The central directory is authoritative (offset, sizes, method, flags); the local header only
supplies the name and extra-field lengths used to find the data. Every disagreement between the
two views, which other tools may resolve differently, is reported rather than silently resolved.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from dataclasses import dataclass, field

__all__ = ["ZipArchive", "ZipEntry", "ZipError", "read_member"]

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


class ZipError(Exception):
    """The archive structure cannot be read (reported as a finding by the handler)."""


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

    @classmethod
    def parse(cls, data: object, max_entries: int) -> ZipArchive:
        buf = data  # bytes or mmap; only small slices are copied
        n = len(buf)  # type: ignore[arg-type]
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
        if idx + 22 + clen != len(tail):
            problems.append(
                f"the archive comment length ({clen}) disagrees with the bytes after the end record"
            )
        has_loc64 = eocd_pos >= 20 and bytes(buf[eocd_pos - 20 : eocd_pos - 16]) == _LOC64  # type: ignore[index]
        needs64 = n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF
        if needs64 and not has_loc64:
            raise ZipError("zip64 archive without a zip64 locator")
        if has_loc64:
            _, _, eocd64_off, _ = _LOC64_S.unpack(bytes(buf[eocd_pos - 20 : eocd_pos]))  # type: ignore[index]
            rec = bytes(buf[eocd64_off : eocd64_off + 56])  # type: ignore[index]
            if len(rec) < 56 or rec[:4] != _EOCD64:
                raise ZipError("bad zip64 end-of-central-directory record")
            (_, _, _, _, _, _, _, n_total, cd_size, cd_off) = _EOCD64_S.unpack(rec)
            cd_end = eocd64_off
        else:
            cd_end = eocd_pos
        if n_total > max_entries:
            raise ZipError(f"{n_total} entries exceed the member limit of {max_entries}")
        # miniz reads the directory at the recorded offset; Python's zipfile shifts everything
        # by the bytes found before it. Both views are checked.
        prefix = cd_end - cd_size - cd_off
        if prefix < 0 or cd_off + cd_size > n:
            raise ZipError("central directory lies outside the file")
        if prefix:
            problems.append(
                f"{prefix} bytes precede the archive: readers disagree about member offsets"
            )
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
        return cls(entries, cd_off, prefix, problems, buf, n)

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


def read_member(buf: object, e: ZipEntry, limit: int) -> bytes:
    """The member's bytes, decompressed with at most ``limit`` output bytes.

    Raises ``ZipError`` for unsupported methods, encryption, or output over ``limit``.
    """
    if e.data_offset < 0:
        raise ZipError("member has no readable local header")
    if e.flags & 0x1:
        raise ZipError("member is encrypted")
    raw = buf[e.data_offset : e.data_offset + e.csize]  # type: ignore[index]
    if e.method == 0:
        if e.csize > limit:
            raise ZipError(f"member larger than the limit of {limit} bytes")
        return bytes(raw)
    if e.method == 8:
        dec = zlib.decompressobj(-15)
        out = dec.decompress(raw, limit + 1)
    elif e.method == 12:
        out = bz2.BZ2Decompressor().decompress(raw, limit + 1)
    elif e.method == 14:
        # ZIP's LZMA: 2-byte version, 2-byte props size, props, then raw LZMA1.
        if len(raw) < 4:
            raise ZipError("truncated LZMA member")
        psize = struct.unpack_from("<H", raw, 2)[0]
        props = bytes(raw[4 : 4 + psize])
        filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]
        out = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt]).decompress(
            raw[4 + psize :], limit + 1
        )
    else:
        raise ZipError(f"unsupported compression method {e.method}")
    if len(out) > limit:
        raise ZipError(f"member decompresses to more than the limit of {limit} bytes")
    return out
