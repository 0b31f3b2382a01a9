"""ZIP containers: PyTorch checkpoints (any prefix and member names), TorchScript archives,
numpy ``.npz`` and plain zip files, read with TrainWarden's own strict ZIP parser.

Every member that parses as a pickle is analysed; storages referenced by a checkpoint's
persistent ids are raw tensor bytes that torch never unpickles, so they are not read at all.
"""

from __future__ import annotations

import contextlib
import math
import struct
import time
import zlib

from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats._dtype import NpyHeaderError, parse_npy_header
from trainwarden.scan._formats._spill import RatioError, Spill
from trainwarden.scan._formats._zip import (
    DamagedMember,
    ZipArchive,
    ZipEntry,
    ZipError,
    miniz_view,
    read_member,
    zipfile_view,
)
from trainwarden.scan._formats.pickle import scan_pickle
from trainwarden.scan._pickle_vm import looks_like_pickle
from trainwarden.scan._torchscript import code_members
from trainwarden.scan._torchscript import review as review_torchscript
from trainwarden.scan._types import ScanContext

__all__ = ["HANDLER", "ZipHandler"]

_NPY_MAGIC = b"\x93NUMPY"
#: Bytes of a stored member read to recognise an .npy header.
_HEAD = 1 << 16

_TORCHSCRIPT_BUILDERS = tuple(
    f"torch.jit._pickle.{n}"
    for n in (
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
        "build_tensor_from_id",
        "restore_type_tag",
    )
)


