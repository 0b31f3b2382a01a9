"""Legacy (pre-1.6) PyTorch checkpoints: the sequential-pickle format and the old tar format.

Sequential format: magic-number pickle, protocol pickle, sys_info pickle, the data pickle, the
storage-keys pickle, then raw storage bytes (never unpickled). Tar format: members ``sys_info``,
``pickle``, ``storages`` and ``tensors``, each read the way ``torch.serialization`` reads them.
"""

from __future__ import annotations

import struct

from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats.pickle import probe_unclaimed, scan_pickle
from trainwarden.scan._pickle_vm import analyze_pickle
from trainwarden.scan._types import ScanContext

__all__ = ["HANDLER", "TorchLegacyHandler", "scan_legacy_tar"]

# torch.serialization.MAGIC_NUMBER as a pickled LONG1.
_MAGIC_LONG1 = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_LEGACY_TAR_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})

# Element sizes of the legacy typed storages (torch/_utils.py _element_size of their dtype).
_ELEMENT_SIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
    "QInt8Storage": 1,
    "QUInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
}


class TorchLegacyHandler:
    name = "pytorch-legacy"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        head = bytes(data[:32])
        return head[:1] == b"\x80" and _MAGIC_LONG1 in head

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format("pickle")
        # torch.load reads exactly five pickles; the storage bytes after them are raw data.
        analysis = analyze_pickle(
            data,
            policy=ctx.policy,
            limits=ctx.limits,
            max_pickles=5,
            location=location,
            joblib=False,
        )
        for f in analysis.findings:
            ctx.add(f)
        ctx.note_globals(g.qualname for g in analysis.globals)
        if analysis.complete and analysis.pickles < 5:
            ctx.add(
                Finding(
                    "TWS-TORCH-LEGACY",
                    Severity.MEDIUM,
                    f"legacy torch checkpoint holds {analysis.pickles} pickles where torch.load "
                    "expects 5",
                    location,
                    {"pickles": analysis.pickles},
                )
            )
            return
        if analysis.complete:
            _check_storages(data, analysis.end_offset, analysis.persistent_ids, location, ctx)


def _check_storages(
    data: bytes, pos: int, pids: tuple[object, ...], location: str, ctx: ScanContext
) -> None:
    """Walk the raw storages after the fifth pickle (sorted keys; int64 count + data each) so
    that only bytes beyond them count as trailing data."""
    storages: dict[str, str] = {}
    for pid in pids:
        if isinstance(pid, list) and len(pid) >= 3 and pid[0] == "storage":
            storages[str(pid[2])] = str(pid[1]).rsplit(".", 1)[-1]
    n = len(data)
    for key in sorted(storages):
        elem = _ELEMENT_SIZE.get(storages[key])
        if elem is None or pos + 8 > n:
            _legacy_problem(ctx, location, pos, f"storage {key!r} cannot be located")
            return
        (count,) = struct.unpack_from("<q", data, pos)
        pos += 8 + count * elem
        if count < 0 or pos > n:
            _legacy_problem(ctx, location, pos, f"storage {key!r} runs past the end of the file")
            return
    if pos < n:
        ctx.add(
            Finding(
                "TWS-PKL-TRAILING",
                Severity.MEDIUM,
                f"{n - pos} bytes follow the last storage of this legacy checkpoint",
                f"{location}@{pos}",
                {"offset": pos, "trailing_bytes": n - pos},
            )
        )
        # torch never reads them; anything that would import code there is still reported.
        probe_unclaimed(bytes(data[pos:]), f"{location}:<trailing@{pos}>", ctx)


def _legacy_problem(ctx: ScanContext, location: str, pos: int, why: str) -> None:
    ctx.add(
        Finding(
            "TWS-TORCH-LEGACY",
            Severity.MEDIUM,
            f"legacy torch checkpoint layout does not match what torch.load reads: {why}",
            f"{location}@{pos}",
            {"offset": pos},
        )
    )


def scan_legacy_tar(members: dict[str, bytes], location: str, ctx: ScanContext) -> bool:
    """Scan the four members of an old torch tar checkpoint; False if it is not one."""
    if set(members) != _LEGACY_TAR_MEMBERS:
        return False
    ctx.note_format("pytorch-legacy-tar")
    for name in ("sys_info", "pickle"):
        scan_pickle(members[name], f"{location}:{name}", ctx, joblib=False)
    _scan_records(members["storages"], f"{location}:storages", ctx, storages=True)
    _scan_records(members["tensors"], f"{location}:tensors", ctx, storages=False)
    return True


def _scan_records(data: bytes, location: str, ctx: ScanContext, *, storages: bool) -> None:
    """``storages``: count pickle, then per storage a (key, location, type) pickle + raw data;
    ``tensors``: count pickle, then per tensor a (key, storage_id, type) pickle + raw header."""
    pos = 0
    count = _one(data, pos, location, ctx)
    if count is None:
        return
    pos, value = count
    if not isinstance(value, int) or value < 0:
        _bad(ctx, location, pos, "record count is not a non-negative integer")
        return
    for _ in range(value):
        rec = _one(data, pos, location, ctx)
        if rec is None:
            return
        pos, fields = rec
        if storages:
            size_name = fields[2] if isinstance(fields, list) and len(fields) == 3 else None
            elem = _ELEMENT_SIZE.get(str(size_name).rsplit(".", 1)[-1])
            if elem is None or pos + 8 > len(data):
                _bad(ctx, location, pos, "storage record without a known storage type or size")
                return
            (numel,) = struct.unpack_from("<q", data, pos)
            pos += 8 + numel * elem
        else:
            if pos + 4 > len(data):
                _bad(ctx, location, pos, "tensor record truncated")
                return
            (ndim,) = struct.unpack_from("<i", data, pos)
            pos += 4 + 4 + 16 * max(ndim, 0) + 8
        if pos > len(data):
            _bad(ctx, location, pos, "record runs past the end of the member")
            return


def _one(data: bytes, pos: int, location: str, ctx: ScanContext) -> tuple[int, object] | None:
    analysis = analyze_pickle(
        data,
        policy=ctx.policy,
        limits=ctx.limits,
        location=location,
        max_pickles=1,
        start=pos,
        joblib=False,
    )
    for f in analysis.findings:
        ctx.add(f)
    ctx.note_globals(g.qualname for g in analysis.globals)
    if not analysis.complete:
        return None
    return analysis.end_offset, analysis.result


def _bad(ctx: ScanContext, location: str, pos: int, why: str) -> None:
    ctx.add(
        Finding(
            "TWS-TORCH-LEGACY",
            Severity.HIGH,
            f"legacy torch tar member does not parse as torch reads it: {why}",
            f"{location}@{pos}",
            {"offset": pos},
        )
    )


HANDLER = TorchLegacyHandler()
