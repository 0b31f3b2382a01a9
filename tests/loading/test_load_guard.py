"""The process-wide guard: every unpickling entry point scans first (real libraries, real files)."""

from __future__ import annotations

import _pickle
import io
import pickle
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch

import trainwarden
import trainwarden.guard
from trainwarden._internal.sink import MemorySink
from trainwarden.loading import UnsafeModelWarning
from trainwarden.loading._guard import Guard

from ._payloads import ExecPayload, NonSeekable, SystemPayload, call_pickle

Install = Callable[..., Guard]


class MadeBeforeInstall(pickle.Unpickler):
    """An unpickler subclass that exists before the guard is installed (like joblib's)."""


class PyMadeBeforeInstall(pickle._Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(module, name)


def _entry_points(payload: bytes, files: dict[str, Path]) -> dict[str, Callable[[], Any]]:
    class MadeAfterInstall(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return super().find_class(module, name)

    def pickle_load_file() -> Any:
        with files["pkl"].open("rb") as fh:
            return pickle.load(fh)

    def torch_load_file_object() -> Any:
        with files["pt"].open("rb") as fh:
            return torch.load(fh, weights_only=False)

    return {
        "pickle.loads": lambda: pickle.loads(payload),
        "pickle.load": lambda: pickle.load(io.BytesIO(payload)),
        "_pickle.loads": lambda: _pickle.loads(payload),
        "_pickle.load": lambda: _pickle.load(io.BytesIO(payload)),
        "pickle._loads": lambda: vars(pickle)["_loads"](payload),
        "pickle._load": lambda: vars(pickle)["_load"](io.BytesIO(payload)),
        "pickle.Unpickler": lambda: pickle.Unpickler(io.BytesIO(payload)).load(),
        "_pickle.Unpickler": lambda: _pickle.Unpickler(io.BytesIO(payload)).load(),
        "pickle._Unpickler": lambda: pickle._Unpickler(io.BytesIO(payload)).load(),
        "subclass made after install": lambda: MadeAfterInstall(io.BytesIO(payload)).load(),
        "subclass made before install": lambda: MadeBeforeInstall(io.BytesIO(payload)).load(),
        "py subclass made before install": lambda: PyMadeBeforeInstall(io.BytesIO(payload)).load(),
        "pickle.load(real file)": pickle_load_file,
        "pickle.load(non-seekable stream)": lambda: pickle.load(NonSeekable(payload)),
        "pickle._load(non-seekable stream)": lambda: vars(pickle)["_load"](NonSeekable(payload)),
        "pickle.Unpickler(non-seekable stream)": lambda: pickle.Unpickler(
            NonSeekable(payload)
        ).load(),
        "subclass made before install, non-seekable": lambda: MadeBeforeInstall(
            NonSeekable(payload)
        ).load(),
        "torch.load weights_only=True": lambda: torch.load(files["pt"], weights_only=True),
        "torch.load weights_only=False": lambda: torch.load(files["pt"], weights_only=False),
        "torch.load legacy": lambda: torch.load(files["legacy"], weights_only=False),
        "torch.load file object": torch_load_file_object,
        "torch.serialization.load": lambda: torch.serialization.load(files["pt"]),
        "numpy.load npy": lambda: np.load(files["npy"], allow_pickle=True),
        "numpy.load npz member": lambda: np.load(files["npz"], allow_pickle=True)["bad"],
        "joblib.load": lambda: joblib.load(files["joblib"]),
    }


def _files(tmp_path: Path, canary: Path) -> dict[str, Path]:
    files = {
        "pkl": tmp_path / "evil.pkl",
        "pt": tmp_path / "evil.pt",
        "legacy": tmp_path / "legacy.pt",
        "npy": tmp_path / "evil.npy",
        "npz": tmp_path / "evil.npz",
        "joblib": tmp_path / "evil.joblib",
    }
    files["pkl"].write_bytes(pickle.dumps(SystemPayload(canary)))
    torch.save({"w": torch.ones(2), "x": SystemPayload(canary)}, files["pt"])
    torch.save({"x": ExecPayload(canary)}, files["legacy"], _use_new_zipfile_serialization=False)
    np.save(files["npy"], np.array([SystemPayload(canary)], dtype=object))
    np.savez(files["npz"], bad=np.array([ExecPayload(canary)], dtype=object))
    joblib.dump({"a": np.arange(3), "x": SystemPayload(canary)}, files["joblib"])
    return files


@pytest.mark.parametrize("mode", ["block", "warn"])
def test_every_entry_point_is_blocked(
    guard: Install, tmp_path: Path, canary: Path, payload_bytes: bytes, mode: str
) -> None:
    """Warn mode lets UNKNOWN globals through, never DANGEROUS ones: through every entry point,
    including those with no pre-scan (a subclass made before install, a non-seekable stream)
    and joblib.load, where the unpickler's own check is the only one that sees the global."""
    files = _files(tmp_path, canary)
    g = guard(mode=mode)
    for name, call in _entry_points(payload_bytes, files).items():
        with pytest.raises(
            trainwarden.UnsafeModelError, match=r"(os|posix)\.system|builtins\.exec"
        ):
            call()
        assert not canary.exists(), name
    assert g.findings  # the guard kept what it refused
    assert {f.rule_id for f in g.findings} >= {"TWL-GLOBAL-DANGEROUS"}


def test_torch_force_no_weights_only_env_does_not_bypass(
    guard: Install, tmp_path: Path, canary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _files(tmp_path, canary)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    guard()
    with pytest.raises(trainwarden.UnsafeModelError):
        torch.load(files["pt"])
    with pytest.raises(trainwarden.UnsafeModelError):
        torch.load(files["pt"], weights_only=True)
    assert not canary.exists()


def test_reference_bound_before_install_is_rebound(
    guard: Install, canary: Path, payload_bytes: bytes
) -> None:
    # A module that did `from pickle import loads` / `from torch import load` before the install.
    mod = types.ModuleType("tw_test_early_binder")
    exec("from pickle import loads\nfrom torch import load as tload\n", mod.__dict__)  # noqa: S102 - builds a module in code
    sys.modules[mod.__name__] = mod
    try:
        guard()
        with pytest.raises(trainwarden.UnsafeModelError):
            mod.loads(payload_bytes)
        assert mod.tload is torch.load
    finally:
        del sys.modules[mod.__name__]
    trainwarden.guard.uninstall()
    assert mod.loads is _pickle.loads


def test_clean_loads_are_unchanged_under_the_guard(guard: Install, tmp_path: Path) -> None:
    weights = torch.randn(3, 2)
    sd = {"w": weights, "step": 4}
    torch.save(sd, tmp_path / "ok.pt")
    torch.save(sd, tmp_path / "ok_legacy.pt", _use_new_zipfile_serialization=False)
    np.save(tmp_path / "ok.npy", np.arange(4))
    joblib.dump({"a": np.arange(5)}, tmp_path / "ok.joblib")
    data = {"a": [1, 2.5, "x"], "b": (None, True), "c": {3, 4}}
    guard()
    assert pickle.loads(pickle.dumps(data)) == data
    assert vars(pickle)["_loads"](pickle.dumps(data, protocol=0)) == data
    for path in (tmp_path / "ok.pt", tmp_path / "ok_legacy.pt"):
        for wo in (True, False):
            got = torch.load(path, weights_only=wo)
            assert torch.equal(got["w"], weights) and got["step"] == 4
    np.testing.assert_array_equal(np.load(tmp_path / "ok.npy", allow_pickle=True), np.arange(4))
    np.testing.assert_array_equal(joblib.load(tmp_path / "ok.joblib")["a"], np.arange(5))
    # several pickles in one stream: each load reads exactly one, as before
    stream = io.BytesIO(pickle.dumps(1) + pickle.dumps([2]))
    assert pickle.load(stream) == 1 and pickle.load(stream) == [2]


def test_warn_mode_lets_unknown_through_but_never_dangerous(
    guard: Install, canary: Path, payload_bytes: bytes
) -> None:
    sink = MemorySink()
    guard(mode="warn", sink=sink)
    import ipaddress

    with pytest.warns(UnsafeModelWarning, match=r"ipaddress\.ip_address"):
        got = pickle.loads(call_pickle("ipaddress", "ip_address", "10.0.0.1"))
    assert got == ipaddress.ip_address("10.0.0.1")
    with pytest.raises(trainwarden.UnsafeModelError):
        pickle.loads(payload_bytes)
    assert not canary.exists()
    kinds = [k for k, _ in sink.events]
    assert "guard.warning" in kinds and "guard.refused" in kinds


def test_uninstall_restores_every_entry_point(guard: Install) -> None:
    before = (pickle.loads, pickle.Unpickler, pickle._Unpickler, torch.load, np.load, joblib.load)
    find_class_before = PyMadeBeforeInstall.find_class
    g = guard()
    assert pickle.loads is not before[0] and torch.load is not before[3]
    assert trainwarden.guard.active() is g
    g.uninstall()
    after = (pickle.loads, pickle.Unpickler, pickle._Unpickler, torch.load, np.load, joblib.load)
    assert after == before
    assert PyMadeBeforeInstall.find_class is find_class_before
    assert "find_class" not in vars(MadeBeforeInstall)
    assert trainwarden.guard.active() is None


def test_guard_verifies_manifests_on_torch_load(guard: Install, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    trainwarden.save({"w": torch.ones(2)}, path)
    guard()
    assert torch.equal(torch.load(path)["w"], torch.ones(2))
    torch.save({"w": torch.zeros(2)}, path)  # changed after the manifest was written
    with pytest.raises(trainwarden.loading.ManifestError, match=r"ckpt\.pt"):
        torch.load(path)


def test_library_errors_are_unchanged_for_missing_files(guard: Install, tmp_path: Path) -> None:
    guard()
    with pytest.raises(FileNotFoundError):
        torch.load(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError):
        np.load(tmp_path / "missing.npy", allow_pickle=True)
    with pytest.raises(FileNotFoundError):
        joblib.load(tmp_path / "missing.joblib")


def test_trainwarden_load_works_while_the_guard_is_installed(
    guard: Install, tmp_path: Path, canary: Path
) -> None:
    sd = {"w": torch.arange(4)}
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(sd, tmp_path / "zip.pt")
    torch.save({"x": SystemPayload(canary)}, tmp_path / "evil.pt")
    g = guard()
    for name in ("legacy.pt", "zip.pt"):
        assert torch.equal(trainwarden.load(tmp_path / name)["w"], sd["w"])
    with pytest.raises(trainwarden.UnsafeModelError):
        trainwarden.load(tmp_path / "evil.pt")
    assert not g.findings  # trainwarden.load does its own checks; the guard saw nothing to do


def test_install_twice_reconfigures_and_context_manager_uninstalls(canary: Path) -> None:
    import ipaddress

    from ._payloads import call_pickle

    data = call_pickle("ipaddress", "ip_address", "10.0.0.1")
    with trainwarden.guard.install(mode="block") as g:
        with pytest.raises(trainwarden.UnsafeModelError):
            pickle.loads(data)
        assert trainwarden.guard.install(mode="warn") is g
        with pytest.warns(UnsafeModelWarning):
            assert pickle.loads(data) == ipaddress.ip_address("10.0.0.1")
    assert trainwarden.guard.active() is None
    assert pickle.loads is _pickle.loads


class _IpViaFunction:
    """Pickles to ``ipaddress.ip_address("10.0.0.1")``: harmless, but not on the allowlist."""

    def __reduce__(self) -> tuple[Any, ...]:
        import ipaddress

        return (ipaddress.ip_address, ("10.0.0.1",))


def _unknown_entry_points(tmp_path: Path) -> dict[str, Callable[[], Any]]:
    """Entry points whose only check is the unpickler's own, fed a pickle with an UNKNOWN global."""
    data = call_pickle("ipaddress", "ip_address", "10.0.0.1")
    path = tmp_path / "unknown.joblib"
    joblib.dump({"a": np.arange(3), "ip": _IpViaFunction()}, path)
    return {
        "subclass made before install": lambda: MadeBeforeInstall(io.BytesIO(data)).load(),
        "py subclass made before install": lambda: PyMadeBeforeInstall(io.BytesIO(data)).load(),
        "pickle.load(non-seekable stream)": lambda: pickle.load(NonSeekable(data)),
        "joblib.load": lambda: joblib.load(path)["ip"],
    }


def test_block_mode_refuses_unknown_globals_without_a_prescan(
    guard: Install, tmp_path: Path
) -> None:
    calls = _unknown_entry_points(tmp_path)
    guard(mode="block")
    for name, call in calls.items():
        with pytest.raises(trainwarden.UnsafeModelError, match=r"ipaddress\."):
            call()
        assert name


def test_warn_mode_loads_unknown_globals_without_a_prescan_with_a_warning(
    guard: Install, tmp_path: Path
) -> None:
    import ipaddress

    calls = _unknown_entry_points(tmp_path)
    guard(mode="warn")
    for name, call in calls.items():
        with pytest.warns(UnsafeModelWarning, match=r"ipaddress\."):
            got = call()
        assert got == ipaddress.ip_address("10.0.0.1"), name


def test_enforcer_findings_name_the_global_the_verdict_and_why() -> None:
    """What a refusal or a warning reports (the sink and the report carry these findings)."""
    import dataclasses

    from trainwarden.findings import Finding, Severity
    from trainwarden.loading._unpickler import Enforcer
    from trainwarden.scan import Policy

    policy = Policy.default()
    block = Enforcer(policy, "block", "m.pt")
    with pytest.raises(trainwarden.UnsafeModelError, match=r"refused to load m\.pt") as err:
        block.check("os", "system")
    reason = policy.classify("os", "system")[1]
    dangerous = Finding(
        "TWL-GLOBAL-DANGEROUS",
        Severity.CRITICAL,
        f"m.pt needs os.system, which can run code: {reason}",
        "m.pt",
        {"module": "os", "name": "system", "verdict": "dangerous", "reason": reason},
    )
    assert block.findings == [dangerous] and list(err.value.findings) == [dangerous]
    assert err.value.path == "m.pt"
    assert block.findings[0].evidence == dangerous.evidence  # evidence is not compared by ==
    warn = Enforcer(policy, "warn", "m.pt")
    with pytest.warns(UnsafeModelWarning, match="ipaddress.ip_address") as warned:
        warn.check("ipaddress", "ip_address")
        warn.check("ipaddress", "ip_address")  # one warning and one finding per global
    assert len(warned) == 1
    evidence = {"module": "ipaddress", "name": "ip_address", "verdict": "unknown"}
    unknown = Finding(
        "TWL-GLOBAL-UNKNOWN",
        Severity.HIGH,
        "m.pt needs ipaddress.ip_address, which the policy does not list as safe: "
        "not on the allowlist",
        "m.pt",
        {**evidence, "reason": "not on the allowlist"},
    )
    assert warn.findings == [unknown]
    assert warn.findings[0].evidence == unknown.evidence
    strict = Enforcer(dataclasses.replace(policy, unknown_severity=Severity.CRITICAL), "block")
    with pytest.raises(trainwarden.UnsafeModelError):
        strict.check("ipaddress", "ip_address")
    assert [(f.rule_id, f.severity) for f in strict.findings] == [
        ("TWL-GLOBAL-UNKNOWN", Severity.CRITICAL)
    ]


@pytest.mark.parametrize(("module", "name"), [("pathlib", "os.system"), ("argparse", "_os.system")])
def test_warn_mode_refuses_a_dangerous_object_reached_through_another_module(
    guard: Install, canary: Path, module: str, name: str
) -> None:
    """``pathlib`` / ``os.system`` is os.system: the decision is on the object the attribute
    path reaches, which its spelling cannot identify, so warn mode must refuse it too."""
    payload = call_pickle(module, name, f"touch {canary}").replace(b"\x80\x02", b"\x80\x04", 1)
    guard(mode="warn")
    with pytest.raises(trainwarden.UnsafeModelError, match=re.escape(f"{module}.{name}")):
        pickle.loads(payload)
    with pytest.raises(trainwarden.UnsafeModelError):
        pickle.Unpickler(NonSeekable(payload)).load()
    assert not canary.exists()


# -- block mode builds through the closed set: the bytes checked are the bytes unpickled ----------

# bytearray is allowlisted by name; called with an int it allocates that many bytes, a shape the
# closed set refuses (it only builds bytearrays from given contents). No pre-scan is needed for
# the refusal: it happens at the REDUCE, before the call.
_ALLOCATE = b"\x80\x02cbuiltins\nbytearray\nK\x10\x85R."
_BENIGN = pickle.dumps([1, 2, 3], protocol=2)


class SwapOnReread(io.BytesIO):
    """A seekable stream that serves benign bytes to the first read (a pre-scan) and other bytes
    after it is sought back: what a pre-scan sees is not what the unpickler would read."""

    def __init__(self, first: bytes, then: bytes) -> None:
        super().__init__(first)
        self._then = then
        self._reads = 0

    def read(self, n: int | None = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            pos = self.tell()
            self.seek(0)
            self.truncate()
            self.write(self._then)
            self.seek(pos)
        return super().read(n)


def _closed_set_entry_points(payload: bytes) -> dict[str, Callable[[], Any]]:
    class MadeAfterInstall(pickle.Unpickler):
        pass

    class PyMadeAfterInstall(pickle._Unpickler):
        pass

    return {
        "pickle.loads": lambda: pickle.loads(payload),
        "pickle.load(non-seekable)": lambda: pickle.load(NonSeekable(payload)),
        "pickle._load(non-seekable)": lambda: vars(pickle)["_load"](NonSeekable(payload)),
        "pickle.Unpickler(non-seekable)": lambda: pickle.Unpickler(NonSeekable(payload)).load(),
        "pickle._Unpickler(non-seekable)": lambda: pickle._Unpickler(NonSeekable(payload)).load(),
        "pickle.load(swapped on re-read)": lambda: pickle.load(SwapOnReread(_BENIGN, payload)),
        "pickle.Unpickler(swapped on re-read)": lambda: pickle.Unpickler(
            SwapOnReread(_BENIGN, payload)
        ).load(),
        "subclass made after install": lambda: MadeAfterInstall(NonSeekable(payload)).load(),
        "py subclass made after install": lambda: PyMadeAfterInstall(NonSeekable(payload)).load(),
        "subclass made before install": lambda: MadeBeforeInstall(NonSeekable(payload)).load(),
        "py subclass made before install": lambda: PyMadeBeforeInstall(NonSeekable(payload)).load(),
        "stock pure-Python class made before install": lambda: ORIGINAL_PY_UNPICKLER(
            NonSeekable(payload)
        ).load(),
    }


ORIGINAL_PY_UNPICKLER = pickle._Unpickler


def test_swap_on_reread_really_swaps() -> None:
    """The stream above does what the tests below rely on (without a guard)."""
    stream = SwapOnReread(_BENIGN, _ALLOCATE)
    assert stream.read() == _BENIGN
    stream.seek(0)
    assert pickle.load(stream) == bytearray(16)


def test_block_mode_refuses_a_call_outside_the_closed_set_at_every_entry_point(
    guard: Install,
) -> None:
    """Every globally named object is SAFE, so only the closed set can refuse: through streams
    with no pre-scan, a stream that changes after its pre-scan, and unpickler subclasses."""
    calls = _closed_set_entry_points(_ALLOCATE)
    for name, call in calls.items():  # without the guard every one of them builds the value
        assert call() == bytearray(16), name
    g = guard(mode="block")
    for name, call in _closed_set_entry_points(_ALLOCATE).items():
        with pytest.raises(trainwarden.UnsafeModelError, match=r"REDUCE") as err:
            call()
        assert any(f.rule_id == "TWL-CONSTRUCT-REFUSED" for f in err.value.findings), name
    assert any(f.rule_id == "TWL-CONSTRUCT-REFUSED" for f in g.findings)


def test_block_mode_closed_set_keeps_the_stream_position_and_clean_values(guard: Install) -> None:
    guard(mode="block")
    data = {"a": [1, 2.5, "x"], "b": (None, True), "c": {3, 4}, "d": bytearray(b"ab")}
    stream = NonSeekable(pickle.dumps(data) + pickle.dumps([2], protocol=0) + b"tail")
    assert pickle.load(stream) == data
    assert pickle.Unpickler(stream).load() == [2]
    assert stream.read() == b"tail"


@pytest.mark.parametrize("mode", ["block", "warn"])
def test_inst_and_obj_build_through_every_pure_python_unpickler(guard: Install, mode: str) -> None:
    """INST and OBJ (protocols 0 and 1) call ``_instantiate`` with the class and its arguments:
    through the closed set in block mode, pickle's own in warn mode, with the same values."""
    import collections

    cases = {
        b"(icollections\nOrderedDict\n.": collections.OrderedDict(),
        b"(ccollections\nOrderedDict\no.": collections.OrderedDict(),
        b"(cbuiltins\nset\n(lp0\nI1\naI2\nao.": {1, 2},
    }
    guard(mode=mode)
    for data, want in cases.items():
        for cls in (
            pickle._Unpickler,
            ORIGINAL_PY_UNPICKLER,
            PyMadeBeforeInstall,
            pickle.Unpickler,
        ):
            got = cls(io.BytesIO(data)).load()
            assert got == want and type(got) is type(want), (cls, data)


def test_warn_mode_keeps_the_library_unpickler(guard: Install) -> None:
    """Warn mode is for reporting: the closed set is a block-mode guarantee only."""
    guard(mode="warn")
    assert pickle.load(NonSeekable(_ALLOCATE)) == bytearray(16)


def test_user_allowed_objects_are_called_in_block_mode(guard: Install, tmp_path: Path) -> None:
    """An object the user's own policy allows is the user's decision: the closed set calls it."""
    import ipaddress

    from trainwarden.scan import Policy

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('allow = ["ipaddress.ip_address"]\n')
    guard(mode="block", policy=Policy.from_file(policy_file))
    data = call_pickle("ipaddress", "ip_address", "10.0.0.1")
    want = ipaddress.ip_address("10.0.0.1")
    assert pickle.load(NonSeekable(data)) == want
    assert MadeBeforeInstall(NonSeekable(data)).load() == want
    assert pickle._Unpickler(NonSeekable(data)).load() == want
    assert PyMadeBeforeInstall(NonSeekable(data)).load() == want
    assert ORIGINAL_PY_UNPICKLER(NonSeekable(data)).load() == want


def test_block_mode_keeps_the_callers_unpickler_arguments(guard: Install) -> None:
    """The closed run reads with the caller's encoding (numpy and torch pass one for Python 2
    pickles), for the guard's classes and for a subclass made before install."""
    py2 = b"S'abc'\n."
    guard(mode="block")
    for cls in (pickle.Unpickler, _pickle.Unpickler, MadeBeforeInstall, pickle._Unpickler):
        assert cls(io.BytesIO(py2), encoding="bytes").load() == b"abc", cls
        assert cls(io.BytesIO(py2)).load() == "abc", cls
    assert pickle.loads(py2, encoding="bytes") == b"abc"


def test_block_mode_refuses_a_preexisting_subclass_whose_stream_it_cannot_see(
    guard: Install,
) -> None:
    class OwnInit(pickle.Unpickler):
        def __init__(self, data: bytes) -> None:
            super().__init__(io.BytesIO(data))

    guard(mode="block")
    with pytest.raises(trainwarden.UnsafeModelError, match="made before the guard"):
        OwnInit(_BENIGN).load()
    trainwarden.guard.uninstall()
    assert OwnInit(_BENIGN).load() == [1, 2, 3]


def test_uninstall_restores_the_stock_pure_python_unpickler(guard: Install) -> None:
    import joblib.numpy_pickle

    dispatch = pickle._Unpickler.dispatch
    joblib_dispatch = joblib.numpy_pickle.NumpyUnpickler.dispatch
    guard(mode="block")
    assert pickle._Unpickler is not ORIGINAL_PY_UNPICKLER
    assert ORIGINAL_PY_UNPICKLER.dispatch is not dispatch
    assert joblib.numpy_pickle.NumpyUnpickler.dispatch is not joblib_dispatch
    trainwarden.guard.uninstall()
    assert ORIGINAL_PY_UNPICKLER.dispatch is dispatch
    assert joblib.numpy_pickle.NumpyUnpickler.dispatch is joblib_dispatch
    for name in ("load_reduce", "load_build", "_instantiate", "_call", "tw_enforcer"):
        assert not getattr(getattr(ORIGINAL_PY_UNPICKLER, name, None), "fget", None)
    assert "tw_enforcer" not in vars(ORIGINAL_PY_UNPICKLER)
    assert "__init__" not in vars(MadeBeforeInstall) and "load" not in vars(MadeBeforeInstall)


def test_stock_pure_python_class_checks_globals_before_importing(
    guard: Install, tmp_path: Path, canary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reference to ``pickle._Unpickler`` kept from before the install (``from pickle import
    _Unpickler``) must not import a module the policy does not allow: importing runs its code."""
    (tmp_path / "tw_import_side_effect.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    payload = b"\x80\x02ctw_import_side_effect\nx\n."
    guard(mode="block")
    with pytest.raises(trainwarden.UnsafeModelError, match="tw_import_side_effect"):
        ORIGINAL_PY_UNPICKLER(io.BytesIO(payload)).load()
    assert "tw_import_side_effect" not in sys.modules
    guard(mode="warn")
    with pytest.raises(trainwarden.UnsafeModelError, match=r"(os|posix)\.system"):
        ORIGINAL_PY_UNPICKLER(io.BytesIO(call_pickle("os", "system", f"touch {canary}"))).load()


def test_warn_mode_warns_once_per_global_in_one_load_of_the_stock_class(guard: Install) -> None:
    import ipaddress

    one = b"cipaddress\nip_address\n(S'10.0.0.1'\ntR"
    data = b"(" + one + one + b"l."
    guard(mode="warn")
    with pytest.warns(UnsafeModelWarning) as warned:
        got = ORIGINAL_PY_UNPICKLER(io.BytesIO(data)).load()
    assert got == [ipaddress.ip_address("10.0.0.1")] * 2
    assert len([w for w in warned if "ipaddress.ip_address" in str(w.message)]) == 1
