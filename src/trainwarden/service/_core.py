"""The ledger service's logic, independent of HTTP: tokens and roles, runs, appends with the
dead-man switch, reads, proofs and metrics. The FastAPI routes only call into this."""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainwarden.ledger._checkpoint import Checkpoint
from trainwarden.ledger._deadman import CLOSE_KIND, Flag, LivenessTracker
from trainwarden.ledger._log import Ledger
from trainwarden.ledger._merkle import ProofError
from trainwarden.ledger._types import (
    AppendResult,
    Event,
    LedgerError,
    Role,
    RunInfo,
    RunQuota,
    StoredEntry,
    TokenInfo,
)

__all__ = [
    "AuthError",
    "LedgerService",
    "Principal",
    "RunQuota",
    "ServiceError",
    "hash_token",
    "new_token",
]

TOKEN_PREFIX = "tw_"  # noqa: S105 - a prefix that marks our tokens, not a secret


class ServiceError(LedgerError):
    """A request the service refuses: ``status`` is the HTTP status, ``code`` a stable reason."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # Seconds after which the same request may succeed (sent as Retry-After).
        self.retry_after = retry_after


class AuthError(ServiceError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, role and (for a writer) its run."""

    token_id: str
    role: Role
    run_id: str | None
    # A writer bound to ranks (first, last) may write only events of those ranks.
    ranks: tuple[int, int] | None = None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class _Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.appended = 0
        self.duplicates = 0
        self.batches = 0
        self.checkpoints = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self.flags: collections.Counter[str] = collections.Counter()
        self.window: collections.deque[tuple[float, int]] = collections.deque()

    def ingest(self, n: int, now: float) -> None:
        with self.lock:
            self.window.append((now, n))
            while self.window and now - self.window[0][0] > 10:
                self.window.popleft()

    def rate(self, now: float) -> float:
        with self.lock:
            total = sum(n for t, n in self.window if now - t <= 10)
        return total / 10.0