class ZipHandler:
    name = "zip"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return bytes(data[:4]) in (b"PK\x03\x04", b"PK\x05\x06")

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        archives: list[ZipArchive] = []
        gaps: list[tuple[int, int]] = []
        end: int | None = None
        while True:
            try:
                archive = ZipArchive.parse(data, ctx.limits.max_members, end)
            except (ZipError, ValueError, IndexError) as err:
                if not archives:
                    ctx.add(
                        Finding(
                            "TWS-ZIP-MALFORMED",
                            Severity.HIGH,
                            f"unreadable ZIP structure: {err}",
                            location,
                            {"error": str(err)},
                        )
                    )
                    # Other readers may still open it: whatever they read is scanned.
                    self._other_readers(data, location, ctx, set(), set())
                    return
                break
            if end is not None and archive.end < end:
                # Bytes between two archives belong to neither: inspect them by content.
                gaps.append((archive.end, end))
            archives.append(archive)
            # Archives written back to back (torch.distributed.checkpoint shards hold one
            # torch.save archive per item): walk back to the previous end record.
            if archive.prefix <= 0 or len(archives) >= ctx.limits.max_members:
                break
            end = archive.prefix
        archives.reverse()
        first = archives[0].prefix
        if first > 0:
            ctx.add(
                Finding(
                    "TWS-ZIP-MISMATCH",
                    Severity.MEDIUM,
                    f"{first} bytes precede the archive: readers disagree about member offsets",
                    location,
                    {"prefix_bytes": first},
                )
            )
        if len(archives) > 1:
            ctx.note_format("zip-sequence")
        skipped: set[tuple[int, int, int]] = set()
        for i, archive in enumerate(archives):
            where = location if len(archives) == 1 else f"{location}:<archive {i}@{archive.prefix}>"
            self._scan_archive(data, archive, where, ctx, skipped)
        ours: set[tuple[str, int, int, int]] = set()
        for archive in archives:
            for ent in archive.entries:
                archive.load_local(ent)
                ours.add(_key(ent))
        scanned = {k[1:] for k in ours} - skipped
        self._other_readers(data, location, ctx, ours, scanned)
        for start, stop in gaps:
            ctx.add(
                Finding(
                    "TWS-ZIP-MISMATCH",
                    Severity.MEDIUM,
                    f"{stop - start} bytes between two archives belong to neither",
                    f"{location}@{start}",
                    {"offset": start, "length": stop - start},
                )
            )
            ctx.scan_member(bytes(data[start:stop]), f"{location}:<gap@{start}>")

    def _other_readers(
        self,
        data: object,
        location: str,
        ctx: ScanContext,
        ours: set[tuple[str, int, int, int]],
        scanned: set[tuple[int, int, int]],
    ) -> None:
        """Compare what PyTorch's reader and Python's zipfile would read with our reading;
        report any member they see that we did not, and scan its content."""
        views = _reader_views(data, ctx.limits.max_members)
        if len(views) == 2:
            (r1, v1), (r2, v2) = views
            first = {e.name: _key(e) for e in v1}
            split = sorted({e.name for e in v2 if e.name in first and first[e.name] != _key(e)})
            if split:
                ctx.add(
                    Finding(
                        "TWS-ZIP-DIFFERENTIAL",
                        Severity.HIGH,
                        f"{r1} and {r2} read different content for {len(split)} member(s) "
                        f"({', '.join(repr(n) for n in split[:8])}): torch.load and "
                        "zipfile-based loaders such as numpy.load see different files",
                        location,
                        {"readers": [r1, r2], "members": split[:50]},
                    )
                )
        for reader, entries in views:
            extra = [e for e in entries if _key(e) not in ours]
            if not extra:
                continue
            names = ", ".join(repr(e.name) for e in extra[:8])
            ctx.add(
                Finding(
                    "TWS-ZIP-DIFFERENTIAL",
                    Severity.HIGH,
                    f"{reader} reads {len(extra)} member(s) that differ from TrainWarden's "
                    f"reading of this archive ({names}{', ...' if len(extra) > 8 else ''}): "
                    "the archive shows different content to different readers",
                    location,
                    {"reader": reader, "members": [e.name for e in extra[:50]]},
                )
            )
            self._scan_extra(data, extra, f"{location}:<{reader}>", ctx, scanned)

    def _scan_extra(
        self,
        data: object,
        extra: list[ZipEntry],
        location: str,
        ctx: ScanContext,
        scanned: set[tuple[int, int, int]],
    ) -> None:
        limit = ctx.limits.max_decompressed_bytes
        for ent in extra:
            k = _key(ent)[1:]
            if k in scanned or (ent.name.endswith("/") and ent.usize == 0):
                continue
            scanned.add(k)
            member_loc = f"{location}:{ent.name}"
            if self._plain_npy(data, ent, member_loc, ctx):
                continue
            sink = self._read(data, ent, limit, member_loc, ctx)  # type: ignore[arg-type]
            if sink is None:
                continue
            with sink:
                ctx.scan_member(sink.value(), member_loc)

    def scan_trailing_archive(self, data: object, location: str, ctx: ScanContext) -> None:
        """For content another handler claimed (or none did): if Python's zipfile or PyTorch's
        reader would also open it as an archive (an archive appended to other data), report
        that and scan the members they would read."""
        n = len(data)  # type: ignore[arg-type]
        if n < 22 or _EOCD_SIG not in bytes(data[max(0, n - _EOCD_SEARCH) : n]):  # type: ignore[index]
            return
        scanned: set[tuple[int, int, int]] = set()
        for reader, entries in _reader_views(data, ctx.limits.max_members):
            if not entries:
                continue
            ctx.add(
                Finding(
                    "TWS-ZIP-DIFFERENTIAL",
                    Severity.HIGH,
                    f"{reader} opens this file as a ZIP archive of {len(entries)} member(s) "
                    "behind other leading data: readers that look at the first bytes and "
                    "readers that look for the archive directory see different files",
                    location,
                    {"reader": reader, "members": [e.name for e in entries[:50]]},
                )
            )
            ctx.note_format("zip")
            self._scan_extra(data, entries, f"{location}:<{reader}>", ctx, scanned)

    def _scan_archive(
        self,
        data: bytes,
        archive: ZipArchive,
        location: str,
        ctx: ScanContext,
        skipped: set[tuple[int, int, int]],
    ) -> None:
        names = [ent.name for ent in archive.entries]
        kind = _kind(names)
        ctx.note_format(kind)
        for problem in archive.problems:
            ctx.add(Finding("TWS-ZIP-MISMATCH", Severity.MEDIUM, problem, location, {}))
        seen: dict[str, str] = {}
        for ent in archive.entries:
            low = ent.name.lower()
            if low in seen:
                ctx.add(
                    Finding(
                        "TWS-ZIP-DUPLICATE",
                        Severity.HIGH,
                        f"members {seen[low]!r} and {ent.name!r} have the same name: readers "
                        "disagree about which one is loaded",
                        f"{location}:{ent.name}",
                        {"member": ent.name},
                    )
                )
            seen[low] = ent.name
        policy = ctx.policy
        if kind == "torchscript":
            classes = self._torchscript(data, archive, location, ctx)
            # The archive's pickles are read by TorchScript's own unpickler, which resolves
            # these names to the archive's code and its list builders, never to imports.
            ctx.policy = policy.with_overrides(allow=[*classes, *_TORCHSCRIPT_BUILDERS])
        try:
            self._scan_members(data, archive, location, ctx, kind, skipped)
        finally:
            ctx.policy = policy

    def _torchscript(
        self, data: bytes, archive: ZipArchive, location: str, ctx: ScanContext
    ) -> list[str]:
        """Review the archive's TorchScript code; returns the classes it defines."""
        wanted = set(code_members(ent.name for ent in archive.entries))
        sources: dict[str, bytes] = {}
        for ent in archive.entries:
            if ent.name in wanted:
                self._local(archive, ent, location, ctx)
                sink = self._read(data, ent, ctx.limits.max_decompressed_bytes, location, ctx)
                if sink is None:
                    continue
                with sink:
                    sources[ent.name] = bytes(sink.value())
        findings, classes = review_torchscript(sources, location)
        for f in findings:
            ctx.add(f)
        return classes

    def _scan_members(
        self,
        data: bytes,
        archive: ZipArchive,
        location: str,
        ctx: ScanContext,
        kind: str,
        skipped: set[tuple[int, int, int]],
    ) -> None:
        # First the pickles the archive's reader unpickles by name (collecting the storages they
        # name), then every other member by content, as the same bytes on their own would be.
        limit = ctx.limits.max_decompressed_bytes
        # Full member names of the storages: torch.load reads ``<prefix>/data/<key>`` for each
        # key its ``<prefix>/data.pkl`` names, under that same prefix and no other.
        storages: set[str] = set()
        deferred: list[tuple[ZipEntry, Spill | None]] = []
        try:
            ordered = sorted(archive.entries, key=lambda ent: unpickled_by(kind, ent.name) is None)
            code = (
                set(code_members(e.name for e in archive.entries))
                if kind == "torchscript"
                else set()
            )
            for ent in ordered:
                self._local(archive, ent, location, ctx)
                if (ent.name.endswith("/") and ent.usize == 0) or ent.name in code:
                    continue  # folders; TorchScript code, reviewed as code above
                member_loc = f"{location}:{ent.name}"
                reader = unpickled_by(kind, ent.name)
                if reader is not None:
                    # What this member is, is decided by the reader that opens it by name, never
                    # by what its content sniffs as.
                    sink = self._read(data, ent, limit, member_loc, ctx)
                    if sink is None:
                        continue
                    content = sink.value()
                    ctx.note_format("pickle")
                    folder = ent.name[: ent.name.rfind("/") + 1]
                    names_storages = reader == "torch.load"  # data.pkl, not constants.pkl
                    for pid in scan_pickle(content, member_loc, ctx):
                        # torch's persistent_load unpacks exactly (typename, storage type, key,
                        # location, numel) and reads data/<key> beside data.pkl as raw bytes
                        if (
                            names_storages
                            and isinstance(pid, list)
                            and len(pid) == 5
                            and pid[0] == "storage"
                        ):
                            storages.add(f"{folder}data/{pid[2]}")
                    if looks_like_pickle(content):
                        # readers that go by content still see an archive appended to it
                        self.scan_trailing_archive(content, member_loc, ctx)
                        del content
                        sink.close()
                        continue
                    ctx.add(
                        Finding(
                            "TWS-ZIP-MEMBER-KIND",
                            Severity.HIGH,
                            f"member {ent.name!r} is unpickled by {reader}, but its content does "
                            "not read as a plain pickle (a reader that goes by content takes it "
                            "for another format); analysed both ways",
                            member_loc,
                            {"member": ent.name, "reader": reader},
                        )
                    )
                    del content
                    deferred.append((ent, sink))
                    continue
                head = _head(data, ent)
                if (
                    kind in ("pytorch-zip", "torchscript")
                    and ent.name in storages
                    and ent.method == 0
                    and head is not None
                    and not head.startswith(_NPY_MAGIC)
                ):
                    # Raw tensor bytes that torch never unpickles. The pickle that names them is
                    # data inside this same file, so only a member no reader interprets is
                    # skipped: numpy.load parses a member that starts with the .npy magic.
                    skipped.add(_key(ent)[1:])
                    continue
                deferred.append((ent, None))
            for ent, already in deferred:
                member_loc = f"{location}:{ent.name}"
                if already is None and self._plain_npy(data, ent, member_loc, ctx):
                    continue
                sink = already or self._read(data, ent, limit, member_loc, ctx)
                if sink is None:
                    continue
                with sink:
                    ctx.scan_member(sink.value(), member_loc)
        finally:
            for _, already in deferred:
                if already is not None:
                    already.close()

    def _local(self, archive: ZipArchive, ent: ZipEntry, location: str, ctx: ScanContext) -> None:
        """Read the local header of a member about to be inspected and report disagreements."""
        if ent.local_loaded:
            return
        archive.load_local(ent)
        for problem in ent.problems:
            ctx.add(
                Finding(
                    "TWS-ZIP-MISMATCH",
                    Severity.MEDIUM,
                    f"member {ent.name!r}: {problem}",
                    f"{location}:{ent.name}",
                    {"member": ent.name},
                )
            )

    def _plain_npy(self, data: object, ent: ZipEntry, member_loc: str, ctx: ScanContext) -> bool:
        """True for a .npy member whose dtype (as numpy reads it) holds no Python objects and
        whose end holds no archive directory: numpy.load reads its payload as raw numbers, so
        of a stored member only the header and the last bytes are read, and a compressed one is
        decided while it streams (:meth:`_streamed_plain_npy`). False: the caller reads it
        whole, with the limits."""
        if ent.method != 0:
            return self._streamed_plain_npy(data, ent, member_loc, ctx)
        if ent.data_offset < 0 or ent.flags & 0x1:
            return False  # no local header, encrypted: read (and reported) whole
        start = ent.data_offset
        head = bytes(data[start : start + min(ent.csize, _HEAD)])  # type: ignore[index]
        if not _plain_npy_head(head):
            return False  # read whole: the .npy handler reports what is wrong with it
        end = start + ent.csize
        if _EOCD_SIG in bytes(data[max(start, end - _EOCD_SEARCH) : end]):  # type: ignore[index]
            # zip readers find an archive at the end of the member when it is read on its own:
            # the whole member goes through the scanner, as the same bytes as a file would
            return False
        ctx.note_format("npy")
        return True

    def _streamed_plain_npy(
        self, data: object, ent: ZipEntry, member_loc: str, ctx: ScanContext
    ) -> bool:
        """True for a compressed .npy member that is plain once decompressed (the rules
        :meth:`_plain_npy` applies to a stored one, and its CRC-32 matches), decided while it is
        decompressed as a stream: only its header and its last bytes are kept, so
        ``max_member_bytes`` (what is held) does not apply, while the file's decompression
        budget and ratio do. Anything else (another content, an object dtype, an archive at its
        end, a wrong CRC, damage, a limit) is False before any finding: the member is then read
        whole and reported as before."""
        remaining = ctx.decompress_budget()
        if remaining <= 0:
            # Spent: the member is refused (and the limit reported) without a decompressor; a
            # fan-out of thousands of members over one body must not start one each.
            return False
        probe = _NpyProbe(math.inf if ctx.deadline is None else ctx.deadline)
        try:
            # No local header, encryption: read_member refuses them (False)
            read_member(
                data,
                ent,
                remaining,
                probe,  # type: ignore[arg-type]
                max_ratio=ctx.limits.max_compression_ratio,
            )
        except (
            _NotPlain,
            RatioError,
            OverflowError,
            ZipError,
            ValueError,
            EOFError,
            OSError,
            LookupError,
        ):
            return False
        except _OutOfTime:
            return ctx.out_of_time(member_loc)  # reported: the member is not read again
        if not probe.plain() or probe.crc != ent.crc or _EOCD_SIG in probe.tail:
            return False
        if ctx.charge_decompressed(probe.size, member_loc):
            ctx.note_format("npy")
        return True  # a budget exceeded is reported by charge_decompressed

    def _read(
        self, data: bytes, ent: ZipEntry, limit: int, member_loc: str, ctx: ScanContext
    ) -> Spill | None:
        limits = ctx.limits
        cap = min(limit, limits.max_member_bytes)
        remaining = ctx.decompress_budget() if ent.method != 0 else cap
        budget_bound = remaining < cap
        if budget_bound:
            if remaining <= 0:
                ctx.charge_decompressed(1, member_loc)  # reports the limit (once) and refuses
                return None
            cap = remaining
        sink = Spill()
        try:
            read_member(data, ent, cap, sink, max_ratio=limits.max_compression_ratio)
        except RatioError as err:
            sink.close()
            _limit(
                ctx,
                "max_compression_ratio",
                f"member {ent.name!r} decompresses at more than "
                f"{limits.max_compression_ratio}:1 (about {float(err.args[0]):.0f}:1; "
                "decompression bomb?); it was not inspected",
                member_loc,
            )
            return None
        except OverflowError:
            size = sink.size
            sink.close()
            if budget_bound:
                ctx.charge_decompressed(
                    size, member_loc
                )  # the file's budget ran out: that limit is reported
                return None
            which = (
                "max_member_bytes" if cap == limits.max_member_bytes else "max_decompressed_bytes"
            )
            _limit(
                ctx,
                which,
                f"member {ent.name!r} holds more than {cap} bytes ({which}); it was not inspected",
                member_loc,
            )
            return None
        except DamagedMember as err:
            ctx.add(
                Finding(
                    "TWS-ZIP-UNREADABLE",
                    Severity.HIGH,
                    f"member {ent.name!r} cannot be fully inspected: {err}; the "
                    f"{sink.size} bytes before the damage (what readers hand on) are scanned",
                    member_loc,
                    {"member": ent.name, "error": str(err)},
                )
            )
            return sink
        except (ZipError, ValueError, EOFError, OSError, LookupError) as err:
            sink.close()
            ctx.add(
                Finding(
                    "TWS-ZIP-UNREADABLE",
                    Severity.HIGH,
                    f"member {ent.name!r} cannot be inspected: {err}",
                    member_loc,
                    {"member": ent.name, "error": str(err)},
                )
            )
            return None
        if ent.method != 0 and not ctx.charge_decompressed(sink.size, member_loc):
            sink.close()
            return None
        crc = zlib.crc32(sink.value())
        if crc != ent.crc:
            ctx.add(
                Finding(
                    "TWS-ZIP-CRC",
                    Severity.MEDIUM,
                    f"member {ent.name!r} fails its CRC-32 check: zipfile-based tools refuse it "
                    "while PyTorch's reader loads it",
                    member_loc,
                    {"member": ent.name, "crc_recorded": ent.crc, "crc_actual": crc},
                )
            )
        return sink


