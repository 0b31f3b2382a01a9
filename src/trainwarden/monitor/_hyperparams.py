"""Hyperparameter ledger: every param_group value change, and whether a scheduler explains it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["HyperChange", "HyperLedger", "group_values"]


def _plain(value: Any) -> Any:
    """A JSON-friendly, comparable copy of a param_group value."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().reshape(-1)[0].item()) if value.numel() == 1 else repr(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def group_values(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Return every param_group's values except ``params``, as plain Python values."""
    return [
        {k: _plain(v) for k, v in sorted(g.items()) if k != "params"}
        for g in optimizer.param_groups
    ]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@dataclass(frozen=True)
class HyperChange:
    """One value that changed: ``explained`` is True when a scheduler accounts for it."""

    group: int
    key: str
    old: Any
    new: Any
    explained: bool
    reason: str


class HyperLedger:
    """Remembers the last seen param_group values and classifies each change.

    ``schedulers`` are LR schedulers driving this optimizer: an ``lr`` change is explained when
    the new value equals the ``get_last_lr()`` of one of them (whichever stepped last owns the
    current value). Without a scheduler any change is unexplained, and so is any change of a key
    other than ``lr``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedulers: Sequence[Any]) -> None:
        self._opt = optimizer
        self._schedulers = list(schedulers)
        self.last = group_values(optimizer)

    def _momentum_explained(
        self, group: int, values: dict[str, Any], key: str, old: Any, new: Any
    ) -> bool:
        """OneCycleLR/CyclicLR with ``cycle_momentum`` move momentum (or beta1) in a range."""
        if key == "betas":
            if not (isinstance(old, list) and isinstance(new, list) and len(old) == len(new) >= 2):
                return False
            if old[1:] != new[1:]:
                return False
            value = new[0]
        else:
            value = new
        if not isinstance(value, float):
            return False
        for s in self._schedulers:
            if not getattr(s, "cycle_momentum", False):
                continue
            # OneCycleLR keeps the range in the param_group; CyclicLR on itself.
            lows = getattr(s, "base_momentums", None)
            highs = getattr(s, "max_momentums", None)
            if "base_momentum" in values and "max_momentum" in values:
                bounds = (float(values["base_momentum"]), float(values["max_momentum"]))
            elif lows is not None and highs is not None and group < min(len(lows), len(highs)):
                bounds = (float(lows[group]), float(highs[group]))
            else:
                continue
            lo, hi = sorted(bounds)
            if lo - 1e-12 <= value <= hi + 1e-12:
                return True
        return False

    def add_scheduler(self, scheduler: Any) -> None:
        """Add a scheduler and take the current values (set by its constructor) as the baseline."""
        self._schedulers.append(scheduler)
        self.last = group_values(self._opt)

    def _scheduler_lrs(self, group: int) -> list[float]:
        out: list[float] = []
        for s in self._schedulers:
            try:
                lrs = s.get_last_lr()
            except (AttributeError, RuntimeError, IndexError):
                lrs = getattr(s, "_last_lr", None)
            if lrs is not None and group < len(lrs):
                out.append(float(_plain(lrs[group])))
        return out

    def diff(self, *, allow_scheduler: bool) -> tuple[list[dict[str, Any]], list[HyperChange]]:
        """Return (current values, changes since the last call) and make current the new last."""
        now = group_values(self._opt)
        changes: list[HyperChange] = []
        for gi, (old_g, new_g) in enumerate(zip(self.last, now, strict=False)):
            for key in sorted(set(old_g) | set(new_g)):
                old, new = old_g.get(key), new_g.get(key)
                if _same(old, new):
                    continue
                explained = False
                reason = "no scheduler was given to watch()" if not self._schedulers else ""
                if key == "lr" and allow_scheduler and self._schedulers:
                    lrs = self._scheduler_lrs(gi)
                    explained = any(
                        isinstance(new, float) and math.isclose(new, x, rel_tol=1e-12, abs_tol=0.0)
                        for x in lrs
                    )
                    reason = (
                        "equals the scheduler's get_last_lr()"
                        if explained
                        else (f"the scheduler's last lr is {lrs}")
                    )
                elif key in ("momentum", "betas") and self._momentum_explained(
                    gi, new_g, key, old, new
                ):
                    explained = True
                    reason = "within the cycling scheduler's momentum range"
                elif key != "lr":
                    reason = "only lr (and momentum under a cycling scheduler) may change"
                elif not allow_scheduler:
                    reason = "changed inside optimizer.step()"
                changes.append(HyperChange(gi, key, old, new, explained, reason))
        self.last = now
        return now, changes
