"""The dead-man switch: a run declares how often each rank reports; when a rank falls silent
while the run is still alive, when a writer's sequence numbers skip, or when the whole run stops
without a closing record, the service writes that into the ledger itself."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from trainwarden.ledger._types import RunInfo

__all__ = ["CLOSE_KIND", "HEARTBEAT_KIND", "Flag", "LivenessTracker"]

CLOSE_KIND = "run.end"
HEARTBEAT_KIND = "run.heartbeat"


@dataclass(frozen=True)
class Flag:
    """An entry the service appends about a run: ``kind`` is ``ledger.silence``,
    ``ledger.sequence_gap`` or ``ledger.unclosed_run``."""

    run: str
    kind: str
    record: dict[str, Any]


@dataclass
class _RunState:
    info: RunInfo
    started: float
    last_any: float
    last_seen: dict[str, float] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    closed: bool = False
    abandoned: bool = False


class LivenessTracker:
    """Tracks when each source (rank, or writer when no rank is given) of each open run last
    reported. State lives in memory: after a restart every open run gets a fresh grace period."""

    def __init__(self, end_factor: float = 3.0) -> None:
        self.end_factor = end_factor
        self._runs: dict[str, _RunState] = {}
        self._lock = threading.Lock()

    def track(self, info: RunInfo, now: float) -> None:
        with self._lock:
            if info.run_id not in self._runs and info.status == "open":
                self._runs[info.run_id] = _RunState(info=info, started=now, last_any=now)

    def observe(
        self,
        run: str,
        sources: set[str],
        kinds: set[str],
        now: float,
        gaps: list[tuple[str, int, int]] | None = None,
    ) -> list[Flag]:
        """Record an accepted batch; return flags for sequence gaps and the run's closing."""
        flags = [
            Flag(run, "ledger.sequence_gap", {"writer": w, "expected_seq": exp, "got_seq": got})
            for (w, exp, got) in gaps or []
        ]
        with self._lock:
            st = self._runs.get(run)
            if st is None:
                return flags
            st.last_any = now
            for s in sources:
                st.last_seen[s] = now
                st.silent.discard(s)
            if CLOSE_KIND in kinds:
                st.closed = True
        return flags

    def is_closed(self, run: str) -> bool:
        with self._lock:
            st = self._runs.get(run)
            return st is not None and st.closed

    def check(self, now: float) -> list[Flag]:
        """Flags for every silence that began since the last check."""
        flags: list[Flag] = []
        with self._lock:
            for run, st in list(self._runs.items()):
                if st.closed:
                    del self._runs[run]
                    continue
                iv = st.info.interval_s
                expected = {str(r) for r in range(st.info.ranks)} | set(st.last_seen)
                alive = now - st.last_any <= iv
                if alive:
                    for s in sorted(expected):
                        last = st.last_seen.get(s, st.started)
                        if now - last > iv and s not in st.silent:
                            st.silent.add(s)
                            flags.append(
                                Flag(
                                    run,
                                    "ledger.silence",
                                    {
                                        "source": s,
                                        "silent_for_s": round(now - last, 3),
                                        "interval_s": iv,
                                        "never_reported": s not in st.last_seen,
                                    },
                                )
                            )
                elif now - st.last_any > iv * self.end_factor and not st.abandoned:
                    st.abandoned = True
                    flags.append(
                        Flag(
                            run,
                            "ledger.unclosed_run",
                            {
                                "silent_for_s": round(now - st.last_any, 3),
                                "interval_s": iv,
                                "reason": f"no record for {self.end_factor:g} intervals and no"
                                f" {CLOSE_KIND} record",
                            },
                        )
                    )
                    del self._runs[run]
        return flags
