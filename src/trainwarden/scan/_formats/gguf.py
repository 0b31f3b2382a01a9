"""GGUF handler: bounds-checked header/metadata/tensor-table parse and chat-template SSTI checks.

GGUF carries no pickle, but its loaders have had memory-safety bugs on crafted counts and lengths
(malformed structure is therefore a fail-closed finding) and its ``tokenizer.chat_template`` is a
Jinja program that unsandboxed renderers execute (CVE-2024-34359).
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from trainwarden.findings import Finding, Severity
from trainwarden.scan._types import ScanContext

__all__ = [
    "HANDLER",
    "GGUFArray",
    "GGUFFile",
    "GGUFHandler",
    "GGUFParseError",
    "GGUFTimeout",
    "parse_gguf",
]

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (1, 2, 3)
#: ggml's GGML_MAX_DIMS: readers allocate fixed arrays of this size.
MAX_DIMS = 4

# value type id -> (struct format, size); 8 = string and 9 = array are handled separately
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
#: ggml_type id -> (elements per block, bytes per block), from ggml's type traits. Types not listed
#: (retired ids, types newer than this table) are not size-checked.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
}

_STRING = 8
_ARRAY = 9
_MAX_ARRAY_NESTING = 8
_TEMPLATE_KEY = "tokenizer.chat_template"


#: A walk over a memory-mapped file drops the pages behind it every this many bytes, so that a
#: scan's resident memory does not grow with the array it validates.
_RELEASE_BYTES = 64 * 1024 * 1024


def _release(data: Any, start: int, stop: int) -> int:
    """Drop the mapped pages of ``data[start:stop]`` (whole pages only); returns the new mark."""
    if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        lo = start - start % mmap.PAGESIZE
        hi = stop - stop % mmap.PAGESIZE
        if hi > lo:
            data.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            return hi
    return start


class GGUFParseError(Exception):
    """The bytes are not a well-formed GGUF file (message says where and why)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass(frozen=True)
class GGUFFile:
    """The parsed header of a GGUF file (strings decoded, arrays as lazy :class:`GGUFArray`)."""

    version: int
    metadata: dict[str, Any]
    metadata_types: dict[str, int]
    tensors: tuple[GGUFTensor, ...]
    data_offset: int


class GGUFTimeout(GGUFParseError):
    """Validation ran past the caller's deadline (the file is not known to be well formed)."""


