"""Ed25519 keys and DSSE envelopes: the one signing path of manifests and snapshots.

DSSE (the envelope in-toto and sigstore use) signs ``PAE(payloadType, payload)`` so that a
signature over one payload type can never be replayed as another. A key id is the full sha256
(hex) of the raw 32-byte public key. Verification never trusts a key id: every signature entry
is checked against the key the caller trusts, so envelopes written with the older 16-hex key ids
verify unchanged.

Errors are raised as the caller's concept error (``error=ManifestError``, ``AttestationError``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainwarden._internal.files import read_limited, write_atomic
from trainwarden.errors import TrainWardenError

# A PEM key file is a few hundred bytes; anything over this is not one (and is not read whole).
KEY_LIMIT = 64 * 1024

__all__ = [
    "PAYLOAD_TYPE",
    "envelope",
    "generate_ed25519_pem",
    "generate_keypair",
    "keyid",
    "load_private_key",
    "load_public_key",
    "pae",
    "verify_signature",
]

PAYLOAD_TYPE = "application/vnd.in-toto+json"

ErrorType = Callable[..., TrainWardenError]

KEYGEN_HINT = "create one with `trainwarden keygen KEYFILE`"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed, so that a signature over
    one payload type can never be replayed as another."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _crypto(error: ErrorType) -> tuple[Any, Any]:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover - depends on the install
        raise error(
            "signing needs the 'cryptography' package",
            hint="pip install 'trainwarden[server]' (or just cryptography)",
        ) from e
    return serialization, ed25519


def generate_ed25519_pem() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (PKCS#8 PEM private key, SubjectPublicKeyInfo PEM public key).

    Raises ImportError when ``cryptography`` is missing; callers turn that into their own error.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub


def keyid(public_key: Any) -> str:
    """The key id of an Ed25519 public key: sha256 (hex, 64 digits) of its raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keypair(
    private_path: Path, public_path: Path | None = None, *, error: ErrorType = TrainWardenError
) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key pair: the private key as PKCS#8 PEM (mode 0600) and the public
    key as SPKI PEM (default ``PRIVATE.pub``). Refuses to overwrite either. Returns both paths
    and the key id."""
    _crypto(error)
    public_path = public_path or private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise error(
                f"{p} already exists; refusing to overwrite a key",
                hint="choose another path or remove it",
            )
    priv, pub = generate_ed25519_pem()
    write_atomic(private_path, priv, mode=0o600)
    write_atomic(public_path, pub, mode=0o644)
    return private_path, public_path, keyid(load_public_key(public_path, error=error))


def load_private_key(key: Any, *, error: ErrorType = TrainWardenError) -> Any:
    """An Ed25519 private key object, or the one in the PEM file at path ``key``."""
    serialization, ed25519 = _crypto(error)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    path = Path(key)
    try:
        loaded = serialization.load_pem_private_key(read_limited(path, KEY_LIMIT), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise error(f"cannot read the Ed25519 private key {path}: {e}", hint=KEYGEN_HINT) from e
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise error(f"{path} is not an Ed25519 private key", hint=KEYGEN_HINT)
    return loaded


def load_public_key(key: Any, *, error: ErrorType = TrainWardenError) -> Any:
    """An Ed25519 public key object, or the public half of a private key object, or the key in
    the PEM file at path ``key`` (a public key, or a private key whose public half is used)."""
    serialization, ed25519 = _crypto(error)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.public_key()
    path = Path(key)
    try:
        data = read_limited(path, KEY_LIMIT)
    except OSError as e:
        raise error(f"cannot read the Ed25519 public key {path}: {e}") from e
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            loaded = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as e:
            raise error(f"{path} is not a PEM Ed25519 key: {e}") from e
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise error(f"{path} is not an Ed25519 public key")
    return loaded


def envelope(
    payload: bytes,
    key: Any | None,
    *,
    payload_type: str = PAYLOAD_TYPE,
    error: ErrorType = TrainWardenError,
) -> dict[str, Any]:
    """A DSSE envelope of ``payload``, signed with private ``key`` (None: no signature)."""
    signatures = []
    if key is not None:
        priv = load_private_key(key, error=error)
        sig = priv.sign(pae(payload_type, payload))
        signatures.append(
            {"keyid": keyid(priv.public_key()), "sig": base64.b64encode(sig).decode()}
        )
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": signatures,
    }


def verify_signature(
    env: Mapping[str, Any], public_key: Any, *, error: ErrorType = TrainWardenError
) -> bool:
    """True when any signature entry of envelope ``env`` verifies under ``public_key`` (a key
    object or PEM path). Key ids in the envelope are ignored: anyone can write any key id."""
    from cryptography.exceptions import InvalidSignature

    pub = load_public_key(public_key, error=error)
    try:
        payload = base64.b64decode(str(env["payload"]), validate=True)
        payload_type = str(env["payloadType"])
        sigs = list(env.get("signatures", []))
    except (KeyError, TypeError, ValueError):
        return False
    message = pae(payload_type, payload)
    for s in sigs:
        try:
            pub.verify(base64.b64decode(str(s["sig"]), validate=True), message)
        except (InvalidSignature, KeyError, TypeError, ValueError):
            continue
        return True
    return False
