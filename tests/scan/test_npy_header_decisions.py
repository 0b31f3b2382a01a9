"""What the scanner decides from a ``.npy`` header and from a pickled numpy dtype, as an attacker
who writes those bytes sees it: the header's bounds and refusals, the reading without numpy, and
the dtype numpy would build (object-ness and item size) however its pickle spells it.

Payloads are benign: at most they would touch a canary file, which each test asserts absent.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.scan import scan_bytes
from trainwarden.scan._formats import _dtype
from trainwarden.scan._formats._dtype import (
    DtypeTriple,
    NpyHeaderError,
    dtype_info,
    parse_npy_header,
)

_MAGIC = b"\x93NUMPY"


def _header(body: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    fmt = "<H" if version == (1, 0) else "<I"
    return _MAGIC + bytes(version) + struct.pack(fmt, len(body)) + body


def _refusal(head: bytes) -> str:
    with pytest.raises(NpyHeaderError) as e:
        parse_npy_header(head)
    return str(e.value)


def _triple(dtype: Any) -> DtypeTriple:
    """The ``(code, align, state)`` numpy's own ``__reduce__`` writes, nested dtypes included."""
    _, (code, align, _copy), state = dtype.__reduce__()

    def plain(v: Any) -> Any:
        if isinstance(v, np.dtype):
            return _triple(v)
        if isinstance(v, tuple):
            return tuple(plain(x) for x in v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return DtypeTriple((code, align, plain(state)))


# -- the header's bounds ----------------------------------------------------------------------


def test_wrong_magic_is_not_a_header_even_when_the_rest_is_valid() -> None:
    good = _header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n")
    assert parse_npy_header(good).hasobject is False
    assert _refusal(b"\x93NUMPX" + good[6:]) == "not a .npy header"


def test_a_magic_without_room_for_a_length_is_not_a_header() -> None:
    assert _refusal(_MAGIC + b"\x01\x00") == "not a .npy header"
    assert _refusal(_MAGIC + b"\x01\x00\x00") == "not a .npy header"


def test_an_empty_v1_header_of_exactly_ten_bytes_reaches_numpys_parser() -> None:
    # Ten bytes hold magic, version and a zero length: numpy reads it (and refuses the empty
    # dict), so the refusal must be numpy's, not a bounds error of ours.
    assert _refusal(_MAGIC + b"\x01\x00\x00\x00").startswith("numpy refuses the header: ")


def test_unsupported_version_is_named_major_dot_minor() -> None:
    head = _MAGIC + b"\x07\x03" + b"\x00" * 8
    assert _refusal(head) == "unsupported .npy format version 7.3"


def test_a_v2_header_needs_four_length_bytes() -> None:
    assert _refusal(_MAGIC + b"\x02\x00" + b"\x10\x00\x00") == "header length missing"


def test_a_header_longer_than_the_data_is_refused() -> None:
    body = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n"
    head = _header(body)
    assert _refusal(head[:-1]) == "header runs past the end of the data"


@pytest.mark.parametrize("descr", ["<f4", "|O", "<U3"])
def test_a_header_without_payload_ends_exactly_at_the_data(descr: str) -> None:
    fp = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        fp, {"descr": descr, "fortran_order": False, "shape": (0,)}
    )
    head = fp.getvalue()
    h = parse_npy_header(head)
    assert h.payload_offset == len(head)
    assert h.version == (1, 0)
    assert h.hasobject is (descr == "|O")


def test_a_malformed_header_finding_names_the_refusal() -> None:
    r = scan_bytes(_MAGIC + b"\x01\x00\xff\x00{'descr'", "w.npy")
    assert [(f.rule_id, f.message) for f in r.findings] == [
        ("TWS-NPY-MALFORMED", "unreadable .npy header: header runs past the end of the data")
    ]


# -- without numpy: the spelling decides, and only a plain one is trusted ---------------------


@pytest.fixture
def no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_dtype, "_numpy", lambda: None)


@pytest.mark.usefixtures("no_numpy")
@pytest.mark.parametrize(
    ("body", "hasobject"),
    [
        # not numpy's exact layout, so the fast path declines and the fallback reads it
        (b"{'shape': (2,), 'descr': '<f4', 'fortran_order': False}\n", False),
        (b"{'descr': '=i8', 'fortran_order': True, 'shape': ()}\n", False),
        (b"{'descr': '|O', 'fortran_order': False, 'shape': (2,)}\n", None),
        (b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}\n", None),
    ],
)
def test_without_numpy_only_plain_spellings_are_object_free(body: bytes, hasobject: object) -> None:
    for version in ((1, 0), (2, 0)):
        head = _header(body, version)
        h = parse_npy_header(head + b"payload")
        assert (h.hasobject, h.payload_offset) == (hasobject, len(head))


