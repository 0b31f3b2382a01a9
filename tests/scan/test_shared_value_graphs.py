"""Pickles whose values share other values through the memo, level after level: a file of a
few hundred bytes whose value, read as a tree, has 2**45 or 64**8 nodes. Python's unpickler
hashes such a tuple for ever when it is a dict key or set member, and anything that walks the
value as a tree (rendering evidence, reading a joblib dtype) never ends.

Runs that could hang on a regression run in a subprocess under a CPU-time and address-space
limit, so a regression fails the test instead of stalling the suite."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.scan import Limits, analyze_pickle

SRC = Path(__file__).resolve().parents[2] / "src"


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _analyze_in_subprocess(data: bytes, tmp_path: Path, **limits: int) -> list[dict[str, object]]:
    """Findings of ``analyze_pickle(data)`` (with ``limits``) computed in a limited process."""
    src = tmp_path / "input.pkl"
    src.write_bytes(data)
    code = (
        "import json, sys\n"
        "from trainwarden.scan import Limits, analyze_pickle\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "a = analyze_pickle(data, limits=Limits(**json.loads(sys.argv[2])))\n"
        "print(json.dumps([{'rule': f.rule_id, 'message': f.message, "
        "'limit': f.evidence.get('limit')} for f in a.findings]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(src), json.dumps(limits)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC)},
        preexec_fn=_limited,
        check=False,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    findings: list[dict[str, object]] = json.loads(proc.stdout)
    return findings


def tuple_pairs(depth: int, op: bytes = b"\x86", width: int = 2) -> bytes:
    """t0 = (), t(i+1) = (t(i), t(i), ...) through the memo; the last one is a dict key."""
    build = {b"\x86": A.TUPLE2, b"\x87": b"\x87", A.TUPLE: A.TUPLE}[op]
    out = A.proto(2) + A.EMPTY_TUPLE + A.long_binput(0)
    for _ in range(depth):
        refs = A.long_binget(0) * width
        out += A.POP + (A.MARK + refs + build if op == A.TUPLE else refs + build)
        out += A.long_binput(0)
    return out + A.POP + A.EMPTY_DICT + A.long_binget(0) + A.binint1(1) + A.SETITEM + A.STOP


@pytest.mark.parametrize(
    ("op", "width"), [(b"\x86", 2), (b"\x87", 3), (A.TUPLE, 2)], ids=["TUPLE2", "TUPLE3", "TUPLE"]
)
def test_a_dict_key_made_of_shared_tuples_is_a_limit_finding(op: bytes, width: int) -> None:
    # pickle.load would hash the key: 2**45 (or 3**45) tuple visits, for ever.
    a = analyze_pickle(tuple_pairs(45, op, width))
    limit = [f for f in a.findings if f.rule_id == "TWS-PKL-LIMIT"]
    assert limit, [f.rule_id for f in a.findings]
    assert limit[0].evidence["limit"] == "max_tuple_expansion"
    assert "hashing it" in limit[0].message


def test_shared_tuples_below_the_limit_are_not_findings() -> None:
    # 2**20 values: hashing them takes milliseconds, as pickle.load shows.
    import pickle

    data = tuple_pairs(20)
    assert len(pickle.loads(data)) == 1
    assert not analyze_pickle(data).findings
    assert analyze_pickle(data, limits=Limits(max_tuple_expansion=1 << 20)).findings


def test_ordinary_nested_tuples_are_not_findings() -> None:
    import pickle

    inner = ((1, 2), (3, 4))
    value = {(inner, inner): [inner] * 100, "t": tuple(range(1000))}
    for proto in range(6):
        assert not analyze_pickle(pickle.dumps(value, protocol=proto)).findings


def _wide(depth: int, width: int = 64, persid: bool = False) -> bytes:
    out = A.proto(2) + A.NONE + A.long_binput(0)
    for _ in range(depth):
        out += A.POP + A.MARK + A.long_binget(0) * width + A.TUPLE + A.long_binput(0)
    return out + (A.BINPERSID if persid else b"") + A.STOP


@pytest.mark.parametrize("persid", [False, True], ids=["result", "persistent-id"])
def test_evidence_of_a_shared_tuple_graph_is_rendered_in_bounded_time(
    persid: bool, tmp_path: Path
) -> None:
    # The rendering of a pickle's result (kept for the legacy torch format) and of persistent
    # ids (storage keys) walked 64 values per level, 6 levels deep: 64**6 values for a 2.6 KB
    # file. With the tuple limit raised out of the way, the rendering alone must still end.
    findings = _analyze_in_subprocess(
        _wide(8, persid=persid), tmp_path, max_tuple_expansion=1 << 62
    )
    assert findings == []


def _joblib_shared_dtypes(levels: int, width: int = 16) -> bytes:
    """A joblib array wrapper whose structured dtype has ``width`` fields of one sub-dtype,
    which has ``width`` fields of the next one, ``levels`` deep (fields overlap at offset 0, so
    numpy accepts every level as an 8-byte dtype)."""

    def dtype(code: str, state: bytes) -> bytes:
        return A.call(A.glob("numpy", "dtype"), A.su(code), b"\x89", b"\x88") + state + A.BUILD

    leaf = A.MARK + A.binint1(3) + A.su("<") + A.NONE * 3 + A.bint(-1) * 2 + A.binint1(0) + A.TUPLE
    out = A.proto(2) + dtype("f8", leaf) + A.long_binput(0)
    names = [f"f{j}" for j in range(width)]
    for _ in range(levels):
        fields = b"".join(A.su(n) + A.long_binget(0) + A.binint1(0) + A.TUPLE2 for n in names)
        state = (
            A.MARK
            + A.binint1(3)
            + A.su("|")
            + A.NONE
            + A.MARK
            + b"".join(A.su(n) for n in names)
            + A.TUPLE
            + A.EMPTY_DICT
            + A.MARK
            + fields
            + A.SETITEMS
            + A.binint1(8)
            + A.binint1(1)
            + A.binint1(16)
            + A.TUPLE
        )
        out += A.POP + dtype("V8", state) + A.long_binput(0)
    wrapper = A.glob("joblib.numpy_pickle", "NumpyArrayWrapper") + A.EMPTY_TUPLE + A.NEWOBJ
    items = (
        A.su("dtype")
        + A.long_binget(0)
        + A.su("shape")
        + A.binint1(1)
        + b"\x85"
        + A.su("order")
        + A.su("C")
    )
    out += A.POP + wrapper + A.EMPTY_DICT + A.MARK + items + A.SETITEMS + A.BUILD
    return out + b"\x00" * 8 + A.STOP


def test_a_joblib_dtype_of_few_shared_sub_dtypes_is_read() -> None:
    # The same construction, small: numpy rebuilds the dtype and the array bytes are skipped.
    for levels in range(3):
        a = analyze_pickle(_joblib_shared_dtypes(levels, 2))
        assert not a.findings and a.joblib_arrays == 1, [f.message for f in a.findings]


def test_a_joblib_dtype_built_from_shared_sub_dtypes_fails_closed(tmp_path: Path) -> None:
    # To skip a joblib array's bytes the scanner renders its dtype (code, align, state) and has
    # numpy rebuild it: shared sub-dtypes made that rendering 16**10 values long.
    findings = _analyze_in_subprocess(_joblib_shared_dtypes(10), tmp_path)
    assert {f["rule"] for f in findings} == {"TWS-PKL-MALFORMED"}, findings
    assert "cannot determine the size of a joblib array payload" in str(findings[0]["message"])


@pytest.mark.parametrize("use", ["argument", "callee"])
def test_a_finding_names_a_shared_tuple_graph_briefly(use: str) -> None:
    # 2**22 values as a tree (under the limit) from 434 bytes: named in a finding by its repr,
    # it made a 25 MB message (and report) and took seconds to render.
    body = A.proto(2) + A.EMPTY_TUPLE + A.long_binput(0)
    for _ in range(22):
        body += A.POP + A.long_binget(0) * 2 + A.TUPLE2 + A.long_binput(0)
    if use == "argument":
        call = A.glob("numpy.core.multiarray", "_reconstruct") + A.long_binget(0)
        call += A.MARK + A.binint1(0) + A.TUPLE + A.su("b") + A.TUPLE3 + A.REDUCE
    else:
        call = A.long_binget(0) + A.EMPTY_TUPLE + A.REDUCE
    a = analyze_pickle(body + A.POP + call + A.STOP)
    named = {"argument": "TWS-PKL-CALL-UNSAFE", "callee": "TWS-PKL-CALL-COMPUTED"}[use]
    unsafe = [f for f in a.findings if f.rule_id == named]
    assert unsafe, [f.rule_id for f in a.findings]
    assert all(len(f.message) < 400 for f in a.findings), [len(f.message) for f in a.findings]
    assert "((((" in unsafe[0].message and "..." in unsafe[0].message
