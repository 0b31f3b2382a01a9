"""Each decision of the closed constructor set, pinned by the payload that a broken one lets by.

Written against bench/mutation.py's ``constructors`` target: every test hands the safe loader's
unpickler (``restricted_loads``, the scanner bypassed as in tests/loading/test_constructors.py) a
pickle written opcode by opcode and asserts the exact refusal, or the exact value built. Values
that reach a constructor are built from :class:`Tripwire`, a class the user's policy trusts to be
constructed and whose other methods create a canary: a constructor that runs any of them fails
the test. Each refusal is tried with and without a user-trusted object in the same pickle, since
trust is decided per object and must never spread to the others.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainwarden.loading import _constructors as C
from trainwarden.loading._types import UnsafeModelError
from trainwarden.loading._unpickler import Enforcer, restricted_loads
from trainwarden.scan._policy import Policy

from . import _closed_set_classes as K

MOD = K.__name__
TRUSTED = (f"{MOD}.Tripwire", f"{MOD}.Stateful", f"{MOD}.Bag", f"{MOD}.Sized", f"{MOD}.make")
SIMULATED = (
    f"{MOD}.Plain",
    f"{MOD}.Slotted",
    f"{MOD}.Guarded",
    f"{MOD}.Point",
    f"{MOD}.Wrapped",
    f"{MOD}.Shape",
    "http.cookies.Morsel",
)


def g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


P2 = b"\x80\x02"
P4 = b"\x80\x04"
# a user-trusted object named (and dropped) before the payload proper
TRUST_PREFIX = g(MOD, "Stateful") + b"0"


def _enforcer() -> Enforcer:
    """The built-in policy plus the user's ``allow`` entries for the trusted test classes, with
    the simulated classes on the built-in allowlist (safe to name, not trusted to call)."""
    base = Policy.default().with_overrides(allow=list(TRUSTED))
    safe = {**base.safe, **{n: "simulated allowlist entry" for n in SIMULATED}}
    return Enforcer(dataclasses.replace(base, safe=safe))


def _tripwire(canary: Path) -> bytes:
    """A Tripwire aimed at ``canary``, built through the trusted path (NEWOBJ, then BUILD)."""
    return g(MOD, "Tripwire") + b")\x81}" + s("path") + s(str(canary)) + b"sb"


def _reason(data: bytes, canary: Path | None = None) -> str:
    """The reason the closed set gave, asserting that nothing ran (with and without trust)."""
    reasons = []
    for payload in (data, data[:2] + TRUST_PREFIX + data[2:]):
        with pytest.raises(UnsafeModelError) as exc:
            restricted_loads(payload, _enforcer())
        if canary is not None:
            assert not canary.exists()
        finding = exc.value.findings[-1]
        assert finding.rule_id == "TWL-CONSTRUCT-REFUSED"
        reasons.append(str(finding.evidence["reason"]))
    assert reasons[0] == reasons[1]
    return reasons[0]


def _loads(data: bytes) -> Any:
    first = restricted_loads(data, _enforcer())
    second = restricted_loads(data[:2] + TRUST_PREFIX + data[2:], _enforcer())
    assert type(first) is type(second)
    return first


# -- values handed to constructors -------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda t: t, id="bare"),
        pytest.param(lambda t: b"(" + t + b"l", id="in-list"),
        pytest.param(lambda t: t + b"\x85", id="in-tuple"),
        pytest.param(lambda t: b"((" + t + b"ll", id="in-nested-list"),
        pytest.param(lambda t: b"}K\x01" + t + b"s", id="dict-value"),
        pytest.param(lambda t: b"}" + t + b"K\x01s", id="dict-key"),
        pytest.param(lambda t: b"(K\x01" + t + b"t", id="after-a-plain-item"),
    ],
)
def test_a_value_constructor_never_runs_code_of_the_values_it_is_given(
    tmp_path: Path, wrap: Any
) -> None:
    # str(x) runs x.__str__ / x.__repr__ (of every item, at any depth): a value type's __new__
    # is called with plain values only.
    canary = tmp_path / "canary"
    data = P2 + g("builtins", "str") + wrap(_tripwire(canary)) + b"\x85\x81."
    assert _reason(data, canary) == "builtins.str is allocated from plain values only"


def test_an_enum_member_is_looked_up_by_a_plain_value_only(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = P2 + g("uuid", "SafeUUID") + b"(" + _tripwire(canary) + b"tR."
    assert _reason(data, canary) == "an enum member is looked up by a plain value"


def _nested(depth: int) -> bytes:
    return b"(" * depth + b"K\x01" + b"l" * depth


def test_plain_values_nest_to_the_depth_limit_and_no_deeper() -> None:
    at_limit = _loads(P2 + g("builtins", "str") + _nested(65) + b"\x85\x81.")
    assert at_limit == "[" * 65 + "1" + "]" * 65
    data = P2 + g("builtins", "str") + _nested(66) + b"\x85\x81."
    assert _reason(data) == "builtins.str is allocated from plain values only"


def _nested_tuple(depth: int) -> bytes:
    return b"(" * depth + b"K\x01" + b"t" * depth


@pytest.mark.parametrize(
    ("wrap", "value"),
    [
        pytest.param(lambda n: b"}K\x01" + _nested(n) + b"s", "[", id="dict-value"),
        pytest.param(lambda n: b"}" + _nested_tuple(n) + b"K\x01s", "(", id="dict-key"),
    ],
)
def test_dict_items_count_towards_the_depth_limit(wrap: Any, value: str) -> None:
    # the dict is level 0, its keys and values level 1: 64 more containers fit, 65 do not
    got = _loads(P2 + g("builtins", "str") + wrap(64) + b"\x85\x81.")
    assert got.count(value) == 64
    data = P2 + g("builtins", "str") + wrap(65) + b"\x85\x81."
    assert _reason(data) == "builtins.str is allocated from plain values only"


def test_value_types_are_allocated_with_their_arguments() -> None:
    assert _loads(P2 + g("builtins", "str") + s("abc") + b"\x85\x81.") == "abc"
    assert _loads(P2 + g("builtins", "int") + b"K\x05\x85\x81.") == 5
    wrapped = _loads(P2 + g(MOD, "Wrapped") + b"K\x05\x85\x81.")
    assert type(wrapped) is K.Wrapped
    assert wrapped == 5


def test_a_namedtuple_takes_plain_values_and_containers_the_loader_built(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    point = _loads(P2 + g(MOD, "Point") + b"K\x01K\x02\x86\x81.")
    assert point == K.Point(1, 2)
    # tuple.__new__ only stores its items: a container of the loader's own objects is fine
    held = _loads(P2 + g(MOD, "Point") + b"(" + _tripwire(canary) + b"lK\x02\x86\x81.")
    assert type(held.x) is list
    assert type(held.x[0]) is K.Tripwire
    assert not canary.exists()
    data = P2 + g(MOD, "Point") + _tripwire(canary) + b"K\x02\x86\x81."
    assert _reason(data, canary) == f"{MOD}.Point is allocated from plain values only"


# -- allocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(
            P4 + g("builtins", "str") + b")}" + s("object") + s("abc") + b"s\x92.",
            "allocation with keyword arguments",
            id="keyword-arguments",
        ),
        pytest.param(
            P2 + g("_codecs", "encode") + b")\x81.", "_codecs.encode is not a class", id="function"
        ),
        pytest.param(
            P2 + g("torch.nn.modules.linear", "Linear") + b"K\x01\x85\x81.",
            "object.__new__ of torch.nn.modules.linear.Linear takes no arguments",
            id="object-new-with-arguments",
        ),
        pytest.param(
            P2 + g("collections", "deque") + b")\x81.",
            "collections.deque has its own __new__, which this loader does not call",
            id="own-new",
        ),
        pytest.param(
            P2 + g("torch._tensor", "Tensor") + b")\x81.",
            "torch.Tensor has its own __new__, which this loader does not call",
            id="tensor-new",
        ),
        pytest.param(
            P2 + g("torch.nn.parameter", "Parameter") + b"K\x01\x85\x81.",
            "torch.nn.parameter.Parameter has its own __new__, which this loader does not call",
            id="parameter-with-data",
        ),
    ],
)
def test_allocation_refusals(data: bytes, reason: str) -> None:
    assert _reason(data) == reason


def test_parameter_and_buffer_allocate_empty() -> None:
    got = _loads(P2 + g("torch.nn.parameter", "Parameter") + b")\x81.")
    assert type(got) is torch.nn.Parameter
    assert got.numel() == 0


def test_a_trusted_class_is_allocated_by_its_own_new() -> None:
    got = restricted_loads(P2 + g(MOD, "Sized") + b"K\x03\x85\x81.", _enforcer())
    assert type(got) is K.Sized
    assert got.n == 3


def test_a_trusted_class_is_allocated_with_keyword_arguments() -> None:
    got = restricted_loads(P4 + g(MOD, "Sized") + b")}" + s("n") + b"K\x04s\x92.", _enforcer())
    assert type(got) is K.Sized
    assert got.n == 4


def test_a_trusted_function_is_still_not_allocated_as_a_class() -> None:
    data = P2 + g(MOD, "make") + b")\x81."
    with pytest.raises(UnsafeModelError) as exc:
        restricted_loads(data, _enforcer())
    assert exc.value.findings[-1].evidence["reason"] == f"{MOD}.make is not a class"


# -- BUILD --------------------------------------------------------------------------------------


def test_build_sets_plain_attributes() -> None:
    got = _loads(P2 + g(MOD, "Plain") + b")\x81}" + s("a") + b"K\x01sb.")
    assert vars(got) == {"a": 1}


def test_build_sets_dict_and_slot_state() -> None:
    got = _loads(P2 + g(MOD, "Plain") + b")\x81}" + s("a") + b"K\x01s}" + s("b") + b"K\x02s\x86b.")
    assert vars(got) == {"a": 1, "b": 2}
    slotted = _loads(P2 + g(MOD, "Slotted") + b")\x81N}" + s("a") + b"K\x01s\x86b.")
    assert slotted.a == 1
    assert not hasattr(slotted, "b")


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        pytest.param(b"}" + s("a") + b"K\x01s\x85", "BUILD state tuples are (dict, slots) pairs"),
        pytest.param(b"(K\x01l", "object state must be a dict", id="list"),
        pytest.param(
            b"}" + s("__class__") + b"K\x01s",
            "object state key '__class__' is not a plain attribute name",
            id="dunder-key",
        ),
        pytest.param(
            b"N}" + s("__class__") + g(MOD, "Stateful") + b"s\x86",
            "object state key '__class__' is not a plain attribute name",
            id="slot-state-sets-the-class",
        ),
        pytest.param(
            b"}}}\x87",
            "object state is a dict or a (dict, slots) pair",
            id="three-part-tuple",
        ),
    ],
)
def test_build_refusals(state: bytes, reason: str) -> None:
    assert _reason(P2 + g(MOD, "Plain") + b")\x81" + state + b"b.") == reason


def test_build_takes_ordered_dict_state() -> None:
    state = g("collections", "OrderedDict") + b")\x81" + s("a") + b"K\x01s"
    assert vars(_loads(P2 + g(MOD, "Plain") + b")\x81" + state + b"b.")) == {"a": 1}


def test_slot_state_never_runs_a_class_own_setattr() -> None:
    data = P2 + g(MOD, "Guarded") + b")\x81N}" + s("a") + b"K\x01s\x86b."
    assert _reason(data) == f"BUILD slot state would run {MOD}.Guarded.__setattr__"


def test_build_with_an_unreviewed_setstate_is_refused_whatever_else_is_trusted() -> None:
    data = P2 + g("http.cookies", "Morsel") + b")\x81}b."
    assert _reason(data) == (
        "BUILD would run http.cookies.Morsel.__setstate__, which this loader does not call"
    )


def test_a_trusted_class_gets_its_own_setstate() -> None:
    got = restricted_loads(P2 + g(MOD, "Stateful") + b")\x81}" + s("x") + b"K\x01sb.", _enforcer())
    assert got.seen == ("setstate", {"x": 1})


# -- APPEND / SETITEM ---------------------------------------------------------------------------


def test_mutator_refusals() -> None:
    assert _reason(P4 + b"\x8fK\x01a.") == "builtins.set has no append"
    # list's append and extend are reviewed; its __setitem__ (on an owner the table names for
    # other methods) is not
    assert _reason(P2 + b"]K\x00K\x01s.") == (
        "it would call builtins.list.__setitem__, which this loader does not call"
    )
    ndarray = (
        g("numpy._core.multiarray", "_reconstruct")
        + b"("
        + g("numpy", "ndarray")
        + b"K\x00\x85C\x01btR"
    )
    assert _reason(P2 + ndarray + b"K\x00K\x01s.") == (
        "it would call numpy.ndarray.__setitem__, which this loader does not call"
    )


def test_a_trusted_class_gets_its_own_append() -> None:
    got = restricted_loads(P2 + g(MOD, "Bag") + b")\x81K\x01a.", _enforcer())
    assert list(got) == [("bagged", 1)]


# -- tensor backward hooks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hooks", "reason"),
    [
        pytest.param([np.ones], "backward hooks must be a dict", id="list"),
        pytest.param((), "backward hooks must be a dict", id="empty-tuple"),
        pytest.param(
            collections.OrderedDict({0: np.ones}),
            "a tensor with backward hooks (callables run later) is refused",
            id="ordered-dict",
        ),
        pytest.param(
            {0: np.ones}, "a tensor with backward hooks (callables run later) is refused", id="dict"
        ),
    ],
)
def test_tensor_backward_hooks_refused(hooks: object, reason: str) -> None:
    storage = torch.zeros(2).untyped_storage()
    with pytest.raises(C.Refused) as exc:
        C.call(torch._utils._rebuild_tensor_v2, (storage, 0, (2,), (1,), False, hooks))
    assert str(exc.value) == reason


@pytest.mark.parametrize("hooks", [None, {}, collections.OrderedDict()], ids=repr)
def test_tensors_without_hooks_rebuild(hooks: object) -> None:
    storage = torch.storage.TypedStorage(  # type: ignore[no-untyped-call]
        wrap_storage=torch.arange(2.0).untyped_storage(), dtype=torch.float32, _internal=True
    )
    got = C.call(torch._utils._rebuild_tensor_v2, (storage, 0, (2,), (1,), False, hooks))
    assert torch.equal(got, torch.arange(2.0))


# -- REDUCE -------------------------------------------------------------------------------------


def test_call_refusals() -> None:
    assert _reason(P2 + g("builtins", "str") + b"(K\x01lR.") == "call arguments must be a tuple"
    assert _reason(P2 + g(MOD, "Plain") + b")R.") == (
        f"it calls {MOD}.Plain, which is not one of the constructors this loader calls"
    )
    assert _reason(P2 + g(MOD, "Shape") + b"((K\x05ltR.") == (
        f"{MOD}.Shape has no member with value [5]"
    )


def test_an_enum_member_with_an_unhashable_value_is_found_by_comparison() -> None:
    assert _loads(P2 + g(MOD, "Shape") + b"((K\x04ltR.") is K.Shape.SQUARE
    assert _loads(P2 + g("uuid", "SafeUUID") + b"(K\x00tR.").name == "safe"


def test_a_trusted_function_is_called() -> None:
    assert restricted_loads(P2 + g(MOD, "make") + b")R.", _enforcer()) == "made"
