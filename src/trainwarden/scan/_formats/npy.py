"""numpy ``.npy`` arrays: when numpy's own reading of the header yields a dtype that holds Python
objects, the payload after the header is a pickle that ``numpy.load(allow_pickle=True)`` runs."""

from __future__ import annotations

from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats._dtype import NpyHeaderError, parse_npy_header
from trainwarden.scan._formats.pickle import scan_pickle
from trainwarden.scan._types import ScanContext

__all__ = ["HANDLER", "HEADER_LIMIT", "NpyHandler"]

_MAGIC = b"\x93NUMPY"
#: Bytes of a .npy stream needed to read any header numpy writes; longer headers are read whole.
HEADER_LIMIT = 1 << 16


class NpyHandler:
    name = "npy"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return bytes(data[:6]) == _MAGIC

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        try:
            header = parse_npy_header(bytes(data[:HEADER_LIMIT]))
        except NpyHeaderError:
            try:  # a header longer than HEADER_LIMIT (numpy reads any length with allow_pickle)
                header = parse_npy_header(bytes(data))
            except NpyHeaderError as e:
                ctx.add(
                    Finding(
                        "TWS-NPY-MALFORMED",
                        Severity.HIGH,
                        f"unreadable .npy header: {e}",
                        location,
                        {"error": str(e)[:300]},
                    )
                )
                return
        if header.hasobject is False:
            return
        why = (
            "object-dtype array: loading it with allow_pickle=True unpickles its payload"
            if header.hasobject
            else "numpy is not installed, so whether this dtype holds Python objects is "
            "unknown; its payload is analysed as the pickle numpy.load would run"
        )
        ctx.add(Finding("TWS-NPY-OBJECT", Severity.MEDIUM, why, location, {"descr": header.descr}))
        ctx.note_format("pickle")
        # numpy.load reads exactly one pickle after the header; trailing bytes are ignored.
        scan_pickle(
            data,
            f"{location}:<object-array>",
            ctx,
            max_pickles=1,
            start=header.payload_offset,
            joblib=False,
        )


HANDLER = NpyHandler()
