"""One signing path for manifests and snapshots: one key id format, one keygen, and files signed
before the unification still verify (their envelopes are rebuilt here the way they were written)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from trainwarden._internal import signing
from trainwarden.attest._signing import generate_key, sign_statement, verify_envelope
from trainwarden.cli import app, main
from trainwarden.loading._manifest import create_manifest, manifest_path_for, verify_manifest
from trainwarden.loading._types import ManifestError


def _raw(pub: Any) -> bytes:
    raw: bytes = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def _legacy_snapshot_envelope(statement: dict[str, Any], key: Any, keyid: str) -> dict[str, Any]:
    """A snapshot envelope exactly as `attest snapshot --sign` wrote it with 16-hex key ids."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    sig = key.sign(signing.pae(signing.PAYLOAD_TYPE, payload))
    return {
        "payloadType": signing.PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode()}],
    }


def _keypair(tmp_path: Path, name: str) -> tuple[Any, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / f"{name}.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


def test_a_snapshot_signed_with_a_16_hex_key_id_still_verifies(tmp_path: Path) -> None:
    key, pub = _keypair(tmp_path, "old")
    short = hashlib.sha256(_raw(key.public_key())).hexdigest()[:16]
    env = _legacy_snapshot_envelope({"_type": "x", "subject": []}, key, short)
    assert verify_envelope(env, pub)
    _, other = _keypair(tmp_path, "other")
    assert not verify_envelope(env, other)


def test_a_key_id_is_never_trusted(tmp_path: Path) -> None:
    # The attacker names the trusted key's id but signs with their own key.
    trusted, trusted_pub = _keypair(tmp_path, "trusted")
    attacker, _ = _keypair(tmp_path, "attacker")
    env = _legacy_snapshot_envelope({"_type": "x"}, attacker, signing.keyid(trusted.public_key()))
    assert not verify_envelope(env, trusted_pub)
    assert not signing.verify_signature(env, trusted_pub)


def test_a_manifest_written_before_the_unification_still_verifies(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x00" * 64)
    key, pub = _keypair(tmp_path, "signer")
    create_manifest(folder)  # the statement; re-signed below as the old code did
    target = manifest_path_for(folder)
    old = json.loads(target.read_text())
    payload = base64.b64decode(old["payload"])
    sig = key.sign(signing.pae(signing.PAYLOAD_TYPE, payload))
    old["signatures"] = [
        {
            "keyid": hashlib.sha256(_raw(key.public_key())).hexdigest(),
            "sig": base64.b64encode(sig).decode(),
        }
    ]
    target.write_text(json.dumps(old, indent=2) + "\n")
    check = verify_manifest(folder, public_key=pub)
    assert check.signature_verified
    _, other = _keypair(tmp_path, "other")
    with pytest.raises(ManifestError, match="no valid signature"):
        verify_manifest(folder, public_key=other)


def test_snapshots_and_manifests_carry_one_key_id_format(tmp_path: Path) -> None:
    key_path = tmp_path / "k.pem"
    pub_path, kid = generate_key(key_path)
    assert len(kid) == 64 and int(kid, 16) >= 0
    snap_env = sign_statement({"_type": "x"}, key_path)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"w")
    manifest_env = json.loads(create_manifest(folder, key=key_path).read_text())
    assert snap_env["signatures"][0]["keyid"] == kid
    assert manifest_env["signatures"][0]["keyid"] == kid
    assert verify_envelope(snap_env, pub_path)
    assert verify_manifest(folder, public_key=pub_path).signed_by == (kid,)


@pytest.mark.parametrize("spelling", [["keygen"], ["attest", "keygen"], ["manifest", "keygen"]])
def test_keygen_and_its_aliases(tmp_path: Path, spelling: list[str]) -> None:
    key = tmp_path / "signer.pem"
    r = CliRunner().invoke(app, [*spelling, str(key)])
    assert r.exit_code == 0, r.output
    assert (key.stat().st_mode & 0o777) == 0o600
    pub = key.with_name("signer.pem.pub")
    kid = signing.keyid(signing.load_public_key(pub))
    assert f"keyid {kid}" in r.output
    before = key.read_bytes()
    with pytest.raises(SystemExit) as again:
        main([*spelling, str(key)])
    assert again.value.code == 2  # an input error, printed as one line
    assert key.read_bytes() == before  # never overwritten
