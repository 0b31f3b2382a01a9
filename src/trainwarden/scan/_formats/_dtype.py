"""Whether a numpy dtype holds Python objects, decided by numpy itself.

``numpy.load`` and ``joblib.load`` unpickle an array's payload exactly when the dtype they build
has ``hasobject`` set; spellings (``'O'``, ``'|O8'``, ``'object'``, a structured field, a
sub-array) do not matter, only the dtype object does. These helpers build that dtype with
numpy's own safe machinery (the ``.npy`` header parser is ``ast.literal_eval`` based, and
``numpy.dtype`` of literal values runs no user code). Without numpy the answer is "unknown",
which callers treat as "has objects" (fail closed).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = ["NpyHeader", "NpyHeaderError", "dtype_info", "parse_npy_header"]

#: The descriptor spellings whose meaning is certain without numpy (plain numeric scalars).
_PLAIN = re.compile(r"[<>|=]?(?:[?bBhHiIlLqQpPefd]|[biufc][1-9][0-9]?)")

#: numpy's (major, minor) versions of the .npy format: header-length struct and encoding.
_VERSIONS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}

#: The descriptors numpy itself writes for booleans, integers, floats and complex numbers of a
#: fixed size on every platform (``numpy.lib.format.dtype_to_descr`` of those dtypes returns the
#: same string). A test proves each one equal to numpy's own answer: a valid dtype, no Python
#: objects. Any other spelling (``'=f4'``, ``'object'``, a list of fields, ``'<f16'`` whose size
#: differs between platforms) is decided by numpy.
PLAIN_DESCRS = frozenset(
    ["|b1", "|i1", "|u1"]
    + [f"{order}{kind}{size}" for order in "<>" for kind in "iu" for size in (2, 4, 8)]
    + [f"{order}f{size}" for order in "<>" for size in (2, 4, 8)]
    + [f"{order}c{size}" for order in "<>" for size in (8, 16)]
)

_INT = rb"(?:0|[1-9][0-9]{0,17})"
#: A header exactly as numpy writes it for such a descriptor (keys sorted, ``repr`` of the
#: shape, padding spaces and a newline). Only a full match takes the fast path; everything else
#: goes to numpy's parser.
_NUMPY_WRITTEN = re.compile(
    rb"\{'descr': '(?P<descr>[<>|][a-z][0-9]{1,2})', 'fortran_order': (?:True|False), "
    rb"'shape': \((?:|" + _INT + rb",|" + _INT + rb"(?:, " + _INT + rb")+)\), \} *\n"
)


class NpyHeaderError(ValueError):
    """numpy would refuse this header (so ``numpy.load`` reads nothing after it)."""


@dataclass(frozen=True)
class NpyHeader:
    version: tuple[int, int]
    descr: str  # repr of the descriptor, for evidence
    hasobject: bool | None  # None: numpy is not available and the spelling is not plain
    payload_offset: int  # first byte after the header


def _numpy() -> Any | None:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is installed wherever it is tested
        return None
    return numpy


def parse_npy_header(head: bytes) -> NpyHeader:
    """Parse the header of a ``.npy`` stream the way ``numpy.load`` does.

    ``head`` must hold the whole header (the payload may be absent). Raises NpyHeaderError when
    numpy would refuse the header, or when ``head`` is too short to hold it.
    """
    if head[:6] != b"\x93NUMPY" or len(head) < 10:
        raise NpyHeaderError("not a .npy header")
    version = (head[6], head[7])
    info = _VERSIONS.get(version)
    if info is None:
        raise NpyHeaderError(f"unsupported .npy format version {version[0]}.{version[1]}")
    size = struct.calcsize(info[0])
    if len(head) < 8 + size:
        raise NpyHeaderError("header length missing")
    (hlen,) = struct.unpack_from(info[0], head, 8)
    start = 8 + size + hlen
    if len(head) < start:
        raise NpyHeaderError("header runs past the end of the data")
    m = _NUMPY_WRITTEN.fullmatch(head, 8 + size, start)
    if m is not None:
        descr = m.group("descr").decode("ascii")
        if descr in PLAIN_DESCRS:
            # What numpy's parser returns for this header, without importing numpy (most of a
            # small scan's start-up); proven equal for every entry by the tests.
            return NpyHeader(version, repr(descr), False, start)
    return _parse_with_numpy(head, version, size, start)


def _parse_with_numpy(head: bytes, version: tuple[int, int], size: int, start: int) -> NpyHeader:
    encoding = _VERSIONS[version][1]
    np = _numpy()
    if np is not None:
        # numpy's own parser (literal_eval, its Python-2 header filter, key and value checks,
        # descr_to_dtype); allow_pickle=True callers lift numpy's header-size limit, so do we.
        parse = getattr(np.lib.format, "_read_array_header", None)  # numpy < 2
        if parse is None:  # numpy >= 2: the implementation module
            import importlib

            parse = importlib.import_module("numpy.lib._format_impl")._read_array_header
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, _, dtype = parse(io.BytesIO(head[8:start]), version, max_header_size=2**64)
        except Exception as e:  # numpy raises many kinds for hostile headers
            raise NpyHeaderError(f"numpy refuses the header: {type(e).__name__}: {e}") from e
        descr = np.lib.format.dtype_to_descr(dtype)
        return NpyHeader(version, repr(descr)[:200], bool(dtype.hasobject), start)
    import ast

    try:
        d = ast.literal_eval(head[8 + size : start].decode(encoding))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as e:
        raise NpyHeaderError(f"unreadable header: {e}") from e
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise NpyHeaderError("header is not a dict with descr, fortran_order and shape")
    descr = d["descr"]
    plain = isinstance(descr, str) and _PLAIN.fullmatch(descr) is not None
    return NpyHeader(version, repr(descr)[:200], False if plain else None, start)


def dtype_info(code: str, align: object, state: object) -> tuple[int, bool | None] | None:
    """(itemsize, hasobject) of the dtype that unpickling ``numpy.dtype(code, align, True)``
    followed by ``__setstate__(state)`` builds, or None when numpy refuses it.

    ``state`` must hold plain values only (tuples, dicts, str, int, bool, None, and nested
    ``(code, align, state)`` triples standing for the dtypes of structured fields).
    """
    np = _numpy()
    if np is None:
        if _PLAIN.fullmatch(code) is None:
            return 8, None
        try:
            return int(np_itemsize_plain(code)), False
        except ValueError:
            return None
    try:
        dt = _build(np, code, align, state)
    except Exception:  # numpy refuses it: so would the victim's unpickler
        return None
    return int(dt.itemsize), bool(dt.hasobject)


def np_itemsize_plain(code: str) -> int:
    """Item size of a plain numeric spelling (numpy-free fallback)."""
    digits = code.lstrip("<>|=")[1:]
    if digits:
        return int(digits)
    return struct.calcsize(code.lstrip("<>|=").replace("e", "h"))


class DtypeTriple(tuple[str, object, object]):
    """``(code, align, state)`` of a nested pickled dtype inside a dtype state."""

    __slots__ = ()


def _plain(np: Any, value: object) -> object:
    if isinstance(value, DtypeTriple):
        return _build(np, *value)
    if isinstance(value, tuple):
        return tuple(_plain(np, v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(np, v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bytes)):
        return value
    raise TypeError(f"not a plain dtype state value: {type(value).__name__}")


def _build(np: Any, code: str, align: object, state: object) -> Any:
    if not isinstance(code, str) or not isinstance(align, (bool, int)):
        raise TypeError("not a pickled dtype")
    # copy=True, as numpy's own __reduce__ writes: never mutate numpy's cached builtin dtypes.
    dt = np.dtype(code, bool(align), True)
    if state is not None:
        dt.__setstate__(_plain(np, state))
    return dt
