"""Ed25519 signatures over snapshots in a DSSE envelope, and reading snapshot files back.

DSSE (the envelope in-toto and sigstore use) signs ``PAE(payloadType, payload)`` so that a
signature over one payload type can never be replayed as another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden._internal.dsse import PAYLOAD_TYPE, generate_ed25519_pem, pae
from trainwarden.attest import AttestationError
from trainwarden.attest.snapshot import Snapshot

__all__ = [
    "PAYLOAD_TYPE",
    "LoadedSnapshot",
    "generate_key",
    "load_snapshot",
    "pae",
    "sign_statement",
    "verify_envelope",
    "write_atomic",
]


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover - depends on the install
        raise AttestationError(
            "signing needs the 'cryptography' package",
            hint="pip install 'trainwarden[server]' (or just cryptography)",
        ) from e
    return serialization, ed25519


def _keyid(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _load_private(path: Path) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise AttestationError(
            f"cannot read Ed25519 private key {path}: {e}",
            hint="create one with `trainwarden attest keygen KEYFILE`",
        ) from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise AttestationError(f"{path} is not an Ed25519 private key")
    return key


def _load_public(path: Path) -> Any:
    """A public key file, or the public half of a private key file."""
    serialization, ed25519 = _crypto()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AttestationError(f"cannot read key {path}: {e}") from e
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as e:
            raise AttestationError(f"{path} is not a PEM Ed25519 key: {e}") from e
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise AttestationError(f"{path} is not an Ed25519 key")
    return key


def _raw_public(key: Any) -> bytes:
    serialization, _ = _crypto()
    raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_key(path: Path) -> tuple[Path, str]:
    """Write a new Ed25519 private key to ``path`` (mode 0600) and its public key to
    ``path.pub``; return the public key path and key id. Refuses to overwrite."""
    _crypto()
    pub_path = path.with_name(path.name + ".pub")
    for p in (path, pub_path):
        if p.exists():
            raise AttestationError(f"{p} already exists; refusing to overwrite a key")
    priv, pub = generate_ed25519_pem()
    write_atomic(path, priv, mode=0o600)
    write_atomic(pub_path, pub)
    return pub_path, _keyid(_raw_public(_load_public(pub_path)))


def sign_statement(statement: Mapping[str, Any], key_path: Path) -> dict[str, Any]:
    """Return a DSSE envelope holding ``statement`` signed with the Ed25519 key at ``key_path``."""
    key = _load_private(key_path)
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": _keyid(_raw_public(key.public_key())), "sig": base64.b64encode(sig).decode()}
        ],
    }


def verify_envelope(envelope: Mapping[str, Any], key_path: Path) -> bool:
    """True when any signature in ``envelope`` verifies under the key at ``key_path``."""
    from cryptography.exceptions import InvalidSignature

    key = _load_public(key_path)
    try:
        payload = base64.b64decode(str(envelope["payload"]), validate=True)
        payload_type = str(envelope["payloadType"])
        sigs = list(envelope.get("signatures", []))
    except (KeyError, TypeError, ValueError):
        return False
    message = pae(payload_type, payload)
    for s in sigs:
        try:
            key.verify(base64.b64decode(str(s["sig"]), validate=True), message)
            return True
        except (InvalidSignature, KeyError, TypeError, ValueError):
            continue
    return False


@dataclass(frozen=True)
class LoadedSnapshot:
    """A snapshot read from a file. ``signed``: it came in a DSSE envelope; ``verified``:
    True/False when a key was given, None when not checked; ``keyids`` from the envelope."""

    snapshot: Snapshot
    source: str
    signed: bool
    verified: bool | None
    keyids: tuple[str, ...] = ()


def load_snapshot(path: Path, *, key: Path | None = None) -> LoadedSnapshot:
    """Read a snapshot file (plain statement or DSSE envelope); check the signature with ``key``.

    A bad signature does not raise: ``verified`` is False and the caller decides (``attest
    verify`` reports it as a CRITICAL finding and ignores the baseline).
    """
    try:
        doc = json.loads(path.read_bytes())
    except OSError as e:
        raise AttestationError(f"cannot read snapshot {path}: {e}") from e
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, or nested past the limit
        raise AttestationError(f"{path} is not a snapshot (not UTF-8 JSON: {e})") from e
    if not isinstance(doc, dict):
        raise AttestationError(f"{path} is not a snapshot (top level is not an object)")
    if "payloadType" in doc:
        if doc.get("payloadType") != PAYLOAD_TYPE:
            raise AttestationError(f"{path}: unexpected DSSE payloadType {doc['payloadType']!r}")
        try:
            statement = json.loads(base64.b64decode(str(doc["payload"]), validate=True))
            signatures = doc.get("signatures", [])
            if not isinstance(signatures, list):
                raise ValueError("signatures is not a list")
        except (KeyError, ValueError, RecursionError) as e:
            raise AttestationError(f"{path}: malformed DSSE payload: {e}") from e
        verified = verify_envelope(doc, key) if key is not None else None
        keyids = tuple(str(s.get("keyid", "")) for s in signatures if isinstance(s, dict))
        return LoadedSnapshot(
            Snapshot.from_statement(statement, str(path)), str(path), True, verified, keyids
        )
    return LoadedSnapshot(Snapshot.from_statement(doc, str(path)), str(path), False, None)
