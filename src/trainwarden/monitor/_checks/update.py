"""The update applied by ``optimizer.step()`` against an independent reference implementation."""

from __future__ import annotations

from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig
from trainwarden.monitor._update_check import SliceSnapshot, UpdateChecker, reference_kind

__all__ = ["UpdateRule"]


class UpdateRule(Check):
    """Recompute SGD/Adam/AdamW on a secret rotating slice and compare with what step() wrote."""

    name = "update-rule"
    rules = ("TWM-UPDATE-MISMATCH", "TWM-UPDATE-SIGN", "TWM-STATE-MISMATCH")
    cost = "a few elements of a few parameters copied before step() and recomputed after it"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.update_check

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        opt = monitor.optimizer
        self.kind = reference_kind(opt)
        self.checker: UpdateChecker | None = None
        self._snaps: list[SliceSnapshot] = []
        if self.kind is None:
            monitor.note(
                "update-check",
                f"update-rule check disabled: no reference implementation for "
                f"{type(opt).__module__}.{type(opt).__qualname__} (supported: SGD, Adam, AdamW)",
            )
            return
        cfg = monitor.config
        self.checker = UpdateChecker(
            self.kind,
            monitor.opt_params,
            rng=monitor.rng,
            fraction=cfg.update_check_fraction,
            elems=cfg.update_check_elems,
            rtol=cfg.update_rtol,
        )

    def step_pre(self, has_closure: bool) -> None:
        mon = self.mon
        self._snaps = []
        if has_closure:
            # The closure computes the gradients inside step(): they are not known yet here.
            mon.note(
                "update-check-closure",
                "update-rule check skipped for optimizer.step(closure): the gradients are "
                "computed inside step()",
            )
        elif self.checker is not None and mon.step % mon.config.check_every == 0:
            self._snaps = self.checker.snapshot(mon.optimizer)

    def step_end(self) -> None:
        snaps, self._snaps = self._snaps, []
        checker = self.checker
        if not snaps or checker is None:
            return
        for mm in checker.verify(self.mon.optimizer, snaps):
            if mm.what == "update":
                rule = "TWM-UPDATE-SIGN" if mm.sign_flip else "TWM-UPDATE-MISMATCH"
                msg = (
                    f"update of {mm.name} differs from the reference {checker.kind} update"
                    + (" and points the opposite way (sign flip)" if mm.sign_flip else "")
                    + f": max error {mm.max_error:.3g} for an update of size {mm.scale:.3g}"
                )
            else:
                rule = "TWM-STATE-MISMATCH"
                msg = (
                    f"optimizer state {mm.what!r} of {mm.name} written by step() differs from the "
                    f"reference {checker.kind}: max error {mm.max_error:.3g}"
                )
            self.mon.alert(
                rule,
                msg,
                {
                    "param": mm.name,
                    "what": mm.what,
                    "indices": mm.indices,
                    "before": mm.before,
                    "expected": mm.expected,
                    "actual": mm.actual,
                    "hyperparameters": mm.hyper,
                    "reference": checker.kind,
                },
            )
