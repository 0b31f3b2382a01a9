"""Each call decision of the scanner's pickle VM, pinned by the payload a broken one lets by.

Written against bench/mutation.py's ``pickle-vm-calls`` and ``pickle-vm-args`` targets: every
test hands :func:`analyze_pickle` a pickle written opcode by opcode and asserts the exact list of
findings (rule, severity, message, location with the opcode's offset, evidence), so a decision
that goes missing, moves to another opcode, changes severity or names another global fails.
Nothing here is ever unpickled: the payloads only name globals.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.findings import Severity
from trainwarden.scan import Policy, Verdict, analyze_pickle
from trainwarden.scan._pickle_vm import PickleAnalysis

LOC = "m.pkl"
P2 = A.proto(2)
CRIT = Severity.CRITICAL
HIGH = Severity.HIGH
MED = Severity.MEDIUM

Row = tuple[str, Severity, str, str, dict[str, Any]]


def scan(data: bytes, policy: Policy | None = None) -> PickleAnalysis:
    a = analyze_pickle(data, policy=policy, location=LOC)
    assert a.complete, [f.to_dict() for f in a.findings]
    return a


def rows(data: bytes, policy: Policy | None = None) -> list[Row]:
    return [
        (f.rule_id, f.severity, f.message, f.location, dict(f.evidence))
        for f in scan(data, policy).findings
    ]


def unsafe(msg: str, off: int, qual: str, use: str) -> Row:
    return (
        "TWS-PKL-CALL-UNSAFE",
        HIGH,
        msg,
        f"{LOC}@{off}",
        {"global_": qual, "use": use, "offset": off},
    )


def not_callable(opname: str, qual: str, off: int) -> Row:
    return unsafe(
        f"{opname} calls {qual}, which is allowlisted as a value but not as something a "
        "pickle may call",
        off,
        qual,
        "call",
    )


def not_allocatable(opname: str, qual: str, off: int) -> Row:
    return unsafe(
        f"{opname} allocates (cls.__new__) {qual}, which is allowlisted as a value but not as "
        "something a pickle may new",
        off,
        qual,
        "new",
    )


def not_buildable(qual: str, off: int) -> Row:
    return unsafe(
        f"BUILD applies BUILD state (__setstate__) to {qual}, which is allowlisted as a value "
        "but not as something a pickle may build",
        off,
        qual,
        "build",
    )


def unknown(qual: str, off: int, opcode: str = "GLOBAL", sev: Severity = HIGH) -> Row:
    return (
        "TWS-PKL-UNKNOWN",
        sev,
        f"imports {qual}, which is not on the allowlist",
        f"{LOC}@{off}",
        {"global_": qual, "opcode": opcode, "offset": off},
    )


def g(qual: str) -> bytes:
    module, name = qual.rsplit(".", 1)
    return A.glob(module, name)


def call(pre: bytes, func: bytes, *args: bytes) -> tuple[bytes, int]:
    """``pre`` then ``func(*args)`` with MARK ... TUPLE REDUCE; returns (bytes, REDUCE offset)."""
    body = pre + func + A.MARK + b"".join(args) + A.TUPLE
    return body + A.REDUCE, len(body)


def tup(*items: bytes) -> bytes:
    return A.MARK + b"".join(items) + A.TUPLE


# -- import_global: what is recorded and reported for each name ------------------------------


def test_a_dangerous_global_is_critical_with_its_reason_and_opcode() -> None:
    data = P2 + g("os.system") + A.STOP
    a = scan(data)
    assert a.globals[0] == dataclasses.replace(
        a.globals[0],
        module="os",
        name="system",
        offset=2,
        opcode="GLOBAL",
        verdict=Verdict.DANGEROUS,
    )
    reason = Policy.default().classify("os", "system")[1]
    assert a.globals[0].reason == reason
    assert rows(data) == [
        (
            "TWS-PKL-DANGEROUS",
            CRIT,
            f"imports dangerous global os.system: {reason}",
            f"{LOC}@2",
            {"global_": "os.system", "opcode": "GLOBAL", "offset": 2},
        )
    ]


def test_an_unknown_global_is_reported_at_the_policys_unknown_severity() -> None:
    data = P2 + g("evil.thing") + A.STOP
    assert rows(data) == [unknown("evil.thing", 2)]
    medium = dataclasses.replace(Policy.default(), unknown_severity=MED)
    assert rows(data, medium) == [unknown("evil.thing", 2, sev=MED)]
    crit = dataclasses.replace(Policy.default(), unknown_severity=CRIT)
    assert rows(data, crit) == [unknown("evil.thing", 2, sev=CRIT)]
    ref = scan(data).globals[0]
    assert (ref.qualname, ref.verdict, ref.reason) == (
        "evil.thing",
        Verdict.UNKNOWN,
        "not on the allowlist",
    )


def test_a_safe_global_named_but_not_called_is_recorded_without_a_finding() -> None:
    # relu is allowlisted as a value (a layer attribute): naming it is fine, calling it is not
    data = P2 + g("torch.nn.functional.relu") + A.STOP
    a = scan(data)
    assert a.findings == ()
    assert [(r.qualname, r.offset, r.opcode, r.verdict) for r in a.globals] == [
        ("torch.nn.functional.relu", 2, "GLOBAL", Verdict.SAFE)
    ]


def test_each_non_safe_global_is_reported_once_however_often_it_is_imported() -> None:
    first = P2 + g("evil.thing") + A.POP
    second = first + g("evil.other") + A.POP
    third = second + g("evil.thing") + A.POP
    fourth = third + A.sg("evil", "other")
    data = fourth + A.STOP
    assert rows(data) == [unknown("evil.thing", 2), unknown("evil.other", len(first))]
    assert [(r.qualname, r.offset, r.opcode) for r in scan(data).globals] == [
        ("evil.thing", 2, "GLOBAL"),
        ("evil.other", len(first), "GLOBAL"),
        ("evil.thing", len(second), "GLOBAL"),
        ("evil.other", len(fourth) - 1, "STACK_GLOBAL"),
    ]


def test_a_dangerous_and_an_unknown_global_are_both_reported() -> None:
    first = P2 + g("os.system") + A.POP
    data = first + g("evil.thing") + A.STOP
    got = rows(data)
    assert [(r[0], r[3]) for r in got] == [
        ("TWS-PKL-DANGEROUS", f"{LOC}@2"),
        ("TWS-PKL-UNKNOWN", f"{LOC}@{len(first)}"),
    ]


@pytest.mark.parametrize("proto", [0, 1, 2])
def test_python2_names_are_mapped_below_protocol_3(proto: int) -> None:
    # __builtin__.xrange is builtins.range for a protocol 0-2 unpickler (fix_imports)
    head = A.proto(proto) if proto else b""
    body = g("__builtin__.xrange") + tup(A.binint1(3))
    data = head + body + A.REDUCE + A.STOP
    a = scan(data)
    assert a.findings == ()
    assert [(r.module, r.name, r.offset, r.verdict) for r in a.globals] == [
        ("builtins", "range", len(head), Verdict.SAFE)
    ]


@pytest.mark.parametrize("proto", [3, 4])
def test_python2_names_are_not_mapped_from_protocol_3(proto: int) -> None:
    # copy_reg only exists for a protocol 0-2 unpickler (as copyreg)
    data = A.proto(proto) + g("copy_reg._reconstructor") + A.STOP
    a = scan(data)
    assert [(r.module, r.name, r.verdict) for r in a.globals] == [
        ("copy_reg", "_reconstructor", Verdict.UNKNOWN)
    ]
    assert rows(data) == [unknown("copy_reg._reconstructor", 2)]


def test_a_mapped_python2_name_is_reported_under_its_python3_name() -> None:
    # copy_reg._reconstructor is copyreg._reconstructor under protocol 2: its argument checks
    # apply under the old spelling too
    data, off = call(
        P2, g("copy_reg._reconstructor"), g("torch.Tensor"), g("builtins.object"), A.NONE
    )
    assert rows(data + A.STOP) == [
        not_allocatable("REDUCE copyreg._reconstructor", "torch.Tensor", off)
    ]


# -- check_call: calls of values computed inside the pickle ----------------------------------


def computed(opname: str, callee: str, off: int) -> Row:
    return (
        "TWS-PKL-CALL-COMPUTED",
        HIGH,
        f"{opname} calls {callee}, a value computed inside the pickle, not an imported global",
        f"{LOC}@{off}",
        {"callee": callee, "opcode": opname, "offset": off},
    )


def test_reduce_of_a_call_result_is_a_computed_call() -> None:
    made, _ = call(P2, g("collections.OrderedDict"))
    data, off = call(made, b"")
    assert rows(data + A.STOP) == [computed("REDUCE", "<result of collections.OrderedDict>", off)]


def test_reduce_of_a_string_is_a_computed_call() -> None:
    data, off = call(P2, A.su("os.system"))
    assert rows(data + A.STOP) == [computed("REDUCE", "'os.system'", off)]


def test_newobj_newobj_ex_and_obj_of_computed_values_are_computed_calls() -> None:
    made, _ = call(P2, g("collections.OrderedDict"))
    newobj = made + A.EMPTY_TUPLE
    data = newobj + A.NEWOBJ + A.POP
    newobj_ex = data + A.su("x") + A.EMPTY_TUPLE + A.EMPTY_DICT
    data = newobj_ex + A.NEWOBJ_EX + A.POP
    obj = data + A.MARK + A.EMPTY_LIST + A.NONE
    data = obj + A.OBJ + A.STOP
    assert rows(data) == [
        computed("NEWOBJ", "<result of collections.OrderedDict>", len(newobj)),
        computed("NEWOBJ_EX", "'x'", len(newobj_ex)),
        computed("OBJ", "<list>", len(obj)),
    ]


def test_a_global_fetched_from_the_memo_is_still_the_global() -> None:
    # the memo hands back the same symbolic global: its use checks still apply
    pre = P2 + g("torch.nn.functional.relu") + A.binput(3) + A.POP + A.binget(3)
    data, off = call(pre, b"", A.NONE)
    assert rows(data + A.STOP) == [not_callable("REDUCE", "torch.nn.functional.relu", off)]


def test_a_call_result_fetched_from_the_memo_is_still_computed() -> None:
    made, _ = call(P2, g("collections.OrderedDict"))
    pre = made + A.long_binput(9) + A.POP + A.long_binget(9)
    data, off = call(pre, b"")
    assert rows(data + A.STOP) == [computed("REDUCE", "<result of collections.OrderedDict>", off)]


# -- check_use: the closed constructor set per opcode ----------------------------------------


def test_reduce_of_a_value_only_global_is_unsafe() -> None:
    data, off = call(P2, g("torch.nn.functional.relu"), A.NONE)
    assert rows(data + A.STOP) == [not_callable("REDUCE", "torch.nn.functional.relu", off)]


def test_reduce_of_an_allocatable_but_not_callable_class_is_unsafe() -> None:
    # argparse.Namespace may be allocated (cls.__new__) but not called with arguments
    data, off = call(P2, g("argparse.Namespace"))
    assert rows(data + A.STOP) == [not_callable("REDUCE", "argparse.Namespace", off)]


def test_reduce_of_a_callable_is_clean() -> None:
    data, _ = call(P2, g("collections.OrderedDict"))
    assert rows(data + A.STOP) == []


def test_unknown_and_dangerous_globals_called_get_no_use_finding_besides_their_import() -> None:
    data, _ = call(P2, g("evil.thing"), A.NONE)
    assert rows(data + A.STOP) == [unknown("evil.thing", 2)]
    data, _ = call(P2, g("os.system"), A.su("true"))
    assert [r[0] for r in rows(data + A.STOP)] == ["TWS-PKL-DANGEROUS"]


def test_newobj_of_a_callable_but_not_allocatable_class_is_unsafe() -> None:
    # datetime.datetime may be called; datetime.__new__ with arbitrary arguments is not reviewed
    pre = P2 + g("datetime.datetime") + A.EMPTY_TUPLE
    assert rows(pre + A.NEWOBJ + A.STOP) == [
        not_allocatable("NEWOBJ", "datetime.datetime", len(pre))
    ]
    pre = P2 + g("datetime.datetime") + A.EMPTY_TUPLE + A.EMPTY_DICT
    assert rows(pre + A.NEWOBJ_EX + A.STOP) == [
        not_allocatable("NEWOBJ_EX", "datetime.datetime", len(pre))
    ]


def test_newobj_of_an_allocatable_class_is_clean_whatever_its_arguments() -> None:
    pre = P2 + g("torch.nn.modules.linear.Linear") + tup(g("torch.nn.functional.relu"))
    assert rows(pre + A.NEWOBJ + A.STOP) == []
    pre = P2 + g("argparse.Namespace") + A.EMPTY_TUPLE + A.EMPTY_DICT
    assert rows(pre + A.NEWOBJ_EX + A.STOP) == []


def test_inst_and_obj_call_with_arguments_and_allocate_without() -> None:
    # INST/OBJ with arguments call the class; without, they allocate it (cls.__new__)
    pre = P2 + A.MARK + A.NONE
    assert rows(pre + A.inst("argparse", "Namespace") + A.STOP) == [
        not_callable("INST", "argparse.Namespace", len(pre))
    ]
    pre = P2 + A.MARK
    assert rows(pre + A.inst("datetime", "datetime") + A.STOP) == [
        not_allocatable("INST", "datetime.datetime", len(pre))
    ]
    assert rows(P2 + A.MARK + A.inst("argparse", "Namespace") + A.STOP) == []
    assert rows(P2 + A.MARK + A.NONE + A.inst("datetime", "datetime") + A.STOP) == []
    pre = P2 + A.MARK + g("argparse.Namespace") + A.NONE
    assert rows(pre + A.OBJ + A.STOP) == [not_callable("OBJ", "argparse.Namespace", len(pre))]
    pre = P2 + A.MARK + g("datetime.datetime")
    assert rows(pre + A.OBJ + A.STOP) == [not_allocatable("OBJ", "datetime.datetime", len(pre))]
    assert rows(P2 + A.MARK + g("argparse.Namespace") + A.OBJ + A.STOP) == []


def test_inst_and_obj_arguments_go_through_the_argument_checks() -> None:
    """INST and OBJ call the class with the items above their mark, as REDUCE calls it with a
    tuple: a defaultdict factory or an allocator's class handed that way is checked the same."""
    dd = "collections.defaultdict"
    relu = g("torch.nn.functional.relu")
    factory = "defaultdict with factory torch.nn.functional.relu, called on every missing key"
    pre = P2 + A.MARK + relu
    assert rows(pre + A.inst("collections", "defaultdict") + A.STOP) == [
        unsafe(factory, len(pre), dd, "call")
    ]
    pre = P2 + A.MARK + g(dd) + relu
    assert rows(pre + A.OBJ + A.STOP) == [unsafe(factory, len(pre), dd, "call")]
    assert (
        rows(P2 + A.MARK + g("builtins.list") + A.inst("collections", "defaultdict") + A.STOP) == []
    )
    assert rows(P2 + A.MARK + g(dd) + g("builtins.list") + A.OBJ + A.STOP) == []
    ctor = "numpy.random._pickle.__generator_ctor"
    pre = P2 + A.MARK + g(ctor) + A.su("MT19937") + relu
    assert rows(pre + A.OBJ + A.STOP) == [
        unsafe(
            f"{ctor} would call torch.nn.functional.relu (only numpy's own bit generator "
            "constructor)",
            len(pre),
            ctor,
            "call",
        )
    ]
    alloc = "copyreg._reconstructor"
    pre = P2 + A.MARK + g("torch.Tensor") + g("builtins.object") + A.NONE
    assert rows(pre + A.inst("copyreg", "_reconstructor") + A.STOP) == [
        not_allocatable(f"INST {alloc}", "torch.Tensor", len(pre))
    ]
    pre = P2 + A.MARK + g(alloc) + g("collections.OrderedDict") + g("builtins.object") + A.NONE
    assert rows(pre + A.OBJ + A.STOP) == []


