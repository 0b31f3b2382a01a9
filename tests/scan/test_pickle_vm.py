"""Symbolic pickle VM: every opcode family, hand-assembled payloads, real clean pickles."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import pathlib
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.findings import Severity
from trainwarden.scan import Limits, Policy, Verdict, analyze_pickle
from trainwarden.scan._pickle_vm import PickleAnalysis, looks_like_pickle


def rules(a: PickleAnalysis) -> set[str]:
    return {f.rule_id for f in a.findings}


def touch_cmd(canary: Path) -> str:
    return f"touch {canary}"


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def assert_flagged(data: bytes, canary: Path, rule: str = "TWS-PKL-DANGEROUS") -> PickleAnalysis:
    a = analyze_pickle(data)
    assert rule in rules(a), [f.to_dict() for f in a.findings]
    assert not canary.exists()
    return a


# -- globals: every way to name one ----------------------------------------------------------


def test_global_reduce_os_system(canary: Path) -> None:
    data = A.proto(2) + A.call_global("os", "system", touch_cmd(canary)) + A.STOP
    a = assert_flagged(data, canary)
    g = a.globals[0]
    assert (g.module, g.name, g.opcode, g.offset, g.verdict) == (
        "os",
        "system",
        "GLOBAL",
        2,
        Verdict.DANGEROUS,
    )
    crit = [f for f in a.findings if f.rule_id == "TWS-PKL-DANGEROUS"]
    assert crit[0].severity is Severity.CRITICAL
    assert crit[0].evidence["global_"] == "os.system"
    assert crit[0].location == "<pickle>@2"


def test_stack_global_with_strings_from_memo(canary: Path) -> None:
    # The names are stored in the memo early and fetched with BINGET/LONG_BINGET later.
    data = (
        A.proto(4)
        + A.su("posix")
        + A.binput(1)
        + A.POP
        + A.su("system")
        + A.long_binput(7)
        + A.POP
        + A.binget(1)
        + A.long_binget(7)
        + A.STACK_GLOBAL
        + A.su(touch_cmd(canary))
        + A.TUPLE1
        + A.REDUCE
        + A.STOP
    )
    a = assert_flagged(data, canary)
    assert a.globals[0].qualname == "posix.system"
    assert a.globals[0].opcode == "STACK_GLOBAL"


@pytest.mark.parametrize(
    "enc",
    [A.string, A.sbs, A.binstring, A.uni, A.bu, A.bu8, A.su],
    ids=["STRING", "SHORT_BINSTRING", "BINSTRING", "UNICODE", "BINUNICODE", "BINUNICODE8", "SHORT"],
)
def test_stack_global_strings_from_any_string_opcode(enc: object, canary: Path) -> None:
    assert callable(enc)
    data = (
        A.proto(4)
        + enc("subprocess")
        + A.MEMOIZE
        + enc("check_call")
        + A.MEMOIZE
        + A.STACK_GLOBAL
        + A.MARK
        + A.MARK
        + A.su("touch")
        + A.su(str(canary))
        + b"l"
        + A.TUPLE
        + A.REDUCE
        + A.STOP
    )
    a = assert_flagged(data, canary)
    assert a.globals[0].qualname == "subprocess.check_call"


def test_stack_global_with_non_str_operand_is_malformed(canary: Path) -> None:
    data = A.proto(4) + A.su("os") + A.sbytes(b"system") + A.STACK_GLOBAL + A.STOP
    a = analyze_pickle(data)
    assert "TWS-PKL-MALFORMED" in rules(a)
    assert not canary.exists()


def test_get_put_text_memo(canary: Path) -> None:
    data = (
        A.glob("os", "system")
        + A.put(5)
        + A.POP
        + A.get(5)
        + A.MARK
        + A.string(touch_cmd(canary))
        + A.TUPLE
        + A.REDUCE
        + A.STOP
    )
    assert_flagged(data, canary)


def test_inst_opcode(canary: Path) -> None:
    data = A.MARK + A.string(touch_cmd(canary)) + A.inst("os", "system") + A.STOP
    a = assert_flagged(data, canary)
    assert a.globals[0].opcode == "INST"


def test_inst_without_mark_fails_before_import(canary: Path) -> None:
    a = analyze_pickle(A.inst("os", "system") + A.STOP)
    assert rules(a) == {"TWS-PKL-MALFORMED"}
    assert not a.globals


def test_obj_opcode(canary: Path) -> None:
    data = A.MARK + A.glob("os", "system") + A.su(touch_cmd(canary)) + A.OBJ + A.STOP
    assert_flagged(data, canary)


def test_newobj_and_newobj_ex(canary: Path) -> None:
    for op in (A.EMPTY_TUPLE + A.NEWOBJ, A.EMPTY_TUPLE + A.EMPTY_DICT + A.NEWOBJ_EX):
        data = A.proto(4) + A.glob("subprocess", "Popen") + op + A.STOP
        assert_flagged(data, canary)


def test_dotted_attribute_path_to_globals(canary: Path) -> None:
    # protocol 4 resolves dotted names: Linear.__init__.__globals__ reaches a module namespace
    data = A.proto(4) + A.su("torch.nn.modules.linear") + A.su("Linear.__init__.__globals__")
    a = assert_flagged(data + A.STACK_GLOBAL + A.STOP, canary)
    assert "special attribute" in a.globals[0].reason


def test_dotted_path_into_dangerous_module(canary: Path) -> None:
    data = A.proto(4) + A.glob("torch", "serialization.load") + A.STOP
    a = assert_flagged(data, canary)
    assert a.globals[0].verdict is Verdict.DANGEROUS


def test_fix_imports_maps_python2_names(canary: Path) -> None:
    data = A.proto(2) + A.call_global("__builtin__", "eval", "1") + A.STOP
    a = assert_flagged(data, canary)
    assert a.globals[0].qualname == "builtins.eval"


def test_protocol_3_does_not_map_python2_names() -> None:
    a = analyze_pickle(A.proto(3) + A.glob("__builtin__", "set") + A.STOP)
    # Python 3 would try to import a module literally named __builtin__: not allowlisted.
    assert a.globals[0].qualname == "__builtin__.set"
    assert a.globals[0].verdict is not Verdict.SAFE


def test_unknown_global_fails_at_high() -> None:
    a = analyze_pickle(A.proto(2) + A.call_global("mylib.models", "Net") + A.STOP)
    (f,) = [f for f in a.findings if f.rule_id == "TWS-PKL-UNKNOWN"]
    assert f.severity is Severity.HIGH
    assert a.globals[0].verdict is Verdict.UNKNOWN


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "getattr"),
        ("builtins", "exec"),
        ("builtins", "__import__"),
        ("importlib", "import_module"),
        ("pkgutil", "resolve_name"),
        ("operator", "attrgetter"),
        ("operator", "methodcaller"),
        ("functools", "partial"),
        ("functools", "reduce"),
        ("types", "CodeType"),
        ("types", "FunctionType"),
        ("marshal", "loads"),
        ("torch", "load"),
        ("numpy", "load"),
        ("joblib", "load"),
        ("pickle", "loads"),
        ("_pickle", "load"),
        ("dill", "loads"),
        ("pip", "main"),
        ("runpy", "_run_code"),
        ("bdb", "Bdb.run"),
        ("cProfile", "run"),
        ("timeit", "timeit"),
        ("code", "InteractiveInterpreter.runsource"),
        ("idlelib.pyshell", "ModifiedInterpreter.runcode"),
        ("lib2to3.pgen2.pgen", "ParserGenerator"),
        ("distutils.spawn", "spawn"),
        ("ctypes", "CDLL"),
        ("asyncio.subprocess", "create_subprocess_shell"),
        ("pty", "spawn"),
        ("_posixsubprocess", "fork_exec"),
        ("numpy.testing._private.utils", "runstring"),
        ("torch.utils.cpp_extension", "load_inline"),
        ("torch._inductor.codecache", "compile_file"),
        ("torch.jit", "load"),
        ("torch.hub", "load"),
        ("shutil", "rmtree"),
        ("socket", "create_connection"),
        ("webbrowser", "open"),
        ("sys", "modules"),
    ],
)
def test_named_dangerous_globals(module: str, name: str) -> None:
    a = analyze_pickle(A.proto(4) + A.su(module) + A.su(name) + A.STACK_GLOBAL + A.STOP)
    assert a.globals[0].verdict is Verdict.DANGEROUS, a.globals[0]
    assert {f.severity for f in a.findings} == {Severity.CRITICAL}


# -- extension registry, memo, frames, streams --------------------------------------------------


@pytest.mark.parametrize(
    "op", [A.ext1(1), A.ext2(300), A.ext4(70000)], ids=["EXT1", "EXT2", "EXT4"]
)
def test_ext_opcodes_unregistered(op: bytes, canary: Path) -> None:
    data = A.proto(2) + op + A.MARK + A.su(touch_cmd(canary)) + A.TUPLE + A.REDUCE + A.STOP
    a = analyze_pickle(data)
    assert "TWS-PKL-EXT" in rules(a)
    assert a.max_severity is not None and a.max_severity >= Severity.HIGH
    assert not canary.exists()


def test_ext_opcode_resolves_through_copyreg_registry() -> None:
    import copyreg

    copyreg.add_extension("os", "system", 0x7FF0)
    try:
        a = analyze_pickle(A.proto(2) + A.ext2(0x7FF0) + A.STOP)
    finally:
        copyreg.remove_extension("os", "system", 0x7FF0)
    assert a.globals[0].qualname == "os.system"
    assert "TWS-PKL-DANGEROUS" in rules(a)


def test_memo_get_of_undefined_key() -> None:
    for op in (A.binget(9), A.long_binget(9), A.get(9)):
        a = analyze_pickle(A.proto(2) + op + A.STOP)
        assert "TWS-PKL-MEMO-UNDEFINED" in rules(a)
        assert not a.complete


def test_frame_shorter_than_contents(canary: Path) -> None:
    body = A.call_global("os", "system", touch_cmd(canary)) + A.STOP
    data = A.proto(4) + A.frame(body, declared=5)
    a = assert_flagged(data, canary)
    assert "TWS-PKL-FRAME" in rules(a)


def test_frame_longer_than_data_is_truncated(canary: Path) -> None:
    body = A.call_global("os", "system", touch_cmd(canary)) + A.STOP
    a = analyze_pickle(A.proto(4) + A.frame(body, declared=len(body) + 100))
    assert "TWS-PKL-TRUNCATED" in rules(a)


def test_frame_declaring_more_than_it_holds_before_stop(canary: Path) -> None:
    body = A.NONE + A.STOP
    data = A.proto(4) + A.frame(body, declared=len(body) + 3) + b"NNN"
    a = analyze_pickle(data)
    assert "TWS-PKL-FRAME" in rules(a)


def test_well_formed_frames_are_clean() -> None:
    data = pickle.dumps({"a": list(range(10000))}, protocol=5)
    a = analyze_pickle(data)
    assert a.findings == ()
    assert a.complete


def test_second_pickle_in_stream_is_analysed(canary: Path) -> None:
    data = (
        pickle.dumps({"ok": 1}, protocol=2)
        + A.proto(2)
        + A.call_global("os", "system", "x")
        + A.STOP
    )
    a = assert_flagged(data, canary)
    assert a.pickles == 2


def test_payload_before_garbage_is_reported(canary: Path) -> None:
    # No STOP: Python runs os.system and only then fails on the garbage byte.
    data = A.proto(2) + A.call_global("os", "system", touch_cmd(canary)) + b"\xff\xfe garbage"
    a = assert_flagged(data, canary)
    assert "TWS-PKL-MALFORMED" in rules(a)
    assert not a.complete


def test_unparseable_trailing_data_is_a_finding() -> None:
    data = pickle.dumps([1, 2, 3], protocol=4) + b"\x00\x01 junk that is not a pickle"
    a = analyze_pickle(data)
    assert rules(a) == {"TWS-PKL-TRAILING"}
    (f,) = a.findings
    assert f.severity is Severity.MEDIUM


def test_truncated_stream_fails_closed() -> None:
    data = pickle.dumps({"a": [1, 2, 3]}, protocol=4)
    for cut in (1, 5, len(data) - 1):
        a = analyze_pickle(data[:cut])
        assert "TWS-PKL-TRUNCATED" in rules(a), cut
        assert a.max_severity == Severity.HIGH


def test_empty_input_is_truncated() -> None:
    assert "TWS-PKL-TRUNCATED" in rules(analyze_pickle(b""))


def test_proto_in_the_middle_is_reported() -> None:
    a = analyze_pickle(A.proto(2) + A.NONE + A.proto(4) + A.POP + A.NONE + A.STOP)
    assert "TWS-PKL-PROTOCOL" in rules(a)


def test_unsupported_protocol() -> None:
    assert "TWS-PKL-MALFORMED" in rules(analyze_pickle(b"\x80\x09N."))


# -- provenance --------------------------------------------------------------------------------


def test_call_of_computed_value(canary: Path) -> None:
    # collections.OrderedDict() is safe, but calling its *result* hides the real callee.
    data = (
        A.proto(2)
        + A.glob("collections", "OrderedDict")
        + A.EMPTY_TUPLE
        + A.REDUCE
        + A.su("x")
        + A.TUPLE1
        + A.REDUCE
        + A.STOP
    )
    a = assert_flagged(data, canary, "TWS-PKL-CALL-COMPUTED")
    assert all(g.verdict is Verdict.SAFE for g in a.globals)


def test_build_on_imported_global_is_monkeypatching(canary: Path) -> None:
    # BUILD with a slot-state dict on a class sets class attributes.
    data = (
        A.proto(2)
        + A.glob("collections", "OrderedDict")
        + A.NONE
        + A.EMPTY_DICT
        + A.su("__repr__")
        + A.NONE
        + A.SETITEM
        + A.TUPLE2
        + A.BUILD
        + A.STOP
    )
    assert_flagged(data, canary, "TWS-PKL-MUTATE-GLOBAL")


def test_setitem_on_imported_global(canary: Path) -> None:
    data = A.proto(2) + A.glob("collections", "OrderedDict") + A.su("k") + A.NONE + A.SETITEM
    assert_flagged(data + A.STOP, canary, "TWS-PKL-MUTATE-GLOBAL")


def test_build_on_object_of_unknown_class(canary: Path) -> None:
    data = (
        A.proto(2)
        + A.glob("evil.module", "Gadget")
        + A.EMPTY_TUPLE
        + A.NEWOBJ
        + A.EMPTY_DICT
        + A.BUILD
        + A.STOP
    )
    assert_flagged(data, canary, "TWS-PKL-BUILD-UNSAFE")


def test_persistent_ids_are_recorded() -> None:
    data = (
        A.proto(2)
        + A.MARK
        + A.su("storage")
        + A.glob("torch", "FloatStorage")
        + A.su("0")
        + A.su("cpu")
        + A.binint1(4)
        + A.TUPLE
        + A.BINPERSID
        + A.STOP
    )
    a = analyze_pickle(data)
    assert a.findings == ()
    assert a.persistent_ids == (["storage", "torch.FloatStorage", "0", "cpu", 4],)


def test_text_persid_is_recorded() -> None:
    a = analyze_pickle(b"P123\n.")
    assert a.persistent_ids == ("123",)


# -- stack discipline as _pickle.c does it -------------------------------------------------------


def test_pop_removes_a_mark_first() -> None:
    a = analyze_pickle(A.proto(2) + A.NONE + A.MARK + A.POP + A.STOP)
    assert a.findings == ()


def test_underflow_below_mark_is_malformed() -> None:
    a = analyze_pickle(A.proto(2) + A.NONE + A.MARK + A.TUPLE1 + A.STOP)
    assert "TWS-PKL-MALFORMED" in rules(a)


def test_odd_setitems_is_malformed() -> None:
    a = analyze_pickle(A.proto(2) + A.EMPTY_DICT + A.MARK + A.NONE + A.SETITEMS + A.STOP)
    assert "TWS-PKL-MALFORMED" in rules(a)


def test_invalid_opcode_is_malformed() -> None:
    a = analyze_pickle(A.proto(2) + b"\xf0" + A.STOP)
    (f,) = a.findings
    assert f.rule_id == "TWS-PKL-MALFORMED"
    assert f.evidence["offset"] == 2


# -- limits ------------------------------------------------------------------------------------


def test_opcode_limit() -> None:
    data = A.proto(2) + (A.NONE + A.POP) * 40000 + A.NONE + A.STOP
    a = analyze_pickle(data, limits=Limits(max_opcodes=20000))
    assert "TWS-PKL-LIMIT" in rules(a)


def test_stack_depth_limit() -> None:
    data = A.proto(2) + A.NONE * 200 + A.STOP
    a = analyze_pickle(data, limits=Limits(max_stack_depth=100))
    assert "TWS-PKL-LIMIT" in rules(a)


def test_nesting_limit() -> None:
    a = analyze_pickle(A.proto(2) + A.MARK * 50 + A.STOP, limits=Limits(max_nesting=10))
    assert "TWS-PKL-LIMIT" in rules(a)


def test_memo_limit() -> None:
    a = analyze_pickle(
        A.proto(2) + A.NONE + A.long_binput(5000) + A.STOP, limits=Limits(max_memo=100)
    )
    assert "TWS-PKL-LIMIT" in rules(a)


# -- clean data written by the real pickler --------------------------------------------------


CLEAN_OBJECTS: list[object] = [
    {"a": 1, "b": [1.5, "x", b"raw", None, True]},
    collections.OrderedDict(w=1),
    collections.defaultdict(list),
    collections.deque([1, 2]),
    collections.Counter("abc"),
    {1, 2},
    frozenset({3}),
    complex(1, 2),
    slice(1, 9, 2),
    range(3),
    bytearray(b"xy"),
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    datetime.timedelta(days=2),
    decimal.Decimal("1.25"),
    fractions.Fraction(1, 3),
    pathlib.PurePosixPath("/x/y"),
    random.Random(3).getstate(),  # noqa: S311 - RNG state is the data under test
    2**200,
]


@pytest.mark.parametrize("protocol", range(6))
def test_clean_python_objects_all_protocols(protocol: int) -> None:
    import argparse

    rng = random.Random(1)  # noqa: S311 - RNG state is the data under test
    objs = [*CLEAN_OBJECTS, argparse.Namespace(lr=0.1), rng]
    a = analyze_pickle(pickle.dumps(objs, protocol=protocol))
    assert a.findings == (), [f.to_dict() for f in a.findings]
    assert a.complete
    assert a.pickles == 1
    assert all(g.verdict is Verdict.SAFE for g in a.globals)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_clean_numpy_objects(protocol: int) -> None:
    np = pytest.importorskip("numpy")
    objs = [
        np.arange(6).reshape(2, 3),
        np.float32(1.5),
        np.dtype("<U3"),
        np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]),
        np.random.RandomState(0),
        np.random.default_rng(0),
        np.ma.masked_array([1, 2], mask=[0, 1]),
    ]
    a = analyze_pickle(pickle.dumps(objs, protocol=protocol))
    assert a.findings == (), [f.to_dict() for f in a.findings]


def test_looks_like_pickle() -> None:
    assert looks_like_pickle(pickle.dumps(1, protocol=2))
    assert looks_like_pickle(pickle.dumps([1], protocol=0))
    assert not looks_like_pickle(b"PK\x03\x04")
    assert not looks_like_pickle(b"\x80\x07")


def test_policy_allow_override_makes_global_safe() -> None:
    data = A.proto(2) + A.glob("mylib", "Net") + A.STOP
    a = analyze_pickle(data, policy=Policy.default().with_overrides(allow=["mylib.Net"]))
    assert a.findings == ()


# -- the payloads are real: Python itself would run them ------------------------------------------


def test_payloads_would_really_execute(tmp_path: Path) -> None:
    """Guards the tests above against payloads that would be harmless by accident."""
    canary = tmp_path / "executed"
    payload = (
        A.proto(4)
        + A.su("posix")
        + A.binput(1)
        + A.POP
        + A.su("system")
        + A.binput(2)
        + A.POP
        + A.binget(1)
        + A.binget(2)
        + A.STACK_GLOBAL
        + A.su(f"touch {canary}")
        + A.TUPLE1
        + A.REDUCE
        + b"\xff"
    )
    a = analyze_pickle(payload)
    assert "TWS-PKL-DANGEROUS" in rules(a)
    script = (
        "import pickle,sys\n"
        "try:\n    pickle.loads(sys.stdin.buffer.read())\n"
        "except Exception:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", script], input=payload, check=True, timeout=60)
    assert canary.exists()  # the deliberate execution in a child process, not by the scanner


def test_global_on_a_last_line_without_newline_still_imports(canary: Path) -> None:
    # pickle.load(file) imports "timeit" here (the last byte stands in for the newline).
    a = analyze_pickle(A.glob("os", "system")[:-1] + b"X")
    assert a.globals[0].qualname == "os.system"
    assert {"TWS-PKL-DANGEROUS", "TWS-PKL-TRUNCATED"} <= rules(a)
    assert not canary.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_real_tensor_views_of_every_shape_scan_clean(zip_format: bool) -> None:
    """The tensor bounds check (a view outside its storage, or numbers it cannot read) reports
    nothing on what torch.save writes: empty, transposed, strided, 0-d, quantized tensors."""
    import io
    import warnings

    import torch

    from trainwarden.scan import scan_bytes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor creation is deprecated in torch
        quantized = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    base = torch.arange(12.0)
    objs = {
        "empty": torch.zeros(0, 3),
        "transposed": base.reshape(3, 4).t(),
        "strided": base[2:11:3],
        "scalar": torch.tensor(3.0),
        "parameter": torch.nn.Parameter(torch.ones(2)),
        "quantized": quantized,
        "bf16": torch.ones(3, dtype=torch.bfloat16),
    }
    buf = io.BytesIO()
    torch.save(objs, buf, _use_new_zipfile_serialization=zip_format)
    assert scan_bytes(buf.getvalue(), "views.pt").findings == ()
