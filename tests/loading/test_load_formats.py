"""trainwarden.load on real files written by torch, pickle, numpy and joblib."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch

import trainwarden
from trainwarden.loading import LoadError, load_with_report
from trainwarden.scan._policy import Policy

from ._payloads import ExecPayload, SystemPayload, call_pickle


def _state_dict() -> dict[str, Any]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    sd: dict[str, Any] = collections.OrderedDict(lin.state_dict())
    sd["transposed"] = sd["weight"].t()  # non-contiguous view of a shared storage
    sd["half"] = torch.arange(6, dtype=torch.float16)
    sd["meta"] = {"step": 7, "lr": [0.1, 0.01], "name": "tiny", "shape": torch.Size([4, 3])}
    return sd


def _assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_torch_checkpoint_equals_torch_load(tmp_path: Path, zipfile_format: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save(_state_dict(), path, _use_new_zipfile_serialization=zipfile_format)
    got = trainwarden.load(path)
    _assert_same(got, torch.load(path, weights_only=False))
    # views keep sharing storage, as with torch.load
    assert (
        got["transposed"].untyped_storage().data_ptr() == got["weight"].untyped_storage().data_ptr()
    )


def test_map_location_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, path)
    got = trainwarden.load(path, map_location="meta")
    assert got["w"].device.type == "meta"


def test_raw_pickle_numpy_and_joblib_equal_their_loaders(tmp_path: Path) -> None:
    obj = {"ints": [1, 2, 3], "nested": {"t": (1.5, "x")}, "set": {1, 2}, "none": None}
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(obj, protocol=4))
    assert trainwarden.load(tmp_path / "p.pkl") == obj

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", arr)
    _assert_same(trainwarden.load(tmp_path / "a.npy"), np.load(tmp_path / "a.npy"))

    objarr = np.array([{"k": 1}, [1, 2], "s"], dtype=object)
    np.save(tmp_path / "o.npy", objarr, allow_pickle=True)
    got = trainwarden.load(tmp_path / "o.npy")
    ref = np.load(tmp_path / "o.npy", allow_pickle=True)
    assert got.dtype == ref.dtype and list(got) == list(ref)

    np.savez(tmp_path / "z.npz", a=arr, b=np.ones(3, dtype=np.int64))
    got_z = trainwarden.load(tmp_path / "z.npz")
    with np.load(tmp_path / "z.npz", allow_pickle=True) as ref_z:
        assert sorted(got_z) == sorted(ref_z.keys())
        for k in ref_z:
            _assert_same(got_z[k], ref_z[k])

    value = {"weights": arr, "bias": np.zeros(4), "epochs": 3}
    for compress in (0, 3):
        path = tmp_path / f"j{compress}.joblib"
        joblib.dump(value, path, compress=compress)
        _assert_same(trainwarden.load(path), joblib.load(path))


def test_report_names_format_digest_and_resolved_globals(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(1)}, path)
    _obj, report = load_with_report(path)
    assert report.sha256 is None  # hashing is skipped unless a manifest applies or it is asked
    _obj, report = load_with_report(path, hash_file=True)
    assert report.format == "torch-zip"
    assert report.size == path.stat().st_size
    import hashlib

    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    resolved = [f for f in report.findings if f.rule_id == "TWL-TEL-FIND-CLASS"]
    assert resolved and "torch._utils._rebuild_tensor_v2" in resolved[0].evidence["globals"]


@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_payload_in_torch_checkpoint_is_refused(
    tmp_path: Path, canary: Path, zipfile_format: bool
) -> None:
    path = tmp_path / "evil.pt"
    sd = _state_dict()
    sd["extra"] = SystemPayload(canary)
    torch.save(sd, path, _use_new_zipfile_serialization=zipfile_format)
    with pytest.raises(trainwarden.UnsafeModelError) as exc:
        trainwarden.load(path)
    err = exc.value
    assert str(path) in err.message
    assert "system" in err.message  # the offending global is named
    assert any(f.severity.name == "CRITICAL" for f in err.findings)
    assert "do not load it" in err.diagnostics()
    assert not canary.exists()


def test_payloads_in_every_format_are_refused(tmp_path: Path, canary: Path) -> None:
    files = {
        "raw.pkl": pickle.dumps(ExecPayload(canary)),
        "opcodes.pkl": call_pickle("os", "system", f"touch {canary}"),
        "builtins_open.pkl": call_pickle("builtins", "open", str(canary), "w"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.save(tmp_path / "evil.npy", np.array([SystemPayload(canary)], dtype=object))
    np.savez(
        tmp_path / "evil.npz", ok=np.ones(2), bad=np.array([ExecPayload(canary)], dtype=object)
    )
    joblib.dump({"a": np.ones(3), "p": SystemPayload(canary)}, tmp_path / "evil.joblib")
    joblib.dump([SystemPayload(canary)], tmp_path / "evilz.joblib", compress=3)
    for path in sorted(tmp_path.iterdir()):
        if path.name == "CANARY":
            continue
        with pytest.raises(trainwarden.UnsafeModelError) as exc:
            trainwarden.load(path)
        assert str(path) in exc.value.message, path
        assert exc.value.findings, path
    assert not canary.exists()


def test_unknown_global_is_refused_with_policy_hint_and_allowed_by_override(
    tmp_path: Path,
) -> None:
    path = tmp_path / "od.pkl"
    path.write_bytes(call_pickle("ipaddress", "ip_address", "10.0.0.1"))
    with pytest.raises(trainwarden.UnsafeModelError) as exc:
        trainwarden.load(path)
    assert "ipaddress.ip_address" in exc.value.message
    assert "allow it in your policy" in exc.value.diagnostics()
    import ipaddress

    policy = Policy.default().with_overrides(allow=["ipaddress.ip_address"])
    assert trainwarden.load(path, policy=policy) == ipaddress.ip_address("10.0.0.1")


# torch 2.10+ deprecates TorchScript; the archive is still what a shared checkpoint can be.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_archive_with_reviewed_code_loads(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    loaded = trainwarden.load(path)
    assert isinstance(loaded, torch.jit.ScriptModule)
    x = torch.ones(1, 2)
    reference = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    assert torch.equal(loaded(x), reference(x))


def test_torchscript_archive_with_a_file_op_is_refused(tmp_path: Path) -> None:
    from trainwarden.drill._torchscript_payloads import archive

    canary = tmp_path / "canary"
    path = tmp_path / "evil.pt"
    path.write_bytes(archive("setstate", canary))
    with pytest.raises(trainwarden.UnsafeModelError, match=r"TorchScript.*torch\.from_file"):
        trainwarden.load(path)
    assert not canary.exists()


def test_bad_inputs_give_load_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="does not exist"):
        trainwarden.load(tmp_path / "missing.pt")
    with pytest.raises(LoadError, match=r"not a regular file \(a directory\)"):
        trainwarden.load(tmp_path)
    truncated = tmp_path / "trunc.pt"
    torch.save({"w": torch.ones(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(LoadError) as exc:
        trainwarden.load(truncated)
    assert str(truncated) in exc.value.message
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(LoadError, match="neither a PyTorch checkpoint"):
        trainwarden.load(tmp_path / "other.zip")


def test_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(3)}, path)
    opened: list[str] = []
    real_open = Path.open
    real_os_open = os.open

    def counting_open(self: Path, *args: Any, **kw: Any) -> Any:
        if self == path:
            opened.append(str(args[0] if args else kw.get("mode", "r")))
        return real_open(self, *args, **kw)

    def counting_os_open(file: Any, flags: int, *args: Any, **kw: Any) -> int:
        if Path(file) == path:
            opened.append("rb" if flags & (os.O_WRONLY | os.O_RDWR) == 0 else "w")
        return real_os_open(file, flags, *args, **kw)

    monkeypatch.setattr(Path, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    trainwarden.load(path)
    assert opened == ["rb"]
    assert os.path.exists(path)
