"""Signed checkpoints in the C2SP tlog-checkpoint format, carried in a C2SP signed note with an
Ed25519 signature: the only thing a verifier needs is the log's public key."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainwarden._internal.files import read_limited
from trainwarden.ledger._types import LedgerError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Signer",
    "Verifier",
    "load_or_create_signer",
    "load_verifier",
]

_ED25519 = b"\x01"
_SIG_PREFIX = "\u2014 "  # an em dash and a space start every signature line
_MAX_NOTE = 64 * 1024


class CheckpointError(LedgerError, ValueError):
    """A checkpoint note or key is malformed, or a note is not signed by the expected key."""


@dataclass(frozen=True)
class Checkpoint:
    """One signed tree head: ``origin`` names the log, ``size`` leaves, ``root`` their MTH."""

    origin: str
    size: int
    root: bytes
    note: str

    def body(self) -> str:
        return body_text(self.origin, self.size, self.root)


def body_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def _key_hash(name: str, pub: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + pub).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")


class Verifier:
    """An Ed25519 note verifier: a key name (the log origin) and a 32-byte public key."""

    def __init__(self, name: str, public_key: bytes) -> None:
        _check_name(name)
        if len(public_key) != 32:
            raise CheckpointError("an Ed25519 public key is 32 bytes")
        self.name = name
        self.public_key = public_key
        self.key_hash = _key_hash(name, public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse a verifier key string ``<name>+<hex key hash>+<base64(0x01 || key)>``."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise CheckpointError("a verifier key is NAME+HASH+KEY")
        name, hexhash, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error as e:
            raise CheckpointError(f"verifier key is not base64: {e}") from e
        if raw[:1] != _ED25519:
            raise CheckpointError("verifier key is not an Ed25519 key")
        v = cls(name, raw[1:])
        if v.key_hash.hex() != hexhash.lower():
            raise CheckpointError("verifier key hash does not match its name and key")
        return v

    def vkey(self) -> str:
        b64 = base64.b64encode(_ED25519 + self.public_key).decode()
        return f"{self.name}+{self.key_hash.hex()}+{b64}"

    def _pub(self) -> Ed25519PublicKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return Ed25519PublicKey.from_public_bytes(self.public_key)

    def open(self, note: str) -> Checkpoint:
        """Parse ``note`` and check it carries a valid signature by this key over a checkpoint
        whose origin is this key's name; raise :class:`CheckpointError` otherwise."""
        from cryptography.exceptions import InvalidSignature

        if len(note) > _MAX_NOTE:
            raise CheckpointError("checkpoint note is too large")
        body, sep, sigs = note.partition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise CheckpointError("checkpoint note has no signature block")
        body += "\n"
        lines = body.split("\n")[:-1]
        if len(lines) < 3:
            raise CheckpointError("checkpoint body needs origin, size and root hash lines")
        origin, size_s, root_s = lines[0], lines[1], lines[2]
        if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
            raise CheckpointError(f"checkpoint size {size_s!r} is not a decimal number")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error as e:
            raise CheckpointError(f"checkpoint root is not base64: {e}") from e
        if len(root) != 32:
            raise CheckpointError("checkpoint root is not a SHA-256 hash")
        if origin != self.name:
            raise CheckpointError(f"checkpoint is for log {origin!r}, not {self.name!r}")
        good = False
        for line in sigs[:-1].split("\n"):
            if not line.startswith(_SIG_PREFIX):
                raise CheckpointError("malformed signature line in checkpoint note")
            name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
            if name != self.name:
                continue
            try:
                raw = base64.b64decode(b64, validate=True)
            except binascii.Error as e:
                raise CheckpointError(f"signature is not base64: {e}") from e
            if len(raw) != 68 or raw[:4] != self.key_hash:
                continue
            try:
                self._pub().verify(raw[4:], body.encode())
            except InvalidSignature:
                raise CheckpointError("checkpoint signature does not verify") from None
            good = True
        if not good:
            raise CheckpointError(f"checkpoint carries no signature by key {self.name!r}")
        return Checkpoint(origin=origin, size=int(size_s), root=root, note=note)


class Signer(Verifier):
    """A note signer: the verifier plus its Ed25519 private key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization

        pub = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        super().__init__(name, pub)
        self._key = private_key

    def sign(self, size: int, root: bytes) -> Checkpoint:
        body = body_text(self.name, size, root)
        sig = self._key.sign(body.encode())
        line = f"{_SIG_PREFIX}{self.name} {base64.b64encode(self.key_hash + sig).decode()}\n"
        return Checkpoint(origin=self.name, size=size, root=root, note=body + "\n" + line)

    def entry_key(self) -> bytes:
        """A secret derived from the private key, used to authenticate each stored row so that
        verification on the server names the exact row someone rewrote."""
        from cryptography.hazmat.primitives import serialization

        seed = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return hashlib.sha256(b"trainwarden ledger row key\n" + seed).digest()


def load_or_create_signer(key_dir: Path, origin: str) -> Signer:
    """The log's signer from ``key_dir/ledger.key`` (PKCS#8 PEM), creating the pair (private
    key mode 0600, public key ``ledger.pub``, verifier key ``ledger.vkey``) on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trainwarden._internal.signing import generate_ed25519_pem

    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv_path = key_dir / "ledger.key"
    if not priv_path.exists():
        priv, pub = generate_ed25519_pem()
        tmp = priv_path.with_suffix(".tmp")
        fd = _open_private(tmp)
        with open(fd, "wb") as fh:
            fh.write(priv)
        tmp.replace(priv_path)
        (key_dir / "ledger.pub").write_bytes(pub)
    key = serialization.load_pem_private_key(priv_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{priv_path} is not an Ed25519 private key")
    signer = Signer(origin, key)
    (key_dir / "ledger.vkey").write_text(signer.vkey() + "\n")
    return signer


def _open_private(path: Path) -> int:
    import os

    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def load_verifier(spec: str, origin: str | None = None) -> Verifier:
    """A verifier from a verifier-key string, a file holding one, or a PEM public key file
    (which then needs the log ``origin``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = spec
    p = Path(spec)
    if "+" not in spec or p.is_file():
        try:
            text = read_limited(p, 64 * 1024).decode("utf-8", "replace")
        except OSError as e:
            raise CheckpointError(f"{spec}: cannot read key: {e.strerror or e}") from e
    if "BEGIN PUBLIC KEY" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as e:
            raise CheckpointError(f"{spec}: not a PEM public key") from e
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError(f"{spec}: not an Ed25519 public key")
        if origin is None:
            raise CheckpointError(f"{spec}: a PEM key needs the log origin; use ledger.vkey")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Verifier(origin, raw)
    return Verifier.from_vkey(text)