def test_an_inst_global_is_recorded_under_inst() -> None:
    data = P2 + A.MARK + A.inst("evil", "thing") + A.STOP
    assert rows(data) == [unknown("evil.thing", 3, opcode="INST")]


def test_a_callable_handed_arguments_computed_inside_the_pickle_is_unsafe() -> None:
    made, _ = call(P2, g("collections.OrderedDict"))
    pre = made + A.POP + g("builtins.set") + A.EMPTY_LIST
    assert rows(pre + A.REDUCE + A.STOP) == [
        unsafe(
            "REDUCE calls builtins.set with arguments computed inside the pickle",
            len(pre),
            "builtins.set",
            "call",
        )
    ]


def test_user_allowed_globals_are_the_users_decision() -> None:
    exact = Policy.default().with_overrides(allow=["torch.nn.functional.relu"])
    data, _ = call(P2, g("torch.nn.functional.relu"), A.NONE)
    assert rows(data + A.STOP, exact) == []
    wild = Policy.default().with_overrides(allow=["mylib.*"])
    data, _ = call(P2, g("mylib.make"), A.NONE)
    assert rows(data + A.STOP, wild) == []
    # the user's entry covers that name only: another value-only global is still checked
    data, off = call(P2, g("torch.nn.functional.gelu"), A.NONE)
    assert rows(data + A.STOP, exact) == [not_callable("REDUCE", "torch.nn.functional.gelu", off)]


