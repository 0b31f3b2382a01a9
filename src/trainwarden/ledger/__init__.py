"""The tamper-evident ledger: an RFC 9162 Merkle-tree log of canonical JSON entries with signed
checkpoints, inclusion and consistency proofs, SQLite and PostgreSQL storage, whole-log
verification, and :class:`LedgerSink`, the client that ships events to the ledger service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainwarden.ledger._checkpoint import Checkpoint, CheckpointError, Signer, Verifier
from trainwarden.ledger._log import EntryLimits, Ledger
from trainwarden.ledger._storage import Storage, open_storage
from trainwarden.ledger._types import (
    AppendResult,
    Event,
    LedgerError,
    LedgerIntegrityError,
    Role,
    RunInfo,
    StoredEntry,
)
from trainwarden.ledger._verify import Problem, VerifyReport, verify_log

if TYPE_CHECKING:
    from trainwarden.ledger._client import LedgerClient, LedgerSink, configured_sink

__all__ = [
    "AppendResult",
    "Checkpoint",
    "CheckpointError",
    "EntryLimits",
    "Event",
    "Ledger",
    "LedgerClient",
    "LedgerError",
    "LedgerIntegrityError",
    "LedgerSink",
    "Problem",
    "Role",
    "RunInfo",
    "Signer",
    "Storage",
    "StoredEntry",
    "Verifier",
    "VerifyReport",
    "configured_sink",
    "open_storage",
    "verify_log",
]


def __getattr__(name: str) -> Any:
    # The client pulls in httpx; import it only when asked for.
    if name in ("LedgerClient", "LedgerSink", "configured_sink"):
        from trainwarden.ledger import _client as client

        return getattr(client, name)
    raise AttributeError(name)
