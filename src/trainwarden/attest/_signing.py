"""Ed25519 signatures over snapshots in a DSSE envelope, and reading snapshot files back.

DSSE (the envelope in-toto and sigstore use) signs ``PAE(payloadType, payload)`` so that a
signature over one payload type can never be replayed as another.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden._internal import signing as _signing
from trainwarden._internal.files import read_limited, write_atomic
from trainwarden._internal.signing import PAYLOAD_TYPE, pae
from trainwarden.attest import AttestationError
from trainwarden.attest._snapshot import Snapshot

# The largest snapshot read: an environment of a million files is about 250 MB of JSON.
SNAPSHOT_LIMIT = 512 << 20

__all__ = [
    "PAYLOAD_TYPE",
    "LoadedSnapshot",
    "generate_key",
    "load_signed_snapshot",
    "load_snapshot",
    "pae",
    "sign_statement",
    "verify_envelope",
    "write_atomic",
]


def generate_key(path: Path) -> tuple[Path, str]:
    """Write a new Ed25519 private key to ``path`` (mode 0600) and its public key to
    ``path.pub``; return the public key path and key id. Refuses to overwrite."""
    _, pub_path, kid = _signing.generate_keypair(path, error=AttestationError)
    return pub_path, kid


def sign_statement(statement: Mapping[str, Any], key_path: Path) -> dict[str, Any]:
    """Return a DSSE envelope holding ``statement`` signed with the Ed25519 key at ``key_path``."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return _signing.envelope(payload, key_path, error=AttestationError)


def verify_envelope(envelope: Mapping[str, Any], key_path: Path) -> bool:
    """True when any signature in ``envelope`` verifies under the key at ``key_path``."""
    return _signing.verify_signature(envelope, key_path, error=AttestationError)


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
        doc = json.loads(read_limited(path, SNAPSHOT_LIMIT))
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


def load_signed_snapshot(path: Path, *, key: Path | None) -> LoadedSnapshot:
    """:func:`load_snapshot`, but with ``key`` the snapshot must be signed and verify under it
    (raises :class:`AttestationError` otherwise); without ``key`` nothing is required."""
    snap = load_snapshot(path, key=key)
    if key is not None and (not snap.signed or not snap.verified):
        raise AttestationError(
            f"{snap.source}: "
            + ("signature does not verify" if snap.signed else "not signed")
            + f" with key {key}",
            hint="re-create it with `trainwarden attest snapshot --sign KEY`",
        )
    return snap
