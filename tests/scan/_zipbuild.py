"""A minimal ZIP writer for tests that need malformed or inconsistent archives."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass


@dataclass
class Member:
    name: str
    data: bytes
    local_name: str | None = None
    flags: int = 0
    local_flags: int | None = None
    crc: int | None = None
    deflate: bool = False


def build_zip(members: list[Member], *, prefix: bytes = b"") -> bytes:
    out = bytearray(prefix)
    central = bytearray()
    for m in members:
        payload = m.data
        method = 0
        if m.deflate:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = c.compress(m.data) + c.flush()
            method = 8
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        lname = (m.local_name if m.local_name is not None else m.name).encode()
        cname = m.name.encode()
        lflags = m.flags if m.local_flags is None else m.local_flags
        offset = len(out) - len(prefix)
        out += struct.pack(
            "<4s5H3L2H",
            b"PK\x03\x04",
            20,
            lflags,
            method,
            0,
            0,
            crc,
            len(payload),
            len(m.data),
            len(lname),
            0,
        )
        out += lname + payload
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            m.flags,
            method,
            0,
            0,
            crc,
            len(payload),
            len(m.data),
            len(cname),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += cname
    cd_off = len(out) - len(prefix)
    out += central
    out += struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), cd_off, 0
    )
    return bytes(out)


def read_zip(data: bytes) -> list[Member]:
    """Members of a well-formed archive (via the standard library)."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [Member(i.filename, z.read(i)) for i in z.infolist()]


def stored(members: dict[str, bytes]) -> bytes:
    """A well-formed archive written by Python's zipfile, every member stored."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def zip64_shadowed(shadow: dict[str, bytes], benign: dict[str, bytes]) -> bytes:
    """An archive whose zip64 locator points at a second directory: PyTorch's reader (miniz)
    follows it and reads ``shadow``; Python's zipfile and TrainWarden take the record just
    before the locator and read ``benign``."""
    a, b = stored(shadow), stored(benign)
    a_eocd = a.rfind(b"PK\x05\x06")
    _, _, _, _, a_n, a_size, a_off, _ = struct.unpack_from("<4s4H2LH", a, a_eocd)
    b_eocd = b.rfind(b"PK\x05\x06")
    _, _, _, _, b_n, b_size, b_off, _ = struct.unpack_from("<4s4H2LH", b, b_eocd)
    body = bytearray(a[:a_eocd])
    shadow_rec = len(body)
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, a_n, a_n, a_size, a_off)
    body += b[:b_eocd]
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, b_n, b_n, b_size, b_off)
    body += struct.pack("<4sLQL", b"PK\x06\x07", 0, shadow_rec, 1)
    body += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, b_n, b_n, b_size, b_off, 0)
    return bytes(body)
