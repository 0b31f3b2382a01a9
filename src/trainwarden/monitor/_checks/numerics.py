"""Loss and gradient norm: NaN/Inf, and robust spikes against their own recent range."""

from __future__ import annotations

from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig
from trainwarden.monitor._numerics import RobustSeries

__all__ = ["Numerics"]


class Numerics(Check):
    """NaN/Inf and median/MAD spikes of the step's mean loss and its gradient norm."""

    name = "numerics"
    rules = ("TWM-NUM-NONFINITE", "TWM-NUM-SPIKE")
    cost = "a median over a 64-value window per metric per step (host only)"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.numerics

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        cfg = monitor.config
        self._series = {
            name: RobustSeries(
                window=cfg.spike_window, warmup=cfg.spike_warmup, k=cfg.spike_k, min_ratio=1.5
            )
            for name in ("loss", "grad_norm")
        }

    def step_end(self) -> None:
        for name in ("loss", "grad_norm"):
            value = self.mon.values.get(name)
            if value is not None:
                self._check(name, float(value))

    def _check(self, name: str, value: float) -> None:
        mon = self.mon
        if value != value or value in (float("inf"), float("-inf")):
            mon.alert(
                "TWM-NUM-NONFINITE",
                f"{name} is {value} at step {mon.step}",
                {"metric": name, "value": str(value)},
            )
            return
        spike = self._series[name].add(value)
        if spike is not None:
            mon.alert(
                "TWM-NUM-SPIKE",
                f"{name} {value:.4g} is {spike.score:.1f} MADs above its recent median "
                f"{spike.median:.4g}",
                {
                    "metric": name,
                    "value": value,
                    "median": spike.median,
                    "mad": spike.mad,
                    "recent": list(spike.window),
                },
            )