def test_the_same_unsafe_call_twice_is_reported_once() -> None:
    once, off = call(P2, g("torch.nn.functional.relu"), A.NONE)
    twice, _ = call(once + A.POP, g("torch.nn.functional.relu"), A.NONE)
    assert rows(twice + A.STOP) == [not_callable("REDUCE", "torch.nn.functional.relu", off)]


# -- check_call_args: arguments that are classes or callables --------------------------------


@pytest.mark.parametrize(
    "allocator", ["copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"]
)
def test_copyreg_allocators_may_only_allocate_allocatable_classes(allocator: str) -> None:
    good, _ = call(P2, g(allocator), g("collections.OrderedDict"), g("builtins.object"), A.NONE)
    assert rows(good + A.STOP) == []
    bad, off = call(P2, g(allocator), g("torch.Tensor"), g("builtins.object"), A.NONE)
    assert rows(bad + A.STOP) == [not_allocatable(f"REDUCE {allocator}", "torch.Tensor", off)]
    made, _ = call(P2, g("collections.OrderedDict"))
    computed_cls, off = call(made + A.POP, g(allocator), A.su("cls"))
    assert rows(computed_cls + A.STOP) == [
        unsafe(f"{allocator} allocates a computed class", off, allocator, "new")
    ]
    empty, off = call(P2, g(allocator))
    assert rows(empty + A.STOP) == [
        unsafe(f"{allocator} allocates a computed class", off, allocator, "new")
    ]
    # an unknown class is already reported where it is imported
    other, _ = call(P2, g(allocator), g("evil.Thing"))
    assert rows(other + A.STOP) == [unknown("evil.Thing", 2 + len(g(allocator)) + 1)]


@pytest.mark.parametrize(
    ("helper", "own"),
    [
        ("sklearn.neighbors._kd_tree.newObj", "sklearn.neighbors._kd_tree.KDTree"),
        (
            "sklearn.metrics._dist_metrics.newObj",
            "sklearn.metrics._dist_metrics.EuclideanDistance64",
        ),
    ],
)
def test_sklearn_newobj_helpers_allocate_their_own_class_only(helper: str, own: str) -> None:
    good, _ = call(P2, g(helper), g(own))
    assert rows(good + A.STOP) == []
    for cls, shown in (
        (g("collections.OrderedDict"), "collections.OrderedDict"),
        (A.su(own), repr(own)),
        (b"", "None"),
    ):
        bad, off = call(P2, g(helper), cls)
        assert rows(bad + A.STOP) == [
            unsafe(f"{helper} allocates {shown} (only {own})", off, helper, "new")
        ]


REBUILD_FROM_TYPE = ["torch._tensor._rebuild_from_type", "torch._tensor._rebuild_from_type_v2"]


def _from_type(
    rebuild: str, func: bytes, new_type: bytes | None, *rest: bytes
) -> tuple[bytes, int]:
    args = (func,) if new_type is None else (func, new_type, *rest)
    return call(P2, g(rebuild), *args)


