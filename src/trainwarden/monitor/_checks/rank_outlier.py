"""Per-rank local loss and local gradient norm compared across ranks: names a sick rank.

Data-parallel replicas hold identical weights, so a rank that corrupts only its own forward (a
garbage share of the averaged gradient) leaves every replica identical and passes the digest
comparison. Its *local* values do not: every step, each rank's loss and its gradient norm before
the all-reduce (taken where accumulation finishes, before DDP's reducer averages it) travel in the
cross-rank exchange, and a rank whose values disagree with the others' by more than the run's own
spread is named.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

import torch

from trainwarden.findings import Severity
from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig

__all__ = ["RankOutlier"]

_METRICS = ("loss", "grad_norm")
_HISTORY = 64
_WARMUP = 8
_PERSIST = 32
_PERSIST_MIN = 30


class RankOutlier(Check):
    """Names the rank whose local loss or local gradient norm is an outlier among the ranks."""

    name = "rank-outlier"
    rules = ("TWM-XRANK-OUTLIER",)
    cost = "one norm per gradient at accumulation; two floats more in the per-step exchange"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.cross_rank and config.rank_outlier

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._on = monitor.distributed and monitor.world_size > 1
        self._norms: dict[int, torch.Tensor] = {}
        self.handles: list[Any] = []
        self._local_norm = math.nan
        #: Per metric: |gap| of clean ranks to the others' median (log space), clean steps only.
        size = _HISTORY * max(1, monitor.world_size)
        self._gaps: dict[str, deque[float]] = {m: deque(maxlen=size) for m in _METRICS}
        #: Per metric: the cross-rank median (log space) of clean steps.
        self._centre: dict[str, deque[float]] = {m: deque(maxlen=_HISTORY) for m in _METRICS}
        self._alerted: set[int] = set()
        self._signs: dict[tuple[str, int], deque[float]] = {}

    def start(self) -> None:
        if not self._on:
            return
        for _, p, _ in self.mon.opt_params:
            if p.requires_grad:
                self.handles.append(
                    p.register_post_accumulate_grad_hook(self._on_accumulated)  # type: ignore[no-untyped-call]
                )

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def _on_accumulated(self, p: torch.Tensor) -> None:
        g = p.grad
        if g is None:
            return
        with torch.no_grad():
            dense = g.coalesce().values() if g.is_sparse else g
            # The accumulated local gradient: later micro-batches overwrite the earlier value.
            self._norms[id(p)] = torch.linalg.vector_norm(dense.detach(), dtype=torch.float64)

    def step_post(self) -> None:
        if not self._on:
            return
        norms, self._norms = self._norms, {}
        if not norms:
            self._local_norm = math.nan
            return
        values = list(norms.values())
        dev = values[0].device
        total = torch.linalg.vector_norm(torch.stack([v.to(dev) for v in values]))
        self.mon.defer(total, self._set_norm)

    def _set_norm(self, values: list[Any]) -> None:
        self._local_norm = float(values[0])

    def local(self) -> list[tuple[str, float]]:
        if not self._on:
            return []
        loss = self.mon.values.get("loss")
        return [
            ("loss", float(loss) if isinstance(loss, (int, float)) else math.nan),
            ("grad_norm", self._local_norm),
        ]

    def step_end(self) -> None:
        gathered = self.mon.values.get("xrank_local")
        if self._on and isinstance(gathered, dict):
            self.compare(gathered)

    def compare(self, gathered: dict[str, list[float]]) -> None:
        """Judge one step's ``{metric: [value of rank 0, rank 1, ...]}`` and alert on outliers."""
        flagged: dict[int, list[str]] = {}
        evidence: dict[str, Any] = {}
        for metric in _METRICS:
            values = gathered.get(metric)
            if not isinstance(values, list) or len(values) < 2:
                continue
            culprits, info = self._judge(metric, values)
            evidence[metric] = info
            for r in culprits:
                flagged.setdefault(r, []).append(metric)
        for r in list(self._alerted):
            if r not in flagged:
                self._alerted.discard(r)
        for r, metrics in sorted(flagged.items()):
            if r in self._alerted:
                continue
            self._alerted.add(r)
            both = len(metrics) == len(_METRICS)
            shown = ", ".join(
                f"{m} {evidence[m]['values'][r]:.4g} vs the others' median "
                f"{evidence[m]['others_median'][r]:.4g}"
                for m in metrics
            )
            self.mon.alert(
                "TWM-XRANK-OUTLIER",
                f"rank {r} is an outlier among the ranks at step {self.mon.step}: {shown} "
                "(its own forward or backward differs: a garbage share of the averaged gradient)",
                {"rank": r, "ranks": [r], "metrics": metrics, **evidence},
                severity=Severity.HIGH if both else Severity.MEDIUM,
            )

    def _judge(self, metric: str, values: list[float]) -> tuple[list[int], dict[str, Any]]:
        """Which ranks disagree with the others on ``metric``; updates the clean history.

        NaN means "not measured on that rank" and is left out; an infinite value where other
        ranks are finite names its rank. Non-positive values (a loss can be negative) leave the
        metric out of the comparison at this step.
        """
        cfg = self.mon.config
        n = len(values)
        info: dict[str, Any] = {"values": values, "others_median": [math.nan] * n}
        finite = [r for r in range(n) if math.isfinite(values[r])]
        infinite = [r for r in range(n) if math.isinf(values[r])]
        if infinite and finite:
            return infinite, info
        if len(finite) < 2 or any(values[r] <= 0 for r in finite):
            return [], info
        logs = {r: math.log(values[r]) for r in finite}
        gaps: dict[int, float] = {}
        everyone = statistics.median(logs.values())
        for r in finite:
            # Two ranks: each against the other. Three or more: against the median of all, which
            # one sick rank cannot move far.
            ref = (
                statistics.median(logs[k] for k in finite if k != r)
                if len(finite) == 2
                else everyone
            )
            info["others_median"][r] = math.exp(ref)
            gaps[r] = logs[r] - ref
        history = self._gaps[metric]
        floor, cap = math.log(cfg.rank_outlier_min_ratio), math.log(cfg.rank_outlier_max_ratio)
        if len(history) >= _WARMUP * len(finite):
            # The run's own spread of disagreement (median |gap|, robust to a few bad steps).
            threshold = max(cfg.spike_k * statistics.median(history), floor)
        else:
            threshold = cap
        info["threshold_ratio"] = round(math.exp(threshold), 4)
        # With an odd number of ranks the median rank's own gap is exactly 0: not a spread.
        history.extend(abs(g) for g in gaps.values() if g != 0.0)
        culprits = self._persistent(metric, gaps, floor, info)
        over = [r for r in finite if abs(gaps[r]) > threshold]
        if not over:
            self._centre[metric].append(statistics.median(logs.values()))
            return culprits, info
        if len(finite) >= 3:
            # An outlier is a minority against agreeing ranks; most ranks moving is not one rank.
            return sorted(
                set(culprits) | (set(over) if 2 * len(over) < len(finite) else set())
            ), info
        centre_hist = self._centre[metric]
        if centre_hist:
            # Two ranks disagree symmetrically: the one that left the run's own level is sick.
            centre = statistics.median(centre_hist)
            dev = {r: abs(logs[r] - centre) for r in over}
        else:
            # No history yet: a garbage share usually inflates loss and gradient.
            dev = {r: logs[r] for r in over}
        info["deviation"] = {str(r): round(d, 4) for r, d in dev.items()}
        return sorted(set(culprits) | {max(dev, key=lambda r: dev[r])}), info

    def _persistent(
        self, metric: str, gaps: dict[int, float], floor: float, info: dict[str, Any]
    ) -> list[int]:
        """Ranks above the others at nearly every recent step, by at least ``floor`` (median).

        Resists a corruption present from the first step, which the spread history absorbs: in
        clean data-parallel training a rank is above the others' median at most half the time,
        so 30 or more of 32 steps has a probability below 2^-22.
        """
        out = []
        for r, gap in gaps.items():
            series = self._signs.setdefault((metric, r), deque(maxlen=_PERSIST))
            series.append(gap)
            above = [g for g in series if g > 0]
            if (
                len(series) == _PERSIST
                and len(above) >= _PERSIST_MIN
                and statistics.median(series) >= floor
            ):
                out.append(r)
                info.setdefault("persistent", {})[str(r)] = {
                    "above_steps": len(above),
                    "window": _PERSIST,
                    "median_ratio": round(math.exp(statistics.median(series)), 4),
                }
        return out
