"""The guard's replacements of ``pickle.load``/``loads`` keep every argument of the originals.

Written against bench/mutation.py's ``guard`` target: a guarded entry point that dropped the
caller's ``encoding``, ``errors``, ``fix_imports`` or ``buffers`` would change what a clean
pickle loads as, or fail on it, for every program that runs under the guard.
"""

from __future__ import annotations

import _pickle
import dataclasses
import io
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from trainwarden.loading import UnsafeModelError, UnsafeModelWarning
from trainwarden.loading import _guard as guard_mod
from trainwarden.loading import _manifest as manifest
from trainwarden.loading._types import ManifestError
from trainwarden.scan._policy import Policy

from . import _closed_set_classes
from ._payloads import SystemPayload

Install = Callable[..., guard_mod.Guard]

PY2_STR = b"U\x03abc."  # a Python 2 str (SHORT_BINSTRING)
PY2_LATIN1 = b"U\x01\xe9."  # a Python 2 str that is not ASCII
PY2_GLOBAL = b"c__builtin__\nint\n."  # a Python 2 module name, mapped by fix_imports

LOADS: dict[str, Callable[..., Any]] = {
    "pickle.loads": lambda data, **kw: pickle.loads(data, **kw),
    "pickle._loads": lambda data, **kw: vars(pickle)["_loads"](data, **kw),
    "_pickle.loads": lambda data, **kw: _pickle.loads(data, **kw),
    "pickle.load": lambda data, **kw: pickle.load(io.BytesIO(data), **kw),
    "pickle._load": lambda data, **kw: vars(pickle)["_load"](io.BytesIO(data), **kw),
    "_pickle.load": lambda data, **kw: _pickle.load(io.BytesIO(data), **kw),
}


@pytest.fixture(params=["block", "warn"])
def installed(request: pytest.FixtureRequest, guard: Install) -> str:
    guard(mode=request.param)
    return str(request.param)


@pytest.mark.parametrize("entry", LOADS)
def test_guarded_entry_points_keep_the_callers_arguments(installed: str, entry: str) -> None:
    load = LOADS[entry]
    assert load(PY2_STR) == "abc"
    assert load(PY2_STR, encoding="bytes") == b"abc"
    assert load(PY2_LATIN1, encoding="latin1") == "\xe9"
    with pytest.raises(UnicodeDecodeError):
        load(PY2_LATIN1)
    assert load(PY2_LATIN1, errors="replace") == "\ufffd"
    assert load(PY2_GLOBAL) is int
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeModelWarning)  # warn mode: an unknown name
        with pytest.raises((ModuleNotFoundError, UnsafeModelError)):
            load(PY2_GLOBAL, fix_imports=False)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=buffers.append)
    assert bytes(load(data, buffers=buffers)) == b"abc"
    with pytest.raises(pickle.UnpicklingError, match="no \\*buffers\\* argument"):
        load(data)


@pytest.mark.parametrize("entry", ["pickle.loads", "pickle._loads", "_pickle.loads"])
def test_guarded_loads_refuses_text_as_the_originals_do(installed: str, entry: str) -> None:
    with pytest.raises(TypeError, match=r"^Can't load pickle from unicode string$"):
        LOADS[entry]("abc")


@pytest.mark.parametrize("mode", ["block", "warn"])
@pytest.mark.parametrize("entry", LOADS)
def test_a_refused_load_runs_nothing_before_its_refusal(
    guard: Install, tmp_path: Path, mode: str, entry: str
) -> None:
    # The pickle first calls a function the user's policy allows (which has a side effect),
    # then names os.system: the pre-scan refuses the whole pickle before the allowed call runs.
    # A guard that only checked each global as the unpickler reached it would run it first.
    canary = tmp_path / "canary"
    mod = _closed_set_classes.__name__
    allowed = Policy.default().with_overrides(allow=[f"{mod}.mark"])
    data = (
        b"\x80\x02c"
        + mod.encode()
        + b"\nmark\n(X"
        + len(str(canary)).to_bytes(4, "little")
        + str(canary).encode()
        + b"tR0cos\nsystem\n."
    )
    guard(mode=mode, policy=allowed)
    with pytest.raises(UnsafeModelError, match=r"os\.system"):
        LOADS[entry](data)
    assert not canary.exists()


def test_guarded_torch_load_checks_the_manifest_the_policy_or_key_requires(
    guard: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    guard(mode="block", policy=dataclasses.replace(Policy.default(), require_manifest=True))
    with pytest.raises(ManifestError) as err:
        torch.load(path)
    assert [f.rule_id for f in err.value.findings] == ["TWL-MAN-REQUIRED"]
    assert str(path) in err.value.message
    guard(mode="block")  # the default policy: no manifest needed ...
    assert torch.equal(torch.load(path)["w"], torch.ones(2))
    _key, pub = manifest.generate_keypair(tmp_path / "signer.pem")
    monkeypatch.setenv("TRAINWARDEN_MANIFEST_PUBKEY", str(pub))
    with pytest.raises(ManifestError) as err:  # ... unless a trusted key is configured
        torch.load(path)
    assert [f.rule_id for f in err.value.findings] == ["TWL-MAN-REQUIRED"]


def test_a_guarded_whole_file_refusal_names_the_file(
    guard: Install, tmp_path: Path, canary: Path
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": SystemPayload(canary)}, path)
    guard(mode="block")
    with pytest.raises(UnsafeModelError) as err:
        torch.load(path, weights_only=False)
    assert err.value.path == f"{path}:data.pkl"
    with path.open("rb") as fh, pytest.raises(UnsafeModelError) as err:
        torch.load(fh, weights_only=False)
    assert err.value.path == f"{path}:data.pkl"
    with pytest.raises(UnsafeModelError) as err:
        torch.load(io.BytesIO(path.read_bytes()), weights_only=False)
    assert err.value.path == "<file object>:data.pkl"


@pytest.mark.parametrize("mode", ["block", "warn"])
def test_a_guarded_stream_refusal_names_the_stream(
    guard: Install, tmp_path: Path, canary: Path, payload_bytes: bytes, mode: str
) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload_bytes)
    guard(mode=mode)
    for load in (pickle.load, vars(pickle)["_load"], lambda f: pickle.Unpickler(f).load()):
        with path.open("rb") as fh, pytest.raises(UnsafeModelError) as err:
            load(fh)
        assert err.value.path == str(path)
        with pytest.raises(UnsafeModelError) as err:
            load(io.BytesIO(payload_bytes))
        assert err.value.path == "<pickle stream>"