def not_ctor(rebuild: str, shown: str, off: int) -> Row:
    return unsafe(
        f"{rebuild} would call {shown}, which is not a tensor constructor", off, rebuild, "call"
    )


def not_tensor(rebuild: str, shown: str, off: int) -> Row:
    return unsafe(
        f"{rebuild} converts to {shown}, which is not a tensor class", off, rebuild, "call"
    )


@pytest.mark.parametrize("rebuild", REBUILD_FROM_TYPE)
@pytest.mark.parametrize(
    "tensor_type",
    [
        "torch.Tensor",
        "torch._tensor.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
    ],
)
def test_rebuild_from_type_converts_to_tensor_classes(rebuild: str, tensor_type: str) -> None:
    ok, _ = _from_type(
        rebuild, g("torch._utils._rebuild_tensor_v2"), g(tensor_type), A.EMPTY_TUPLE, A.EMPTY_DICT
    )
    assert rows(ok + A.STOP) == []


@pytest.mark.parametrize("rebuild", REBUILD_FROM_TYPE)
def test_rebuild_from_type_refuses_what_is_not_a_tensor_constructor_or_class(rebuild: str) -> None:
    ctor = g("torch._utils._rebuild_tensor_v2")
    t = g("torch.Tensor")
    # a value-only global as the function
    bad, off = _from_type(rebuild, g("torch.nn.functional.relu"), t, A.EMPTY_TUPLE)
    assert rows(bad + A.STOP) == [not_ctor(rebuild, "torch.nn.functional.relu", off)]
    # itself, or the other spelling of itself, as the function
    for inner in REBUILD_FROM_TYPE:
        bad, off = _from_type(rebuild, g(inner), t, A.EMPTY_TUPLE)
        assert rows(bad + A.STOP) == [not_ctor(rebuild, inner, off)]
    # a computed function
    bad, off = _from_type(rebuild, A.su("f"), t, A.EMPTY_TUPLE)
    assert rows(bad + A.STOP) == [not_ctor(rebuild, "'f'", off)]
    bad, off = call(P2, g(rebuild))
    assert rows(bad + A.STOP) == [not_ctor(rebuild, "None", off), not_tensor(rebuild, "None", off)]
    # not a tensor class to convert to
    bad, off = _from_type(rebuild, ctor, g("collections.OrderedDict"), A.EMPTY_TUPLE)
    assert rows(bad + A.STOP) == [not_tensor(rebuild, "collections.OrderedDict", off)]
    bad, off = _from_type(rebuild, ctor, A.su("torch.Tensor"), A.EMPTY_TUPLE)
    assert rows(bad + A.STOP) == [not_tensor(rebuild, "'torch.Tensor'", off)]
    bad, off = _from_type(rebuild, ctor, None)
    assert rows(bad + A.STOP) == [not_tensor(rebuild, "None", off)]


@pytest.mark.parametrize("rebuild", REBUILD_FROM_TYPE)
def test_rebuild_from_type_checks_the_call_it_makes(rebuild: str) -> None:
    t = g("torch.Tensor")
    alloc = g("copyreg._reconstructor")
    # the function's own arguments go through its own checks
    bad, off = _from_type(rebuild, alloc, t, tup(g("torch.Tensor")))
    assert rows(bad + A.STOP) == [
        not_allocatable(f"REDUCE {rebuild} copyreg._reconstructor", "torch.Tensor", off)
    ]
    bad, off = _from_type(rebuild, alloc, t, A.EMPTY_DICT)
    assert rows(bad + A.STOP) == [
        unsafe(
            f"REDUCE {rebuild} calls copyreg._reconstructor with arguments computed inside the "
            "pickle",
            off,
            "copyreg._reconstructor",
            "call",
        )
    ]
    # no argument tuple: the function is called without arguments
    bad, off = _from_type(rebuild, alloc, t)
    assert rows(bad + A.STOP) == [
        unsafe(
            "copyreg._reconstructor allocates a computed class",
            off,
            "copyreg._reconstructor",
            "new",
        )
    ]
    # an unknown function is reported where it is imported; a user-allowed one is the user's
    unk, _ = _from_type(rebuild, g("evil.make"), t, A.EMPTY_TUPLE)
    assert rows(unk + A.STOP) == [unknown("evil.make", 3 + len(g(rebuild)))]
    user = Policy.default().with_overrides(allow=["torch.nn.functional.relu"])
    ok, _ = _from_type(rebuild, g("torch.nn.functional.relu"), t, A.EMPTY_DICT)
    assert rows(ok + A.STOP, user) == []


GEN_CTORS = ["numpy.random._pickle.__generator_ctor", "numpy.random._pickle.__randomstate_ctor"]
BITGEN_CTOR = "numpy.random._pickle.__bit_generator_ctor"


@pytest.mark.parametrize("ctor", GEN_CTORS)
def test_numpy_generator_ctors_take_bit_generators_and_their_ctor_only(ctor: str) -> None:
    for args in (
        (A.su("MT19937"),),
        (A.su("PCG64"), g(BITGEN_CTOR)),
        (g("numpy.random._mt19937.MT19937"), g(BITGEN_CTOR)),
        (g("numpy.random.PCG64"), A.NONE),
        (),
    ):
        ok, _ = call(P2, g(ctor), *args)
        assert rows(ok + A.STOP) == [], args
    bad, off = call(P2, g(ctor), A.su("MT19937"), g("collections.OrderedDict"))
    assert rows(bad + A.STOP) == [
        unsafe(
            f"{ctor} would call collections.OrderedDict (only numpy's own bit generator "
            "constructor)",
            off,
            ctor,
            "call",
        )
    ]
    bad, off = call(P2, g(ctor), A.su("MT19937"), A.su("f"))
    assert rows(bad + A.STOP) == [
        unsafe(
            f"{ctor} would call 'f' (only numpy's own bit generator constructor)", off, ctor, "call"
        )
    ]
    bad, off = call(P2, g(ctor), g("collections.OrderedDict"))
    assert rows(bad + A.STOP) == [
        unsafe(f"{ctor} is handed collections.OrderedDict", off, ctor, "call")
    ]


def test_numpy_bit_generator_ctor_takes_bit_generators_only() -> None:
    for args in ((A.su("MT19937"),), (g("numpy.random.SFC64"),), ()):
        ok, _ = call(P2, g(BITGEN_CTOR), *args)
        assert rows(ok + A.STOP) == [], args
    bad, off = call(P2, g(BITGEN_CTOR), g("collections.OrderedDict"))
    assert rows(bad + A.STOP) == [
        unsafe(
            f"{BITGEN_CTOR} would call collections.OrderedDict (only numpy's own bit generators)",
            off,
            BITGEN_CTOR,
            "call",
        )
    ]
    bad, off = call(P2, g(BITGEN_CTOR), A.EMPTY_LIST)
    assert rows(bad + A.STOP) == [
        unsafe(
            f"{BITGEN_CTOR} would call <list> (only numpy's own bit generators)",
            off,
            BITGEN_CTOR,
            "call",
        )
    ]


