"""``trainwarden.load`` and ``trainwarden.save``: checkpoint I/O that never runs code from a file.

A load reads the file once into private memory, checks the manifest covering it (if any, or if
one is required) against those bytes, statically analyses every pickle it will unpickle, and
then unpickles exactly those bytes with the restricted unpickler. Formats: PyTorch zip and legacy
checkpoints, safetensors (through the safetensors library), raw pickles, numpy ``.npy``/``.npz``
and joblib files. GGUF, HDF5, TorchScript and other zip files are refused with a message that
says so.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from trainwarden.findings import Finding, Severity
from trainwarden.loading import _manifest as _manifest
from trainwarden.loading import _telemetry as telemetry
from trainwarden.loading._io import MemReader, map_once, read_once, sha256_mapped, sha256_of
from trainwarden.loading._policy import require_manifest as _policy_requires_manifest
from trainwarden.loading._policy import resolve_policy, trusted_manifest_key
from trainwarden.loading._types import (
    LoadError,
    LoadReport,
    ManifestError,
    UnsafeModelError,
    UnsafeModelWarning,
)
from trainwarden.loading._unpickler import (
    Enforcer,
    RestrictedPyUnpickler,
    check_pickle_bytes,
    restricted_loads,
    restricted_pickle_module,
)

if TYPE_CHECKING:
    from trainwarden._internal.sink import EventSink
    from trainwarden.scan._policy import Policy

__all__ = [
    "detect_format",
    "get_default_sink",
    "load",
    "load_with_report",
    "save",
    "set_default_sink",
]

#: The formats ``trainwarden.load`` reads, as the error for any other format lists them.
READABLE_FORMATS = (
    "PyTorch checkpoints (torch.save zip and legacy)",
    "TorchScript archives whose code passes review",
    "safetensors",
    "pickle",
    "numpy .npy/.npz",
    "joblib",
)
_GGUF_MAGIC = b"GGUF"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_NPY_MAGIC = b"\x93NUMPY"
# joblib writes compressed files with these containers (zlib, gzip, bz2, xz, lzma, lz4).
_JOBLIB_COMPRESSED = (
    b"ZF",
    b"\x78",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
)
_TELEMETRY_FAIL = Severity.HIGH

_default_sink: EventSink | None = None


def set_default_sink(sink: EventSink | None) -> None:
    """Send load events to ``sink`` when a call does not pass one (the guard sets this)."""
    global _default_sink
    _default_sink = sink


def get_default_sink() -> EventSink | None:
    return _default_sink


_env_ledger: list[EventSink | None] = []


def _ledger_from_env() -> EventSink | None:
    """The ledger sink TRAINWARDEN_LEDGER_URL/TOKEN configure, created once per process."""
    if not _env_ledger:
        import atexit

        from trainwarden.ledger._client import configured_sink

        led = configured_sink()
        if led is not None:
            # Ship what is spooled before the interpreter exits (what is left stays spooled).
            atexit.register(led.close, 5.0)
        _env_ledger.append(led)
    return _env_ledger[0]


def _target_sink(sink: EventSink | None) -> EventSink | None:
    target = sink if sink is not None else _default_sink
    if target is None:
        target = _ledger_from_env()
    return target


def _emit(sink: EventSink | None, kind: str, record: dict[str, Any]) -> None:
    target = _target_sink(sink)
    if target is not None:
        target.emit(kind, record)


# -- format detection ---------------------------------------------------------------------------


def detect_format(data: bytes | bytearray | memoryview) -> str:
    """Name the loader route for ``data``, judged by content only.

    One of ``torch-zip``, ``torchscript``, ``npz``, ``zip``, ``npy``, ``torch-legacy``,
    ``joblib``, ``safetensors``, ``gguf``, ``hdf5``, ``pickle``.
    """
    head = bytes(data[:16])
    if head.startswith(_GGUF_MAGIC):
        return "gguf"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if _is_safetensors(data):
        return "safetensors"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(MemReader(data)) as zf:
                names = zf.namelist()
        except Exception:
            # An archive zipfile refuses (a made-up "version needed", absurd sizes) is no
            # checkpoint: a plain zip, which is never loaded.
            return "zip"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
                return "torchscript"
            return "torch-zip"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "zip"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if head.startswith(_JOBLIB_COMPRESSED):
        return "joblib"
    if b"NumpyArrayWrapper" in bytes(data[:65536]) and b"joblib" in bytes(data[:65536]):
        return "joblib"
    return "pickle"


def _is_safetensors(data: bytes | bytearray | memoryview) -> bool:
    # The scanner's own sniff, so that `scan` and `load` name a file's format alike.
    from trainwarden.scan._formats.safetensors import SafetensorsHandler

    return SafetensorsHandler().sniff(bytes(data[:520]))


# -- routes: a static pass over every pickle the loader will read, then the restricted load ---


def _torch_reader(data: memoryview, location: str) -> Any:
    import torch

    try:
        return torch._C.PyTorchFileReader(cast(IO[bytes], MemReader(data, location)))
    except RuntimeError as e:
        raise LoadError(f"{location} is not a readable PyTorch checkpoint: {e}") from e


def _prescan_torch_zip(data: memoryview, enforcer: Enforcer, reader: Any = None) -> Any:
    # Read the pickles through the same zip reader torch uses, so both see the same records.
    reader = reader if reader is not None else _torch_reader(data, enforcer.location)
    base = enforcer.location
    # Every record but the storages is copied out whole (inflated, if it is compressed) by this
    # check or by torch: their sizes together stay within the decompression limit.
    limit = _inflate_limit(data)
    total = 0
    for name in reader.get_all_records():
        if not name.startswith("data/"):
            total += _record_size(reader, name)
            if total > limit:
                raise _decompression_refused(base, limit, len(data))
    for name in reader.get_all_records():
        if name.endswith(".pkl"):
            _privatize(data, reader.get_record_offset(name), _record_size(reader, name))
    for name in reader.get_all_records():
        enforcer.location = f"{base}:{name}"
        try:
            if name.endswith(".pkl"):
                # Every pickle in the record is judged, as in a raw pickle file: torch reads the
                # first, a payload after it is there for whoever reads on (and scan reports it).
                check_pickle_bytes(reader.get_record(name), enforcer, max_pickles=None)
            else:
                _check_hidden_pickle(data, reader.get_record_offset(name), enforcer)
        finally:
            enforcer.location = base
    return reader


def _record_size(reader: Any, name: str) -> int:
    # The uncompressed size from the zip directory, without inflating the record (torch
    # releases without get_record_size read it).
    size = getattr(reader, "get_record_size", None)
    return int(size(name)) if size is not None else len(reader.get_record(name))


def _privatize(data: memoryview, offset: int, size: int) -> None:
    """Give this process its own copy of the pages holding a pickle (and its zip header).

    For a file mapping (``mmap=True``) this pins the bytes that are analysed and then unpickled:
    a writer changing the file afterwards no longer changes them. For private memory it is a
    harmless rewrite of the same bytes.
    """
    if data.readonly:
        return
    start = max(0, offset - 4096)
    end = min(len(data), offset + size)
    data[start:end] = data[start:end].tobytes()


def _check_hidden_pickle(data: memoryview, offset: int, enforcer: Enforcer) -> None:
    """Refuse a storage (or other raw) member that is really a pickle needing unsafe globals.

    torch never unpickles these members, but model code may (``set_extra_state`` of some layers
    unpickles its bytes), so a pickle hidden there is refused like one in ``data.pkl``. Only a
    complete pickle counts: tensor bytes that merely start like one do not.
    """
    from trainwarden.scan._pickle_vm import _OPNAMES, analyze_pickle
    from trainwarden.scan._types import Verdict

    if offset + 2 > len(data):
        return
    # A pickle needs no PROTO header: pickle.loads runs a protocol 0 or 1 stream (or any
    # opcode) from its first byte, so any byte that is an opcode may start one.
    if (data[offset] == 0x80 and data[offset + 1] > 5) or data[offset] not in _OPNAMES:
        return
    analysis = analyze_pickle(
        data[offset:], policy=enforcer.policy, location=enforcer.location, max_pickles=1
    )
    bad = [g for g in analysis.globals if g.verdict is not Verdict.SAFE]
    if analysis.complete and bad:
        for g in bad:
            enforcer.check(g.module, g.name)


def _npy_header(fp: Any) -> Any:
    import numpy.lib.format as npformat

    impl: Any = npformat
    # numpy >= 2 keeps the implementation (with the version-generic reader) here.
    with contextlib.suppress(ImportError):
        import numpy.lib._format_impl as impl
    version = npformat.read_magic(fp)
    _shape, _fortran, dtype = impl._read_array_header(fp, version)
    return dtype


def _prescan_npy_stream(fp: Any, enforcer: Enforcer) -> None:
    if _npy_header(fp).hasobject:
        check_pickle_bytes(fp.read(), enforcer)


def _npz_members(data: memoryview, location: str) -> list[tuple[str, bytes | bytearray]]:
    # Members are inflated in bounded steps against one budget for the whole file, the limit
    # of compressed joblib files: a deflated member inflates about 1000 times.
    limit = _inflate_limit(data)
    total = 0
    members: list[tuple[str, bytes | bytearray]] = []
    try:
        with zipfile.ZipFile(MemReader(data, location)) as zf:
            for name in zf.namelist():
                raw = bytearray()
                with zf.open(name) as member:
                    while chunk := member.read(16 << 20):
                        total += len(chunk)
                        if total > limit:
                            raise _decompression_refused(location, limit, len(data))
                        raw += chunk
                members.append((name, raw))
        return members
    except UnsafeModelError:
        raise
    except LoadError:
        raise
    except Exception as e:
        raise LoadError(
            f"{location} is not a readable .npz archive: {type(e).__name__}: {e}"
        ) from e


class _ZlibReader(io.RawIOBase):
    """A bounded-step reader of a zlib stream (joblib's ``compress="zlib"`` format)."""

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self._src = data
        self._pos = 0
        self._z = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        while True:
            pending = self._z.unconsumed_tail
            if not pending and self._pos < len(self._src):
                pending = bytes(self._src[self._pos : self._pos + (1 << 20)])
                self._pos += len(pending)
            if not pending:
                return 0
            chunk = self._z.decompress(pending, len(out))
            if chunk:
                out[: len(chunk)] = chunk
                return len(chunk)
            if self._z.eof:
                return 0


def _decompressing_reader(data: memoryview, location: str) -> Any:
    """A stream of the pickle inside a joblib file, decompressing in bounded steps.

    joblib's own decompressors inflate whole blocks at once, which a small crafted file turns
    into an unbounded allocation, so the standard library's streaming readers are used instead.
    """
    import bz2
    import gzip
    import lzma

    head = bytes(data[:6])
    src = MemReader(data, location)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=src, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(cast(IO[bytes], src), mode="rb")
    if head.startswith((b"\xfd7zXZ", b"\x5d\x00\x00")):
        return lzma.LZMAFile(cast(IO[bytes], src), mode="rb")
    if head.startswith(b"\x78"):
        return _ZlibReader(data)
    if head.startswith((b"ZF", b"\x04\x22\x4d\x18")):
        raise LoadError(
            f"{location} is an old-format or lz4-compressed joblib file, which trainwarden.load "
            "does not read",
            hint="re-save it with joblib.dump(..., compress=3) from a trusted environment",
        )
    return src


def _inflate_limit(data: memoryview) -> int:
    return min(_decompressed_limit(), max(_MIN_INFLATE, _MAX_RATIO * len(data)))


def _decompression_refused(location: str, limit: int, compressed: int) -> UnsafeModelError:
    f = Finding(
        "TWL-DECOMPRESSION-LIMIT",
        Severity.HIGH,
        f"{location} decompresses to more than {limit} bytes ({compressed} bytes compressed)",
        location,
        {"limit": limit, "compressed": compressed},
    )
    return UnsafeModelError(
        f"refused to load {location}: it decompresses to more than {limit} bytes",
        findings=[f],
        path=location,
        hint="a decompression bomb, or a file larger than the limit: raise "
        "limits.max_decompressed_bytes in the policy if you trust it",
    )


def _joblib_stream(data: memoryview, location: str) -> bytes:
    limit = _inflate_limit(data)
    stream = _decompressing_reader(data, location)
    raw = bytearray()
    try:
        while chunk := stream.read(16 << 20):
            if len(raw) + len(chunk) > limit:
                raise _decompression_refused(location, limit, len(data))
            raw += chunk
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise LoadError(f"{location} is not a readable compressed joblib file: {e}") from e
    return bytes(raw)


# Decompressed joblib streams may be this many times the file (numpy zeros compress very well),
# but never less than _MIN_INFLATE nor more than the policy's max_decompressed_bytes.
_MAX_RATIO = 200
_MIN_INFLATE = 256 << 20


def _decompressed_limit() -> int:
    from trainwarden.scan._types import Limits

    return Limits().max_decompressed_bytes


def prescan_format(fmt: str, data: memoryview, enforcer: Enforcer) -> None:
    """Statically check every pickle a loader of format ``fmt`` would read from ``data``.

    Raises :class:`UnsafeModelError` as the enforcer's mode decides. Used by the guard before it
    hands the same bytes to the library's own loader.
    """
    base = enforcer.location
    if fmt == "torch-zip":
        _prescan_torch_zip(data, enforcer)
    elif fmt == "torchscript":
        _review_torchscript(data, enforcer)
    elif fmt == "torch-legacy":
        # magic, protocol, sys_info, the object, the storage keys: five pickles, then storages.
        check_pickle_bytes(data, enforcer, max_pickles=5)
    elif fmt == "npy":
        _prescan_npy_stream(MemReader(data, base), enforcer)
    elif fmt == "npz":
        for name, member in _npz_members(data, base):
            enforcer.location = f"{base}:{name}"
            try:
                _prescan_npy_stream(io.BytesIO(member), enforcer)
            finally:
                enforcer.location = base
    elif fmt == "joblib":
        # Joblib interleaves raw array bytes with the pickle, so the static pass cannot see past
        # the first array; the restricted unpickler still decides every later global.
        # The whole stream is judged, as for a raw pickle: a payload in a pickle after the one
        # joblib reads is there for whoever reads on.
        check_pickle_bytes(
            _joblib_stream(data, base), enforcer, globals_only=True, max_pickles=None
        )
    elif fmt == "pickle":
        check_pickle_bytes(data, enforcer, max_pickles=None)


def _torch_load() -> Callable[..., Any]:
    # torch.load as torch defines it, even while the guard has wrapped it: this loader already
    # scanned the bytes and passes its own restricted pickle module.
    import torch

    fn: Callable[..., Any] = torch.load
    return getattr(fn, "__wrapped__", fn)


def _load_torch_zip(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    import torch

    reader = _prescan_torch_zip(data, enforcer)
    module = restricted_pickle_module(enforcer)
    serialization: Any = torch.serialization
    if len(data) and hasattr(serialization, "_load"):
        # Storages become views of the buffer already read: no second copy of the weights.
        overall = torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
        return serialization._load(
            reader, map_location, module, overall_storage=overall, encoding="utf-8"
        )
    return _torch_load()(
        cast(IO[bytes], MemReader(data)),
        map_location=map_location,
        pickle_module=module,
        weights_only=False,
    )


def _load_torch_legacy(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:

    prescan_format("torch-legacy", data, enforcer)
    module = restricted_pickle_module(enforcer)
    return _torch_load()(
        cast(IO[bytes], MemReader(data)),
        map_location=map_location,
        pickle_module=module,
        weights_only=False,
    )


def _load_pickle(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    # The whole file is judged, not only the first pickle pickle.load would read: a payload in
    # a second pickle is there for whoever reads on.
    check_pickle_bytes(data, enforcer, max_pickles=None)
    return restricted_loads(data, enforcer)


def _load_npy_stream(fp: Any, enforcer: Enforcer) -> Any:
    from numpy.lib import format as npformat

    start = fp.tell()
    if not _npy_header(fp).hasobject:
        fp.seek(start)
        return npformat.read_array(fp, allow_pickle=False)
    rest = fp.read()
    check_pickle_bytes(rest, enforcer)
    return restricted_loads(rest, enforcer)


def _load_npy(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    return _load_npy_stream(MemReader(data, enforcer.location), enforcer)


def _load_npz(data: memoryview, enforcer: Enforcer, map_location: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = enforcer.location
    for name, member in _npz_members(data, base):
        enforcer.location = f"{base}:{name}"
        try:
            key = name[: -len(".npy")] if name.endswith(".npy") else name
            out[key] = _load_npy_stream(io.BytesIO(member), enforcer)
        finally:
            enforcer.location = base
    return out


def _load_joblib(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    from joblib import numpy_pickle

    class _Restricted(RestrictedPyUnpickler, numpy_pickle.NumpyUnpickler):  # type: ignore[misc]
        tw_enforcer = enforcer

        def load_build(self) -> None:
            # joblib's own BUILD reads an object array with a fresh, unrestricted unpickler:
            # here it is read by the closed one, and only NumpyArrayWrapper payloads are read.
            RestrictedPyUnpickler.load_build(self)
            wrapper = self.stack[-1]
            if type(wrapper) is not numpy_pickle.NumpyArrayWrapper:
                return
            self.stack.pop()
            if wrapper.dtype.hasobject:
                inner = RestrictedPyUnpickler(self.file_handle, enforcer=enforcer)
                self.stack.append(inner.load())
            else:
                self.stack.append(wrapper.read(self, True))

        dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(RestrictedPyUnpickler.dispatch)
        dispatch[pickle.BUILD[0]] = load_build

    raw = _joblib_stream(data, enforcer.location)
    check_pickle_bytes(raw, enforcer, globals_only=True, max_pickles=None)
    unpickler = _Restricted(enforcer.location, io.BytesIO(raw), ensure_native_byte_order=True)
    return unpickler.load()


def _review_torchscript(data: memoryview, enforcer: Enforcer) -> None:
    """Scan a TorchScript archive (its code against the operator allowlist, its pickles as
    pickles); raise or warn as the enforcer's mode decides."""
    from trainwarden.scan._engine import scan_bytes

    report = scan_bytes(bytes(data), enforcer.location, policy=enforcer.policy)
    fail_on = Severity.parse(getattr(enforcer.policy, "fail_on", Severity.HIGH))
    bad = [f for f in report.findings if f.severity >= fail_on]
    if not bad:
        return
    for f in bad:
        enforcer._record(f)
    if enforcer.mode == "warn" and all(f.severity < Severity.CRITICAL for f in bad):
        warnings.warn(
            f"trainwarden guard (warn mode): {enforcer.location}: {bad[0].message}; "
            "loading it anyway",
            UnsafeModelWarning,
            stacklevel=4,
        )
        return
    raise UnsafeModelError(
        f"refused to load {enforcer.location}: its TorchScript code or pickles are not safe "
        f"({bad[0].rule_id}: {bad[0].message})",
        findings=list(enforcer.findings),
        path=enforcer.location,
        hint="torch.jit.load runs the archive's __setstate__ code at load time; do not load it",
    )


def _load_torchscript(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    import torch

    _review_torchscript(data, enforcer)
    load = getattr(torch.jit.load, "__wrapped__", torch.jit.load)
    with warnings.catch_warnings():
        # torch deprecates the TorchScript API itself; the archive was reviewed, the warning
        # says nothing about it.
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
        return load(io.BytesIO(bytes(data)), map_location=map_location)


_READS_HINT = (
    "trainwarden.load reads "
    + ", ".join(READABLE_FORMATS)
    + "; check other formats with `trainwarden scan` and load them with their own library"
)


def _unsupported(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    raise LoadError(
        f"{enforcer.location} is a zip file but neither a PyTorch checkpoint nor a numpy .npz: "
        "not a format trainwarden.load reads",
        hint=_READS_HINT,
    )


def _not_loadable(kind: str) -> Callable[[memoryview, Enforcer, Any], Any]:
    def refuse(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
        raise LoadError(
            f"{enforcer.location} is a {kind} file: not a format trainwarden.load reads",
            hint=_READS_HINT,
        )

    return refuse


def _load_safetensors(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    """Tensors by name, built by the safetensors library from the bytes already read.

    safetensors holds no code; the library validates the header (offsets, dtypes, overlaps).
    """
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(bytes(data))
    except Exception as e:  # the library's own error types differ between versions
        raise LoadError(
            f"{enforcer.location} is not a valid safetensors file: {e}",
            hint="`trainwarden scan` it for details",
        ) from e
    return _to_location(tensors, map_location)


def _to_location(tensors: dict[str, Any], map_location: Any) -> dict[str, Any]:
    import torch

    if map_location is None:
        return tensors
    if not isinstance(map_location, (str, torch.device)):
        raise LoadError(
            "map_location for a safetensors file must be a device (a str or torch.device)",
            hint='for example map_location="cpu"',
        )
    return {k: v.to(map_location) for k, v in tensors.items()}


class _Collect:
    """The part of the scan context the safetensors validator uses: it only adds findings."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def note_format(self, fmt: str) -> None:
        pass


# safetensors dtype names -> torch dtype attribute names (those every torch 2.x has).
_ST_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "C64": "complex64",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
}


def _load_safetensors_mapped(data: memoryview, enforcer: Enforcer, map_location: Any) -> Any:
    """Tensors as views of the mapped file, after the scanner's strict header validation.

    The header is copied out and checked first (lengths, offsets in range, no overlap, no hidden
    bytes, no duplicate keys); any defect refuses the file before a tensor is built.
    """
    import json

    import torch

    from trainwarden.scan._formats import safetensors as st

    location = enforcer.location
    n = int.from_bytes(bytes(data[:8]), "little") if len(data) >= 8 else -1
    collect = _Collect()
    checker = st._Checker(b"", location, cast(Any, collect))
    header: Any = None
    if 2 <= n <= min(st.MAX_HEADER_BYTES, len(data) - 8):
        try:
            header = json.loads(
                bytes(data[8 : 8 + n]).decode("utf-8"),
                object_pairs_hook=st._pairs_no_dupes,
                parse_constant=st._reject_constant,
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise LoadError(f"{location}: the safetensors header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise LoadError(
            f"{location} is not a valid safetensors file (header length {n}, "
            f"file {len(data)} bytes)",
            hint="`trainwarden scan` it for details",
        )
    checker.check_entries(header, data_size=len(data) - 8 - n)
    bad = [f for f in collect.findings if f.severity >= Severity.MEDIUM]
    if bad:
        raise UnsafeModelError(
            f"refused to load {location}: {bad[0].message}",
            findings=bad,
            path=location,
            hint="a malformed or tampered safetensors file; `trainwarden scan` it for details",
        )
    base = 8 + n
    out: dict[str, Any] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = getattr(torch, _ST_DTYPES.get(entry["dtype"], ""), None)
        if not isinstance(dtype, torch.dtype):
            raise LoadError(f"{location}: tensor {name!r} has dtype {entry['dtype']}, not loadable")
        begin, end = entry["data_offsets"]
        shape = list(entry["shape"])
        if begin == end:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(data, dtype=torch.uint8, count=end - begin, offset=base + begin)
        out[name] = flat.view(dtype).reshape(shape)
    return _to_location(out, map_location)


_ROUTES: dict[str, Callable[[memoryview, Enforcer, Any], Any]] = {
    "torch-zip": _load_torch_zip,
    "torchscript": _load_torchscript,
    "safetensors": _load_safetensors,
    "gguf": _not_loadable("GGUF"),
    "hdf5": _not_loadable("HDF5 (Keras .h5)"),
    "npz": _load_npz,
    "zip": _unsupported,
    "npy": _load_npy,
    "torch-legacy": _load_torch_legacy,
    "joblib": _load_joblib,
    "pickle": _load_pickle,
}


def _import_for(fmt: str) -> None:
    # Import the framework a route needs before telemetry starts, so a first import of torch
    # (which loads native libraries) is not attributed to the file being loaded.
    import trainwarden.scan._pickle_vm  # noqa: F401

    if fmt.startswith("torch"):
        import torch.utils.serialization.config  # noqa: F401
    elif fmt == "safetensors":
        import safetensors.torch  # noqa: F401
    elif fmt in ("npy", "npz"):
        import numpy.lib.format  # noqa: F401
    elif fmt == "joblib":
        import joblib.numpy_pickle  # noqa: F401


# -- public API ---------------------------------------------------------------------------------


def load_bytes(
    data: memoryview,
    location: str,
    *,
    policy: Policy | None = None,
    map_location: Any = None,
    mode: str = "block",
    sink: EventSink | None = None,
    mapped: bool = False,
) -> tuple[Any, str, tuple[Finding, ...], telemetry.LoadTrace]:
    """Load an in-memory file (already read, already manifest-checked). Used by the guard too.

    Returns the object, the format, the findings and the telemetry trace. ``mapped``: ``data``
    is a file mapping; formats that can (PyTorch zip, safetensors) build tensors as views of it.
    """
    pol = resolve_policy(policy)
    fmt = detect_format(data)
    if mapped and fmt not in ("torch-zip", "safetensors"):
        # Only these build tensors as views; every other format is analysed and unpickled from
        # one private copy, so the bytes judged are the bytes loaded.
        data = memoryview(bytearray(data))
    findings: list[Finding] = []
    enforcer = Enforcer(pol, "warn" if mode == "warn" else "block", location, findings)
    _import_for(fmt)
    with telemetry.track(location) as trace:
        try:
            route = _load_safetensors_mapped if mapped and fmt == "safetensors" else _ROUTES[fmt]
            obj = route(data, enforcer, map_location)
        except UnsafeModelError as e:
            _emit(
                sink,
                "load.refused",
                {"path": location, "format": fmt, "findings": [f.to_dict() for f in e.findings]},
            )
            raise
        except (LoadError, ManifestError):
            raise
        except Exception as e:
            raise LoadError(
                f"{location} could not be loaded as {fmt}: {type(e).__name__}: {e}",
                hint="the file may be truncated or not the format its content suggests; "
                "`trainwarden scan` it for details",
            ) from e
    tel = trace.findings()
    all_findings = (*findings, *tel)
    bad = [f for f in tel if f.severity >= _TELEMETRY_FAIL]
    if bad and mode != "warn":
        _emit(
            sink,
            "load.refused",
            {"path": location, "format": fmt, "findings": [f.to_dict() for f in all_findings]},
        )
        raise UnsafeModelError(
            f"{location} did something no checkpoint load should do while loading: "
            f"{bad[0].message}",
            findings=all_findings,
            path=location,
        )
    return obj, fmt, tuple(all_findings), trace


def load_with_report(
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    map_location: Any = None,
    sink: EventSink | None = None,
    manifest_key: Any | None = None,
    require_manifest: bool | None = None,
    hash_file: bool = False,
    mmap: bool = False,
) -> tuple[Any, LoadReport]:
    """Like :func:`load`, also returning the :class:`LoadReport` (format, findings, digest).

    The sha256 is computed when a manifest applies, when the load is recorded to a sink (the
    ``sink`` argument, the default sink or the ledger configured in the environment: evidence
    names the bytes it is about) or when ``hash_file`` is true; else it is ``None``.
    """
    p = Path(path)
    pol = resolve_policy(policy)
    data = map_once(p) if mmap else read_once(p)
    digests: list[str] = []

    def digest() -> str:
        if not digests:
            digests.append(sha256_mapped(data) if mmap else sha256_of(data))
        return digests[0]

    target = _target_sink(sink)
    if hash_file or target is not None:
        digest()
    required = require_manifest if require_manifest is not None else _policy_requires_manifest(pol)
    key = manifest_key if manifest_key is not None else trusted_manifest_key()
    try:
        check = _manifest.verify_file_bytes(p, digest, require=required, public_key=key)
    except ManifestError as e:
        _emit(
            sink,
            "load.refused",
            {"path": str(p), "sha256": digest(), "findings": [f.to_dict() for f in e.findings]},
        )
        raise
    obj, fmt, findings, trace = load_bytes(
        data, str(p), policy=pol, map_location=map_location, sink=target, mapped=mmap
    )
    report = LoadReport(
        path=str(p),
        format=fmt,
        sha256=digests[0] if digests else None,
        size=len(data),
        findings=findings,
        manifest=check.manifest if check else None,
        events=trace.events_as_records(),
    )
    if target is not None:
        target.emit("load", report.to_dict())
    return obj, report


def load(
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    map_location: Any = None,
    sink: EventSink | None = None,
    manifest_key: Any | None = None,
    require_manifest: bool | None = None,
    mmap: bool = False,
) -> Any:
    """Load a checkpoint, safetensors, pickle, numpy or joblib file without running code from it.

    Raises :class:`UnsafeModelError` (with ``.findings``) before any global the policy does not
    list as safe is imported, :class:`ManifestError` when a manifest covering the file does not
    match (or is required and absent, or ``manifest_key`` is given and the signature is not by
    it), :class:`LoadError` for unreadable or unsupported files (GGUF, HDF5, pipes, devices,
    empty files). ``.npz`` files load as a dict of arrays, safetensors files as a dict of
    tensors. Tensors of a PyTorch zip checkpoint share one buffer holding the file.

    ``mmap=True`` maps the file instead of reading it: each pickle is copied out of the mapping
    and analysed before it is unpickled, and tensors of PyTorch zip and safetensors files are
    views of the mapped file, read from disk as they are used (like
    ``torch.load(mmap=True)``), so memory use does not grow with the file size. Those pages come
    from the file when first touched: a process that rewrites the file while the tensors are in
    use changes their values (never what is unpickled).
    """
    obj, _ = load_with_report(
        path,
        policy=policy,
        map_location=map_location,
        sink=sink,
        manifest_key=manifest_key,
        require_manifest=require_manifest,
        mmap=mmap,
    )
    return obj


def save(obj: Any, path: str | os.PathLike[str], *, sign_key: Any | None = None) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically and write its manifest beside it.

    ``sign_key`` (an Ed25519 private key or the path of its PEM file) signs the manifest.
    Returns the manifest path. On failure neither file is left half-written.
    """
    import torch

    p = Path(path)
    if p.is_dir():
        raise LoadError(f"{p} is a folder", hint="give the path of the checkpoint file to write")
    if sign_key is not None:
        sign_key = _manifest.load_private_key(sign_key)
    with _manifest.write_atomic(p) as tmp:
        torch.save(obj, tmp)
        digest = _manifest.hash_file(tmp)
    return _manifest.create_manifest(p, key=sign_key, digests={p.name: digest})
