"""Differential ZIP fuzzing: mutate real torch/npz/zip files and compare what PyTorch's reader and
Python's zipfile actually read with what TrainWarden's ZIP handler reads and scans.

Shared by tests/scan/test_zip_differential.py (a fixed number of cases in CI) and
bench/zip_differential.py (as many as time allows).
"""

from __future__ import annotations

import contextlib
import io
import random
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from trainwarden.findings import Severity
from trainwarden.scan._engine import scan_bytes
from trainwarden.scan._formats._spill import Spill
from trainwarden.scan._formats._zip import (
    DamagedMember,
    ZipArchive,
    ZipEntry,
    ZipError,
    miniz_view,
    read_member,
)
from trainwarden.scan._formats.zip import _reader_views
from trainwarden.scan._types import Limits

_LIMITS = Limits()
_SIGS = (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07")


def seeds() -> list[bytes]:
    """Real files written by torch.save, numpy.savez(_compressed) and zipfile, small enough to
    mutate thousands of times a second."""
    import numpy as np
    import torch

    out: list[bytes] = []
    b = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32), "step": 3}, b)
    out.append(b.getvalue())
    b = io.BytesIO()
    torch.save(torch.ones(2, dtype=torch.int64), b, _use_new_zipfile_serialization=True)
    out.append(b.getvalue())
    b = io.BytesIO()
    np.savez(b, a=np.arange(4, dtype=np.int32), b=np.zeros(2))
    out.append(b.getvalue())
    b = io.BytesIO()
    np.savez_compressed(b, a=np.arange(64, dtype=np.int16))
    out.append(b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model/data.pkl", b"\x80\x04K\x01.")
        z.writestr("model/extra.txt", b"hello " * 8)
    out.append(b.getvalue())
    return out


_INTERESTING = (0, 1, 2, 0x1E, 0x2E, 0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF)


def mutate(data: bytes, rng: random.Random, donors: list[bytes]) -> bytes:
    """One structure-aware mutation (or a few stacked): header fields, offsets, prefixes,
    splices with other archives, zip64 records, truncation, byte flips."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(10)
        sig_pos = [i for s in _SIGS for i in _find_all(buf, s)]
        if op <= 2 and sig_pos:
            # Overwrite a u16/u32 field of a record (offsets, sizes, counts, lengths, flags).
            base = rng.choice(sig_pos)
            off = base + rng.randrange(4, 46)
            width = rng.choice((2, 4))
            if off + width <= len(buf):
                old = int.from_bytes(buf[off : off + width], "little")
                val = rng.choice(
                    (
                        rng.choice(_INTERESTING),
                        old + rng.randint(-64, 64),
                        rng.randrange(len(buf) + 1),
                        old ^ (1 << rng.randrange(width * 8)),
                    )
                ) % (1 << (width * 8))
                buf[off : off + width] = val.to_bytes(width, "little")
        elif op == 3:
            buf[0:0] = rng.choice(
                (b"\0" * rng.randrange(1, 64), rng.randbytes(rng.randrange(1, 64)))
            )
        elif op == 4:
            donor = rng.choice(donors)
            buf = bytearray(donor + bytes(buf)) if rng.random() < 0.5 else buf + donor
        elif op == 5:
            buf += rng.randbytes(rng.randrange(1, 40))
        elif op == 6 and len(buf) > 30:
            del buf[rng.randrange(len(buf) // 2, len(buf)) :]
        elif op == 7:
            buf = _add_zip64(buf, rng)
        elif op == 8 and buf:
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(buf))
                buf[i] = rng.randrange(256)
        else:
            # Copy one record over another region (duplicated directories, shadow entries).
            if sig_pos:
                src = rng.choice(sig_pos)
                dst = rng.randrange(len(buf))
                chunk = buf[src : src + rng.randrange(22, 80)]
                buf[dst : dst + len(chunk)] = chunk
    return bytes(buf)


def _find_all(buf: bytearray, sig: bytes) -> Iterator[int]:
    i = buf.find(sig)
    while i >= 0:
        yield i
        i = buf.find(sig, i + 1)


def _add_zip64(buf: bytearray, rng: random.Random) -> bytearray:
    """Insert a zip64 end record and locator before the end record, pointing where the
    mutation chooses (its own position, elsewhere, or into a prefix)."""
    eocd = buf.rfind(b"PK\x05\x06")
    if eocd < 0 or eocd + 22 > len(buf):
        return buf
    _, _, _, _, nt, cds, cdo, _ = struct.unpack_from("<4s4H2LH", buf, eocd)
    rec_pos = eocd
    rec = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, nt, nt, cds, cdo)
    loc_target = rng.choice((rec_pos, rec_pos + rng.randint(-40, 40), rng.randrange(len(buf) + 1)))
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, max(0, loc_target), 1)
    out = buf[:eocd] + rec + loc + buf[eocd:]
    if rng.random() < 0.5:  # mark the classic record as zip64
        struct.pack_into("<2L", out, eocd + 76 + 12, 0xFFFFFFFF, 0xFFFFFFFF)
    return out


@dataclass
class Outcome:
    """One mutated archive: the readers' views and what TrainWarden read."""

    torch: dict[str, bytes] | None = None
    zipfile: dict[str, bytes] | None = None
    ours: dict[str, bytes] = field(default_factory=dict)
    covered: set[bytes] = field(default_factory=set)


def _read(buf: bytes, ent: ZipEntry) -> bytes | None:
    sink = Spill()
    try:
        with contextlib.suppress(DamagedMember):  # the handler scans what came before the damage
            read_member(buf, ent, 1 << 24, sink)
        return bytes(sink.value())
    except (ZipError, OverflowError, ValueError, EOFError, OSError, LookupError):
        return None
    finally:
        sink.close()


def torch_view(data: bytes) -> dict[str, bytes] | None:
    """{member name (archive directory included): bytes} as PyTorch's reader reads them."""
    import torch

    try:
        r = torch._C.PyTorchFileReader(io.BytesIO(data))
        names = r.get_all_records()
    except Exception:  # torch refuses the archive: no view
        return None
    out: dict[str, bytes] = {}
    for name in names:
        try:
            reads = [bytes(r.get_record(name))]
            for fill in (b"\xa5", b"\x5a"):
                # Reuse freed memory with a known pattern before reading again.
                scratch = [fill * len(reads[0]) for _ in range(64)]
                del scratch
                reads.append(bytes(torch._C.PyTorchFileReader(io.BytesIO(data)).get_record(name)))
        except Exception:  # noqa: S112 - torch refuses this member: no view of it
            continue
        # On some damaged archives (a member without a local header) torch returns a buffer it
        # never filled: the bytes change from read to read and are no member content to scan.
        if reads[0] == reads[1] == reads[2] and _crc_known(data, name, reads[0]):
            out[name] = reads[0]
    return out


def _crc_known(data: bytes, name: str, content: bytes) -> bool:
    """True unless no directory entry for ``name`` records this content's CRC-32. torch does not
    check CRCs, and when inflating fails it may hand back a buffer it never filled but that
    happens to read the same three times; content whose CRC matches no entry is left out
    (CRC-mismatched members that torch really reads are covered by the drill corpus)."""
    try:
        entries = miniz_view(data, _LIMITS.max_members).entries
    except (ZipError, ValueError, IndexError, OverflowError, struct.error):
        return True
    crcs = {e.crc for e in entries if e.name.split("/", 1)[-1] == name or e.name == name}
    return not crcs or zlib.crc32(content) in crcs


def zipfile_read(data: bytes) -> dict[str, bytes] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z = zipfile.ZipFile(io.BytesIO(data))
            out: dict[str, bytes] = {}
            for zi in z.infolist():
                if zi.file_size > 1 << 24:
                    continue
                try:
                    out[zi.filename] = z.read(zi)
                except Exception:  # noqa: S112 - zipfile refuses this member (CRC, name, ...)
                    continue
            return out
    except Exception:  # zipfile refuses the archive
        return None


def our_views(data: bytes) -> tuple[dict[str, set[bytes]], set[bytes]]:
    """(our primary reading {name: contents}, every member content the ZIP handler scans); a
    name has several contents in archives written back to back."""
    primary: dict[str, set[bytes]] = {}
    covered: set[bytes] = set()
    end: int | None = None
    for _ in range(16):
        try:
            a = ZipArchive.parse(data, _LIMITS.max_members, end)
        except (ZipError, ValueError, IndexError, OverflowError, struct.error):
            break
        for e in a.entries:
            a.load_local(e)
            content = _read(data, e)
            if content is not None:
                primary.setdefault(e.name, set()).add(content)
                covered.add(content)
        if a.prefix <= 0:
            break
        end = a.prefix
    for _, entries in _reader_views(data, _LIMITS.max_members):
        for e in entries:
            content = _read(data, e)
            if content is not None:
                covered.add(content)
    return primary, covered


def check(data: bytes) -> tuple[list[str], bool]:
    """(problems with ``data``, whether any reader opened it). Problems: reader content
    TrainWarden never read, or a reader whose view differs from ours without a HIGH finding."""
    problems: list[str] = []
    primary, covered = our_views(data)
    views = {"torch": torch_view(data), "zipfile": zipfile_read(data)}
    differs = False
    for reader, view in views.items():
        if not view:
            continue
        for name, content in view.items():
            if not any(c.startswith(content) for c in covered):
                problems.append(f"{reader} reads {name!r} ({len(content)} bytes) unscanned")
            # torch names records relative to the archive's directory.
            full = [n for n in primary if n == name or n.split("/", 1)[-1] == name]
            if reader == "zipfile":
                full = [name]
            differs |= not any(content in primary.get(n, ()) for n in full)
    tv, zv = views["torch"], views["zipfile"]
    if tv and zv:
        stripped = {n.split("/", 1)[-1]: c for n, c in zv.items()}
        differs |= any(n in stripped and stripped[n] != c for n, c in tv.items())
    if differs and not problems and data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        report = scan_bytes(data, "mutant.zip")
        if not any(f.severity >= Severity.HIGH for f in report.findings):
            problems.append("readers disagree with our reading but the scan has no HIGH finding")
    elif differs and not problems:
        report = scan_bytes(data, "mutant.bin")
        if not any(f.severity >= Severity.HIGH for f in report.findings):
            problems.append("a reader opens this file as an archive but the scan has no HIGH")
    return problems, any(views.values())


def run(n: int, seed: int = 0) -> tuple[int, int, list[tuple[int, bytes, list[str]]]]:
    """(cases, cases where some reader opened the mutant, failures) for ``n`` mutants."""
    rng = random.Random(seed)  # noqa: S311 - reproducible mutations, not cryptography
    base = seeds()
    failures: list[tuple[int, bytes, list[str]]] = []
    opened = 0
    for i in range(n):
        data = mutate(rng.choice(base), rng, base)
        probs, was_opened = check(data)
        opened += was_opened
        if probs:
            failures.append((i, data, probs))
    return n, opened, failures
