"""Every opcode of the restricted unpickler that calls something, pinned by a payload.

Written against bench/mutation.py's ``unpickler`` target: APPEND(S), SETITEM(S), ADDITEMS, BUILD,
REDUCE, NEWOBJ(_EX) and INST/OBJ each go through the closed constructor set, and a refusal is a
CRITICAL finding that names the opcode, the reason and the file.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from trainwarden.findings import Severity
from trainwarden.loading._types import UnsafeModelError, UnsafeModelWarning
from trainwarden.loading._unpickler import (
    Enforcer,
    RestrictedUnpickler,
    restricted_loads,
    restricted_pickle_module,
)
from trainwarden.scan._policy import Policy

from . import _closed_set_classes as K
from .test_closed_set_decisions import MOD, P2, P4, _enforcer, _tripwire, g, s

NDARRAY = (
    g("numpy._core.multiarray", "_reconstruct")
    + b"("
    + g("numpy", "ndarray")
    + (b"K\x00\x85C\x01btR")
)


def _refusal(data: bytes, location: str | None = None) -> UnsafeModelError:
    enforcer = _enforcer()
    if location is not None:
        enforcer = Enforcer(enforcer.policy, location=location)
    with pytest.raises(UnsafeModelError) as exc:
        restricted_loads(data, enforcer)
    return exc.value


def test_a_refusal_is_a_critical_finding_naming_the_opcode_reason_and_file() -> None:
    err = _refusal(P4 + b"\x8fK\x01a.", location="model.pkl")
    reason = "builtins.set has no append"
    assert err.path == "model.pkl"
    assert err.message == f"refused to load model.pkl: APPEND {reason}"
    assert err.hint == (
        "the file asks the unpickler to call something that does more than build an in-memory "
        "value; do not load it"
    )
    (finding,) = err.findings
    assert finding.rule_id == "TWL-CONSTRUCT-REFUSED"
    assert finding.severity is Severity.CRITICAL
    assert finding.message == f"model.pkl: APPEND refused before it ran: {reason}"
    assert finding.location == "model.pkl"
    assert finding.evidence == {"opcode": "APPEND", "reason": reason}


@pytest.mark.parametrize(
    ("data", "op", "reason"),
    [
        pytest.param(
            P2 + NDARRAY + b"K\x00K\x01s.",
            "SETITEM",
            "it would call numpy.ndarray.__setitem__, which this loader does not call",
        ),
        pytest.param(
            P2 + NDARRAY + b"(K\x00K\x01u.",
            "SETITEMS",
            "it would call numpy.ndarray.__setitem__, which this loader does not call",
        ),
        pytest.param(P4 + b"\x8fK\x01a.", "APPEND", "builtins.set has no append"),
        pytest.param(P4 + b"\x8f(K\x01e.", "APPENDS", "builtins.set has no append"),
        pytest.param(P2 + b"](K\x01\x90.", "ADDITEMS", "builtins.list has no add"),
        pytest.param(
            P2 + g("builtins", "bytearray") + b")R(K\x01e.",
            "APPENDS",
            "it would call builtins.bytearray.extend, which this loader does not call",
        ),
        pytest.param(
            P2 + g(MOD, "Plain") + b")R.",
            "REDUCE",
            f"it calls {MOD}.Plain, which is not one of the constructors this loader calls",
        ),
        pytest.param(
            P2 + g("_codecs", "encode") + b")\x81.", "NEWOBJ", "_codecs.encode is not a class"
        ),
        pytest.param(
            P4 + g("builtins", "str") + b")}" + s("object") + s("a") + b"s\x92.",
            "NEWOBJ_EX",
            "allocation with keyword arguments",
        ),
        pytest.param(P2 + g("builtins", "str") + b"]\x81.", "NEWOBJ", "arguments are not a tuple"),
        pytest.param(P4 + g("builtins", "str") + b"))\x92.", "NEWOBJ_EX", "bad argument types"),
        pytest.param(
            P2 + b"(" + g(MOD, "Plain") + b"K\x01o.",
            "INST/OBJ",
            f"it calls {MOD}.Plain, which is not one of the constructors this loader calls",
        ),
        pytest.param(
            P2 + b"(" + g("collections", "deque") + b"o.",
            "INST/OBJ",
            "collections.deque has its own __new__, which this loader does not call",
        ),
        pytest.param(
            P2 + g("http.cookies", "Morsel") + b")\x81}b.",
            "BUILD",
            "BUILD would run http.cookies.Morsel.__setstate__, which this loader does not call",
        ),
    ],
)
def test_each_opcode_refuses_through_the_closed_set(data: bytes, op: str, reason: str) -> None:
    err = _refusal(data)
    assert err.findings[-1].evidence == {"opcode": op, "reason": reason}


def test_containers_are_filled_through_their_reviewed_methods() -> None:
    enforcer = _enforcer()
    assert restricted_loads(P2 + b"](K\x01K\x02e.", enforcer) == [1, 2]
    assert restricted_loads(P2 + b"]K\x01a.", enforcer) == [1]
    assert restricted_loads(P2 + b"}(K\x01K\x02K\x03K\x04u.", enforcer) == {1: 2, 3: 4}
    assert restricted_loads(P2 + b"}K\x01K\x02s.", enforcer) == {1: 2}
    assert restricted_loads(P4 + b"\x8f(K\x01K\x02\x90.", enforcer) == {1, 2}
    point = restricted_loads(P2 + b"(" + g(MOD, "Plain") + b"o}" + s("a") + b"K\x01sb.", enforcer)
    assert vars(point) == {"a": 1}


def test_trusted_containers_are_filled_through_their_own_methods() -> None:
    enforcer = _enforcer()
    tally = restricted_loads(P2 + b"(" + g(MOD, "Tally") + b"o(K\x01K\x02e.", _with(enforcer))
    assert tally.items == [("tallied", 1), ("tallied", 2)]
    tags = restricted_loads(P4 + g(MOD, "Tags") + b")\x81(K\x01\x90.", _with(enforcer))
    assert set(tags) == {("tag", 1)}
    bag = restricted_loads(P2 + g(MOD, "Bag") + b")\x81(K\x01K\x02e.", enforcer)
    assert list(bag) == [1, 2]  # list.extend, which Bag does not override


def _with(enforcer: Enforcer) -> Enforcer:
    policy = enforcer.policy.with_overrides(allow=[f"{MOD}.Tally", f"{MOD}.Tags"])
    return Enforcer(policy)


def test_a_user_allowed_global_is_trusted_only_in_its_own_load(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    first = RestrictedUnpickler(io.BytesIO(P2 + g(MOD, "Tripwire") + b"."), enforcer=_enforcer())
    assert first.load() is K.Tripwire
    # a second unpickler starts with no trust: the value constructor still refuses the Tripwire
    data = P2 + g("builtins", "str") + _tripwire(canary) + b"\x85\x81."
    with pytest.raises(UnsafeModelError):
        restricted_loads(data, _enforcer())
    assert not canary.exists()


def test_without_a_policy_nothing_is_materialised() -> None:
    with pytest.raises(UnsafeModelError, match=r"^restricted unpickler used without a policy$"):
        RestrictedUnpickler(io.BytesIO(P2 + g("builtins", "str") + b".")).load()


def test_a_refusal_without_an_enforcer_names_the_pickle() -> None:
    # no global is named, so no policy is consulted, but the call is still refused
    with pytest.raises(UnsafeModelError) as exc:
        RestrictedUnpickler(io.BytesIO(P4 + b"\x8fK\x01a.")).load()
    assert exc.value.path == "<pickle>"
    (finding,) = exc.value.findings
    assert finding.location == "<pickle>"
    assert finding.message == "<pickle>: APPEND refused before it ran: builtins.set has no append"


def test_restricted_loads_passes_the_unpickler_arguments() -> None:
    assert restricted_loads(b"U\x03abc.", _enforcer()) == "abc"
    assert restricted_loads(b"U\x03abc.", _enforcer(), encoding="bytes") == b"abc"


def test_a_refusal_carries_the_findings_the_load_made_before_it() -> None:
    # warn mode let an unlisted class through (a finding and a warning); the call it then asks
    # for is refused, and the error carries both findings in order
    enforcer = Enforcer(Policy.default(), mode="warn")
    data = P2 + g(MOD, "Plain") + b")R."
    with pytest.warns(UnsafeModelWarning), pytest.raises(UnsafeModelError) as exc:
        restricted_loads(data, enforcer)
    assert [f.rule_id for f in exc.value.findings] == [
        enforcer.findings[0].rule_id,
        "TWL-CONSTRUCT-REFUSED",
    ]
    assert list(exc.value.findings) == enforcer.findings
    assert enforcer.findings[0].rule_id != "TWL-CONSTRUCT-REFUSED"


def test_the_restricted_pickle_module_stands_in_for_pickle(tmp_path: Path) -> None:
    module = restricted_pickle_module(_enforcer())
    assert module.loads(b"U\x03abc.") == "abc"
    assert module.loads(b"U\x03abc.", encoding="bytes") == b"abc"
    assert module.load(io.BytesIO(b"U\x03abc."), encoding="bytes") == b"abc"
    assert module.UnpicklingError is pickle.UnpicklingError
    with pytest.raises(UnsafeModelError, match=r"APPEND builtins\.set has no append"):
        module.loads(P4 + b"\x8fK\x01a.")
    # what torch.load needs of a pickle_module, in both of its formats
    for zipped in (True, False):
        path = tmp_path / f"ckpt-{zipped}.pt"
        torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=zipped)
        got = torch.load(path, pickle_module=module, weights_only=False)
        assert torch.equal(got["w"], torch.ones(2))
