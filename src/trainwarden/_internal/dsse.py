"""DSSE envelope encoding and Ed25519 key-pair generation shared by manifests and snapshots."""

from __future__ import annotations

__all__ = ["PAYLOAD_TYPE", "generate_ed25519_pem", "pae"]

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed, so that a signature over
    one payload type can never be replayed as another."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


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