class _Bucket:
    """A token bucket: ``rate`` a second up to ``rate * burst_s``."""

    def __init__(self, rate: float, burst_s: float, now: float) -> None:
        self.rate = rate
        self.capacity = rate * burst_s
        self.level = self.capacity
        self.at = now

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits (0: now). A cost over the capacity fits a full bucket,
        so no batch the service accepts can wait for ever."""
        self.level = min(self.capacity, self.level + max(0.0, now - self.at) * self.rate)
        self.at = now
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


# A refusal for a run is recorded in the log at most this often (seconds), per server and limit.
_FLAG_EVERY_S = 60.0


class LedgerService:
    """One server's view of the shared ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        deadman: bool = True,
        quota: RunQuota | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.tracker = LivenessTracker() if deadman else None
        self.metrics = _Metrics()
        self.quota = quota or RunQuota()
        self._clock = clock
        self._quota_lock = threading.Lock()
        self._stored: dict[str, int] = {}
        self._buckets: dict[str, tuple[_Bucket | None, ...]] = {}
        self._flagged: dict[tuple[str, str], float] = {}
        now = time.time()
        if self.tracker is not None:
            for run in ledger.storage.list_runs():
                self.tracker.track(run, now)

    # -- tokens ----------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> Principal:
        """Resolve an ``Authorization: Bearer`` header; raise :class:`AuthError` (401)."""
        if not header:
            raise AuthError(401, "missing_token", "this endpoint needs a bearer token")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 256:
            raise AuthError(401, "bad_token", "malformed Authorization header")
        h = hash_token(token)
        info = self.ledger.storage.find_token(h)
        # The lookup is by hash (a secret's hash leaks nothing); compare in constant time anyway.
        if info is None or not hmac.compare_digest(info.token_hash, h):
            raise AuthError(401, "bad_token", "unknown token")
        if info.revoked:
            raise AuthError(401, "revoked_token", "this token was revoked")
        return Principal(info.token_id, info.role, info.run_id, info.ranks)

    def require(self, p: Principal, *roles: Role) -> None:
        if p.role not in roles:
            raise AuthError(403, "forbidden", f"a {p.role.value} token may not do this")

    def issue_token(
        self, role: Role, run_id: str | None, ranks: tuple[int, int] | None = None
    ) -> tuple[str, TokenInfo]:
        """Create a token; only its hash is stored. Writers need a run, other roles none. A
        writer token with ``ranks`` (first, last) may write only events of those ranks."""
        if (role is Role.writer) != (run_id is not None):
            raise ServiceError(422, "bad_request", "a writer token needs a run; others none")
        if ranks is not None:
            if role is not Role.writer:
                raise ServiceError(422, "bad_request", "only a writer token is bound to ranks")
            first, last = ranks
            if not 0 <= first <= last < 2**31:
                raise ServiceError(
                    422, "bad_request", f"ranks {first}-{last}: need 0 <= first <= last < 2**31"
                )
        if run_id is not None and self.ledger.storage.get_run(run_id) is None:
            raise ServiceError(404, "no_such_run", f"no run {run_id!r}")
        token = new_token()
        info = TokenInfo(
            token_id="tok_" + secrets.token_hex(8),
            token_hash=hash_token(token),
            role=role,
            run_id=run_id,
            created=time.time(),
            revoked=False,
            ranks=ranks,
        )
        self.ledger.storage.add_token(info)
        return token, info

    def revoke(self, token_id: str) -> None:
        if not self.ledger.storage.revoke_token(token_id):
            raise ServiceError(404, "no_such_token", f"no token {token_id!r}")

    def ensure_admin_token(self, path: Path) -> bool:
        """Make sure ``path`` holds a valid admin token (mode 0600); return True if created."""
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
        if token:
            info = self.ledger.storage.find_token(hash_token(token))
            if info is not None and info.role is Role.admin and not info.revoked:
                return False
        token, _ = self.issue_token(Role.admin, None)
        import os

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as fh:
            fh.write(token + "\n")
        tmp.replace(path)
        return True

    # -- runs and events -------------------------------------------------------------------

    def create_run(
        self, name: str, interval_s: float, ranks: int, meta: dict[str, Any]
    ) -> tuple[RunInfo, str]:
        """Create a run and its writer token."""
        run = RunInfo(
            run_id="run_" + secrets.token_hex(8),
            name=name,
            created=time.time(),
            interval_s=interval_s,
            ranks=ranks,
            status="open",
            meta=meta,
        )
        self.ledger.storage.create_run(run)
        token, _ = self.issue_token(Role.writer, run.run_id)
        if self.tracker is not None:
            self.tracker.track(run, time.time())
        return run, token

    def get_run(self, run_id: str) -> RunInfo:
        run = self.ledger.storage.get_run(run_id)
        if run is None:
            raise ServiceError(404, "no_such_run", f"no run {run_id!r}")
        return run

    def append(
        self, p: Principal, run_id: str, writer: str, events: Sequence[Event]
    ) -> AppendResult:
        """Append a writer's batch to its own run."""
        self.require(p, Role.writer)
        if p.run_id != run_id:
            raise AuthError(403, "wrong_run", "this token writes to another run")
        run = self.get_run(run_id)
        if not events:
            raise ServiceError(422, "bad_request", "empty batch")
        if p.ranks is not None:
            first, last = p.ranks
            for e in events:
                if e.rank is None or not first <= e.rank <= last:
                    raise AuthError(
                        403,
                        "wrong_rank",
                        f"this token writes for ranks {first}-{last} only; event {e.seq} is "
                        + ("for no rank" if e.rank is None else f"for rank {e.rank}"),
                    )
        reserved = [0]

        def admit(size: int) -> None:
            self._admit(run_id, writer, len(events), size)
            reserved[0] = size

        try:
            result = self.ledger.append(run_id, writer, events, admit=admit)
        except LedgerError as e:
            self._settle(run_id, -reserved[0])
            if isinstance(e, ServiceError):
                raise
            raise ServiceError(422, "bad_entry", e.message) from e
        except BaseException:
            self._settle(run_id, -reserved[0])
            raise
        # The batch was charged its bound; what it stored (duplicates store nothing) counts.
        self._settle(run_id, result.stored_bytes - reserved[0])
        now = time.time()
        with self.metrics.lock:
            self.metrics.appended += result.new
            self.metrics.duplicates += result.duplicates
            self.metrics.batches += 1
        self.metrics.ingest(result.new, now)
        sources = {str(e.rank) if e.rank is not None else writer for e in events}
        kinds = {e.kind for e in events}
        if self.tracker is not None:
            flags = self.tracker.observe(
                run_id, sources, kinds, now, [(writer, a, b) for a, b in result.gaps]
            )
            self._write_flags(flags)
        # A run that ends or is declared abandoned still accepts records (a spool must always
        # drain), but what arrives then is itself recorded.
        if run.status == "closed" and result.new:
            self._write_flags([Flag(run_id, "ledger.record_after_close", {"writer": writer})])
        elif run.status == "abandoned" and result.new:
            self.ledger.storage.set_run_status(run_id, "open")
            if self.tracker is not None:
                self.tracker.track(replace(run, status="open"), now)
                self.tracker.observe(run_id, sources, kinds, now)
        if any(e.kind == CLOSE_KIND for e in events):
            self.ledger.storage.set_run_status(run_id, "closed")
        return result

    def _admit(self, run_id: str, writer: str, events: int, size: int) -> None:
        """Charge a validated batch (``size``: its bound in bytes) to its run's quota, or refuse
        it: 507 ``run_quota`` over the stored bytes, 429 ``rate_limited`` over the rate. The
        first refusal of a run (then at most one a minute) is itself recorded in the log."""
        q = self.quota
        if q.max_bytes and run_id not in self._stored:
            stored = self.ledger.storage.run_bytes(run_id)
            with self._quota_lock:
                self._stored.setdefault(run_id, stored)
        with self._quota_lock:
            refused = self._over_bytes(run_id, writer, size) or self._over_rate(
                run_id, writer, events, size
            )
            if refused is None:
                if run_id in self._stored:
                    self._stored[run_id] += size
                return
            error, flag = refused
            now = self._clock()
            last = self._flagged.get((run_id, flag.kind))
            record = last is None or now - last >= _FLAG_EVERY_S
            if record:
                self._flagged[(run_id, flag.kind)] = now
        if record:
            self._write_flags([flag])
        raise error

    def _over_bytes(self, run_id: str, writer: str, size: int) -> tuple[ServiceError, Flag] | None:
        q = self.quota
        stored = self._stored.get(run_id, 0)
        if not q.max_bytes or stored + size <= q.max_bytes:
            return None
        return ServiceError(
            507,
            "run_quota",
            f"run {run_id} has {stored} bytes stored; a batch of up to {size} bytes would pass "
            f"its quota of {q.max_bytes} bytes",
        ), Flag(
            run_id,
            "ledger.quota_exceeded",
            {"writer": writer, "stored_bytes": stored, "max_bytes": q.max_bytes},
        )

    def _over_rate(
        self, run_id: str, writer: str, events: int, size: int
    ) -> tuple[ServiceError, Flag] | None:
        """Take the batch from the run's buckets, or say how long it must wait."""
        q = self.quota
        if not (q.events_per_s or q.bytes_per_s):
            return None
        now = self._clock()
        buckets = self._buckets.get(run_id)
        if buckets is None:
            buckets = self._buckets[run_id] = tuple(
                _Bucket(rate, q.burst_s, now) if rate else None
                for rate in (q.events_per_s, q.bytes_per_s)
            )
        costs = (events, size)
        wait = max(b.wait(c, now) if b else 0.0 for b, c in zip(buckets, costs, strict=True))
        if wait <= 0:
            for b, c in zip(buckets, costs, strict=True):
                if b:
                    b.level -= c
            return None
        rates = " and ".join(
            f"{rate:g} {what}"
            for rate, what in ((q.events_per_s, "events"), (q.bytes_per_s, "bytes"))
            if rate
        )
        return ServiceError(
            429,
            "rate_limited",
            f"run {run_id} is over its rate of {rates} a second; retry in {wait:.1f} s",
            retry_after=wait,
        ), Flag(
            run_id,
            "ledger.rate_limited",
            {"writer": writer, "events_per_s": q.events_per_s, "bytes_per_s": q.bytes_per_s},
        )

    def _settle(self, run_id: str, delta: int) -> None:
        if delta:
            with self._quota_lock:
                if run_id in self._stored:
                    self._stored[run_id] = max(0, self._stored[run_id] + delta)

    def _write_flags(self, flags: list[Flag]) -> None:
        for f in flags:
            self.ledger.append_service(f.run, f.kind, f.record)
            with self.metrics.lock:
                self.metrics.flags[f.kind] += 1
            if f.kind == "ledger.unclosed_run":
                self.ledger.storage.set_run_status(f.run, "abandoned")

    def check_liveness(self, now: float | None = None) -> list[Flag]:
        """Run the dead-man switch once; the flags are already in the ledger on return."""
        if self.tracker is None:
            return []
        flags = self.tracker.check(time.time() if now is None else now)
        self._write_flags(flags)
        return flags

    # -- reads -----------------------------------------------------------------------------

    def entries(
        self,
        *,
        run: str | None,
        kind: str | None,
        writer: str | None,
        after: int,
        limit: int,
    ) -> list[StoredEntry]:
        return self.ledger.storage.query(
            run=run, kind=kind, writer=writer, after=after, limit=max(1, min(limit, 1000))
        )

    def checkpoint(self, fresh: bool = False) -> Checkpoint:
        if fresh:
            cp = self.ledger.checkpoint()
            with self.metrics.lock:
                self.metrics.checkpoints += 1
            return cp
        latest = self.ledger.latest_checkpoint()
        if latest is None:
            # Reading never writes: the first checkpoint comes from the background ticker or an
            # admin's POST.
            raise ServiceError(404, "no_checkpoint", "no checkpoint has been signed yet")
        return latest

    def tick_checkpoint(self) -> Checkpoint | None:
        """Issue a checkpoint when the log grew since the last one (called every half second)."""
        size = self.ledger.sync()
        latest = self.ledger.storage.latest_checkpoint()
        if latest is not None and latest.size >= size:
            return None
        return self.checkpoint(fresh=True)

    def inclusion(self, index: int, size: int | None) -> tuple[int, bytes, list[bytes]]:
        try:
            n, proof = self.ledger.inclusion_proof(index, size)
            return n, self.ledger.leaf(index), proof
        except (ProofError, IndexError) as e:
            raise ServiceError(404, "no_such_entry", str(e)) from e

    def consistency(self, first: int, second: int) -> list[bytes]:
        try:
            return self.ledger.consistency_proof(first, second)
        except ProofError as e:
            raise ServiceError(404, "bad_range", str(e)) from e

    def reject(self, code: str) -> None:
        with self.metrics.lock:
            self.metrics.rejected[code] += 1

    def metrics_text(self) -> str:
        """Prometheus text exposition."""
        now = time.time()
        m = self.metrics
        with m.lock:
            lines = [
                "# HELP trainwarden_ledger_size Entries in the log.",
                "# TYPE trainwarden_ledger_size gauge",
                f"trainwarden_ledger_size {self.ledger.size}",
                "# HELP trainwarden_ledger_events_appended_total Events appended by this server.",
                "# TYPE trainwarden_ledger_events_appended_total counter",
                f"trainwarden_ledger_events_appended_total {m.appended}",
                "# HELP trainwarden_ledger_duplicate_events_total Resent events acknowledged.",
                "# TYPE trainwarden_ledger_duplicate_events_total counter",
                f"trainwarden_ledger_duplicate_events_total {m.duplicates}",
                "# HELP trainwarden_ledger_batches_total Batches appended by this server.",
                "# TYPE trainwarden_ledger_batches_total counter",
                f"trainwarden_ledger_batches_total {m.batches}",
                "# HELP trainwarden_ledger_checkpoints_total Checkpoints signed by this server.",
                "# TYPE trainwarden_ledger_checkpoints_total counter",
                f"trainwarden_ledger_checkpoints_total {m.checkpoints}",
                "# HELP trainwarden_ledger_rejected_requests_total Rejected requests by reason.",
                "# TYPE trainwarden_ledger_rejected_requests_total counter",
                *(
                    f'trainwarden_ledger_rejected_requests_total{{reason="{k}"}} {v}'
                    for k, v in sorted(m.rejected.items())
                ),
                "# HELP trainwarden_ledger_deadman_flags_total Entries the dead-man switch wrote.",
                "# TYPE trainwarden_ledger_deadman_flags_total counter",
                *(
                    f'trainwarden_ledger_deadman_flags_total{{kind="{k}"}} {v}'
                    for k, v in sorted(m.flags.items())
                ),
            ]
        lines += [
            "# HELP trainwarden_ledger_ingest_events_per_second Mean over the last 10 s.",
            "# TYPE trainwarden_ledger_ingest_events_per_second gauge",
            f"trainwarden_ledger_ingest_events_per_second {m.rate(now):.1f}",
        ]
        return "\n".join(lines) + "\n"
