"""An allowlisted name is not a safe callable: the scanner's use checks and alias spellings.

The scanner decides REDUCE/NEWOBJ/NEWOBJ_EX/INST/OBJ/BUILD of allowlisted globals with the sets
in ``trainwarden.scan._callables``; those are derived from the live objects with the safe loader's
closed constructor set, and this module keeps the two in agreement. Payloads are built opcode by
opcode and only ever name a canary path under ``tmp_path``.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.scan import _callables as callables
from trainwarden.scan import scan_bytes
from trainwarden.scan._allowlist import SAFE
from trainwarden.scan._denylist import DANGEROUS
from trainwarden.scan._pickle_vm import analyze_pickle
from trainwarden.scan._policy import Policy
from trainwarden.scan._types import Verdict

from ._callables_gen import derive, resolve_name


def _rules(data: bytes) -> set[str]:
    return {f.rule_id for f in analyze_pickle(data).findings}


def test_generated_sets_match_the_live_objects() -> None:
    derived = derive()
    for key in ("CALLABLE", "ALLOCATABLE", "BUILDABLE", "CLASSES"):
        assert sorted(getattr(callables, key)) == derived[key], (
            f"{key} is stale: run python tests/scan/_callables_gen.py"
        )


def test_memmap_is_not_allowlisted_under_any_spelling() -> None:
    import numpy

    spellings = [n for n in SAFE if resolve_name(n) is numpy.memmap]
    assert spellings == []
    policy = Policy.default()
    for module, name in [
        ("numpy", "memmap"),
        ("numpy._core.memmap", "memmap"),
        ("numpy.core.memmap", "memmap"),
        ("numpy._core", "memmap"),
        ("numpy.core", "memmap"),
        ("numpy", "_core.memmap"),
        ("numpy", "core.memmap.memmap"),
    ]:
        assert policy.classify(module, name)[0] is Verdict.DANGEROUS, (module, name)


def _alias_modules() -> list[str]:
    roots = ("numpy", "torch", "collections", "copyreg", "builtins", "codecs", "_codecs")
    for r in roots:
        importlib.import_module(r)
    return sorted(n for n in sys.modules if n.split(".")[0] in roots)


def test_one_decision_per_object_across_spellings() -> None:
    """No object is allowlisted under one name and denylisted under another, and every spelling
    of a denylisted object that numpy, torch or the stdlib re-export is not SAFE."""
    denied: dict[int, str] = {}
    for name in DANGEROUS:
        if name.endswith(".*"):
            continue
        obj = resolve_name(name)
        if obj is not None and not isinstance(obj, type(sys)):
            denied[id(obj)] = name
    both = [n for n in SAFE if id(resolve_name(n)) in denied]
    assert both == []
    policy = Policy.default()
    leaks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for modname in _alias_modules():
            mod = sys.modules.get(modname)
            for attr, value in list(getattr(mod, "__dict__", {}).items()):
                if id(value) in denied and not isinstance(value, (int, str, bool, type(None))):
                    verdict, _ = policy.classify(modname, attr)
                    if verdict is Verdict.SAFE:
                        leaks.append(f"{modname}.{attr} is {denied[id(value)]}")
    assert leaks == []


def test_reduce_of_a_value_class_is_reported(tmp_path: Path) -> None:
    # torch.nn.functional.relu is allowlisted as a value (a layer attribute), not as a call.
    data = A.proto(2) + A.glob("torch.nn.functional", "relu") + b"(" + b"N" + b"tR."
    assert "TWS-PKL-CALL-UNSAFE" in _rules(data)


def test_newobj_of_a_class_with_its_own_new_is_reported() -> None:
    # torch.Tensor's __new__ builds a tensor from its arguments (any size): not allocatable.
    data = A.proto(2) + A.glob("torch", "Tensor") + b"(J\x00\x00\x00\x40t\x81."
    assert "TWS-PKL-CALL-UNSAFE" in _rules(data)


def test_rebuild_from_type_handed_a_non_constructor_is_reported() -> None:
    data = (
        A.proto(2)
        + A.glob("torch._tensor", "_rebuild_from_type_v2")
        + b"("
        + A.glob("torch.nn.functional", "relu")
        + A.glob("torch", "Tensor")
        + b"(N"
        + b"t}"
        + b"tR."
    )
    assert "TWS-PKL-CALL-UNSAFE" in _rules(data)


def test_rebuild_from_type_converting_to_a_non_tensor_class_is_reported() -> None:
    data = (
        A.proto(2)
        + A.glob("torch._tensor", "_rebuild_from_type_v2")
        + b"("
        + A.glob("torch.serialization", "_get_layout")
        + A.glob("collections", "OrderedDict")
        + b"(X\x07\x00\x00\x00strided"
        + b"t}"
        + b"tR."
    )
    assert "TWS-PKL-CALL-UNSAFE" in _rules(data)


def test_numpy_generator_ctor_handed_another_callable_is_reported() -> None:
    data = (
        A.proto(2)
        + A.glob("numpy.random._pickle", "__generator_ctor")
        + b"(X\x07\x00\x00\x00MT19937"
        + A.glob("collections", "OrderedDict")
        + b"tR."
    )
    assert "TWS-PKL-CALL-UNSAFE" in _rules(data)


def test_defaultdict_factory_must_be_a_builtin_type() -> None:
    bad = (
        A.proto(2)
        + A.glob("collections", "defaultdict")
        + b"("
        + A.glob("torch.nn.functional", "relu")
        + b"tR."
    )
    good = (
        A.proto(2)
        + A.glob("collections", "defaultdict")
        + b"("
        + A.glob("builtins", "list")
        + b"tR."
    )
    assert "TWS-PKL-CALL-UNSAFE" in _rules(bad)
    assert _rules(good) == set()


def test_copyreg_newobj_of_a_non_allocatable_class_is_reported() -> None:
    data = (
        A.proto(2)
        + A.glob("copyreg", "__newobj__")
        + b"("
        + A.glob("torch", "Tensor")
        + b"J\x00\x00\x00\x40tR."
    )
    assert "TWS-PKL-CALL-UNSAFE" in _rules(data)


def test_build_of_a_class_with_an_unreviewed_setstate_is_reported() -> None:
    # torch.Generator is allowlisted (a value) but its C __setstate__ is not a reviewed one.
    assert "torch.Generator" in callables.CLASSES - callables.BUILDABLE
    data = A.proto(2) + A.glob("torch", "Generator") + b"(" + A.bu("cpu") + b"tR}b."
    assert "TWS-PKL-CALL-UNSAFE" in _rules(data)


def test_real_sklearn_neighbours_load_through_the_closed_set() -> None:
    import pickle

    import numpy
    from sklearn.neighbors import KDTree  # type: ignore[import-untyped]

    from trainwarden.loading._unpickler import Enforcer, restricted_loads

    tree = KDTree(numpy.arange(12.0).reshape(6, 2))
    data = pickle.dumps(tree)
    assert not {f.rule_id for f in scan_bytes(data, "kd.pkl").findings} & {"TWS-PKL-CALL-UNSAFE"}
    got = restricted_loads(data, Enforcer(Policy.default()))
    assert type(got) is KDTree
    assert got.query([[0.0, 1.0]], k=1)[1][0][0] == 0


def test_user_allow_entries_are_the_users_decision() -> None:
    data = A.proto(2) + A.glob("torch.nn.functional", "relu") + b"(NtR."
    policy = Policy.default().with_overrides(allow=["torch.nn.functional.relu"])
    assert "TWS-PKL-CALL-UNSAFE" not in {
        f.rule_id for f in analyze_pickle(data, policy=policy).findings
    }


def test_real_checkpoints_have_no_use_findings() -> None:
    import collections
    import pickle

    import numpy
    import torch

    objs = [
        torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()).state_dict(),
        {"rng": numpy.random.default_rng(0), "legacy": numpy.random.RandomState(0)},
        collections.defaultdict(list, a=[1]),
        numpy.ma.masked_array([1, 2], mask=[False, True]),
    ]
    for obj in objs:
        for proto in (2, 4):
            report = scan_bytes(pickle.dumps(obj, protocol=proto), "real.pkl")
            assert [f for f in report.findings if f.rule_id == "TWS-PKL-CALL-UNSAFE"] == []