class _Reader:
    def __init__(self, data: bytes, version: int, deadline: float | None = None) -> None:
        self.data = data
        self.pos = 0
        self.version = version
        self.deadline = deadline

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise GGUFTimeout("validation ran out of time", self.pos)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise GGUFParseError(
                f"{what} needs {n} bytes but only {len(self.data) - self.pos} remain", self.pos
            )
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def skip(self, n: int, what: str) -> None:
        """Advance over ``n`` bytes that must be present (without copying them)."""
        if n < 0 or self.pos + n > len(self.data):
            raise GGUFParseError(
                f"{what} needs {n} bytes but only {len(self.data) - self.pos} remain", self.pos
            )
        self.pos += n

    def scalar(self, vtype: int, what: str) -> Any:
        fmt, size = _SCALARS[vtype]
        return struct.unpack(fmt, self.take(size, what))[0]

    def count(self, what: str) -> int:
        # v1 used 32-bit counts and lengths, v2+ 64-bit.
        return int(self.scalar(4 if self.version == 1 else 10, what))

    def string(self, what: str) -> str:
        n = self.count(f"length of {what}")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFParseError(f"{what} is not valid UTF-8", self.pos - n + e.start) from e

    def skip_strings(self, n: int, what: str) -> None:
        """Validate ``n`` length-prefixed UTF-8 strings without keeping them (vocabularies of
        100k+ tokens, or a hostile array of millions: memory stays constant)."""
        data = self.data
        end = len(data)
        pos = self.pos
        unpack_len = struct.Struct("<I" if self.version == 1 else "<Q").unpack_from
        width = 4 if self.version == 1 else 8
        released = pos
        try:
            for i in range(n):
                if not i & 0xFFFF:
                    self.check_time()
                    if pos - released > _RELEASE_BYTES:
                        released = _release(data, released, pos)
                if pos + width > end:
                    raise GGUFParseError(f"{what} is truncated", pos)
                (length,) = unpack_len(data, pos)
                pos += width
                if length > end - pos:
                    raise GGUFParseError(f"a string of {what} runs past the end of the file", pos)
                if length:
                    str(data[pos : pos + length], "utf-8")
                pos += length
        except UnicodeDecodeError as e:
            raise GGUFParseError(f"a string of {what} is not valid UTF-8", pos) from e
        self.pos = pos

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.scalar(vtype, what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            if depth >= _MAX_ARRAY_NESTING:
                raise GGUFParseError(
                    f"{what} nests arrays deeper than {_MAX_ARRAY_NESTING}", self.pos
                )
            itype = int(self.scalar(4, f"element type of {what}"))
            n = self.count(f"length of {what}")
            min_size = _SCALARS[itype][1] if itype in _SCALARS else 0
            if itype == _STRING:
                min_size = 4 if self.version == 1 else 8
            elif itype == _ARRAY:
                min_size = 8 if self.version == 1 else 12
            if itype not in _SCALARS and itype not in (_STRING, _ARRAY):
                raise GGUFParseError(f"{what} has unknown element type {itype}", self.pos)
            if n * min_size > len(self.data) - self.pos:
                raise GGUFParseError(
                    f"{what} declares {n} elements, more than the remaining bytes can hold",
                    self.pos,
                )
            # Arrays are validated here and read lazily later: a parse never holds more than
            # one element of an array, whatever its length.
            start = self.pos
            if itype in _SCALARS:
                self.skip(n * _SCALARS[itype][1], what)
            elif itype == _STRING:
                self.skip_strings(n, what)
            else:
                released = start
                for i in range(n):
                    self.value(itype, f"{what}[{i}]", depth + 1)
                    if not i & 0xFFFF:
                        self.check_time()
                        if self.pos - released > _RELEASE_BYTES:
                            released = _release(self.data, released, self.pos)
            return GGUFArray(self.data, self.version, itype, n, start)
        raise GGUFParseError(f"{what} has unknown value type {vtype}", self.pos)


class GGUFArray(Sequence[Any]):
    """A validated GGUF metadata array, read from the file on access (never copied whole).

    Indexing a scalar array is O(1); indexing a string or nested array walks the elements
    before it. Compares equal to a list with the same elements.
    """

    __slots__ = ("_count", "_data", "_itype", "_start", "_version")

    def __init__(self, data: Any, version: int, itype: int, count: int, start: int) -> None:
        self._data = data
        self._version = version
        self._itype = itype
        self._count = count
        self._start = start

    @property
    def element_type(self) -> int:
        return self._itype

    def __len__(self) -> int:
        return self._count

    def _reader(self) -> _Reader:
        r = _Reader(self._data, self._version)
        r.pos = self._start
        return r

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("GGUF array index out of range")
        if self._itype in _SCALARS:
            fmt, size = _SCALARS[self._itype]
            return struct.unpack_from(fmt, self._data, self._start + index * size)[0]
        for i, value in enumerate(self):
            if i == index:
                return value
        raise IndexError("GGUF array index out of range")  # pragma: no cover - validated

    def __iter__(self) -> Iterator[Any]:
        r = self._reader()
        for _ in range(self._count):
            if self._itype == _STRING:
                yield r.string("array element")
            else:
                yield r.value(self._itype, "array element", 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple, GGUFArray)) or len(other) != self._count:
            return NotImplemented if not isinstance(other, (list, tuple)) else False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<GGUF array of {self._count} elements of type {self._itype}>"


def parse_gguf(data: bytes, deadline: float | None = None) -> GGUFFile:
    """Parse a GGUF v1-v3 header, metadata and tensor table; raise GGUFParseError on any defect.

    Every count and length is checked against the bytes actually present before it is used, so
    hostile counts cost no memory or time.
    """
    if data[:4] != MAGIC:
        raise GGUFParseError("missing GGUF magic", 0)
    r = _Reader(data, 3, deadline)
    r.take(4, "magic")
    version = int(r.scalar(4, "version"))
    if version not in SUPPORTED_VERSIONS:
        raise GGUFParseError(f"unsupported GGUF version {version}", 4)
    r.version = version
    n_tensors = r.count("tensor count")
    n_kv = r.count("metadata count")
    min_kv = 4 + 4 + (4 if version == 1 else 8)
    if n_kv * min_kv > len(data) - r.pos:
        raise GGUFParseError(f"metadata count {n_kv} exceeds what the file can hold", r.pos)
    min_tensor = (4 if version == 1 else 8) + 4 + 4 + 8
    if n_tensors * min_tensor > len(data) - r.pos:
        raise GGUFParseError(f"tensor count {n_tensors} exceeds what the file can hold", r.pos)
    metadata: dict[str, Any] = {}
    types: dict[str, int] = {}
    for i in range(n_kv):
        key = r.string(f"metadata key #{i}")
        if key in metadata:
            raise GGUFParseError(f"metadata key {key!r} appears twice", r.pos)
        vtype = int(r.scalar(4, f"type of {key}"))
        metadata[key] = r.value(vtype, key)
        types[key] = vtype
    tensors: list[GGUFTensor] = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = r.string(f"tensor name #{i}")
        if name in names:
            raise GGUFParseError(f"tensor {name!r} appears twice", r.pos)
        names.add(name)
        n_dims = int(r.scalar(4, f"n_dims of {name}"))
        if n_dims > MAX_DIMS:
            raise GGUFParseError(
                f"tensor {name!r} has {n_dims} dims, ggml allows {MAX_DIMS}", r.pos
            )
        dims = tuple(r.count(f"dim of {name}") for _ in range(n_dims))
        gtype = int(r.scalar(4, f"type of {name}"))
        offset = int(r.scalar(10, f"offset of {name}"))
        tensors.append(GGUFTensor(name, dims, gtype, offset))
    alignment = metadata.get("general.alignment", 32)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise GGUFParseError(f"general.alignment {alignment!r} is not a power of two", r.pos)
    data_offset = r.pos + (-r.pos % alignment)
    if data_offset > len(data) and tensors:
        raise GGUFParseError("tensor data section starts past the end of the file", r.pos)
    data_size = max(len(data) - data_offset, 0)
    for t in tensors:
        if t.offset % alignment or t.offset > data_size:
            raise GGUFParseError(
                f"tensor {t.name!r} data offset {t.offset} is misaligned or past the end of the "
                "file",
                data_offset,
            )
        block = GGML_BLOCKS.get(t.ggml_type)
        if block is None:
            continue
        per_block, block_bytes = block
        if t.dims and t.dims[0] % per_block:
            raise GGUFParseError(
                f"tensor {t.name!r} row length {t.dims[0]} is not a multiple of its "
                f"{per_block}-element block",
                data_offset,
            )
        n_elements = 1
        for d in t.dims:
            n_elements *= d
        if t.offset + n_elements // per_block * block_bytes > data_size:
            raise GGUFParseError(
                f"tensor {t.name!r} data runs past the end of the file", data_offset + t.offset
            )
    return GGUFFile(version, metadata, types, tuple(tensors), data_offset)


