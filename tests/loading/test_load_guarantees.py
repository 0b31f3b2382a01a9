"""Guarantees docs/loading.md makes about a load, each proved against an attacker who controls it:
the file on disk during the load, and the absence of a manifest when a key is trusted."""

from __future__ import annotations

import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import trainwarden
from trainwarden.loading import ManifestError
from trainwarden.loading import _manifest as manifest
from trainwarden.loading._guard import Guard
from trainwarden.scan import Policy

# A module (unknown to the default policy, allowed by the test's policy) whose function hands
# control to another thread, which rewrites the file being loaded, and waits until it has.
SWAP_MODULE = """
import threading

swap_requested = threading.Event()
swap_done = threading.Event()


def swap(tag):
    swap_requested.set()
    if not swap_done.wait(60):
        raise RuntimeError("the swapping thread never finished")
    return tag
"""


class _Swap:
    def __reduce__(self) -> tuple[object, ...]:
        import tw_swap_mod  # type: ignore[import-not-found]

        return (tw_swap_mod.swap, ("hook",))


@pytest.fixture
def swap_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "tw_swap_mod.py").write_text(SWAP_MODULE)
    monkeypatch.syspath_prepend(str(mods))
    import tw_swap_mod

    yield tw_swap_mod
    sys.modules.pop("tw_swap_mod", None)


def _swap_when_asked(mod: object, path: Path, replacement: bytes) -> threading.Thread:
    def run() -> None:
        if mod.swap_requested.wait(60):  # type: ignore[attr-defined]
            path.write_bytes(replacement)
        mod.swap_done.set()  # type: ignore[attr-defined]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("legacy", [False, True])
def test_file_swapped_during_the_load_changes_nothing(
    swap_module: object, tmp_path: Path, canary: Path, legacy: bool
) -> None:
    """The pickle hands control over before the tensor's bytes are read; the file is then
    replaced with a payload and other weights. The load returns the weights it first read."""
    from ._payloads import SystemPayload

    path = tmp_path / "model.pt"
    kw = {"_use_new_zipfile_serialization": False} if legacy else {}
    torch.save({"hook": _Swap(), "w": torch.arange(6.0)}, path, **kw)
    evil = tmp_path / "evil.pt"
    torch.save({"hook": SystemPayload(canary), "w": torch.zeros(6)}, evil, **kw)
    t = _swap_when_asked(swap_module, path, evil.read_bytes())
    policy = Policy.default().with_overrides(allow=["tw_swap_mod.swap"])
    got = trainwarden.load(path, policy=policy)
    t.join()
    assert path.read_bytes() == evil.read_bytes()  # the swap really happened, mid-load
    assert got["hook"] == "hook"
    assert torch.equal(got["w"], torch.arange(6.0))
    assert not canary.exists()


def test_raw_pickle_swapped_during_the_load_changes_nothing(
    swap_module: object, tmp_path: Path
) -> None:
    # the value after the hook lies far beyond any read-ahead buffer of a file reader
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps([_Swap(), b"A" * 300_000], protocol=4))
    replacement = pickle.dumps(["hook", b"B" * 300_000], protocol=4)
    t = _swap_when_asked(swap_module, path, replacement)
    got = trainwarden.load(path, policy=Policy.default().with_overrides(allow=["tw_swap_mod.swap"]))
    t.join()
    assert path.read_bytes() == replacement
    assert got == ["hook", b"A" * 300_000]


@pytest.mark.parametrize("legacy", [False, True])
def test_guarded_torch_load_of_a_file_swapped_during_the_load(
    swap_module: object, tmp_path: Path, canary: Path, guard: Callable[..., Guard], legacy: bool
) -> None:
    """Unguarded, torch.load of a legacy file overwritten at this point fails or reads the new
    storages; guarded, it reads the bytes that were checked."""
    from ._payloads import SystemPayload

    kw = {"_use_new_zipfile_serialization": False} if legacy else {}
    path = tmp_path / "model.pt"
    torch.save({"hook": _Swap(), "w": torch.arange(6.0)}, path, **kw)
    evil = tmp_path / "evil.pt"
    torch.save({"hook": SystemPayload(canary), "w": torch.zeros(6)}, evil, **kw)
    t = _swap_when_asked(swap_module, path, evil.read_bytes())
    guard(mode="block", policy=Policy.default().with_overrides(allow=["tw_swap_mod.swap"]))
    got = torch.load(path, weights_only=False)
    t.join()
    assert path.read_bytes() == evil.read_bytes()
    assert torch.equal(got["w"], torch.arange(6.0))
    assert not canary.exists()


def test_trusted_key_refuses_a_load_without_a_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guard: Callable[..., Guard]
) -> None:
    """Deleting the manifest is no way around a trusted key (trainwarden.load and the guard)."""
    _key, pub = manifest.generate_keypair(tmp_path / "signer.pem")
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert not manifest.manifest_path_for(path).exists()
    with pytest.raises(ManifestError) as err:
        trainwarden.load(path, manifest_key=pub)
    assert [f.rule_id for f in err.value.findings] == ["TWL-MAN-REQUIRED"]
    assert "model.pt" in err.value.message
    assert torch.equal(trainwarden.load(path)["w"], torch.ones(2))  # no key: no manifest needed
    monkeypatch.setenv("TRAINWARDEN_MANIFEST_PUBKEY", str(pub))
    with pytest.raises(ManifestError):
        trainwarden.load(path)
    guard(mode="block")
    with pytest.raises(ManifestError):
        torch.load(path)
    with pytest.raises(ManifestError):
        torch.load(str(path), weights_only=True)
