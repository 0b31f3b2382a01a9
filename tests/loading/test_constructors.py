"""The safe loader refuses before it constructs: the closed constructor set, opcode by opcode.

Every payload is built by hand and names only a canary under ``tmp_path``; each test first proves
that plain ``pickle.loads`` *would* create the canary (so the refusal is of a live payload) where
the global is still importable, and then that ``trainwarden.load``'s unpickler refuses with the
canary absent. The scanner is bypassed on purpose (``restricted_loads``), so these tests judge the
unpickler alone, as an attacker who got past the static pass would meet it.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwarden.loading import _constructors as C
from trainwarden.loading._types import UnsafeModelError
from trainwarden.loading._unpickler import Enforcer, restricted_loads
from trainwarden.scan._policy import Policy


class A:
    """The few pickle opcodes these payloads need, written by hand."""

    @staticmethod
    def proto(n: int) -> bytes:
        return b"\x80" + bytes([n])

    @staticmethod
    def glob(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    @staticmethod
    def bu(s: str) -> bytes:
        raw = s.encode()
        return b"X" + len(raw).to_bytes(4, "little") + raw

    @staticmethod
    def sbb(b: bytes) -> bytes:
        return b"C" + bytes([len(b)]) + b


def _enforcer(*allow: str) -> Enforcer:
    return Enforcer(Policy.default().with_overrides(allow=list(allow)))


def _allowlisted(*names: str) -> Enforcer:
    """The built-in policy as if ``names`` were on the built-in allowlist (as memmap once was):
    safe to name, and the closed constructor set alone decides the calls."""
    base = Policy.default()
    return Enforcer(
        Policy(
            safe={**base.safe, **{n: "simulated allowlist entry" for n in names}},
            dangerous={k: v for k, v in base.dangerous.items() if "memmap" not in k},
        )
    )


def _s(text: str) -> bytes:
    return A.bu(text)


def _mm_args(canary: Path) -> bytes:
    return _s(str(canary)) + _s("uint8") + _s("w+") + b"K\x00" + b"K\x04\x85"


def _live(data: bytes, canary: Path) -> None:
    """Plain pickle would create the canary: the payload is live."""
    with contextlib.suppress(Exception):  # the file exists before any later failure
        pickle.loads(data)
    assert canary.exists()
    canary.unlink()


def _refused(data: bytes, canary: Path, enforcer: Enforcer) -> UnsafeModelError:
    with pytest.raises(UnsafeModelError) as exc:
        restricted_loads(data, enforcer)
    assert not canary.exists()
    return exc.value


MEMMAP = ("numpy._core.memmap", "memmap")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda c: A.proto(2) + A.glob(*MEMMAP) + b"(" + _mm_args(c) + b"tR.", id="reduce"
        ),
        pytest.param(
            lambda c: A.proto(2) + A.glob(*MEMMAP) + b"(" + _mm_args(c) + b"t\x81.", id="newobj"
        ),
        pytest.param(
            lambda c: (
                A.proto(4)
                + A.glob(*MEMMAP)
                + b")}("
                + _s("filename")
                + _s(str(c))
                + _s("mode")
                + _s("w+")
                + _s("shape")
                + b"K\x04\x85u\x92."
            ),
            id="newobj_ex",
        ),
        pytest.param(lambda c: A.proto(2) + b"(" + A.glob(*MEMMAP) + _mm_args(c) + b"o.", id="obj"),
        pytest.param(
            lambda c: (
                A.proto(2)
                + A.glob("copyreg", "__newobj__")
                + b"("
                + A.glob(*MEMMAP)
                + _mm_args(c)
                + b"tR."
            ),
            id="copyreg_newobj",
        ),
        pytest.param(
            lambda c: (
                A.proto(2)
                + A.glob("torch._tensor", "_rebuild_from_type_v2")
                + b"("
                + A.glob(*MEMMAP)
                + A.glob("torch", "Tensor")
                + b"("
                + _mm_args(c)
                + b"t}tR."
            ),
            id="rebuild_from_type_v2",
        ),
    ],
)
def test_an_allowlisted_name_is_not_thereby_callable(tmp_path: Path, build: object) -> None:
    """Were memmap back on the allowlist, no opcode could call or allocate it."""
    canary = tmp_path / "canary"
    data = build(canary)  # type: ignore[operator]
    _live(data, canary)
    err = _refused(data, canary, _allowlisted("numpy._core.memmap.memmap"))
    assert "refused" in err.message
    assert err.findings[-1].rule_id == "TWL-CONSTRUCT-REFUSED"


def test_user_allowed_objects_are_called_only_through_their_own_opcode(tmp_path: Path) -> None:
    # A user allow entry trusts *that* object; handing it to an allowlisted constructor
    # (copyreg.__newobj__) still goes through the constructor's own checks.
    canary = tmp_path / "canary"
    data = (
        A.proto(2)
        + A.glob("copyreg", "__newobj__")
        + b"("
        + A.glob(*MEMMAP)
        + _mm_args(canary)
        + b"tR."
    )
    _refused(data, canary, _enforcer("numpy._core.memmap.memmap"))


def test_numpy_generator_ctor_handed_a_foreign_constructor_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = (
        A.proto(2)
        + A.glob("numpy.random._pickle", "__generator_ctor")
        + b"("
        + _s(str(canary))
        + A.glob("pathlib", "Path")
        + b"tR."
    )
    err = _refused(data, canary, _enforcer())
    assert "bit generator" in err.message


def test_build_with_an_unreviewed_setstate_is_refused() -> None:
    # http.cookies.Morsel (a dict subclass) has its own __setstate__, which no review covered.
    data = A.proto(2) + A.glob("http.cookies", "Morsel") + b")\x81}b."
    with pytest.raises(UnsafeModelError, match="__setstate__"):
        restricted_loads(data, _allowlisted("http.cookies.Morsel"))


def test_setitem_into_an_object_without_a_reviewed_setitem_is_refused() -> None:
    # SETITEM on an ndarray made by _reconstruct would write into the array's memory.
    data = (
        A.proto(2)
        + A.glob("numpy._core.multiarray", "_reconstruct")
        + b"("
        + A.glob("numpy", "ndarray")
        + b"K\x00\x85"
        + A.sbb(b"b")
        + b"tR"
        + b"K\x00K\x01s."
    )
    with pytest.raises(UnsafeModelError, match="__setitem__"):
        restricted_loads(data, _enforcer())


def test_enum_members_are_looked_up_without_calling_the_class() -> None:
    class Color:  # stand-in to prove no user code runs: members come from the class's table
        pass

    data = A.proto(2) + A.glob("uuid", "SafeUUID") + b"(K\x00tR."
    import uuid

    assert restricted_loads(data, _enforcer()) is uuid.SafeUUID.safe
    bad = A.proto(2) + A.glob("uuid", "SafeUUID") + b"(" + _s("x") + _s("a b") + b"tR."
    with pytest.raises(UnsafeModelError):
        restricted_loads(bad, _enforcer())
    assert Color is not None


def test_codec_encode_is_limited_to_text_codecs() -> None:
    ok = A.proto(2) + A.glob("_codecs", "encode") + b"(" + _s("abc") + _s("latin1") + b"tR."
    assert restricted_loads(ok, _enforcer()) == b"abc"
    bad = A.proto(2) + A.glob("_codecs", "encode") + b"(" + _s("abc") + _s("rot13") + b"tR."
    with pytest.raises(UnsafeModelError, match="encoding"):
        restricted_loads(bad, _enforcer())


def test_tensor_backward_hooks_are_refused() -> None:
    # Hooks are callables torch runs during backward(); torch.save never writes any.
    storage = torch.zeros(2).untyped_storage()
    hooks = collections.OrderedDict({0: np.ones})
    with pytest.raises(C.Refused, match="hooks"):
        C.call(torch._utils._rebuild_tensor_v2, (storage, 0, (2,), (1,), False, hooks))


@pytest.mark.parametrize(
    "obj",
    [
        collections.OrderedDict(a=np.ones(2)),
        collections.defaultdict(list, a=[1]),
        collections.deque([1, 2], maxlen=3),
        np.random.default_rng(1),
        np.random.RandomState(1),
        np.arange(6).reshape(2, 3),
        np.ma.masked_array([1.0, 2.0], mask=[False, True]),
        torch.Size([2, 3]),
        torch.device("cpu"),
    ],
    ids=lambda o: type(o).__name__,
)
def test_real_values_still_load(obj: object) -> None:
    for proto in (2, 4, 5):
        got = restricted_loads(pickle.dumps(obj, protocol=proto), _enforcer())
        assert type(got) is type(obj)


def test_torch_checkpoints_still_load(tmp_path: Path) -> None:
    import trainwarden

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.Adam(model.parameters())
    path = tmp_path / "ckpt.pt"
    torch.save(
        {"model": model, "opt": opt.state_dict(), "p": torch.nn.Parameter(torch.ones(3))}, path
    )
    got = trainwarden.load(path)
    assert isinstance(got["model"], torch.nn.Sequential)
    assert torch.equal(got["p"], torch.ones(3))


def test_the_tables_name_objects_not_spellings() -> None:
    # Both numpy spellings of _reconstruct are one object, judged once.
    import numpy.core.multiarray as legacy

    assert C._spec_for(legacy._reconstruct) is C._spec_for(np._core.multiarray._reconstruct)
    assert C._spec_for(np.memmap) is None
