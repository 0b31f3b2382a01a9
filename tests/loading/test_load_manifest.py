"""Checkpoint manifests: save/load with manifests, tampering, signatures, the CLI."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import trainwarden
from trainwarden.loading import ManifestError
from trainwarden.loading import _manifest as manifest

Cli = Callable[..., Any]  # the in-process `cli` fixture (tests/conftest.py)


def test_save_writes_checkpoint_and_in_toto_manifest(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    written = trainwarden.save({"w": torch.arange(3)}, path)
    assert written == tmp_path / "ckpt.pt.manifest.json"
    envelope = json.loads(written.read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == manifest.PREDICATE_TYPE
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert statement["subject"] == [{"name": "ckpt.pt", "digest": {"sha256": digest}}]
    assert statement["predicate"]["tool"]["name"] == "trainwarden"
    assert torch.equal(trainwarden.load(path)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "ckpt.pt.manifest.json"]


def test_changed_file_is_refused_before_unpickling(tmp_path: Path, canary: Path) -> None:
    path = tmp_path / "ckpt.pt"
    trainwarden.save({"w": torch.ones(2)}, path)
    from ._payloads import SystemPayload

    torch.save({"w": SystemPayload(canary)}, path)  # replaced after saving
    with pytest.raises(ManifestError) as exc:
        trainwarden.load(path)
    assert "ckpt.pt" in exc.value.message
    assert exc.value.findings[0].rule_id == "TWL-MAN-CHANGED"
    assert not canary.exists()


def test_signed_manifest_good_key_wrong_key_and_forged_payload(tmp_path: Path) -> None:
    key, pub = manifest.generate_keypair(tmp_path / "signer.pem")
    other_key, other_pub = manifest.generate_keypair(tmp_path / "other.pem")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    ckpt = tmp_path / "ck" / "model.pt"
    ckpt.parent.mkdir()
    trainwarden.save({"w": torch.ones(1)}, ckpt, sign_key=key)
    assert trainwarden.load(ckpt, manifest_key=pub)["w"].item() == 1.0
    check = manifest.verify_manifest(ckpt, public_key=pub)
    assert check.signature_verified and check.signed_by
    with pytest.raises(ManifestError, match="no valid signature"):
        trainwarden.load(ckpt, manifest_key=other_pub)
    # an attacker rewrites file and manifest but cannot re-sign with the trusted key
    torch.save({"w": torch.zeros(1)}, ckpt)
    manifest.create_manifest(ckpt, key=other_key)
    with pytest.raises(ManifestError, match="no valid signature"):
        trainwarden.load(ckpt, manifest_key=pub)
    manifest.create_manifest(ckpt)  # unsigned
    with pytest.raises(ManifestError, match="is not signed"):
        manifest.verify_manifest(ckpt, public_key=pub)


def test_folder_manifest_names_changed_missing_and_extra_files(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-2"
    (folder / "sub").mkdir(parents=True)
    torch.save({"a": torch.ones(1)}, folder / "optimizer.pt")
    torch.save({"b": torch.ones(1)}, folder / "rng_state.pth")
    (folder / "sub" / "config.json").write_text("{}")
    manifest.create_manifest(folder)
    assert manifest.verify_manifest(folder).subjects == 3
    # loading one file checks it against the folder manifest
    assert trainwarden.load(folder / "optimizer.pt")["a"].item() == 1.0
    (folder / "sub" / "config.json").write_text('{"lr": 10}')
    (folder / "rng_state.pth").unlink()
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(ManifestError) as exc:
        manifest.verify_manifest(folder)
    by_rule = {f.rule_id: f.evidence["file"] for f in exc.value.findings}
    assert by_rule == {
        "TWL-MAN-CHANGED": "sub/config.json",
        "TWL-MAN-MISSING": "rng_state.pth",
        "TWL-MAN-EXTRA": "extra.bin",
    }
    torch.save({"c": torch.ones(1)}, folder / "new.pt")
    with pytest.raises(ManifestError, match=r"new\.pt"):
        trainwarden.load(folder / "new.pt")


def test_required_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(ManifestError, match=r"requires one|one is required"):
        trainwarden.load(path, require_manifest=True)
    monkeypatch.setenv("TRAINWARDEN_REQUIRE_MANIFEST", "1")
    with pytest.raises(ManifestError):
        trainwarden.load(path)
    manifest.create_manifest(path)
    assert trainwarden.load(path)["w"].item() == 1.0


def test_malformed_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    trainwarden.save({"w": torch.ones(1)}, path)
    (tmp_path / "m.pt.manifest.json").write_text('{"payloadType": "text/plain"}')
    with pytest.raises(ManifestError, match="invalid"):
        trainwarden.load(path)


def test_save_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "out.pt"
    with pytest.raises(Exception, match="pickle"):
        trainwarden.save({"f": lambda: None}, path)
    assert list(tmp_path.iterdir()) == []


def test_manifest_cli(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    folder.mkdir()
    torch.save({"w": torch.ones(1)}, folder / "optimizer.pt")
    r = cli(["manifest", "keygen", str(tmp_path / "k.pem")])
    assert r.returncode == 0, r.stderr
    r = cli(["manifest", "create", str(folder), "--sign", str(tmp_path / "k.pem")])
    assert r.returncode == 0, r.stderr
    assert "1 file, signed" in r.stdout
    # The old spelling still works, with a deprecation warning.
    r = cli(["manifest", "create", str(folder), "--key", str(tmp_path / "k.pem")])
    assert r.returncode == 0, r.stderr
    assert "--key is deprecated here; use --sign" in r.stderr
    r = cli(["manifest", "verify", str(folder), "--pub", str(tmp_path / "k.pem.pub")])
    assert r.returncode == 0, r.stderr
    assert "signature verified" in r.stdout
    (folder / "optimizer.pt").write_bytes(b"tampered")
    # Manifest failures are input errors, exit 2, in `manifest verify` as in `load`.
    r = cli(["manifest", "verify", str(folder), "--format", "json"])
    assert r.returncode == 2
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["findings"][0]["evidence"]["file"] == "optimizer.pt"
    r = cli(["manifest", "verify", str(tmp_path / "nothing")])
    assert r.returncode == 2 and "no manifest" in r.stderr
    r = cli(["load", str(folder / "optimizer.pt")])
    assert r.returncode == 2 and "Traceback" not in r.stderr
