"""One rank slower than the others, below any absolute threshold: change points across ranks.

Synchronous data-parallel training makes every rank's *step* as long as the slowest rank's, so
a rank that sleeps a little at every step slows the whole job without standing out in its own
step times. What differs is each rank's *own* time: the step minus backward (where DDP's
all-reduce makes the fast ranks wait for the slow one) minus the previous cross-rank exchange
(where the fast ranks wait again) minus, on CPU, the rest of the step's run-queue wait (the
training thread runnable but without a CPU: the node's load, not the rank's work or sleeps).
Every exchanged step, each rank's own time travels in the
exchange; for every rank ``r`` the check takes

    e_r = own_r - median of the other ranks' own times,   x_r = e_r / (median step - max(e_r, 0))

(the share of a step rank ``r`` adds to the step it would take without it: scale-free) and
names ``r`` (``TWM-XRANK-SLOWDOWN``) when either

* **change point**: the last ``time_shift_window`` values of ``x_r`` exceed ``x_r``'s own
  baseline (the ``time_baseline_steps`` values after ``spike_warmup``) by a rank-sum test at
  ``z >= time_shift_z``, their median exceeds the baseline median by ``rank_slowdown_min``, and
  ``x_r`` is positive at 13 of every 16 of them (a load swing that leaves the median up for a
  while is not one rank slower at nearly every step);
* **persistent**: ``x_r`` was positive at 30 or more of the last 32 steps with a median of at
  least ``rank_slowdown_min`` (a slowdown present from the first step, which the baseline would
  absorb). Replicas doing the same work are exchangeable: a rank is slower than the others'
  median at most half the time, so 30 of 32 has probability below 2^-22.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._checks.timing_shift import rank_sum_z
from trainwarden.monitor._config import MonitorConfig
from trainwarden.monitor._timing import runqueue_seconds

__all__ = ["RankSlowdown"]

_PERSIST = 32
_PERSIST_MIN = 30
_WINDOW_ABOVE = 13 / 16


class RankSlowdown(Check):
    """Names the rank whose own step time shifted above the other ranks' (change point)."""

    name = "rank-timing"
    rules = ("TWM-XRANK-SLOWDOWN",)
    cost = "two floats more in the per-step exchange; a rank-sum test per rank (host only)"
    #: Captured on the class, so the self-check's digest covers it (a module global is not).
    rank_sum = staticmethod(rank_sum_z)

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.cross_rank and config.timing and config.rank_slowdown

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        cfg = monitor.config
        self._on = monitor.distributed and monitor.world_size > 1
        self._skip = cfg.spike_warmup
        self._base_n = cfg.time_baseline_steps
        self._seen = 0
        n = max(1, monitor.world_size)
        self._base: list[list[float]] = [[] for _ in range(n)]
        self._recent: list[deque[float]] = [deque(maxlen=cfg.time_shift_window) for _ in range(n)]
        self._signs: list[deque[float]] = [deque(maxlen=_PERSIST) for _ in range(n)]
        self._alerted: set[int] = set()
        #: This rank's time in the cross-rank exchange at the end of the previous step.
        self._wait = 0.0
        self._xrank_total = 0.0
        #: The part of ``_wait`` this rank's training thread spent waiting for a CPU, and the
        #: run-queue reading it is measured from (None where the clock does not read it).
        self._wait_queued = 0.0
        self._queued_at: float | None = None
        #: The last judged step's excess of every rank (fraction of the median step), recorded.
        self._last: list[float] | None = None

    def local(self) -> list[tuple[str, float]]:
        if not self._on:
            return []
        t = self.mon.values.get("timing") or {}
        step, backward = t.get("step"), t.get("backward")
        if not isinstance(step, float) or not isinstance(backward, float) or step <= 0:
            return [("own_s", math.nan), ("step_s", math.nan)]
        # Time the training thread was runnable but had no CPU (a loaded node, or a neighbour
        # on its core) is the machine's, not this rank's work: left out of the rank's own time.
        # The wait in the previous exchange is left out already, with its queueing.
        rq = self.mon.clock.runqueue.get(self.mon.step, {})
        queued = rq.get("step", 0.0) - rq.get("backward", 0.0) - self._wait_queued
        own = step - backward - self._wait - max(queued, 0.0)
        return [("own_s", max(own, 0.0)), ("step_s", step)]

    def step_post(self) -> None:
        if self._on and self.mon.clock.runqueue_on:
            self._queued_at = runqueue_seconds()

    def step_end(self) -> None:
        if not self._on:
            return
        # The exchange just made (the cross-rank check ran before this one) lies in the next
        # step's window, outside backward: a fast rank waits there for a rank slow in step().
        total = self.mon.check_seconds.get("cross-rank", 0.0)
        self._wait, self._xrank_total = max(total - self._xrank_total, 0.0), total
        # Queueing since step_post (the end-of-step work, the exchange among it) bounds the
        # exchange's own share of it.
        start, self._queued_at = self._queued_at, None
        now = runqueue_seconds() if start is not None else None
        queued = now - start if start is not None and now is not None else 0.0
        self._wait_queued = min(max(queued, 0.0), self._wait)
        gathered = self.mon.values.get("xrank_local")
        if isinstance(gathered, dict):
            own, step = gathered.get("own_s"), gathered.get("step_s")
            if isinstance(own, list) and isinstance(step, list):
                self.compare(own, step)

    def compare(self, own: list[float], step: list[float]) -> None:
        """Judge one exchanged step: ``own[r]`` and ``step[r]`` are rank r's times (seconds)."""
        n = len(own)
        if n < 2 or n != len(self._base) or len(step) != n:
            return
        if not all(math.isfinite(v) and v >= 0 for v in own):
            return
        steps = [v for v in step if math.isfinite(v) and v > 0]
        if not steps:
            return
        scale = statistics.median(steps)
        self._seen += 1
        if self._seen <= self._skip:
            return
        xs = []
        for r in range(n):
            excess = own[r] - statistics.median(own[k] for k in range(n) if k != r)
            # The share of a step this rank adds: against the step it would take without it.
            xs.append(excess / max(scale - max(excess, 0.0), 1e-3 * scale))
        self._last = [round(x, 4) for x in xs]
        for r in range(n):
            self._judge(r, xs[r], own, scale)

    def _judge(self, r: int, x: float, own: list[float], scale: float) -> None:
        cfg = self.mon.config
        floor = cfg.rank_slowdown_min
        signs = self._signs[r]
        signs.append(x)
        found: dict[str, Any] | None = None
        if len(self._base[r]) < self._base_n:
            self._base[r].append(x)
        else:
            recent = self._recent[r]
            recent.append(x)
            if len(recent) == recent.maxlen:
                shift = statistics.median(recent) - statistics.median(self._base[r])
                above = sum(1 for v in recent if v > 0)
                # Slower than the others at nearly every recent step, not a load swing that
                # happens to leave the median up (P <= 2^-6 for exchangeable ranks).
                if shift >= floor and above >= _WINDOW_ABOVE * len(recent):
                    z = self.rank_sum(list(recent), self._base[r])
                    if z >= cfg.time_shift_z:
                        found = {
                            "test": "change point",
                            "shift": round(shift, 4),
                            "z": round(z, 3),
                            "window": len(recent),
                            "baseline_median": round(statistics.median(self._base[r]), 4),
                        }
        if found is None and len(signs) == _PERSIST:
            above = sum(1 for v in signs if v > 0)
            med = statistics.median(signs)
            if above >= _PERSIST_MIN and med >= floor:
                found = {
                    "test": "persistent",
                    "above_steps": above,
                    "window": _PERSIST,
                    "median": round(med, 4),
                }
        if found is None:
            if statistics.median(signs) < floor / 2:
                self._alerted.discard(r)  # back with the others: a later slowdown is new
            return
        if r in self._alerted:
            return
        self._alerted.add(r)
        excess = found["shift"] if "shift" in found else found["median"]
        self.mon.alert(
            "TWM-XRANK-SLOWDOWN",
            f"rank {r} became slower than the other ranks ({found['test']}): its own time per "
            f"step (step minus backward and exchange waits) exceeds the others' median by "
            f"{excess * 100:.1f}% of the median step ({scale * 1000:.1f} ms) "
            + (
                f"more than in its baseline, over the last {found['window']} exchanged steps"
                if "shift" in found
                else f"at {found['above_steps']} of the last {found['window']} exchanged steps"
            )
            + ": injected work or sleeps on that rank, or a slower node",
            {"rank": r, "ranks": [r], "median_step_s": scale, "own_s": own, **found},
        )

    def record(self, rec: dict[str, Any]) -> None:
        if self._on:
            rec["rank_excess"] = self._last
