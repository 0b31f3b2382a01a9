"""Operator tasks behind ``trainwarden ledger ...``: verify a log from its database or through
the service, and manage tokens directly in the database or through the admin API. They sit above
the service because they open its state directory (keys, origin)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from trainwarden.ledger._checkpoint import CheckpointError, Signer, Verifier, load_verifier
from trainwarden.ledger._storage import CheckpointRow, open_storage
from trainwarden.ledger._types import (
    VERIFY_MAX_BYTES,
    VERIFY_MAX_SECONDS,
    LedgerError,
    Role,
    StoredEntry,
)
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
        try:
            head: int | None = storage.size()
        except (ValueError, TypeError, OverflowError):  # hand-edited: reported as a problem
            head = None
        report = verify_log(
            storage.iter_entries(),
            head,
            storage.checkpoints(),
            verifier,
            row_key=_row_key(state, verifier),
            saved=saved[0] if saved else None,
        )
        for note in saved[1:]:
            from trainwarden.ledger._merkle import MerkleTree
            from trainwarden.ledger._verify import verify_saved_checkpoint

            tree = MerkleTree()
            tree.extend([e.leaf_hash for e in storage.iter_entries() if e.problem is None])
            verify_saved_checkpoint(note, verifier, tree, report)
        return report
    finally:
        storage.close()


class _Answers:
    """Checks on what a server sent: each field of the type the API documents, pages that
    advance, and the verification's byte and time budget. Any violation is a
    :class:`LedgerError` naming the endpoint (verification cannot go on)."""

    def __init__(self, client: Any, max_bytes: int, max_seconds: float) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.deadline = time.monotonic() + max_seconds

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        if self.client.received > self.max_bytes:
            raise LedgerError(
                f"{self.client.url}: the server sent more than {self.max_bytes} bytes",
                hint="pass --max-bytes to verify a larger log",
            )
        if time.monotonic() > self.deadline:
            raise LedgerError(
                f"{self.client.url}: verification took longer than {self.max_seconds:g} s",
                hint="pass --max-seconds to give a larger log more time",
            )
        got = self.client.get(path, **params)
        if not isinstance(got, dict):
            raise LedgerError(f"{self.client.url}{path}: the server's answer is not an object")
        return got

    def field(self, obj: Any, name: str, kind: type, path: str) -> Any:
        value = obj.get(name) if isinstance(obj, dict) else None
        # bool is an int to Python, never to the API.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise LedgerError(
                f"{self.client.url}{path}: the server's answer has no {kind.__name__} {name!r}"
            )
        return value

    def page(
        self, path: str, items: str, after: int, **params: Any
    ) -> tuple[list[Any], int | None]:
        """One page of ``items`` after ``after``, and where the next one starts (None: last)."""
        got = self.get(path, after=after, **params)
        rows = got.get(items)
        nxt = got.get("next_after")
        if not isinstance(rows, list):
            raise LedgerError(f"{self.client.url}{path}: the server's answer has no list {items!r}")
        if nxt is not None and (
            not isinstance(nxt, int) or isinstance(nxt, bool) or nxt <= after or not rows
        ):
            raise LedgerError(
                f"{self.client.url}{path}: the server's pages do not advance"
                f" (next_after {str(nxt)[:40]} after {after}, {len(rows)} {items})"
            )
        return rows, nxt

    def digests(self, obj: Any, name: str, path: str) -> list[bytes]:
        """A list of base64 SHA-256 digests; :class:`ProofError` (a problem with this proof,
        reported as one) when it is anything else."""
        from trainwarden.ledger._merkle import ProofError

        hashes = obj.get(name) if isinstance(obj, dict) else None
        if not isinstance(hashes, list) or len(hashes) > 64:
            raise ProofError(f"the server's {path} answer has no list of at most 64 hashes")
        out: list[bytes] = []
        for h in hashes:
            try:
                raw = base64.b64decode(h, validate=True) if isinstance(h, str) else b""
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ProofError(f"the server's {path} answer holds a hash that is not 32 bytes")
            out.append(raw)
        return out


def verify_url(
    url: str,
    token: str | None,
    *,
    key: str | None,
    saved: list[str],
    sample: int = 2000,
    max_bytes: int = VERIFY_MAX_BYTES,
    max_seconds: float = VERIFY_MAX_SECONDS,
) -> VerifyReport:
    """Verify a log through the service with a reader token: every entry and checkpoint is
    fetched and recomputed here; the server's own inclusion proofs (up to ``sample``, spread
    over the log) and consistency proofs are checked against the signed checkpoints.

    The server is not trusted: an answer that is not what the API documents, pages that do not
    advance, more than ``max_bytes`` read or more than ``max_seconds`` spent stop verification
    with a :class:`LedgerError` (a malformed proof is a problem with that proof)."""
    from trainwarden.ledger._client import LedgerClient

    if not token:
        raise LedgerError("--url needs a reader token (--token or TRAINWARDEN_LEDGER_TOKEN)")
    if key is None:
        raise LedgerError(
            "--url needs --key: the verifier key must come from you, not from the server"
        )
    verifier = load_verifier(key)
    client = LedgerClient(url, token)
    try:
        return _verify_through(
            _Answers(client, max_bytes, max_seconds), verifier, saved=saved, sample=sample
        )
    finally:
        client.close()


def _verify_through(
    api: _Answers, verifier: Verifier, *, saved: list[str], sample: int
) -> VerifyReport:
    entries: list[StoredEntry] = []
    after = -1
    while True:
        rows, nxt = api.page("/v1/entries", "entries", after, limit=1000)
        for e in rows:
            path = "/v1/entries"
            leaf = api.field(e, "leaf_hash", str, path)
            try:
                leaf_hash = base64.b64decode(leaf, validate=True)
            except ValueError:
                leaf_hash = b""
            if len(leaf_hash) != 32:
                raise LedgerError(
                    f"{api.client.url}{path}: the server's answer holds a leaf hash that is not"
                    " 32 bytes"
                )
            entries.append(
                StoredEntry(
                    index=api.field(e, "index", int, path),
                    run=api.field(e, "run", str, path),
                    writer=api.field(e, "writer", str, path),
                    seq=api.field(e, "seq", int, path),
                    kind=api.field(e, "kind", str, path),
                    entry=api.field(e, "entry", str, path).encode("utf-8", "surrogatepass"),
                    leaf_hash=leaf_hash,
                    mac=b"",
                )
            )
        if nxt is None:
            break
        after = nxt

    cps: list[CheckpointRow] = []
    after = 0
    while True:
        rows, nxt = api.page("/v1/checkpoints", "checkpoints", after)
        for c in rows:
            path = "/v1/checkpoints"
            cps.append(
                CheckpointRow(
                    api.field(c, "seq", int, path),
                    api.field(c, "size", int, path),
                    b"",
                    api.field(c, "note", str, path),
                    0.0,
                )
            )
        if nxt is None:
            break
        after = nxt
    # Stored row columns are not served; compare the notes only.
    for i, c in enumerate(cps):
        try:
            opened = verifier.open(c.note)
            cps[i] = CheckpointRow(c.seq, opened.size, opened.root, c.note, 0.0)
        except CheckpointError:
            pass

    def inclusion(index: int, size: int) -> list[bytes]:
        path = "/v1/proof/inclusion"
        return api.digests(api.get(path, index=index, size=size), "proof", path)

    def consistency(first: int, second: int) -> list[bytes]:
        path = "/v1/proof/consistency"
        return api.digests(api.get(path, first=first, second=second), "proof", path)

    head = entries[-1].index + 1 if entries else 0
    return verify_log(
        entries,
        head,
        cps,
        verifier,
        saved=saved[0] if saved else None,
        inclusion_source=inclusion,
        consistency_source=consistency,
        proof_sample=sample,
    )


def _local_service(db: str | None, state_dir: Path | None) -> Any:
    from trainwarden.service._server import ServeConfig, build_service

    service, _, _ = build_service(ServeConfig(db_url=db, state_dir=state_dir, deadman=False))
    return service


def parse_ranks(text: str) -> tuple[int, int]:
    """``N`` or ``FIRST-LAST`` (decimal, 0 <= FIRST <= LAST < 2**31) as (first, last)."""
    first, sep, last = text.strip().partition("-")
    try:
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError
        lo = int(first)
        hi = int(last) if sep else lo
        if not 0 <= lo <= hi < 2**31:
            raise ValueError
    except ValueError:
        raise LedgerError(
            f"--ranks must be N or FIRST-LAST with 0 <= FIRST <= LAST < 2**31, not {text!r}"
        ) from None
    return lo, hi


def create_token(
    role: str,
    run: str | None,
    *,
    db: str | None,
    state_dir: Path | None,
    url: str | None,
    token: str | None,
    ranks: tuple[int, int] | None = None,
) -> tuple[str, str]:
    """Create a token; return (token, token id)."""
    try:
        r = Role(role)
    except ValueError as e:
        raise LedgerError(f"--role must be admin, writer or reader, not {role!r}") from e
    if ranks is not None and r is not Role.writer:
        raise LedgerError("--ranks binds a writer token; this is a " + r.value + " token")
    if url:
        from trainwarden.ledger._client import LedgerClient

        body: dict[str, Any] = {"role": r.value, "run_id": run}
        if ranks is not None:
            body["ranks"] = list(ranks)
        client = LedgerClient(url, token)
        try:
            got = client.post("/v1/tokens", body)
        finally:
            client.close()
        return str(got["token"]), str(got["token_id"])
    service = _local_service(db, state_dir)
    try:
        tok, info = service.issue_token(r, run, ranks)
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

        client = LedgerClient(url, token)
        try:
            client.delete(f"/v1/tokens/{token_id}")
        finally:
            client.close()
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

        client = LedgerClient(url, token)
        try:
            tokens: list[dict[str, Any]] = client.get("/v1/tokens")["tokens"]
        finally:
            client.close()
        return tokens
    service = _local_service(db, state_dir)
    try:
        return [
            {
                "token_id": t.token_id,
                "role": t.role.value,
                "run_id": t.run_id,
                "revoked": t.revoked,
                "ranks": None if t.ranks is None else list(t.ranks),
            }
            for t in service.ledger.storage.list_tokens()
        ]
    finally:
        service.ledger.storage.close()
