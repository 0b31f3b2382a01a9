"""Robust spike detection (median/MAD over a recent window) used for numerics and timing."""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

__all__ = ["RobustSeries", "Spike"]


@dataclass(frozen=True)
class Spike:
    """A value far above the recent median: ``score`` is in MADs (scaled to a sigma)."""

    value: float
    median: float
    mad: float
    score: float
    window: tuple[float, ...]


class RobustSeries:
    """A sliding window of recent values that flags upward outliers.

    A value is a spike when, after ``warmup`` values, it exceeds the window median by more than
    ``k`` scaled MADs, by more than ``min_ratio`` times the median, and by more than
    ``min_abs`` in absolute terms (three conditions, so a flat series with a tiny MAD, or an
    insignificant absolute jitter, never triggers). Spikes are not added to the window, so a
    burst of anomalies does not raise the baseline.
    """

    def __init__(
        self,
        *,
        window: int = 64,
        warmup: int = 16,
        k: float = 8.0,
        min_ratio: float = 1.5,
        min_abs: float = 0.0,
    ) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._warmup = warmup
        self._k = k
        self._min_ratio = min_ratio
        self._min_abs = min_abs

    def add(self, value: float) -> Spike | None:
        """Record ``value`` (finite values only); return a Spike when it is an outlier."""
        if not math.isfinite(value):
            return None
        if len(self._values) >= self._warmup:
            med = statistics.median(self._values)
            mad = statistics.median(abs(v - med) for v in self._values) * 1.4826
            excess = value - med
            score = excess / mad if mad > 0 else math.inf
            if excess > self._min_abs and score > self._k and value > self._min_ratio * med:
                return Spike(value, med, mad, score, tuple(list(self._values)[-8:]))
        self._values.append(value)
        return None
