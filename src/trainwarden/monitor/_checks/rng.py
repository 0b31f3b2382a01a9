"""Global RNGs: reseeding after training started, and states that go back to an earlier one."""

from __future__ import annotations

from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig
from trainwarden.monitor._rng import rng_fingerprints, seed_watch

__all__ = ["RngWatch"]


class RngWatch(Check):
    """Wraps the global seeding functions; fingerprints the global RNG states at each forward."""

    name = "rng"
    rules = ("TWM-RNG-RESEED", "TWM-RNG-REWIND")
    cost = "a hash of the global RNG states (a few KB) at the first forward of each step"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.rng_watch

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._seen: dict[str, dict[str, int]] = {}
        self._last: dict[str, str] = {}
        self._installed = False

    def start(self) -> None:
        seed_watch.add(self._on_seed)
        self._installed = True

    def close(self) -> None:
        if self._installed:
            seed_watch.remove(self._on_seed)
            self._installed = False

    def forward_pre(self, first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not first:
            return
        mon = self.mon
        fps = rng_fingerprints()
        mon.values["rng"] = fps
        for gen, h in fps.items():
            seen = self._seen.setdefault(gen, {})
            last = self._last.get(gen)
            if h != last and h in seen:
                mon.alert(
                    "TWM-RNG-REWIND",
                    f"the global {gen} RNG state at step {mon.step} equals its state at step "
                    f"{seen[h]}: it was reset or reseeded",
                    {"generator": gen, "state_hash": h, "first_seen_step": seen[h]},
                )
            seen.setdefault(h, mon.step)
            if len(seen) > 4096:
                seen.pop(next(iter(seen)))
            self._last[gen] = h

    def _on_seed(self, target: str, args: tuple[Any, ...], stack: list[str]) -> None:
        mon = self.mon
        shown = [repr(a)[:80] for a in args]
        mon.emit(
            "seed",
            {
                "step": mon.step,
                "rank": mon.rank,
                "function": target,
                "args": shown,
                "stack": stack,
                "training_started": mon.started,
            },
        )
        # The generator-object check (rng-progress) sees the same reseed: one alert is enough.
        mon.values["reseeded_via"] = target
        if mon.started:
            mon.alert(
                "TWM-RNG-RESEED",
                f"{target}({', '.join(shown)}) called after training started "
                f"(step {mon.step}); caller: {stack[-1] if stack else '?'}",
                {"function": target, "args": shown, "stack": stack},
            )

    def step_end(self) -> None:
        for name in seed_watch.tampered():
            self.mon.note(
                f"seed-wrapper:{name}",
                f"{name} was replaced while the monitor watched it; reseeding through it is no "
                "longer seen (the code guard reports who replaced it)",
            )

    def record(self, rec: dict[str, Any]) -> None:
        rec["rng"] = self.mon.values.get("rng")
