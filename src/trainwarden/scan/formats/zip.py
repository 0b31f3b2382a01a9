"""ZIP containers: PyTorch checkpoints (any prefix and member names), TorchScript archives,
numpy ``.npz`` and plain zip files, read with TrainWarden's own strict ZIP parser.

Every member that parses as a pickle is analysed; storages referenced by a checkpoint's
persistent ids are raw tensor bytes that torch never unpickles, so they are not read at all.
"""

from __future__ import annotations

import re
import zlib

from trainwarden.findings import Finding, Severity
from trainwarden.scan.formats._zip import ZipArchive, ZipEntry, ZipError, read_member
from trainwarden.scan.formats.pickle import scan_pickle
from trainwarden.scan.pickle_vm import looks_like_pickle
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
    "TWS-TORCHSCRIPT": "TorchScript archive: its code/ members are programs that torch.jit.load "
    "compiles and runs",
}

_STORAGE_RE = re.compile(r"(?:^|/)data/([^/]+)$")


class ZipHandler:
    name = "zip"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return bytes(data[:4]) in (b"PK\x03\x04", b"PK\x05\x06")

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        try:
            archive = ZipArchive.parse(data, ctx.limits.max_members)
        except (ZipError, ValueError, IndexError) as err:
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
        if kind == "torchscript":
            code = [n for n in names if "/code/" in f"/{n}" or n.endswith("constants.pkl")]
            ctx.add(
                Finding(
                    "TWS-TORCHSCRIPT",
                    Severity.HIGH,
                    "TorchScript archive: torch.jit.load compiles and runs its code members "
                    f"({', '.join(code[:5])}{'...' if len(code) > 5 else ''})",
                    location,
                    {"code_members": code[:50]},
                )
            )
        # First every member that looks like a pickle (collecting the storages it references),
        # then the rest by content.
        limit = ctx.limits.max_decompressed_bytes
        storage_keys: set[str] = set()
        deferred: list[tuple[ZipEntry, bytes | None]] = []
        ordered = sorted(archive.entries, key=lambda ent: not ent.name.endswith(".pkl"))
        for ent in ordered:
            if ent.name.endswith("/") and ent.usize == 0:
                continue
            member_loc = f"{location}:{ent.name}"
            m = _STORAGE_RE.search(ent.name)
            if kind in ("pytorch-zip", "torchscript") and m and m.group(1) in storage_keys:
                continue  # raw tensor bytes: torch never unpickles them
            self._local(archive, ent, location, ctx)
            head = _head(data, ent)
            if head is None or not looks_like_pickle(head if ent.method == 0 else b"\x80\x02"):
                deferred.append((ent, None))
                continue
            content = self._read(data, ent, limit, member_loc, ctx)
            if content is None:
                continue
            if not looks_like_pickle(content):
                deferred.append((ent, content))
                continue
            ctx.note_format("pickle")
            for pid in scan_pickle(content, member_loc, ctx):
                if isinstance(pid, list) and len(pid) >= 3 and pid[0] == "storage":
                    storage_keys.add(str(pid[2]))
        for ent, already in deferred:
            member_loc = f"{location}:{ent.name}"
            content = (
                already if already is not None else self._read(data, ent, limit, member_loc, ctx)
            )
            if content is None:
                continue
            ctx.scan_member(content, member_loc)

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
    ) -> bytes | None:
        try:
            content = read_member(data, ent, limit)
        except (ZipError, ValueError, EOFError, OSError, LookupError) as err:
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
        if ent.method != 0 and charge is not None and not charge(len(content), member_loc):
            return None
        if zlib.crc32(content) != ent.crc:
            ctx.add(
                Finding(
                    "TWS-ZIP-CRC",
                    Severity.MEDIUM,
                    f"member {ent.name!r} fails its CRC-32 check: zipfile-based tools refuse it "
                    "while PyTorch's reader loads it",
                    member_loc,
                    {
                        "member": ent.name,
                        "crc_recorded": ent.crc,
                        "crc_actual": zlib.crc32(content),
                    },
                )
            )
        return content


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
