"""The ledger: validates and canonicalises events, appends them through a :class:`Storage`,
keeps the Merkle tree in step with the database, and issues signed checkpoints and proofs."""

from __future__ import annotations

import hmac
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trainwarden.ledger._canonical import CanonicalError, canonical_bytes
from trainwarden.ledger._checkpoint import Checkpoint, Signer
from trainwarden.ledger._merkle import MerkleTree, leaf_hash
from trainwarden.ledger._storage import PendingEntry, Storage
from trainwarden.ledger._types import SERVICE_WRITER, AppendResult, Event, LedgerError

__all__ = [
    "SERVICE_KIND_PREFIX",
    "SERVICE_WRITER",
    "EntryLimits",
    "Ledger",
    "compose_entry",
    "entry_bound",
    "row_mac",
]

# Kinds only the service itself writes (dead-man switch); a client may not forge them.
SERVICE_KIND_PREFIX = "ledger."
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class EntryLimits:
    """Bounds on what one batch may carry; exceeding one rejects the whole batch."""

    max_entry_bytes: int = 64 * 1024
    max_batch_events: int = 5000
    max_kind_len: int = 128

    def __post_init__(self) -> None:
        if self.max_entry_bytes < 256 or self.max_batch_events < 1 or self.max_kind_len < 1:
            raise ValueError("ledger entry limits must be positive (entries at least 256 bytes)")


def compose_entry(fields: dict[str, bytes]) -> bytes:
    """An RFC 8785 object from already-canonical member values. Keys must be ASCII, where
    UTF-16 order (what RFC 8785 sorts by) equals byte order."""
    parts = [b'"' + k.encode() + b'":' + fields[k] for k in sorted(fields)]
    return b"{" + b",".join(parts) + b"}"


def entry_bound(p: PendingEntry) -> int:
    """An upper bound on the stored entry's bytes: its values plus at most 16 bytes of key and
    punctuation for each of the (at most 12) members, the index included."""
    return sum(map(len, p.fields.values())) + 16 * 12


def row_mac(key: bytes, index: int, leaf: bytes) -> bytes:
    """Authenticates that ``leaf`` is stored at ``index``."""
    return hmac.digest(key, b"%d\n" % index + leaf, "sha256")


