"""ONNX handler: walks a ModelProto with a minimal protobuf wire-format reader (no ``onnx`` import).

Reports external-data locations that escape the model folder (a loader reads any file the path
names into a tensor: arbitrary file read), custom operator domains and Python-calling operators
(native or Python code the runtime must load), in the main graph, every subgraph, local functions
and training graphs. Bytes that do not parse as protobuf are a fail-closed finding.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from trainwarden.findings import Finding, Severity
from trainwarden.scan._types import ScanContext

__all__ = ["HANDLER", "STANDARD_DOMAINS", "OnnxHandler"]

#: Operator domains whose kernels ship inside ONNX runtimes (no extra library is loaded for them).
#: "" and "ai.onnx" are the default operator set, "ai.onnx.ml" the traditional-ML set,
#: "ai.onnx.training" and "ai.onnx.preview.training" the training sets defined by the ONNX spec,
#: and "com.microsoft" the contrib operators compiled into every onnxruntime build. Anything else
#: (e.g. "ai.onnx.contrib" of onnxruntime-extensions, "com.mycompany") needs a custom-op library
#: registered by the user, i.e. native code from outside the model.
STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "com.microsoft"}
)
#: Operators that call back into Python (onnxruntime's language-interop PyOp, ORTModule PythonOp).
PYTHON_OPS = frozenset({"PyOp", "PythonOp", "PythonOpGrad"})

_WIN_DRIVE = re.compile(r"^[A-Za-z]:")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_MAX_DEPTH = 100  # protobuf's own default recursion limit; deeper input is refused by onnx.load
_MAX_REPORTED = 20


class _ProtoError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


@dataclass
class _Field:
    number: int
    wire: int
    value: int  # varint value, or start offset of a length-delimited payload
    end: int  # end offset of a length-delimited payload (== value for other wire types)


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _ProtoError("truncated varint", start)
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _ProtoError("varint longer than 10 bytes", start)


def _fields(data: bytes, pos: int, end: int) -> Iterator[_Field]:
    """Yield the fields of one message spanning ``data[pos:end]``; raise _ProtoError on defects."""
    while pos < end:
        tag_at = pos
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _ProtoError("field number 0", tag_at)
        if wire == 0:
            value, pos = _varint(data, pos, end)
            yield _Field(number, wire, value, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise _ProtoError("truncated fixed64", pos)
            pos += 8
            yield _Field(number, wire, pos - 8, pos)
        elif wire == 5:
            if pos + 4 > end:
                raise _ProtoError("truncated fixed32", pos)
            pos += 4
            yield _Field(number, wire, pos - 4, pos)
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if length > end - pos:
                raise _ProtoError(f"field {number} length {length} runs past its message", tag_at)
            yield _Field(number, wire, pos, pos + length)
            pos += length
        else:
            raise _ProtoError(f"unsupported wire type {wire} for field {number}", tag_at)


def _text(data: bytes, f: _Field) -> str:
    return data[f.value : f.end].decode("utf-8", errors="replace")


@dataclass
class _State:
    data: bytes
    location: str
    ctx: ScanContext
    opset_domains: set[str] = field(default_factory=set)
    node_ops: dict[tuple[str, str], str] = field(default_factory=dict)  # (domain, op) -> where
    local_functions: set[tuple[str, str]] = field(default_factory=set)
    function_domains: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, rule: str, severity: Severity, message: str, **evidence: object) -> None:
        n = self.counts.get(rule, 0)
        self.counts[rule] = n + 1
        if n < _MAX_REPORTED:
            self.ctx.add(Finding(rule, severity, message, self.location, evidence))


def _check_location(st: _State, tensor: str, loc: str, where: str) -> None:
    norm = loc.replace("\\", "/")
    parts = [p for p in norm.split("/") if p]
    reason = None
    if "\x00" in loc:
        reason = "contains a NUL byte"
    elif norm.startswith("/") or _WIN_DRIVE.match(norm) or norm.startswith("~"):
        reason = "is an absolute path"
    elif ".." in parts:
        reason = "climbs out of the model folder with '..'"
    elif _SCHEME.match(norm):
        reason = "is a URL"
    if reason is not None:
        st.add(
            "TWS-ONNX-002",
            Severity.CRITICAL,
            f"tensor {tensor!r} in {where} reads external data from {loc[:200]!r}, which {reason}: "
            "loading the model reads an arbitrary file",
            tensor=tensor[:200],
            external_location=loc[:500],
        )


def _walk_tensor(st: _State, start: int, end: int, where: str) -> None:
    data = st.data
    name = ""
    # Every "location" entry is checked: readers disagree on which duplicate wins.
    locations: list[str] = []
    external = False
    for f in _fields(data, start, end):
        if f.number == 8 and f.wire == 2:
            name = _text(data, f)
        elif f.number == 14 and f.wire == 0:
            external = f.value == 1
        elif f.number == 13 and f.wire == 2:
            key = value = None
            for g in _fields(data, f.value, f.end):
                if g.number == 1 and g.wire == 2:
                    key = _text(data, g)
                elif g.number == 2 and g.wire == 2:
                    value = _text(data, g)
            if key == "location" and value is not None:
                locations.append(value)
    for location in locations:
        _check_location(st, name, location, where)
    if external and not locations:
        st.add(
            "TWS-ONNX-005",
            Severity.MEDIUM,
            f"tensor {name!r} in {where} is marked EXTERNAL but names no location",
            tensor=name[:200],
        )


def _walk_sparse(st: _State, start: int, end: int, where: str) -> None:
    for f in _fields(st.data, start, end):
        if f.number in (1, 2) and f.wire == 2:
            _walk_tensor(st, f.value, f.end, where)


def _walk_attribute(st: _State, start: int, end: int, where: str, depth: int) -> None:
    for f in _fields(st.data, start, end):
        if f.wire != 2:
            continue
        if f.number in (5, 10):
            _walk_tensor(st, f.value, f.end, where)
        elif f.number in (6, 11):
            _walk_graph(st, f.value, f.end, f"subgraph of {where}", depth + 1)
        elif f.number in (22, 23):
            _walk_sparse(st, f.value, f.end, where)


def _attr_strings(st: _State, start: int, end: int) -> tuple[str, str]:
    name = s = ""
    for f in _fields(st.data, start, end):
        if f.number == 1 and f.wire == 2:
            name = _text(st.data, f)
        elif f.number == 4 and f.wire == 2:
            s = _text(st.data, f)
    return name, s


def _walk_node(st: _State, start: int, end: int, where: str, depth: int) -> None:
    data = st.data
    domain = op_type = name = ""
    attrs: list[tuple[int, int]] = []
    for f in _fields(data, start, end):
        if f.wire != 2:
            continue
        if f.number == 7:
            domain = _text(data, f)
        elif f.number == 4:
            op_type = _text(data, f)
        elif f.number == 3:
            name = _text(data, f)
        elif f.number == 5:
            attrs.append((f.value, f.end))
    node_where = f"node {name or op_type!r} of {where}"
    st.node_ops.setdefault((domain, op_type), node_where)
    if op_type in PYTHON_OPS:
        strings = {}
        for a_start, a_end in attrs:
            a_name, a_s = _attr_strings(st, a_start, a_end)
            if a_s and a_name in ("module", "class_name", "compute", "func_name", "name"):
                strings[a_name] = a_s[:200]
        st.add(
            "TWS-ONNX-004",
            Severity.HIGH,
            f"{node_where} is a {op_type} operator, which imports and calls Python code "
            f"{strings or ''}".rstrip(),
            op_type=op_type,
            domain=domain,
            python=strings,
        )
    for a_start, a_end in attrs:
        _walk_attribute(st, a_start, a_end, node_where, depth)


def _walk_graph(st: _State, start: int, end: int, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH or depth > st.ctx.limits.max_nesting:
        raise _ProtoError(f"graphs nested deeper than {_MAX_DEPTH}", start)
    for f in _fields(st.data, start, end):
        if f.wire != 2:
            continue
        if f.number == 1:
            _walk_node(st, f.value, f.end, where, depth)
        elif f.number == 5:
            _walk_tensor(st, f.value, f.end, f"initializers of {where}")
        elif f.number == 15:
            _walk_sparse(st, f.value, f.end, f"initializers of {where}")


def _opset_domain(st: _State, f: _Field) -> None:
    for g in _fields(st.data, f.value, f.end):
        if g.number == 1 and g.wire == 2:
            st.opset_domains.add(_text(st.data, g))
            return
    st.opset_domains.add("")


def _walk_function(st: _State, start: int, end: int) -> None:
    data = st.data
    fname = fdomain = ""
    nodes: list[tuple[int, int]] = []
    for f in _fields(data, start, end):
        if f.wire != 2:
            continue
        if f.number == 1:
            fname = _text(data, f)
        elif f.number == 10:
            fdomain = _text(data, f)
        elif f.number == 7:
            nodes.append((f.value, f.end))
        elif f.number == 9:
            _opset_domain(st, f)
    st.local_functions.add((fdomain, fname))
    st.function_domains.add(fdomain)
    for n_start, n_end in nodes:
        _walk_node(st, n_start, n_end, f"function {fdomain}.{fname}", 1)


def _walk_model(st: _State) -> None:
    data = st.data
    for f in _fields(data, 0, len(data)):
        if f.wire != 2:
            continue
        if f.number == 7:
            _walk_graph(st, f.value, f.end, "the main graph", 0)
        elif f.number == 8:
            _opset_domain(st, f)
        elif f.number == 25:
            _walk_function(st, f.value, f.end)
        elif f.number == 20:
            for g in _fields(data, f.value, f.end):
                if g.number in (1, 2) and g.wire == 2:
                    _walk_graph(st, g.value, g.end, "a training graph", 0)


def _report_domains(st: _State) -> None:
    reported: set[str] = set()
    for (domain, op_type), where in sorted(st.node_ops.items()):
        if domain in STANDARD_DOMAINS or (domain, op_type) in st.local_functions:
            continue
        if domain in reported:
            continue
        reported.add(domain)
        st.add(
            "TWS-ONNX-003",
            Severity.HIGH,
            f"{where} uses operator {op_type!r} from custom domain {domain!r}: running the model "
            "needs a custom-operator library (native code from outside the model)",
            domain=domain[:200],
            op_type=op_type[:200],
        )
    for domain in sorted(st.opset_domains - STANDARD_DOMAINS - st.function_domains - reported):
        st.add(
            "TWS-ONNX-003",
            Severity.HIGH,
            f"model imports custom operator domain {domain!r}: running it needs a "
            "custom-operator library (native code from outside the model)",
            domain=domain[:200],
        )


def _sniff_onnx(data: bytes) -> bool:
    # Every ONNX writer serialises ir_version (field 1, varint) first. Then the top-level fields
    # must be ModelProto fields with their declared wire types, up to the graph (field 7).
    if len(data) < 4 or data[0] != 0x08:
        return False
    expected = {
        1: 0,
        2: 2,
        3: 2,
        4: 2,
        5: 0,
        6: 2,
        7: 2,
        8: 2,
        14: 2,
        20: 2,
        25: 2,
        26: 2,
    }
    seen = 0
    numbers: set[int] = set()
    pos = 0
    end = len(data)
    try:
        while pos < end:
            tag, after_tag = _varint(data, pos, end)
            number, wire = tag >> 3, tag & 7
            if expected.get(number) != wire:
                return False
            if number == 1:
                value, pos = _varint(data, after_tag, end)
                if not 1 <= value <= 100:
                    return False
            elif wire == 2:
                length, body = _varint(data, after_tag, end)
                if length > end - body:
                    # A truncated graph still identifies the file as ONNX (and is reported).
                    return number == 7 and seen >= 1
                pos = body + length
            else:
                _, pos = _varint(data, after_tag, end)
            seen += 1
            numbers.add(number)
            if number == 7:
                return True
    except _ProtoError:
        return False
    # No graph: only a function library (opset_import + functions) is still an ONNX model; a
    # TensorFlow SavedModel (fields 1 and 2 only) is not.
    return 8 in numbers and 25 in numbers


class OnnxHandler:
    """ONNX ModelProto files, recognised by their protobuf structure."""

    name = "onnx"
    #: Works on a memory map: tensor payloads are skipped, never copied.
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return _sniff_onnx(data)

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format(self.name)
        st = _State(data, location, ctx)
        try:
            _walk_model(st)
        except _ProtoError as e:
            st.add(
                "TWS-ONNX-001",
                Severity.HIGH,
                f"ONNX model is not well-formed protobuf: {e}",
                offset=e.offset,
            )
        except RecursionError:
            st.add("TWS-ONNX-001", Severity.HIGH, "ONNX model nests messages too deeply")
        _report_domains(st)


HANDLER = OnnxHandler()