def _limit(ctx: ScanContext, which: str, message: str, location: str) -> None:
    ctx.limit(which, message, location)


_EOCD_SIG = b"PK\x05\x06"
#: Bytes at the end of a file in which zip readers look for the end record (comment included).
_EOCD_SEARCH = 22 + 0xFFFF


class _NotPlain(Exception):
    """Raised by :class:`_NpyProbe` to stop decompressing a member that is not a plain .npy."""


class _OutOfTime(Exception):
    """Raised by :class:`_NpyProbe` once the file's time limit has passed."""


class _NpyProbe:
    """A sink for :func:`read_member` that keeps only what deciding a plain .npy needs: the
    first :data:`_HEAD` bytes, the last :data:`_EOCD_SEARCH` bytes, the size and the CRC-32. It
    stops the stream (:class:`_NotPlain`) as soon as the head shows another content or a dtype
    that holds Python objects."""

    def __init__(self, deadline: float = math.inf) -> None:
        self.head = bytearray()
        self.tail = b""
        self.size = 0
        self.crc = 0
        self._decided = False
        self._deadline = deadline

    def write(self, piece: bytes | bytearray | memoryview) -> None:
        if time.monotonic() > self._deadline:
            raise _OutOfTime
        chunk = bytes(piece)
        self.size += len(chunk)
        self.crc = zlib.crc32(chunk, self.crc)
        if len(self.head) < _HEAD:
            self.head += chunk[: _HEAD - len(self.head)]
        self.tail = (self.tail + chunk[-_EOCD_SEARCH:])[-_EOCD_SEARCH:]
        if not self._decided and len(self.head) >= _HEAD:
            self._decided = True
            if not self.plain():
                raise _NotPlain

    def plain(self) -> bool:
        """Whether the head is a .npy header whose dtype holds no objects (called once the head
        is full, and at the end of the stream for a member shorter than it)."""
        return _plain_npy_head(bytes(self.head))