@pytest.mark.parametrize(
    "rec", ["numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct"]
)
def test_numpy_reconstruct_builds_ndarray_classes_only(rec: str) -> None:
    for array_cls in ("numpy.ndarray", "numpy.ma.core.MaskedArray", "numpy.matrix"):
        ok, _ = call(P2, g(rec), g(array_cls), tup(A.binint1(0)), A.sbytes(b"b"))
        assert rows(ok + A.STOP) == [], array_cls
    for cls, shown in ((g("collections.OrderedDict"), "collections.OrderedDict"), (A.NONE, "None")):
        bad, off = call(P2, g(rec), cls, tup(A.binint1(0)), A.sbytes(b"b"))
        assert rows(bad + A.STOP) == [
            unsafe(
                f"{rec} builds {shown}, which is not an ndarray class it may build",
                off,
                rec,
                "call",
            )
        ]
    bad, off = call(P2, g(rec))
    assert rows(bad + A.STOP) == [
        unsafe(f"{rec} builds None, which is not an ndarray class it may build", off, rec, "call")
    ]


def test_defaultdict_factories_are_builtin_types_only() -> None:
    dd = "collections.defaultdict"
    for args in ((g("builtins.list"),), (g("builtins.int"),), (A.NONE,), ()):
        ok, _ = call(P2, g(dd), *args)
        assert rows(ok + A.STOP) == [], args
    bad, off = call(P2, g(dd), g("torch.nn.functional.relu"))
    assert rows(bad + A.STOP) == [
        unsafe(
            "defaultdict with factory torch.nn.functional.relu, called on every missing key",
            off,
            dd,
            "call",
        )
    ]
    bad, off = call(P2, g(dd), A.su("list"))
    assert rows(bad + A.STOP) == [
        unsafe("defaultdict with factory 'list', called on every missing key", off, dd, "call")
    ]


# -- check_target: writes into tensors, globals, unchecked objects ---------------------------


def _persistent(numel: int = 6) -> bytes:
    return (
        tup(A.su("storage"), g("torch.FloatStorage"), A.su("0"), A.su("cpu"), A.bint(numel))
        + A.BINPERSID
    )


def mutation(opname: str, origin: str, off: int) -> Row:
    return (
        "TWS-PKL-TENSOR-MUTATION",
        HIGH,
        f"{opname} writes into a tensor/array made by {origin} during loading "
        "(the weights_only bypass pattern of CVE-2026-24747)",
        f"{LOC}@{off}",
        {"global_": origin, "opcode": opname, "offset": off},
    )


def _writes(target: bytes) -> list[tuple[str, bytes, bytes]]:
    """(opname, before, after): each container write on ``target``."""
    return [
        ("SETITEM", target + A.su("k") + A.NONE, A.SETITEM),
        ("SETITEMS", target + A.MARK + A.su("k") + A.NONE, A.SETITEMS),
        ("APPEND", target + A.NONE, A.APPEND),
        ("APPENDS", target + A.MARK + A.NONE, A.APPENDS),
        ("ADDITEMS", target + A.MARK + A.NONE, A.ADDITEMS),
        ("BUILD", target + A.EMPTY_DICT, A.BUILD),
    ]


def test_writes_into_a_persistent_storage_are_tensor_mutations() -> None:
    for opname, before, after in _writes(P2 + _persistent()):
        assert rows(before + after + A.STOP) == [mutation(opname, "<persistent_load>", len(before))]


def test_item_writes_into_rebuilt_tensors_are_tensor_mutations_but_build_is_not() -> None:
    for maker in (
        "torch._utils._rebuild_tensor_v2",
        "torch.Size",
        "numpy._core.multiarray._reconstruct",
    ):
        made, _ = call(P2, g(maker), g("numpy.ndarray"))
        for opname, before, after in _writes(made):
            got = rows(before + after + A.STOP)
            if opname == "BUILD":
                assert got == [], maker
            else:
                assert got == [mutation(opname, maker, len(before))], (maker, opname)


def test_writes_into_other_call_results_are_not_tensor_mutations() -> None:
    made, _ = call(P2, g("collections.OrderedDict"))
    for _opname, before, after in _writes(made):
        assert rows(before + after + A.STOP) == []


def test_writes_into_an_imported_global_are_monkeypatching() -> None:
    for opname, before, after in _writes(P2 + g("collections.OrderedDict")):
        assert rows(before + after + A.STOP) == [
            (
                "TWS-PKL-MUTATE-GLOBAL",
                HIGH,
                f"{opname} modifies the imported global collections.OrderedDict itself "
                "(monkeypatching)",
                f"{LOC}@{len(before)}",
                {"global_": "collections.OrderedDict", "opcode": opname, "offset": len(before)},
            )
        ], opname


def build_unsafe(qual: str, sev: Severity, off: int) -> Row:
    return (
        "TWS-PKL-BUILD-UNSAFE",
        sev,
        f"BUILD on an object made by non-allowlisted {qual}: its __setstate__ would run",
        f"{LOC}@{off}",
        {"global_": qual, "offset": off},
    )


def test_build_on_an_object_of_a_non_allowlisted_class_runs_its_setstate() -> None:
    made, _ = call(P2, g("evil.Thing"))
    pre = made + A.EMPTY_DICT
    assert rows(pre + A.BUILD + A.STOP) == [
        unknown("evil.Thing", 2),
        build_unsafe("evil.Thing", HIGH, len(pre)),
    ]
    medium = dataclasses.replace(Policy.default(), unknown_severity=MED)
    assert rows(pre + A.BUILD + A.STOP, medium) == [
        unknown("evil.Thing", 2, sev=MED),
        build_unsafe("evil.Thing", MED, len(pre)),
    ]
    made, _ = call(P2, g("os.system"), A.su("true"))
    pre = made + A.EMPTY_DICT
    assert rows(pre + A.BUILD + A.STOP)[1:] == [build_unsafe("os.system", CRIT, len(pre))]
    # item writes are no BUILD: the object's own __setitem__ would be the unknown code
    pre = call(P2, g("evil.Thing"))[0] + A.su("k") + A.NONE
    assert rows(pre + A.SETITEM + A.STOP) == [unknown("evil.Thing", 2)]


def test_build_unsafe_is_reported_once_per_class() -> None:
    one, _ = call(P2, g("evil.Thing"))
    first = one + A.EMPTY_DICT
    two, _ = call(first + A.BUILD + A.POP, g("evil.Thing"))
    second = two + A.EMPTY_DICT
    three, _ = call(second + A.BUILD + A.POP, g("evil.Other"))
    third = three + A.EMPTY_DICT
    data = third + A.BUILD + A.STOP
    assert rows(data) == [
        unknown("evil.Thing", 2),
        build_unsafe("evil.Thing", HIGH, len(first)),
        unknown("evil.Other", len(second + A.BUILD + A.POP)),
        build_unsafe("evil.Other", HIGH, len(third)),
    ]


