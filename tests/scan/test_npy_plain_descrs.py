"""The numpy-free reading of plain ``.npy`` headers gives numpy's own answer, entry by entry.

``parse_npy_header`` answers headers written by numpy for a plain numeric descriptor without
importing numpy; everything else goes to numpy's parser. These tests compare the two readings on
every descriptor of the table, on every header numpy writes for it, and on mutations of those
headers (an attacker's near-misses must reach numpy, never a wrong fast answer).
"""

from __future__ import annotations

import importlib
import io
import itertools
import struct
from typing import Any

import numpy as np
import pytest

from trainwarden.scan._formats import _dtype
from trainwarden.scan._formats._dtype import (
    PLAIN_DESCRS,
    NpyHeader,
    NpyHeaderError,
    parse_npy_header,
)

_FORMAT: Any = importlib.import_module("numpy.lib._format_impl")
_SHAPES = [(), (0,), (1,), (256,), (2, 3), (1, 2, 3, 4), (10**17, 1)]


def _written(descr: str, shape: tuple[int, ...], fortran: bool, version: tuple[int, int]) -> bytes:
    """The header bytes numpy's own writer produces (magic, version, length, padded dict)."""
    fp = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    _FORMAT._write_array_header(fp, header, version)
    return fp.getvalue()


def _numpy_reading(head: bytes) -> NpyHeader | str:
    """numpy's reading of ``head`` (the slow path), or the refusal's class name."""
    version = (head[6], head[7])
    fmt = _dtype._VERSIONS[version][0]
    size = struct.calcsize(fmt)
    (hlen,) = struct.unpack_from(fmt, head, 8)
    try:
        return _dtype._parse_with_numpy(head, version, size, 8 + size + hlen)
    except NpyHeaderError:
        return "NpyHeaderError"


def _reading(head: bytes) -> NpyHeader | str:
    try:
        return parse_npy_header(head)
    except NpyHeaderError:
        return "NpyHeaderError"


def _forbid_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object) -> NpyHeader:
        raise AssertionError("the fast path should have answered")

    monkeypatch.setattr(_dtype, "_parse_with_numpy", refuse)


@pytest.mark.parametrize("descr", sorted(PLAIN_DESCRS))
def test_each_plain_descr_is_numpys_own_spelling_without_objects(descr: str) -> None:
    dtype = np.dtype(descr)
    fmt: Any = np.lib.format  # its stubs type descriptors as field lists only
    assert dtype.hasobject is False
    assert fmt.dtype_to_descr(dtype) == descr
    assert fmt.descr_to_dtype(descr) == dtype


@pytest.mark.parametrize("descr", sorted(PLAIN_DESCRS))
def test_every_header_numpy_writes_for_a_plain_descr_reads_the_same(
    descr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    heads = [
        _written(descr, shape, fortran, version) + b"payload"
        for shape, fortran, version in itertools.product(
            _SHAPES, (False, True), [(1, 0), (2, 0), (3, 0)]
        )
    ]
    expected = [_numpy_reading(h) for h in heads]
    assert all(isinstance(e, NpyHeader) and e.hasobject is False for e in expected)
    _forbid_numpy(monkeypatch)  # each answer below comes from the fast path
    assert [parse_npy_header(h) for h in heads] == expected


def test_arrays_saved_by_numpy_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = [np.bool_, np.int8, np.uint8, np.int16, np.uint64, np.float16, np.float32]
    kinds += [np.float64, np.complex64, np.complex128]
    saved = []
    for kind in kinds:
        for dtype in (np.dtype(kind).newbyteorder("<"), np.dtype(kind).newbyteorder(">")):
            fp = io.BytesIO()
            np.save(fp, np.zeros((3, 2), dtype=dtype))
            saved.append(fp.getvalue())
    expected = [_numpy_reading(h) for h in saved]
    _forbid_numpy(monkeypatch)
    assert [parse_npy_header(h) for h in saved] == expected


@pytest.mark.parametrize(
    "descr",
    [
        "|O",
        "|O8",
        "=O8",
        "object",
        "=f4",
        "<f16",
        "<c32",
        "<M8[ns]",
        "|S4",
        "<U3",
        "|V8",
        "f4",
        "<f3",
        "<i16",
    ],
)
def test_other_spellings_are_read_by_numpy(descr: str) -> None:
    try:
        head = _written(descr, (2,), False, (1, 0))
    except (TypeError, ValueError):
        head = _written("<f4", (2,), False, (1, 0)).replace(b"'<f4'", repr(descr).encode())
    assert _reading(head) == _numpy_reading(head)


def test_object_dtype_in_numpys_layout_is_not_plain() -> None:
    head = _written("|O", (2,), False, (1, 0))
    result = parse_npy_header(head)
    assert result.hasobject is True


def _mutations(head: bytes) -> list[bytes]:
    """Each byte of the header dict replaced, dropped or doubled, with a few hostile bytes."""
    out = []
    start = 10 if head[6] == 1 else 12
    fills = b" ,'()LO0:\n\t{}x9-"
    for i in range(start, len(head)):
        out.append(head[:i] + head[i + 1 :])
        out.append(head[:i] + head[i : i + 1] + head[i:])
        out.extend(head[:i] + bytes([b]) + head[i + 1 :] for b in fills if b != head[i])
    return out


@pytest.mark.parametrize(
    ("descr", "shape", "fortran", "version"),
    [
        ("<f4", (256,), False, (1, 0)),
        ("|b1", (2, 3), True, (2, 0)),
        (">c16", (), False, (3, 0)),
        ("<i8", (7,), True, (1, 0)),
    ],
)
def test_mutated_headers_read_the_same_as_numpy(
    descr: str, shape: tuple[int, ...], fortran: bool, version: tuple[int, int]
) -> None:
    base = _written(descr, shape, fortran, version)
    # Bytes after the header: a dropped header byte pulls the first of them into the header.
    mutants = [m + b" \n\x00payload" for m in _mutations(base)]
    assert len(mutants) > 1000
    for head in mutants:
        assert _reading(head) == _numpy_reading(head), head