def _plain_npy_head(head: bytes) -> bool:
    """Whether ``head`` (a member's first bytes) is a .npy header numpy reads, whose dtype holds
    no Python objects: numpy.load then reads the rest as raw numbers."""
    if not head.startswith(_NPY_MAGIC):
        return False
    try:
        return parse_npy_header(head).hasobject is False
    except NpyHeaderError:
        return False


def _key(ent: ZipEntry) -> tuple[str, int, int, int]:
    return (ent.name, ent.data_offset, ent.method, ent.csize)


def _reader_views(data: object, max_entries: int) -> list[tuple[str, list[ZipEntry]]]:
    """(reader, members it reads) for each reader that opens ``data`` as an archive."""
    views: list[tuple[str, list[ZipEntry]]] = []
    try:
        mz = miniz_view(data, max_entries)
    except (ZipError, ValueError, IndexError, OverflowError, struct.error):
        pass
    else:
        readable = []
        for ent in mz.entries:
            mz.load_local(ent)
            if ent.data_offset >= 0 and ent.method in (0, 8) and not ent.flags & 0x1:
                readable.append(ent)
        views.append(("PyTorch's reader (miniz)", readable))
    with contextlib.suppress(ZipError, ValueError, IndexError, OverflowError, struct.error):
        views.append(("Python's zipfile", zipfile_view(data, max_entries)))
    return views


def _head(data: bytes, ent: ZipEntry) -> bytes | None:
    if ent.data_offset < 0:
        return None
    return bytes(data[ent.data_offset : ent.data_offset + min(ent.csize, 64)])


def unpickled_by(kind: str, name: str) -> str | None:
    """The reader that unpickles member ``name`` of an archive of ``kind`` because of its name
    (whatever its content), or ``None``: torch.load reads ``<prefix>/data.pkl`` of a checkpoint,
    and torch.jit.load also ``constants.pkl`` and the ``.debug_pkl`` source maps."""
    base = name.rsplit("/", 1)[-1]
    if kind in ("pytorch-zip", "torchscript") and base == "data.pkl":
        return "torch.load"
    if kind == "torchscript" and (base == "constants.pkl" or base.endswith(".debug_pkl")):
        return "torch.jit.load"
    return None


def _kind(names: list[str]) -> str:
    if any(
        ("/code/" in f"/{n}" and n.endswith(".py")) or n.endswith("constants.pkl") for n in names
    ):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "pytorch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


HANDLER = ZipHandler()
