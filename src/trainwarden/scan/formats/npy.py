"""numpy ``.npy`` arrays: an object dtype means the payload after the header is a pickle."""

from __future__ import annotations

import ast
import struct

from trainwarden.findings import Finding, Severity
from trainwarden.scan.formats.pickle import scan_pickle
from trainwarden.scan.types import ScanContext

__all__ = ["HANDLER", "RULES", "NpyHandler"]

RULES: dict[str, str] = {
    "TWS-NPY-MALFORMED": "the .npy header cannot be parsed the way numpy parses it",
    "TWS-NPY-OBJECT": "object array: numpy.load(allow_pickle=True) unpickles its payload "
    "(the pickle itself is analysed too)",
}

_MAGIC = b"\x93NUMPY"


def _has_object(descr: object) -> bool:
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, (list, tuple)):
        return any(_has_object(d) for d in descr)
    return False


class NpyHandler:
    name = "npy"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return bytes(data[:6]) == _MAGIC

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        major = data[6] if len(data) > 7 else 0
        try:
            if major == 1:
                (hlen,) = struct.unpack_from("<H", data, 8)
                start = 10
            elif major in (2, 3):
                (hlen,) = struct.unpack_from("<I", data, 8)
                start = 12
            else:
                raise ValueError(f"unsupported .npy format version {major}")
            raw = bytes(data[start : start + hlen])
            if len(raw) != hlen:
                raise ValueError("header runs past the end of the file")
            header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin-1"))
            if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(
                header
            ):
                raise ValueError("header is not a dict with descr, fortran_order and shape")
        except (ValueError, SyntaxError, struct.error, UnicodeDecodeError, MemoryError) as e:
            ctx.add(
                Finding(
                    "TWS-NPY-MALFORMED",
                    Severity.HIGH,
                    f"unreadable .npy header: {e}",
                    location,
                    {"error": str(e)},
                )
            )
            return
        if _has_object(header["descr"]):
            ctx.add(
                Finding(
                    "TWS-NPY-OBJECT",
                    Severity.MEDIUM,
                    "object-dtype array: loading it with allow_pickle=True unpickles its payload",
                    location,
                    {"descr": repr(header["descr"])},
                )
            )
            ctx.note_format("pickle")
            # numpy.load reads exactly one pickle after the header; trailing bytes are ignored.
            scan_pickle(
                data,
                f"{location}:<object-array>",
                ctx,
                max_pickles=1,
                start=start + hlen,
                joblib=False,
            )


HANDLER = NpyHandler()