def test_build_on_an_object_made_by_inst_of_an_unknown_class() -> None:
    pre = P2 + A.MARK + A.inst("evil", "Thing") + A.EMPTY_DICT
    assert rows(pre + A.BUILD + A.STOP) == [
        unknown("evil.Thing", 3, opcode="INST"),
        build_unsafe("evil.Thing", HIGH, len(pre)),
    ]


# -- check_build: BUILD state on allowlisted classes -----------------------------------------


def test_build_on_a_class_without_a_reviewed_setstate_is_unsafe() -> None:
    # torch.Generator is allowlisted, but its C __setstate__ is not one the safe loader calls
    for opname, before in (
        ("NEWOBJ", P2 + g("torch.Generator") + A.EMPTY_TUPLE + A.NEWOBJ),
        ("OBJ", P2 + A.MARK + g("torch.Generator") + A.OBJ),
    ):
        pre = before + A.EMPTY_DICT
        assert rows(pre + A.BUILD + A.STOP) == [
            not_allocatable(opname, "torch.Generator", len(before) - 1),
            not_buildable("torch.Generator", len(pre)),
        ]


def test_build_on_a_buildable_class_is_clean_however_it_was_made() -> None:
    # datetime.datetime: callable and buildable, not allocatable
    made, _ = call(
        P2, g("datetime.datetime"), A.sbytes(b"\x07\xe9\x01\x01\x00\x00\x00\x00\x00\x00")
    )
    assert rows(made + A.EMPTY_DICT + A.BUILD + A.STOP) == []
    # torch.nn.Linear: allocatable and buildable, not callable
    made = P2 + g("torch.nn.modules.linear.Linear") + A.EMPTY_TUPLE + A.NEWOBJ
    assert rows(made + A.EMPTY_DICT + A.BUILD + A.STOP) == []
    made = P2 + A.MARK + g("torch.nn.modules.linear.Linear") + A.OBJ
    assert rows(made + A.EMPTY_DICT + A.BUILD + A.STOP) == []


@pytest.mark.parametrize(
    ("maker", "first"),
    [
        (
            "copyreg._reconstructor",
            "REDUCE copyreg._reconstructor allocates (cls.__new__) torch.Generator",
        ),
        ("copyreg.__newobj__", "REDUCE copyreg.__newobj__ allocates (cls.__new__) torch.Generator"),
        (
            "copyreg.__newobj_ex__",
            "REDUCE copyreg.__newobj_ex__ allocates (cls.__new__) torch.Generator",
        ),
        ("numpy._core.multiarray._reconstruct", None),
        ("numpy.core.multiarray._reconstruct", None),
        ("sklearn.neighbors._kd_tree.newObj", None),
    ],
)
def test_build_after_an_allocator_applies_state_to_the_class_it_allocated(
    maker: str, first: str | None
) -> None:
    made, off = call(P2, g(maker), g("torch.Generator"), g("builtins.object"), A.NONE)
    pre = made + A.EMPTY_DICT
    got = rows(pre + A.BUILD + A.STOP)
    assert len(got) == 2
    assert got[0][0] == "TWS-PKL-CALL-UNSAFE" and got[0][3] == f"{LOC}@{off}"
    if first is not None:
        assert got[0][2].startswith(first)
    assert got[1] == not_buildable("torch.Generator", len(pre))


def test_build_after_an_allocator_of_a_buildable_class_is_clean() -> None:
    made, _ = call(
        P2, g("copyreg._reconstructor"), g("collections.OrderedDict"), g("builtins.object"), A.NONE
    )
    assert rows(made + A.EMPTY_DICT + A.BUILD + A.STOP) == []
    made, _ = call(
        P2, g("sklearn.neighbors._kd_tree.newObj"), g("sklearn.neighbors._kd_tree.KDTree")
    )
    assert rows(made + A.EMPTY_DICT + A.BUILD + A.STOP) == []


def test_build_after_an_allocator_of_a_computed_class_is_not_checked_again() -> None:
    made, off = call(P2, g("copyreg._reconstructor"), A.EMPTY_LIST)
    assert rows(made + A.EMPTY_DICT + A.BUILD + A.STOP) == [
        unsafe(
            "copyreg._reconstructor allocates a computed class",
            off,
            "copyreg._reconstructor",
            "new",
        )
    ]


def test_build_on_an_allocator_result_with_computed_arguments() -> None:
    pre = P2 + g("copyreg._reconstructor") + A.EMPTY_LIST
    data = pre + A.REDUCE + A.EMPTY_DICT + A.BUILD + A.STOP
    assert rows(data) == [
        unsafe(
            "REDUCE calls copyreg._reconstructor with arguments computed inside the pickle",
            len(pre),
            "copyreg._reconstructor",
            "call",
        )
    ]


def test_build_on_a_function_result_is_not_a_class_build() -> None:
    # the result of a callable that is not a class: its state goes nowhere the scanner checks
    made, _ = call(P2, g("torch._utils._rebuild_parameter"), A.NONE)
    assert rows(made + A.EMPTY_DICT + A.BUILD + A.STOP) == []


# -- check_state: dunder keys in BUILD state -------------------------------------------------


def dunder(attr: str, off: int) -> Row:
    return (
        "TWS-PKL-DUNDER-STATE",
        HIGH,
        f"BUILD sets the special attribute {attr!r} on an object (e.g. replacing __setstate__ "
        "or __class__ redirects later calls)",
        f"{LOC}@{off}",
        {"attribute": attr, "offset": off},
    )


OBJ = call(P2, g("collections.OrderedDict"))[0]


def test_dunder_keys_in_build_state_are_reported() -> None:
    for state in (
        A.EMPTY_DICT + A.su("__class__") + A.NONE + A.SETITEM,
        A.EMPTY_DICT + A.MARK + A.su("a") + A.NONE + A.su("__class__") + A.NONE + A.SETITEMS,
        A.MARK + A.su("__class__") + A.NONE + b"d",
        tup(A.EMPTY_DICT + A.su("__class__") + A.NONE + A.SETITEM, A.NONE),
        tup(A.NONE, A.EMPTY_DICT + A.su("__class__") + A.NONE + A.SETITEM),
    ):
        pre = OBJ + state
        assert rows(pre + A.BUILD + A.STOP) == [dunder("__class__", len(pre))], state


def test_dunder_state_is_reported_once_per_build_with_the_first_key() -> None:
    both = tup(
        A.EMPTY_DICT + A.su("__setstate__") + A.NONE + A.SETITEM,
        A.EMPTY_DICT + A.su("__class__") + A.NONE + A.SETITEM,
    )
    pre = OBJ + both
    assert rows(pre + A.BUILD + A.STOP) == [dunder("__setstate__", len(pre))]


