"""Per-phase step timing against the run's own recent distribution."""

from __future__ import annotations

from collections import deque
from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig
from trainwarden.monitor._numerics import RobustSeries
from trainwarden.monitor._timing import PHASES

__all__ = ["Timing"]


class Timing(Check):
    """Spikes of the forward, backward, optimizer and whole-step times; repeated spikes."""

    name = "timing"
    rules = ("TWM-TIME-SPIKE", "TWM-TIME-REPEATED")
    cost = "four clock reads per step and a median per phase (host only)"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.timing

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        cfg = monitor.config
        self._series = {
            p: RobustSeries(
                window=cfg.spike_window,
                warmup=cfg.spike_warmup,
                k=cfg.spike_k,
                min_ratio=1.5,
                min_abs=cfg.time_min_excess_s,
            )
            for p in PHASES
        }
        self._spikes: deque[int] = deque(maxlen=64)
        self._spike_runs: deque[int] = deque(maxlen=64)

    def step_end(self) -> None:
        resolved = self.mon.clock.resolve()
        # Later checks (timing shifts) read every step resolved now, including earlier ones.
        self.mon.values["timing_resolved"] = resolved
        for step, phases in resolved:
            self._timing(step, phases)

    def _timing(self, step: int, phases: dict[str, float]) -> None:
        mon = self.mon
        if step == mon.step:
            mon.values["timing"] = phases
            mon.values["step_s"] = phases.get("step", 0.0)
        else:
            mon.emit("timing", {"step": step, "rank": mon.rank, **phases})
        for phase, seconds in phases.items():
            spike = self._series[phase].add(seconds)
            if spike is None:
                continue
            mon.alert(
                "TWM-TIME-SPIKE",
                f"{phase} took {seconds:.3f}s at step {step}; recent median {spike.median:.3f}s",
                {
                    "phase": phase,
                    "seconds": seconds,
                    "median": spike.median,
                    "recent": list(spike.window),
                    "step": step,
                },
            )
            if self._spikes and self._spikes[-1] == step:
                continue  # one step, several slow phases: one event
            # A node-wide stall slows a run of consecutive steps: count runs, not steps.
            if not self._spikes or self._spikes[-1] < step - 1:
                self._spike_runs.append(step)
            self._spikes.append(step)
            recent = [s for s in self._spike_runs if s > step - 100]
            if len(recent) >= 4 and step == self._spike_runs[-1] and len(recent) % 4 == 0:
                mon.alert(
                    "TWM-TIME-REPEATED",
                    f"{len(recent)} separate timing spikes within the last 100 steps (injected "
                    "sleeps or a straggling node)",
                    {"steps": recent},
                )

    def record(self, rec: dict[str, Any]) -> None:
        rec["timing"] = self.mon.values.get("timing")
