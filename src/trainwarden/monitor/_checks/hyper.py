"""Hyperparameters: every param_group change, and whether a declared scheduler explains it."""

from __future__ import annotations

from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._hyperparams import HyperChange, HyperLedger

__all__ = ["Hyperparameters"]


class Hyperparameters(Check):
    """param_groups values before step() (scheduler may explain) and inside step() (never)."""

    name = "hyperparameters"
    rules = ("TWM-HP-CHANGE", "TWM-HP-INSTEP", "TWM-HP-GROUPS")
    cost = "param_groups values read twice per step (Python dicts, no tensors)"

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self.ledger = HyperLedger(monitor.optimizer, monitor.schedulers)
        self.now: list[dict[str, Any]] = self.ledger.last

    def step_pre(self, has_closure: bool) -> None:
        groups_before = len(self.ledger.last)
        now, changes = self.ledger.diff(allow_scheduler=True)
        if len(now) != groups_before:
            self.mon.alert(
                "TWM-HP-GROUPS",
                f"optimizer param_groups changed from {groups_before} to {len(now)} groups "
                "during training",
                {"groups": [groups_before, len(now)], "hyperparameters": now},
            )
        self._record(changes, in_step=False)

    def step_post(self) -> None:
        self.now, changes = self.ledger.diff(allow_scheduler=False)
        self._record(changes, in_step=True)

    def _record(self, changes: list[HyperChange], *, in_step: bool) -> None:
        mon = self.mon
        for c in changes:
            mon.emit(
                "hparam",
                {
                    "step": mon.step,
                    "rank": mon.rank,
                    "group": c.group,
                    "key": c.key,
                    "old": c.old,
                    "new": c.new,
                    "explained": c.explained and not in_step,
                    "where": "inside step()" if in_step else "between steps",
                },
            )
            if in_step:
                mon.alert(
                    "TWM-HP-INSTEP",
                    f"param_groups[{c.group}][{c.key!r}] changed inside optimizer.step(): "
                    f"{c.old!r} -> {c.new!r}",
                    {"group": c.group, "key": c.key, "old": c.old, "new": c.new},
                )
            elif not c.explained:
                mon.alert(
                    "TWM-HP-CHANGE",
                    f"param_groups[{c.group}][{c.key!r}] changed {c.old!r} -> {c.new!r} and no "
                    f"scheduler explains it ({c.reason})",
                    {
                        "group": c.group,
                        "key": c.key,
                        "old": c.old,
                        "new": c.new,
                        "reason": c.reason,
                    },
                )

    def digest(self) -> list[tuple[str, int | float]]:
        out: list[tuple[str, int | float]] = []
        for gi, g in enumerate(self.now):
            for k, v in g.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append((f"hparam:{gi}:{k}", float(v)))
        return out

    def record(self, rec: dict[str, Any]) -> None:
        rec["lr"] = [g.get("lr") for g in self.now]
