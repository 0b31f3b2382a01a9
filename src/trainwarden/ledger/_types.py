"""Public types of the ledger: errors, events as a client sends them, stored entries, runs,
tokens and roles."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from trainwarden.errors import TrainWardenError

__all__ = [
    "AppendResult",
    "Event",
    "LedgerError",
    "LedgerIntegrityError",
    "Role",
    "RunInfo",
    "RunQuota",
    "StoredEntry",
    "TokenInfo",
]


# The writer name of the entries the service itself appends (dead-man switch, refusals).
SERVICE_WRITER = "trainwarden-ledger"

# What `ledger verify --url` reads from a server at most, in bytes and seconds, unless told
# otherwise: a hostile server cannot make it hold more memory or run longer.
VERIFY_MAX_BYTES = 2 << 30
VERIFY_MAX_SECONDS = 3600.0


class LedgerError(TrainWardenError):
    """Base class of ledger errors (bad input, storage or configuration problems)."""


class LedgerIntegrityError(LedgerError):
    """The log does not verify: a row, a checkpoint or a proof disagrees with the rest.

    ``index`` is the first bad entry when one can be named, ``run`` its run."""

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        run: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.index = index
        self.run = run


class Role(str, enum.Enum):
    """What a token may do: ``admin`` manages runs and tokens, ``writer`` appends to one run,
    ``reader`` reads everything and writes nothing."""

    admin = "admin"
    writer = "writer"
    reader = "reader"


@dataclass(frozen=True)
class Event:
    """One event as a writer sends it. ``seq`` numbers a writer's events from 1 without gaps; the
    pair (writer, seq) makes a resend idempotent. ``record`` is canonicalisable JSON."""

    seq: int
    kind: str
    record: dict[str, Any]
    ts: float | None = None
    rank: int | None = None
    host: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class StoredEntry:
    """One row of the log: ``entry`` holds the canonical JSON bytes whose leaf hash is in the
    tree; ``mac`` authenticates (index, leaf hash) with a key only the server holds."""

    index: int
    run: str
    writer: str
    seq: int | None
    kind: str
    entry: bytes
    leaf_hash: bytes
    mac: bytes
    # Set when the row cannot be placed in the log at all (its index column holds no integer:
    # the database was edited by hand); verification reports it and leaves it out of the tree.
    problem: str | None = None


@dataclass(frozen=True)
class AppendResult:
    """The outcome of one batch: the log index of each event (new or already stored)."""

    indices: list[int]
    new: int
    duplicates: int
    size: int
    gaps: list[tuple[int, int]] = field(default_factory=list)
    # Bytes of the entries this batch added to the log (as stored).
    stored_bytes: int = 0


@dataclass(frozen=True)
class RunQuota:
    """What one run may write through one server: ``max_bytes`` of stored entries in all, and a
    sustained ``events_per_s`` events and ``bytes_per_s`` bytes a second, with bursts of
    ``burst_s`` seconds' worth. 0 turns a limit off. A batch over a limit is refused whole
    before anything is written; the writer's spool keeps it."""

    max_bytes: int = 16 * 2**30
    events_per_s: float = 20_000.0
    bytes_per_s: float = 32.0 * 2**20
    burst_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_bytes", "events_per_s", "bytes_per_s", "burst_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, not {v!r}")
            if v < 0 or (name == "burst_s" and v == 0):
                raise ValueError(f"{name} must be {'> 0' if name == 'burst_s' else '>= 0'}")
        if not isinstance(self.max_bytes, int):
            raise ValueError(f"max_bytes must be an integer, not {self.max_bytes!r}")


@dataclass(frozen=True)
class RunInfo:
    """A run: ``interval_s`` is the longest a rank may stay silent while the run is alive,
    ``ranks`` how many ranks report; ``status`` is open, closed or abandoned."""

    run_id: str
    name: str
    created: float
    interval_s: float
    ranks: int
    status: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenInfo:
    """A token as stored: only its SHA-256 hash, never the token itself."""

    token_id: str
    token_hash: bytes
    role: Role
    run_id: str | None
    created: float
    revoked: bool
    # A writer token bound to ranks ``(first, last)`` may write only events of those ranks.
    ranks: tuple[int, int] | None = None
