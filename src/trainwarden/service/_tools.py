"""Operator tasks behind ``trainwarden ledger ...``: verify a log from its database or through
the service, and manage tokens directly in the database or through the admin API. They sit above
the service because they open its state directory (keys, origin)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainwarden.ledger._checkpoint import CheckpointError, Signer, Verifier, load_verifier
from trainwarden.ledger._storage import CheckpointRow, open_storage
from trainwarden.ledger._types import LedgerError, Role, StoredEntry
from trainwarden.ledger._verify import VerifyReport, verify_log

__all__ = ["create_token", "list_tokens", "revoke_token", "verify_db", "verify_url"]


def _state(state_dir: Path | None) -> Path:
    from trainwarden.service._server import default_state_dir

    return state_dir or default_state_dir()


def _verifier(key: str | None, state: Path) -> Verifier:
    spec = key or str(state / "keys" / "ledger.vkey")
    origin_file = state / "origin"
    origin = origin_file.read_text().strip() if origin_file.exists() else None
    try:
        return load_verifier(spec, origin)
    except CheckpointError as e:
        raise LedgerError(str(e), hint="pass --key with the log's ledger.vkey") from e


def _row_key(state: Path, verifier: Verifier) -> bytes | None:
    """The server's row key when its private key is readable here and matches ``verifier``."""
    path = state / "keys" / "ledger.key"
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, Ed25519PrivateKey):
        return None
    signer = Signer(verifier.name, key)
    return signer.entry_key() if signer.public_key == verifier.public_key else None


def verify_db(
    url: str, *, key: str | None, state_dir: Path | None, saved: list[str]
) -> VerifyReport:
    """Verify the log stored at database ``url``."""
    state = _state(state_dir)
    verifier = _verifier(key, state)
    storage = open_storage(url)
    try:
        report = verify_log(
            storage.iter_entries(),
            storage.size(),
            storage.checkpoints(),
            verifier,
            row_key=_row_key(state, verifier),
            saved=saved[0] if saved else None,
        )
        for note in saved[1:]:
            from trainwarden.ledger._merkle import MerkleTree
            from trainwarden.ledger._verify import verify_saved_checkpoint

            tree = MerkleTree()
            tree.extend([e.leaf_hash for e in storage.iter_entries()])
            verify_saved_checkpoint(note, verifier, tree, report)
        return report
    finally:
        storage.close()


def verify_url(
    url: str, token: str | None, *, key: str | None, saved: list[str], sample: int = 2000
) -> VerifyReport:
    """Verify a log through the service with a reader token: every entry and checkpoint is
    fetched and recomputed here; the server's own inclusion proofs (up to ``sample``, spread
    over the log) and consistency proofs are checked against the signed checkpoints."""
    from trainwarden.ledger._client import LedgerClient

    if not token:
        raise LedgerError("--url needs a reader token (--token or TRAINWARDEN_LEDGER_TOKEN)")
    client = LedgerClient(url, token)
    if key is None:
        raise LedgerError(
            "--url needs --key: the verifier key must come from you, not from the server"
        )
    verifier = load_verifier(key)

    def rows() -> Iterator[StoredEntry]:
        after = -1
        while True:
            page = client.get("/v1/entries", after=after, limit=1000)
            for e in page["entries"]:
                entry = e["entry"].encode()
                yield StoredEntry(
                    index=e["index"],
                    run=e["run"],
                    writer=e["writer"],
                    seq=e["seq"],
                    kind=e["kind"],
                    entry=entry,
                    leaf_hash=base64.b64decode(e["leaf_hash"]),
                    mac=b"",
                )
            if page["next_after"] is None:
                return
            after = page["next_after"]

    entries = list(rows())
    cps: list[CheckpointRow] = []
    after = 0
    while True:
        page = client.get("/v1/checkpoints", after=after)
        for c in page["checkpoints"]:
            cps.append(CheckpointRow(c["seq"], c["size"], b"", c["note"], 0.0))
        if page["next_after"] is None:
            break
        after = page["next_after"]
    # Stored row columns are not served; compare the notes only.
    for i, c in enumerate(cps):
        try:
            opened = verifier.open(c.note)
            cps[i] = CheckpointRow(c.seq, opened.size, opened.root, c.note, 0.0)
        except CheckpointError:
            pass

    def inclusion(index: int, size: int) -> list[bytes]:
        got = client.get("/v1/proof/inclusion", index=index, size=size)
        return [base64.b64decode(h) for h in got["proof"]]

    def consistency(first: int, second: int) -> list[bytes]:
        got = client.get("/v1/proof/consistency", first=first, second=second)
        return [base64.b64decode(h) for h in got["proof"]]

    head = entries[-1].index + 1 if entries else 0
    report = verify_log(
        entries,
        head,
        cps,
        verifier,
        saved=saved[0] if saved else None,
        inclusion_source=inclusion,
        consistency_source=consistency,
        proof_sample=sample,
    )
    client.close()
    return report


def _local_service(db: str | None, state_dir: Path | None) -> Any:
    from trainwarden.service._server import ServeConfig, build_service

    service, _, _ = build_service(ServeConfig(db_url=db, state_dir=state_dir, deadman=False))
    return service


def create_token(
    role: str,
    run: str | None,
    *,
    db: str | None,
    state_dir: Path | None,
    url: str | None,
    token: str | None,
) -> tuple[str, str]:
    """Create a token; return (token, token id)."""
    try:
        r = Role(role)
    except ValueError as e:
        raise LedgerError(f"--role must be admin, writer or reader, not {role!r}") from e
    if url:
        from trainwarden.ledger._client import LedgerClient

        got = LedgerClient(url, token).post("/v1/tokens", {"role": r.value, "run_id": run})
        return str(got["token"]), str(got["token_id"])
    service = _local_service(db, state_dir)
    try:
        tok, info = service.issue_token(r, run)
    except LedgerError:
        raise
    finally:
        service.ledger.storage.close()
    return tok, info.token_id


def revoke_token(
    token_id: str, *, db: str | None, state_dir: Path | None, url: str | None, token: str | None
) -> None:
    if url:
        from trainwarden.ledger._client import LedgerClient

        LedgerClient(url, token).delete(f"/v1/tokens/{token_id}")
        return
    service = _local_service(db, state_dir)
    try:
        service.revoke(token_id)
    finally:
        service.ledger.storage.close()


def list_tokens(
    *, db: str | None, state_dir: Path | None, url: str | None, token: str | None
) -> list[dict[str, Any]]:
    if url:
        from trainwarden.ledger._client import LedgerClient

        tokens: list[dict[str, Any]] = LedgerClient(url, token).get("/v1/tokens")["tokens"]
        return tokens
    service = _local_service(db, state_dir)
    try:
        return [
            {"token_id": t.token_id, "role": t.role.value, "run_id": t.run_id, "revoked": t.revoked}
            for t in service.ledger.storage.list_tokens()
        ]
    finally:
        service.ledger.storage.close()
