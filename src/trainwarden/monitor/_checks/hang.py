"""The hang watchdog as a monitor check: one heartbeat per step, stack dumps on a hang."""

from __future__ import annotations

from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig

__all__ = ["HangWatch"]


class HangWatch(Check):
    """Starts the :class:`~trainwarden.monitor._watchdog.Watchdog` and beats it every step."""

    name = "watchdog"
    rules = ("TWM-HANG", "TWM-LOST-RANK", "TWM-SIGNAL")
    cost = "one heartbeat (a lock and a clock read) per step; a background thread"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.watchdog

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self.watchdog: Any = None

    def start(self) -> None:
        mon = self.mon
        try:
            from trainwarden.monitor import _watchdog as mod
        except ImportError:
            mon.note("watchdog", "hang watchdog unavailable (its module is missing)")
            return
        store = mod.default_store() if mon.distributed else None
        self.watchdog = mod.Watchdog(
            mon.emit_external,
            rank=mon.rank,
            world_size=mon.world_size,
            min_timeout_s=mon.config.watchdog_min_timeout_s,
            sink=mon.sink,
            store=store,
        )
        self.watchdog.start()

    def step_end(self) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(self.mon.step, float(self.mon.values.get("step_s", 0.0)))

    def on_crash(self, exc: BaseException) -> None:
        """Training is ending with ``exc``: record it and, in a multi-rank job, name lost peers."""
        if self.watchdog is not None:
            self.watchdog.on_crash(exc)

    def close(self) -> None:
        if self.watchdog is not None:
            try:
                self.watchdog.stop()
            except Exception as e:  # fail-open: stopping must not raise into the caller
                self.mon.internal(e, "watchdog.stop")