def test_plain_state_and_a_third_tuple_item_are_not_dunder_state() -> None:
    for state in (
        A.EMPTY_DICT + A.su("weight") + A.NONE + A.SETITEM,
        tup(A.NONE, A.EMPTY_DICT, A.EMPTY_DICT + A.su("__class__") + A.NONE + A.SETITEM),
        A.su("__class__"),
        A.EMPTY_LIST + A.su("__class__") + A.APPEND,
    ):
        assert rows(OBJ + state + A.BUILD + A.STOP) == [], state


PAIR = tup(A.su("__class__"), A.NONE)
OK_PAIR = tup(A.su("weight"), A.NONE)


def test_dunder_keys_in_a_mapping_made_by_a_call_are_reported() -> None:
    """BUILD state (or slot state, which the unpickler applies with setattr) made by a call:
    an OrderedDict filled by SETITEM(S), or a mapping copied from a dict, hides its keys from a
    check that only looks at dict opcodes."""
    od = call(b"", g("collections.OrderedDict"))[0]
    for state in (
        od + A.su("__class__") + A.NONE + A.SETITEM,
        od + A.MARK + A.su("a") + A.NONE + A.su("__class__") + A.NONE + A.SETITEMS,
        tup(A.NONE, od + A.su("__class__") + A.NONE + A.SETITEM),
        call(b"", g("builtins.dict"), A.EMPTY_DICT + A.su("__class__") + A.NONE + A.SETITEM)[0],
        call(b"", g("collections.defaultdict"), A.NONE, A.MARK + A.su("__class__") + A.NONE + b"d")[
            0
        ],
        # a list or tuple of (key, value) pairs handed to the mapping's constructor
        call(b"", g("builtins.dict"), A.EMPTY_LIST + PAIR + A.APPEND)[0],
        call(b"", g("builtins.dict"), A.EMPTY_LIST + A.MARK + OK_PAIR + PAIR + A.APPENDS)[0],
        call(b"", g("collections.OrderedDict"), A.MARK + OK_PAIR + PAIR + b"l")[0],
        call(b"", g("builtins.dict"), tup(OK_PAIR, PAIR))[0],
    ):
        pre = OBJ + state
        assert rows(pre + A.BUILD + A.STOP) == [dunder("__class__", len(pre))], state
    # the first special key is the one reported
    state = od + A.MARK + A.su("__dict__") + A.NONE + A.SETITEMS + A.su("__class__") + A.NONE
    pre = OBJ + state + A.SETITEM
    assert rows(pre + A.BUILD + A.STOP) == [dunder("__dict__", len(pre))]
    for plain in (
        od + A.su("weight") + A.NONE + A.SETITEM,
        od + A.MARK + A.su("a") + A.NONE + A.SETITEMS,
        call(b"", g("builtins.dict"), A.EMPTY_DICT + A.su("a") + A.NONE + A.SETITEM)[0],
        call(b"", g("builtins.dict"), A.su("__class__"))[0],
        call(b"", g("builtins.dict"), A.EMPTY_LIST)[0],
        call(b"", g("builtins.dict"), A.EMPTY_LIST + A.MARK + OK_PAIR + A.APPENDS)[0],
        call(b"", g("builtins.dict"), A.EMPTY_LIST + tup(A.su("__class__")) + A.APPEND)[0],
        call(b"", g("builtins.dict"), A.MARK + tup(A.bint(1), A.NONE) + b"l")[0],
        call(b"", g("builtins.dict"), tup(tup(A.su("__a"), A.NONE, A.NONE)))[0],
    ):
        assert rows(OBJ + plain + A.BUILD + A.STOP) == [], plain


def test_a_real_slot_state_class_swap_through_an_ordered_dict_is_reported() -> None:
    """The payload the check exists for: BUILD's slot state is applied with setattr, so
    ``__class__`` in it swaps the object's class (here argparse.Namespace to its base class,
    same layout); the real unpickler does it."""
    import argparse
    import pickle

    od = call(b"", g("collections.OrderedDict"))[0]
    slots = od + A.su("__class__") + g("argparse._AttributeHolder") + A.SETITEM
    obj = P2 + g("argparse.Namespace") + A.EMPTY_TUPLE + A.NEWOBJ
    pre = obj + tup(A.NONE, slots)
    data = pre + A.BUILD + A.STOP
    assert type(pickle.loads(data)) is argparse._AttributeHolder
    holder = len(obj + A.MARK + A.NONE + od + A.su("__class__"))
    assert rows(data) == [
        unknown("argparse._AttributeHolder", holder),
        dunder("__class__", len(pre)),
    ]


def test_a_state_key_computed_by_a_call_is_reported_as_unreadable() -> None:
    """``str(b"__class__", "ascii")`` is an allowed call that spells a special name the scanner
    cannot read: as a key of BUILD state it is reported, under every way a mapping is built."""
    key = call(b"", g("builtins.str"), A.sbytes(b"__class__"), A.su("ascii"))[0]
    name = "<computed key: <result of builtins.str>>"
    od = call(b"", g("collections.OrderedDict"))[0]
    for state in (
        A.EMPTY_DICT + key + A.NONE + A.SETITEM,
        A.EMPTY_DICT + A.MARK + A.su("a") + A.NONE + key + A.NONE + A.SETITEMS,
        A.MARK + key + A.NONE + b"d",
        od + key + A.NONE + A.SETITEM,
        od + A.MARK + key + A.NONE + A.SETITEMS,
        call(b"", g("builtins.dict"), A.EMPTY_LIST + tup(key, A.NONE) + A.APPEND)[0],
        tup(A.NONE, A.EMPTY_DICT + key + A.NONE + A.SETITEM),
    ):
        pre = OBJ + state
        assert rows(pre + A.BUILD + A.STOP) == [dunder(name, len(pre))], state
    # keys that are plain values (ints, tuples, None) name no attribute the check must see
    for state in (
        A.EMPTY_DICT + A.binint1(1) + A.NONE + A.SETITEM,
        A.EMPTY_DICT + tup(A.binint1(1)) + A.NONE + A.SETITEM,
        A.MARK + A.NONE + A.NONE + b"d",
        od + A.binint1(1) + A.NONE + A.SETITEM,
    ):
        assert rows(OBJ + state + A.BUILD + A.STOP) == [], state


def test_dunder_state_from_the_memo_is_still_reported() -> None:
    state = A.EMPTY_DICT + A.su("__dict__") + A.NONE + A.SETITEM + A.binput(5) + A.POP
    pre = P2 + state + call(b"", g("collections.OrderedDict"))[0] + A.binget(5)
    assert rows(pre + A.BUILD + A.STOP) == [dunder("__dict__", len(pre))]


# -- check_rebuild: tensor views outside their storage ---------------------------------------

REBUILD_FUNCS = [
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_qtensor",
]


def ints(*values: int) -> bytes:
    return tup(*(A.bint(v) for v in values))


