"""ZIP containers: PyTorch checkpoints (any prefix and member names), TorchScript archives,
numpy ``.npz`` and plain zip files, read with TrainWarden's own strict ZIP parser.

Every member that parses as a pickle is analysed; storages referenced by a checkpoint's
persistent ids are raw tensor bytes that torch never unpickles, so they are not read at all.
"""

from __future__ import annotations

import re
import zlib

from trainwarden.findings import Finding, Severity
from trainwarden.scan.formats._spill import Spill
from trainwarden.scan.formats._zip import ZipArchive, ZipEntry, ZipError, read_member
from trainwarden.scan.formats.pickle import scan_pickle
from trainwarden.scan.pickle_vm import looks_like_pickle
from trainwarden.scan.torchscript import RULES as TORCHSCRIPT_RULES
from trainwarden.scan.torchscript import code_members
from trainwarden.scan.torchscript import review as review_torchscript
from trainwarden.scan.types import ScanContext

__all__ = ["HANDLER", "RULES", "ZipHandler"]

RULES: dict[str, str] = {
    "TWS-ZIP-MALFORMED": "the ZIP structure cannot be read; its content was not inspected",
    "TWS-ZIP-MISMATCH": "local header and central directory disagree (name, flags, method), or "
    "data precedes the archive: tools that read different headers see different members",
    "TWS-ZIP-CRC": "a member's CRC-32 does not match its data: some readers refuse the member "
    "(so peer scanners skip it) while others load it",
    "TWS-ZIP-DUPLICATE": "two members share a name (case-insensitively): readers pick "
    "different ones",
    "TWS-ZIP-UNREADABLE": "a member is encrypted or uses an unsupported compression: not inspected",
    **TORCHSCRIPT_RULES,
}

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

_STORAGE_RE = re.compile(r"(?:^|/)data/([^/]+)$")


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
        for i, archive in enumerate(archives):
            where = location if len(archives) == 1 else f"{location}:<archive {i}@{archive.prefix}>"
            self._scan_archive(data, archive, where, ctx)
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

    def _scan_archive(
        self, data: bytes, archive: ZipArchive, location: str, ctx: ScanContext
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
        policy = getattr(ctx, "policy", None)
        if kind == "torchscript":
            classes = self._torchscript(data, archive, location, ctx)
            if policy is not None:
                # The archive's pickles are read by TorchScript's own unpickler, which resolves
                # these names to the archive's code and its list builders, never to imports.
                allow = [*classes, *_TORCHSCRIPT_BUILDERS]
                ctx.policy = policy.with_overrides(allow=allow)  # type: ignore[attr-defined]
        try:
            self._scan_members(data, archive, location, ctx, kind)
        finally:
            if policy is not None:
                ctx.policy = policy  # type: ignore[attr-defined]

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
        self, data: bytes, archive: ZipArchive, location: str, ctx: ScanContext, kind: str
    ) -> None:
        # First every member that looks like a pickle (collecting the storages it references),
        # then the rest by content.
        limit = ctx.limits.max_decompressed_bytes
        storage_keys: set[str] = set()
        deferred: list[tuple[ZipEntry, Spill | None]] = []
        try:
            ordered = sorted(archive.entries, key=lambda ent: not ent.name.endswith(".pkl"))
            code = (
                set(code_members(e.name for e in archive.entries))
                if kind == "torchscript"
                else set()
            )
            for ent in ordered:
                if (ent.name.endswith("/") and ent.usize == 0) or ent.name in code:
                    continue  # folders; TorchScript code, reviewed as code above
                member_loc = f"{location}:{ent.name}"
                m = _STORAGE_RE.search(ent.name)
                if kind in ("pytorch-zip", "torchscript") and m and m.group(1) in storage_keys:
                    continue  # raw tensor bytes: torch never unpickles them
                self._local(archive, ent, location, ctx)
                head = _head(data, ent)
                if head is None or not looks_like_pickle(head if ent.method == 0 else b"\x80\x02"):
                    deferred.append((ent, None))
                    continue
                sink = self._read(data, ent, limit, member_loc, ctx)
                if sink is None:
                    continue
                content = sink.value()
                if not looks_like_pickle(content):
                    deferred.append((ent, sink))
                    continue
                ctx.note_format("pickle")
                for pid in scan_pickle(content, member_loc, ctx):
                    if isinstance(pid, list) and len(pid) >= 3 and pid[0] == "storage":
                        storage_keys.add(str(pid[2]))
                del content
                sink.close()
            for ent, already in deferred:
                member_loc = f"{location}:{ent.name}"
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

    def _read(
        self, data: bytes, ent: ZipEntry, limit: int, member_loc: str, ctx: ScanContext
    ) -> Spill | None:
        sink = Spill()
        try:
            read_member(data, ent, limit, sink)
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
        charge = getattr(ctx, "charge_decompressed", None)
        if ent.method != 0 and charge is not None and not charge(sink.size, member_loc):
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


def _head(data: bytes, ent: ZipEntry) -> bytes | None:
    if ent.data_offset < 0:
        return None
    return bytes(data[ent.data_offset : ent.data_offset + min(ent.csize, 64)])


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
