"""Timing below any absolute threshold: sustained shifts and repeated relative spikes.

The step time (end of one optimizer step to the end of the next: data loading, forward,
backward, update and whatever the loop does in between) is compared with a baseline taken from
the run's own early steps, in log space so that the test is scale-free:

* a *shift* is the last ``time_shift_window`` steps being slower than the baseline by a
  rank-sum (Mann-Whitney) test at ``z >= time_shift_z`` *and* by a median ratio of at least
  ``1 + time_shift_min`` (a steady slowdown of every step, or a slow creep: the baseline is
  frozen, so a creep is measured against where the run started);
* a *spike* is a step above the baseline median by ``time_spike_k`` scaled MADs and by the ratio
  ``time_spike_ratio`` (no absolute floor); spikes *repeat* when, over the last 100 steps, their
  count (the first step of each run of slow steps: a stall counts once) is improbable (binomial
  tail below ``time_spike_alpha``) given how often the baseline itself exceeded the same
  threshold, counted the same way (a stall of several steps in the baseline counts once there
  too, so that one stall while the baseline was taken does not blind the test).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig

__all__ = ["TimingShift", "binomial_tail", "rank_sum_z"]

_SPIKE_HISTORY = 100


def rank_sum_z(recent: list[float], base: list[float]) -> float:
    """Mann-Whitney z of ``recent`` against ``base`` (positive: recent is larger), ties halved."""
    n1, n2 = len(recent), len(base)
    if n1 == 0 or n2 == 0:
        return 0.0
    ordered = sorted(base)
    u = 0.0
    for x in recent:
        lo = bisect.bisect_left(ordered, x)
        u += lo + 0.5 * (bisect.bisect_right(ordered, x) - lo)
    mean = n1 * n2 / 2.0
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
    return (u - mean) / sd


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact (n is at most a few hundred here)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    p = min(max(p, 0.0), 1.0)
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    total = 0.0
    lp, lq = math.log(p), math.log1p(-p)
    for i in range(k, n + 1):
        total += math.exp(
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        )
    return min(1.0, total)


class TimingShift(Check):
    """Sustained step-time shifts and improbably frequent relative spikes (no absolute floor)."""

    name = "timing-shift"
    rules = ("TWM-TIME-SHIFT", "TWM-TIME-SPIKES")
    cost = "a rank-sum test over ~50 floats and a binomial tail per step (host only)"
    #: Captured on the class, so the self-check's digest covers them (a module global is not).
    rank_sum = staticmethod(rank_sum_z)
    tail = staticmethod(binomial_tail)

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.timing

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        cfg = monitor.config
        self._skip = cfg.spike_warmup
        self._base_n = cfg.time_baseline_steps
        self._base: list[float] = []
        self._recent: deque[float] = deque(maxlen=cfg.time_shift_window)
        self._flags: deque[tuple[int, bool]] = deque(maxlen=_SPIKE_HISTORY)
        self._seen = 0
        self._in_shift = False
        self._prev_over = False
        self._spikes_alerted_at = -(10**9)
        self._stats: tuple[float, float, float, float] | None = None

    def step_end(self) -> None:
        for step, phases in self.mon.values.get("timing_resolved", []):
            seconds = phases.get("step")
            if isinstance(seconds, float) and seconds > 0.0 and math.isfinite(seconds):
                self.add(step, seconds)

    def _baseline(self) -> tuple[float, float, float, float]:
        """(median, scaled MAD, spike threshold, baseline exceedance rate), all in log space."""
        if self._stats is None:
            cfg = self.mon.config
            med = statistics.median(self._base)
            mad = 1.4826 * statistics.median(abs(v - med) for v in self._base)
            threshold = med + max(cfg.time_spike_k * mad, math.log(cfg.time_spike_ratio))
            # Runs of slow steps, as the recent window counts them: a stall counts once.
            over = sum(
                1
                for i, v in enumerate(self._base)
                if v > threshold and not (i > 0 and self._base[i - 1] > threshold)
            )
            # Add-one smoothing: a clean baseline never claims spikes are impossible.
            rate = (over + 1.0) / (len(self._base) + 2.0)
            self._stats = (med, mad, threshold, rate)
        return self._stats

    def add(self, step: int, seconds: float) -> None:
        """Take one step time (seconds); called for every resolved step."""
        self._seen += 1
        y = math.log(seconds)
        if self._seen <= self._skip:
            return
        if len(self._base) < self._base_n:
            self._base.append(y)
            return
        med, _, threshold, rate = self._baseline()
        self._recent.append(y)
        self._shift(step, seconds, med)
        over = y > threshold
        # A node-wide stall slows a run of consecutive steps: count the first step of each run.
        self._flags.append((step, over and not self._prev_over))
        self._prev_over = over
        self._spikes(step, seconds, med, threshold, rate)

    def _shift(self, step: int, seconds: float, med: float) -> None:
        cfg = self.mon.config
        if len(self._recent) < self._recent.maxlen:  # type: ignore[operator]
            return
        recent = list(self._recent)
        ratio = math.exp(statistics.median(recent) - med)
        if ratio < 1.0 + cfg.time_shift_min / 2:
            self._in_shift = False  # back near the baseline: a later shift is a new episode
        if ratio < 1.0 + cfg.time_shift_min:
            return
        z = self.rank_sum(recent, self._base)
        if z < cfg.time_shift_z or self._in_shift:
            return
        self._in_shift = True
        self.mon.alert(
            "TWM-TIME-SHIFT",
            f"the last {len(recent)} steps are {ratio:.2f}x slower than this run's baseline "
            f"(median {math.exp(med) * 1000:.1f} ms, rank-sum z = {z:.1f}): a sustained slowdown "
            "of every step (injected work or sleeps, or a slower node)",
            {
                "ratio": round(ratio, 4),
                "z": round(z, 3),
                "baseline_median_s": math.exp(med),
                "recent_s": [round(math.exp(v), 6) for v in recent],
                "window": len(recent),
                "step": step,
                "seconds": seconds,
            },
        )

    def _spikes(self, step: int, seconds: float, med: float, threshold: float, rate: float) -> None:
        cfg = self.mon.config
        n = len(self._flags)
        hits = [s for s, flag in self._flags if flag]
        if not hits or hits[-1] != step or len(hits) < 4:
            return
        p = self.tail(n, len(hits), rate)
        if p > cfg.time_spike_alpha or step - self._spikes_alerted_at < _SPIKE_HISTORY:
            return
        self._spikes_alerted_at = step
        self.mon.alert(
            "TWM-TIME-SPIKES",
            f"{len(hits)} of the last {n} steps took more than {math.exp(threshold - med):.2f}x "
            f"this run's baseline median ({math.exp(med) * 1000:.1f} ms); the baseline exceeded "
            f"that at a rate of {rate:.3f} (P = {p:.1e}): repeated injected delays below any "
            "absolute threshold",
            {
                "steps": hits,
                "window": n,
                "threshold_s": math.exp(threshold),
                "baseline_median_s": math.exp(med),
                "baseline_rate": rate,
                "p_value": p,
                "seconds": seconds,
            },
        )

    def record(self, rec: dict[str, Any]) -> None:
        if self._stats is not None:
            rec["timing_baseline_s"] = math.exp(self._stats[0])