class Ledger:
    """A transparency log over one storage. Thread-safe; several ``Ledger`` objects (in several
    processes or machines) may share one PostgreSQL database."""

    def __init__(self, storage: Storage, signer: Signer, limits: EntryLimits | None = None) -> None:
        self.storage = storage
        self.signer = signer
        self.limits = limits or EntryLimits()
        self._row_key = signer.entry_key()
        self._tree = MerkleTree()
        self._tree_lock = threading.Lock()
        self._last_checkpoint: Checkpoint | None = None
        self.sync()

    @property
    def origin(self) -> str:
        return self.signer.name

    # -- writing ---------------------------------------------------------------------------

    def prepare(self, run: str, writer: str, events: Sequence[Event]) -> list[PendingEntry]:
        """Validate and canonicalise a batch; raise :class:`LedgerError` (nothing written)."""
        if not _NAME.match(writer) or writer == SERVICE_WRITER:
            raise LedgerError(f"writer name {writer[:80]!r} is not allowed")
        if len(events) > self.limits.max_batch_events:
            raise LedgerError(
                f"batch of {len(events)} events exceeds {self.limits.max_batch_events}"
            )
        out: list[PendingEntry] = []
        received = canonical_bytes(int(time.time() * 1000))
        run_b = canonical_bytes(run)
        writer_b = canonical_bytes(writer)
        for ev in events:
            out.append(self._pending(run, writer, ev, run_b, writer_b, received))
        return out

    def _pending(
        self, run: str, writer: str, ev: Event, run_b: bytes, writer_b: bytes, received: bytes
    ) -> PendingEntry:
        if not (isinstance(ev.seq, int) and 1 <= ev.seq < 2**53):
            raise LedgerError(f"event seq {ev.seq!r} must be an integer from 1")
        if (
            not ev.kind
            or len(ev.kind) > self.limits.max_kind_len
            or not _NAME.match(ev.kind)
            or ev.kind.startswith(SERVICE_KIND_PREFIX)
        ):
            raise LedgerError(f"event {ev.seq}: kind {ev.kind[:80]!r} is not allowed")
        if ev.sha256 is not None and not _SHA256.match(ev.sha256):
            raise LedgerError(f"event {ev.seq}: sha256 must be 64 lowercase hex digits")
        if ev.rank is not None and not 0 <= ev.rank < 2**31:
            raise LedgerError(f"event {ev.seq}: rank out of range")
        fields: dict[str, bytes] = {
            "run": run_b,
            "writer": writer_b,
            "seq": str(ev.seq).encode(),
            "received_ms": received,
            # The kind matched _NAME: ASCII without quotes or escapes.
            "kind": b'"' + ev.kind.encode() + b'"',
        }
        try:
            fields["record"] = canonical_bytes(ev.record)
            if ev.ts is not None:
                fields["ts"] = canonical_bytes(ev.ts)
            if ev.rank is not None:
                fields["rank"] = str(ev.rank).encode()
            if ev.host is not None:
                fields["host"] = canonical_bytes(ev.host)
            if ev.sha256 is not None:
                fields["sha256"] = b'"' + ev.sha256.encode() + b'"'
        except CanonicalError as e:
            raise LedgerError(f"event {ev.seq}: {e}") from e
        p = PendingEntry(run=run, writer=writer, seq=ev.seq, kind=ev.kind, fields=fields)
        size = entry_bound(p)
        if size > self.limits.max_entry_bytes:
            raise LedgerError(
                f"event {ev.seq}: entry of {size} bytes exceeds {self.limits.max_entry_bytes}"
            )
        return p

    def _seal(self, index: int, p: PendingEntry) -> tuple[bytes, bytes, bytes]:
        entry = compose_entry({**p.fields, "index": str(index).encode()})
        leaf = leaf_hash(entry)
        return entry, leaf, row_mac(self._row_key, index, leaf)

    def append(
        self,
        run: str,
        writer: str,
        events: Sequence[Event],
        admit: Callable[[int], None] | None = None,
    ) -> AppendResult:
        """Append a batch from one writer of one run, atomically and idempotently: events whose
        (run, writer, seq) is already stored are acknowledged with their existing index.
        ``admit`` is called with the batch's size bound (bytes) once it is validated and before
        anything is written; it refuses the batch by raising."""
        pending = self.prepare(run, writer, events)
        if admit is not None:
            admit(sum(entry_bound(p) for p in pending))
        result = self.storage.append(pending, self._seal)
        self.sync()
        return result

    def append_service(self, run: str, kind: str, record: dict[str, Any]) -> int:
        """Append an entry written by the service itself (dead-man switch, gaps)."""
        fields = {
            "run": canonical_bytes(run),
            "writer": canonical_bytes(SERVICE_WRITER),
            "kind": canonical_bytes(kind),
            "record": canonical_bytes(record),
            "received_ms": canonical_bytes(int(time.time() * 1000)),
        }
        p = PendingEntry(run=run, writer=SERVICE_WRITER, seq=None, kind=kind, fields=fields)
        result = self.storage.append([p], self._seal)
        self.sync()
        return result.indices[0]

    # -- the tree --------------------------------------------------------------------------

    def sync(self) -> int:
        """Bring the in-memory tree up to the stored log head; return the size."""
        with self._tree_lock:
            head = self.storage.size()
            while self._tree.size < head:
                start = self._tree.size
                hashes = self.storage.leaf_hashes(start, min(head, start + 50_000))
                if not hashes:
                    raise LedgerError(f"stored log is missing entry {start}")
                self._tree.extend(hashes)
            return self._tree.size

    @property
    def size(self) -> int:
        return self._tree.size

    def root(self, size: int | None = None) -> bytes:
        with self._tree_lock:
            return self._tree.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[int, list[bytes]]:
        """(tree size, proof) for entry ``index``; default size: the latest checkpoint's."""
        self.sync()
        if size is None:
            cp = self.latest_checkpoint()
            size = cp.size if cp is not None and cp.size > index else self.checkpoint().size
        with self._tree_lock:
            return size, self._tree.inclusion_proof(index, size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        self.sync()
        with self._tree_lock:
            return self._tree.consistency_proof(first, second)

    def leaf(self, index: int) -> bytes:
        with self._tree_lock:
            return self._tree.leaf(index)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint for the current head (reusing the last one when the log
        has not grown)."""
        size = self.sync()
        last = self._last_checkpoint
        if last is not None and last.size == size:
            return last
        with self._tree_lock:
            root = self._tree.root(size)
        cp = self.signer.sign(size, root)
        if not self.storage.add_checkpoint(size, root, cp.note, time.time()):
            # Another server stored a larger checkpoint meanwhile; that one is the latest.
            newer = self.latest_checkpoint()
            if newer is not None:
                cp = newer
        self._last_checkpoint = cp
        return cp

    def latest_checkpoint(self) -> Checkpoint | None:
        row = self.storage.latest_checkpoint()
        if row is None:
            return None
        return self.signer.open(row.note)