def _special_token_findings(parsed: GGUFFile, location: str, ctx: ScanContext) -> None:
    # Renderers pass bos_token/eos_token (texts of these ids) into the chat template, where
    # ``x[eos_token]`` falls back to getattr: a special token spelled "__globals__" is a dunder
    # reference that the template text itself never shows.
    tokens = parsed.metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, GGUFArray) or tokens.element_type != _STRING:
        return
    wanted: dict[int, list[str]] = {}
    for key, value in parsed.metadata.items():
        if not (key.startswith("tokenizer.ggml.") and key.endswith("_token_id")):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(tokens):
            continue
        wanted.setdefault(value, []).append(key)
    # Imported here: GGUF files are rare, and the template analyser builds its tables on import.
    from trainwarden.scan._formats import _jinja

    texts: dict[int, str] = {}
    if wanted:
        last = max(wanted)
        for i, token in enumerate(tokens):  # one walk, one token held at a time
            if i in wanted:
                texts[i] = token
            if i >= last:
                break
    for value, keys in wanted.items():
        for key in keys:
            text = texts.get(value)
            why = _jinja.special_token_dunder(text) if isinstance(text, str) else None
            if why is not None and text is not None:
                ctx.add(
                    Finding(
                        "TWS-GGUF-003",
                        Severity.HIGH,
                        f"special token {key} = {text[:60]!r} {why}; chat templates receive it "
                        "as a variable that can reach Python attributes",
                        location,
                        {"key": key, "token": text[:200]},
                    )
                )


class GGUFHandler:
    """GGUF v1-v3 model files (llama.cpp and friends), recognised by the ``GGUF`` magic."""

    name = "gguf"
    #: Works on a memory map: only the header, metadata and tensor table are read.
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        if data[:4] != MAGIC or len(data) < 8:
            return False
        version = int.from_bytes(data[4:8], "little")
        # Accept any small version so that an unsupported one is reported rather than ignored.
        return 0 < version < 1024

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format(self.name)
        try:
            parsed = parse_gguf(data, ctx.deadline)
        except GGUFTimeout as e:
            if not ctx.out_of_time(location):
                ctx.add(Finding("TWS-LIMIT", Severity.HIGH, f"GGUF: {e}", location, {}))
            return
        except GGUFParseError as e:
            ctx.add(
                Finding(
                    "TWS-GGUF-001",
                    Severity.HIGH,
                    f"malformed GGUF file: {e}",
                    location,
                    {"offset": e.offset},
                )
            )
            return
        _special_token_findings(parsed, location, ctx)
        from trainwarden.scan._formats import _jinja

        for key, value in parsed.metadata.items():
            if key != _TEMPLATE_KEY and not key.startswith(_TEMPLATE_KEY + "."):
                continue
            if not isinstance(value, str):
                ctx.add(
                    Finding(
                        "TWS-GGUF-002",
                        Severity.MEDIUM,
                        f"GGUF metadata {key!r} should be a string template but has value type "
                        f"{parsed.metadata_types[key]}",
                        location,
                        {"key": key},
                    )
                )
                continue
            for issue in _jinja.analyze_template(value):
                ctx.add(
                    Finding(
                        _jinja.rule_for(issue),
                        issue.severity,
                        f"chat template {key!r}: {issue.message}",
                        location,
                        {"key": key, **issue.evidence},
                    )
                )


HANDLER = GGUFHandler()
