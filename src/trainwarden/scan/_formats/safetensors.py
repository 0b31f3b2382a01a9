"""Safetensors handler: validates the JSON header the way a strict loader must.

Safetensors cannot carry code, but a header the official Rust loader would parse differently from a
lenient one (duplicate keys, overlapping or out-of-range offsets, hidden bytes) is a tampering and
parser-differential vector (threat T6), so every structural defect is a finding.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.scan._types import ScanContext

__all__ = ["DTYPE_BITS", "HANDLER", "MAX_HEADER_BYTES", "SafetensorsHandler"]

#: A header larger than this is refused by the official loader (``safetensors`` caps it at 100 MB).
MAX_HEADER_BYTES = 100_000_000

#: Bit widths of every dtype the official ``safetensors`` format defines.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_MAX_REPORTED = 20
_JSON_KEY = re.compile(
    rb'\{\s*"[^"\\]{0,256}"\s*:'
)  # per rule: a corrupt header with 1e6 bad tensors must not flood the report


class _DuplicateKeyError(ValueError):
    pass


class _BadConstantError(ValueError):
    pass


def _pairs_no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; serde (the reference loader) rejects them, Python accepts them.
    raise _BadConstantError(name)


class SafetensorsHandler:
    """Structural validator for ``.safetensors`` files (sniffed by header shape, not name)."""

    name = "safetensors"
    #: Works on a memory map: only the header is read, never the tensor data.
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        if len(data) < 10:
            return False
        n = int.from_bytes(data[:8], "little")
        if n < 2 or data[8:9] != b"{":
            return False
        if n <= MAX_HEADER_BYTES:
            return data[9:10] in (b'"', b"}", b" ", b"\n", b"\t", b"\r")
        # An absurd header length (a loader DoS) is still safetensors when a JSON object with a
        # key follows and the length bytes are binary (8 printable bytes are text, e.g. indented
        # JSON, not a length).
        if all(0x20 <= c < 0x7F or c in (9, 10, 13) for c in bytes(data[:8])):
            return False
        return _JSON_KEY.match(bytes(data[8:520])) is not None

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format(self.name)
        _Checker(data, location, ctx).run()


class _Checker:
    def __init__(self, data: bytes, location: str, ctx: ScanContext) -> None:
        self.data = data
        self.location = location
        self.ctx = ctx
        self.counts: dict[str, int] = {}

    def add(self, rule: str, severity: Severity, message: str, **evidence: Any) -> None:
        n = self.counts.get(rule, 0)
        self.counts[rule] = n + 1
        if n >= _MAX_REPORTED:
            return
        self.ctx.add(Finding(rule, severity, message, self.location, evidence))

    def run(self) -> None:
        data = self.data
        if len(data) < 8:
            self.add(
                "TWS-ST-001",
                Severity.HIGH,
                "safetensors file is shorter than its 8-byte header length",
                size=len(data),
            )
            return
        n = int.from_bytes(data[:8], "little")
        if n > MAX_HEADER_BYTES or n > len(data) - 8:
            self.add(
                "TWS-ST-001",
                Severity.HIGH,
                f"safetensors header length {n} exceeds the file size or the "
                f"{MAX_HEADER_BYTES}-byte cap",
                header_length=n,
                size=len(data),
            )
            return
        raw = data[8 : 8 + n]
        try:
            text = raw.decode("utf-8")
            header = json.loads(
                text, object_pairs_hook=_pairs_no_dupes, parse_constant=_reject_constant
            )
        except _DuplicateKeyError as e:
            self.add(
                "TWS-ST-003",
                Severity.HIGH,
                f"safetensors header repeats the JSON key {e.args[0]!r}: parsers disagree on "
                "which entry wins",
                key=str(e.args[0])[:200],
            )
            return
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            self.add(
                "TWS-ST-002",
                Severity.HIGH,
                f"safetensors header is not valid UTF-8 JSON: {str(e)[:200]}",
            )
            return
        if not isinstance(header, dict):
            self.add(
                "TWS-ST-002",
                Severity.HIGH,
                f"safetensors header is a JSON {type(header).__name__}, not an object",
            )
            return
        self.check_entries(header, data_size=len(data) - 8 - n)

    def check_entries(self, header: dict[str, Any], data_size: int) -> None:
        spans: list[tuple[int, int, str]] = []
        for key, entry in header.items():
            if key == "__metadata__":
                self.check_metadata(entry)
                continue
            span = self.check_tensor(key, entry, data_size)
            if span is not None:
                spans.append((span[0], span[1], key))
        spans.sort()
        cursor = 0
        prev_name = ""
        for begin, end, name in spans:
            if begin < cursor:
                self.add(
                    "TWS-ST-008",
                    Severity.HIGH,
                    f"tensors {prev_name!r} and {name!r} overlap in the data buffer",
                    tensors=[prev_name[:200], name[:200]],
                    offset=begin,
                )
            elif begin > cursor:
                self.add(
                    "TWS-ST-009",
                    Severity.MEDIUM,
                    f"{begin - cursor} bytes of the data buffer before tensor {name!r} belong "
                    "to no tensor (hidden data)",
                    gap_start=cursor,
                    gap_end=begin,
                )
            if end > cursor:
                cursor = end
                prev_name = name
        if cursor < data_size:
            self.add(
                "TWS-ST-010",
                Severity.MEDIUM,
                f"{data_size - cursor} bytes after the last tensor belong to no tensor",
                trailing_start=cursor,
                data_size=data_size,
            )

    def check_metadata(self, entry: Any) -> None:
        if not isinstance(entry, dict):
            self.add(
                "TWS-ST-004",
                Severity.MEDIUM,
                "__metadata__ is not a JSON object of strings",
                type=type(entry).__name__,
            )
            return
        for k, v in entry.items():
            if not isinstance(v, str):
                self.add(
                    "TWS-ST-004",
                    Severity.MEDIUM,
                    f"__metadata__ value for {k!r} is a {type(v).__name__}, not a string",
                    key=k[:200],
                )

    def check_tensor(self, key: str, entry: Any, data_size: int) -> tuple[int, int] | None:
        def bad(why: str) -> None:
            self.add(
                "TWS-ST-005",
                Severity.HIGH,
                f"tensor {key!r} has a malformed header entry: {why}",
                tensor=key[:200],
            )

        if not isinstance(entry, dict):
            bad(f"a JSON {type(entry).__name__} instead of an object")
            return None
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            bad(f"unknown dtype {dtype!r}")
            return None
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            bad(f"shape {str(shape)[:100]} is not a list of non-negative integers")
            return None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        ):
            bad(f"data_offsets {str(offsets)[:100]} is not a pair of non-negative integers")
            return None
        begin, end = offsets
        if begin > end or end > data_size:
            self.add(
                "TWS-ST-007",
                Severity.HIGH,
                f"tensor {key!r} data_offsets [{begin}, {end}] fall outside the "
                f"{data_size}-byte data buffer",
                tensor=key[:200],
                begin=begin,
                end=end,
                data_size=data_size,
            )
            return None
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 != 0 or bits // 8 != end - begin:
            self.add(
                "TWS-ST-006",
                Severity.HIGH,
                f"tensor {key!r} is {dtype}{shape} = {bits / 8:g} bytes but its data_offsets "
                f"span {end - begin} bytes",
                tensor=key[:200],
                expected_bytes=bits / 8,
                span=end - begin,
            )
        return begin, end


HANDLER = SafetensorsHandler()
