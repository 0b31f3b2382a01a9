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
    """:func:`trainwarden.drill._samples_containers.zip64_shadow` of two stored archives:
    PyTorch's reader (miniz) reads ``shadow``; Python's zipfile and TrainWarden read ``benign``."""
    from trainwarden.drill._samples_containers import zip64_shadow

    return zip64_shadow(stored(shadow), stored(benign))