def rebuild(
    func: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *rest: bytes
) -> tuple[bytes, int]:
    return call(P2, g(func), _persistent(numel), A.bint(offset), ints(*size), ints(*stride), *rest)


def bounds(
    func: str, off: int, offset: int, size: list[int], stride: list[int], end: int, numel: int
) -> Row:
    return (
        "TWS-PKL-TENSOR-BOUNDS",
        HIGH,
        f"{func} builds a tensor view (offset {offset}, size {size}, stride {stride}) that "
        f"reaches element {end} of a storage holding {numel}: out-of-bounds memory access on load",
        f"{LOC}@{off}",
        {"global_": func, "storage_numel": numel, "offset": off},
    )


@pytest.mark.parametrize("func", REBUILD_FUNCS)
def test_a_view_inside_its_storage_is_clean(func: str) -> None:
    for numel, offset, size, stride in (
        (6, 0, (2, 3), (3, 1)),
        (7, 1, (2, 3), (3, 1)),
        (1, 0, (), ()),
        (4, 3, (), ()),
        (1, 0, (5,), (0,)),
        (0, 9, (0, 4), (4, 1)),
        (2, 5, (3, 0), (-1, 1)),
    ):
        ok, _ = rebuild(func, numel, offset, size, stride, A.NONE)
        assert rows(ok + A.STOP) == [], (numel, offset, size, stride)


@pytest.mark.parametrize("func", REBUILD_FUNCS)
def test_a_view_reaching_outside_its_storage_is_reported(func: str) -> None:
    for numel, offset, size, stride, end in (
        (5, 0, (2, 3), (3, 1), 5),
        (6, 1, (2, 3), (3, 1), 6),
        (4, 4, (), (), 4),
        (100, -1, (2,), (1,), 0),
        (100, 10, (3,), (-1,), 8),
        (100, 10, (-3,), (1,), 6),
        (10, 0, (3, 3), (1, 4), 10),
    ):
        bad, off = rebuild(func, numel, offset, size, stride)
        assert rows(bad + A.STOP) == [
            bounds(func, off, offset, list(size), list(stride), end, numel)
        ], (numel, offset, size, stride)


def test_rebuild_bounds_need_all_four_arguments_of_a_rebuild_function() -> None:
    func = "torch._utils._rebuild_tensor_v2"
    # three arguments: no view to check (torch raises)
    short, _ = call(P2, g(func), _persistent(1), A.bint(5), ints(2))
    assert rows(short + A.STOP) == []
    # size and stride of different lengths: torch raises before touching memory
    odd, _ = rebuild(func, 1, 0, (2, 3), (1,))
    assert rows(odd + A.STOP) == []
    # a function of another module that shares a rebuild function's name is not torch's
    other, _ = call(P2, g("evil._rebuild_tensor_v2"), _persistent(1), A.bint(5), ints(2), ints(1))
    assert rows(other + A.STOP) == [unknown("evil._rebuild_tensor_v2", 2)]
    # the safe rebuild helpers that are no view constructors
    param, _ = call(
        P2, g("torch._utils._rebuild_parameter"), _persistent(1), A.bint(5), ints(2), ints(1)
    )
    assert rows(param + A.STOP) == []


def undecided(func: str, off: int) -> Row:
    return (
        "TWS-PKL-TENSOR-BOUNDS",
        HIGH,
        f"{func} builds a tensor view whose offset, size, stride or storage size is not a plain "
        "integer in the pickle: its bounds cannot be checked",
        f"{LOC}@{off}",
        {"global_": func, "offset": off},
    )


def test_rebuild_bounds_need_a_persistent_storage_with_its_size() -> None:
    func = "torch._utils._rebuild_tensor_v2"
    made = call(b"", g("collections.OrderedDict"))[0]
    not_persistent, _ = call(P2, g(func), made, A.bint(5), ints(2), ints(1))
    assert rows(not_persistent + A.STOP) == []
    # a call result whose arguments look like a storage's persistent id is no storage
    five = call(b"", g("collections.OrderedDict"), *(A.bint(1) for _ in range(5)))[0]
    lookalike, _ = call(P2, g(func), five, A.bint(5), ints(2), ints(1))
    assert rows(lookalike + A.STOP) == []
    for plain in (A.su("storage"), A.bint(1), A.NONE):
        data, _ = call(P2, g(func), plain, A.bint(5), ints(2), ints(1))
        assert rows(data + A.STOP) == []
    short_pid = tup(A.su("storage"), g("torch.FloatStorage"), A.su("0"), A.su("cpu")) + A.BINPERSID
    bad, _ = call(P2, g(func), short_pid, A.bint(5), ints(2), ints(1))
    assert rows(bad + A.STOP) == []
    text_pid = A.su("storage") + A.BINPERSID
    bad, _ = call(P2, g(func), text_pid, A.bint(5), ints(2), ints(1))
    assert rows(bad + A.STOP) == []
    # exactly five fields with an int size: checked
    bad, off = call(P2, g(func), _persistent(1), A.bint(5), ints(2), ints(1))
    assert rows(bad + A.STOP) == [bounds(func, off, 5, [2], [1], 6, 1)]


@pytest.mark.parametrize("func", REBUILD_FUNCS)
def test_rebuild_bounds_hidden_behind_other_spellings_of_a_number_are_reported(func: str) -> None:
    """torch.save writes plain integers; a text INT (parsed by the unpickler, a token here), a
    bool, or a torch.Size built by a call would hide an out-of-bounds view from the check."""
    text_int = b"I1000\n"
    numel = tup(A.su("storage"), g("torch.FloatStorage"), A.su("0"), A.su("cpu"), text_int)
    size_call = g("torch.Size") + tup(tup(A.bint(1000))) + A.REDUCE
    for storage, offset, size, stride in (
        (_persistent(1), text_int, ints(1), ints(1)),
        (_persistent(1), A.bint(0), tup(text_int), ints(1)),
        (_persistent(1), A.bint(0), ints(1000), tup(text_int)),
        (_persistent(1), A.NEWTRUE, A.EMPTY_TUPLE, A.EMPTY_TUPLE),
        (_persistent(1), A.bint(0), tup(A.NEWTRUE), ints(1)),
        (_persistent(1), A.bint(0), size_call, ints(1)),
        (_persistent(1), A.bint(0), ints(1000), A.EMPTY_LIST),
        (numel + A.BINPERSID, A.bint(0), ints(1000), ints(1)),
    ):
        data, off = call(P2, g(func), storage, offset, size, stride)
        assert rows(data + A.STOP) == [undecided(func, off)], (offset, size, stride)


def test_rebuild_bounds_of_a_view_whose_size_and_stride_differ_in_length_are_torchs() -> None:
    # torch refuses such a view before touching memory
    func = "torch._utils._rebuild_tensor_v2"
    data, _ = call(P2, g(func), _persistent(1), A.bint(0), ints(1000, 2), tup(b"I1\n"))
    assert rows(data + A.STOP) == []