@pytest.mark.usefixtures("no_numpy")
def test_without_numpy_an_unknown_dtype_payload_is_analysed(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    body = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,)}\n"
    evil = A.proto(2) + A.call_global("os", "system", f"touch {canary}") + A.STOP
    r = scan_bytes(_header(body) + evil, "x.npy")
    assert {f.rule_id for f in r.findings} >= {"TWS-NPY-OBJECT", "TWS-PKL-DANGEROUS"}
    assert not canary.exists()


@pytest.mark.usefixtures("no_numpy")
def test_without_numpy_dtype_info_trusts_plain_codes_only() -> None:
    assert dtype_info("<f4", False, None) == (4, False)
    assert dtype_info("i2", False, None) == (2, False)
    assert dtype_info("?", False, None) == (1, False)
    assert dtype_info("O8", False, None) == (8, None)
    assert dtype_info("V16", False, None) == (8, None)


# -- a pickled dtype is decided by the dtype numpy builds from it ------------------------------


def test_structured_dtype_with_an_object_field_holds_objects() -> None:
    dt = np.dtype([("a", "O"), ("b", "i1")])
    assert dtype_info(*_triple(dt)) == (9, True)
    assert dtype_info(*_triple(np.dtype([("a", "i1"), ("b", "<i8")], align=True))) == (16, False)


def test_a_plain_code_whose_state_makes_it_hold_objects_holds_objects() -> None:
    # numpy.dtype('f8', False, True) followed by the object dtype's state: numpy's unpickler
    # builds a float64 that holds objects. Only a copy (as numpy's reduce asks) takes the state;
    # a builtin dtype would ignore it.
    assert dtype_info("f8", False, (3, "|", None, None, None, -1, -1, 63)) == (8, True)
    sub = (3, "|", (_triple(np.dtype("O")), (2,)), None, None, 16, 8, 63)
    assert dtype_info("i4", False, sub)[1] is True  # type: ignore[index]


def test_align_decides_a_comma_spelled_structured_itemsize() -> None:
    # The array's byte length after a joblib wrapper is count x itemsize: a wrong size would
    # misplace where the pickle resumes.
    assert dtype_info("i1,i8", True, None) == (16, False)
    assert dtype_info("i1,i8", False, None) == (9, False)
    assert np.dtype("i1,i8", align=True).itemsize == 16


def test_a_dtype_pickle_with_a_non_boolean_align_is_not_decided() -> None:
    assert dtype_info("<f8", "x", None) is None
    assert dtype_info("<f8", None, None) is None


def test_joblib_wrapper_with_a_float_dtype_made_of_objects_has_its_pickle_analysed(
    tmp_path: Path,
) -> None:
    # joblib.load unpickles the array payload whenever the rebuilt dtype has hasobject set; a
    # dtype pickled as 'f8' with the object dtype's state is such a dtype.
    joblib = pytest.importorskip("joblib")
    canary = tmp_path / "canary"
    buf = io.BytesIO()
    joblib.dump(np.array([None, 1], dtype=object), buf)
    raw = buf.getvalue()
    end = raw.index(b"ub\x80") + 2  # the wrapper's BUILD; the array's own pickle follows it
    header = raw[:end].replace(b"\x8c\x02O8", b"\x8c\x02f8", 1)
    assert header != raw[:end]
    evil = A.proto(2) + A.call_global("os", "system", f"touch {canary}") + A.STOP
    r = scan_bytes(header + evil + A.STOP, "m.joblib")
    assert "TWS-PKL-DANGEROUS" in {f.rule_id for f in r.findings}
    assert not canary.exists()


def test_a_field_whose_nested_dtype_numpy_refuses_is_not_decided() -> None:
    # numpy's unpickler builds every nested dtype of the fields first: one it refuses stops the
    # load, so the dtype is not decided (the joblib wrapper is then reported as malformed).
    bad = DtypeTriple(("Q9", False, None))
    fields = {"a": (bad, 0)}
    assert dtype_info("V8", False, (3, "|", None, ("a",), fields, 8, 1, 0)) is None
    good = {"a": (_triple(np.dtype("O")), 0)}
    assert dtype_info("V8", False, (3, "|", None, ("a",), good, 8, 1, 63)) == (8, True)
