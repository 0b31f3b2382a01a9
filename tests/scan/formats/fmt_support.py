"""Test support for the format handlers: a ScanContext that records what handlers report."""

from __future__ import annotations

import importlib
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from trainwarden.findings import Finding, Severity
from trainwarden.scan._policy import Policy
from trainwarden.scan._types import FormatHandler, Limits, Verdict

Classifier = Callable[[str, str], tuple[Verdict, str]]


@dataclass
class RecordingContext:
    """Implements the ScanContext protocol: records findings, formats and handed-back members.

    It is not the engine's ``FileScan``: handlers must behave the same with it (its policy
    included), which the handler-contract tests check.
    """

    limits: Limits = field(default_factory=Limits)
    classifier: Classifier | None = None
    policy: Policy = field(default_factory=Policy.default)
    deadline: float | None = None
    findings: list[Finding] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    globals: list[str] = field(default_factory=list)
    members: list[tuple[str, bytes]] = field(default_factory=list)
    handlers: tuple[FormatHandler, ...] = ()
    decompressed: int = 0
    limits_hit: list[str] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def scan_member(self, data: bytes, location: str) -> None:
        self.members.append((location, data))
        handlers = self.handlers or tuple(
            importlib.import_module("trainwarden.scan._formats").HANDLERS
        )
        for handler in handlers:
            if handler.sniff(data):
                handler.scan(data, location, self)
                break

    def classify(self, module: str, name: str) -> tuple[Verdict, str]:
        if self.classifier is not None:
            return self.classifier(module, name)
        return self.policy.classify(module, name)

    def note_format(self, fmt: str) -> None:
        self.formats.append(fmt)

    def note_globals(self, names: Iterable[str]) -> None:
        self.globals.extend(names)

    def limit(self, which: str, message: str, location: str) -> None:
        if which not in self.limits_hit:
            self.limits_hit.append(which)
            self.add(Finding("TWS-LIMIT", Severity.HIGH, message, location, {"limit": which}))

    def out_of_time(self, location: str) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.limit("max_seconds_per_file", "out of time", location)
            return True
        return False

    def decompress_budget(self) -> int:
        return self.limits.max_decompressed_bytes - self.decompressed

    def charge_decompressed(self, nbytes: int, location: str) -> bool:
        self.decompressed += nbytes
        if self.decompressed > self.limits.max_decompressed_bytes:
            self.limit("max_decompressed_bytes", "decompressed data over the limit", location)
            return False
        return True

    @property
    def rule_ids(self) -> set[str]:
        return {f.rule_id for f in self.findings}

    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)


def run_handler(
    handler: FormatHandler, data: bytes, *, ctx: RecordingContext | None = None
) -> RecordingContext:
    """Sniff (must match) and scan ``data`` with ``handler``; return the recording context."""
    ctx = ctx if ctx is not None else RecordingContext()
    assert handler.sniff(data), f"{handler.name} did not recognise its own format"
    handler.scan(data, "<test>", ctx)
    return ctx


# --- GGUF writer following the GGUF spec (ggml/docs/gguf.md); the `gguf` package is not installed.
GGUF_UINT8, GGUF_INT8, GGUF_UINT16, GGUF_INT16, GGUF_UINT32, GGUF_INT32 = 0, 1, 2, 3, 4, 5
GGUF_FLOAT32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_UINT64, GGUF_INT64, GGUF_FLOAT64 = (
    6,
    7,
    8,
    9,
    10,
    11,
    12,
)
_GGUF_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_GGUF_FMT.update({11: "<q", 12: "<d"})


def _gguf_len(n: int, version: int) -> bytes:
    return struct.pack("<I" if version == 1 else "<Q", n)


def _gguf_str(s: str, version: int) -> bytes:
    raw = s.encode("utf-8")
    return _gguf_len(len(raw), version) + raw


def _gguf_value(vtype: int, value: object, version: int) -> bytes:
    if vtype == GGUF_STRING:
        assert isinstance(value, str)
        return _gguf_str(value, version)
    if vtype == GGUF_ARRAY:
        assert isinstance(value, tuple)
        itype, items = value
        body = b"".join(_gguf_value(itype, v, version) for v in items)
        return struct.pack("<I", itype) + _gguf_len(len(items), version) + body
    return struct.pack(_GGUF_FMT[vtype], value)


def gguf_bytes(
    kv: list[tuple[str, int, object]],
    tensors: Sequence[tuple[str, tuple[int, ...], npt.NDArray[np.float32]]] = (),
    *,
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    """A GGUF file from metadata ``(key, type, value)`` and F32 tensors.

    Array values are given as ``(item_type, items)``.
    """
    out = bytearray(b"GGUF" + struct.pack("<I", version))
    out += _gguf_len(len(tensors), version) + _gguf_len(len(kv), version)
    for key, vtype, value in kv:
        out += (
            _gguf_str(key, version) + struct.pack("<I", vtype) + _gguf_value(vtype, value, version)
        )
    offset = 0
    blobs = []
    for name, dims, arr in tensors:
        out += _gguf_str(name, version) + struct.pack("<I", len(dims))
        out += b"".join(_gguf_len(d, version) for d in dims)
        out += struct.pack("<IQ", 0, offset)  # GGML_TYPE_F32
        blob = arr.astype("<f4").tobytes()
        pad = -len(blob) % alignment
        blobs.append(blob + b"\0" * pad)
        offset += len(blob) + pad
    out += b"\0" * (-len(out) % alignment)
    for blob in blobs:
        out += blob
    # The last tensor needs no padding after it; without it any truncation cuts tensor data.
    last = tensors[-1][2].size * 4 if tensors else 0
    return bytes(out[: len(out) - (-last % alignment)])
