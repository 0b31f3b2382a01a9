"""Guarantees docs/monitor.md makes, each with a test that fails if the guarantee is false: the
keyed hash catching a swap of two elements at once, a hidden eps change, repeated sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainwarden.findings import Severity

from ._support import Run, mlp

UPDATE_RULES = {"TWM-UPDATE-MISMATCH", "TWM-UPDATE-SIGN", "TWM-STATE-MISMATCH"}


def _four_large() -> nn.Sequential:
    # four weights of 8192 elements: large tensors, which an earlier fingerprint covered only in
    # rotation
    return nn.Sequential(
        nn.Linear(1024, 8), nn.Tanh(), nn.Linear(8, 1024), nn.Tanh(), nn.Linear(1024, 8),
        nn.Tanh(), nn.Linear(8, 1024), nn.Tanh(), nn.Linear(1024, 1),
    )  # fmt: skip


def test_a_swap_of_two_elements_is_caught_at_the_next_boundary(
    make_run: Callable[..., Run],
) -> None:
    def swap(step: int, m: Any, opt: Any) -> None:
        if step >= 2:
            with torch.no_grad():
                w = m[0].weight
                a, b = w[0, 0].clone(), w[5, 5].clone()
                w[0, 0], w[5, 5] = b, a

    model = _four_large()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-3), width=1024, timing=False)
    run.train(12, attack=swap)
    alert = run.first("TWM-WEIGHT-EDIT")
    assert alert.evidence["tensors"] == ["0.weight"]
    assert alert.step <= 3  # the keyed hash covers every word at every boundary: no window
    assert {a.rule_id for a in run.serious()} == {"TWM-WEIGHT-EDIT"}


def test_hidden_eps_change_is_caught(make_run: Callable[..., Run]) -> None:
    class DampedAdam(torch.optim.Adam):
        """Raises eps inside step() and restores it: updates shrink, the ledger sees nothing."""

        def step(self, closure: Any = None) -> Any:
            saved = [g["eps"] for g in self.param_groups]
            for g in self.param_groups:
                g["eps"] = 1e-2
            try:
                return super().step(closure)
            finally:
                for g, e in zip(self.param_groups, saved, strict=True):
                    g["eps"] = e

    model = mlp()
    run = make_run(model, DampedAdam(model.parameters(), lr=1e-2), timing=False)
    run.train(3)
    assert UPDATE_RULES & set(run.rules(Severity.HIGH)), run.monitor.alerts
    assert min(a.step for a in run.monitor.alerts if a.rule_id in UPDATE_RULES) == 1
    assert "TWM-HP-CHANGE" not in run.rules()  # restored inside step(): no ledger trace


def test_repeated_sleeps_are_a_medium_pattern(make_run: Callable[..., Run]) -> None:
    """Four sleeps separated by normal steps within 100 steps: TWM-TIME-REPEATED (MEDIUM). The
    sleeps are long (0.6 s, six times the 0.1 s floor) so that a loaded machine cannot hide
    them; the test asserts only that the pattern is reported, never how long anything took."""

    class NappingSGD(torch.optim.SGD):
        calls = 0

        def step(self, closure: Any = None) -> Any:
            NappingSGD.calls += 1
            if NappingSGD.calls in (24, 30, 36, 42, 48):
                time.sleep(0.6)
            return super().step(closure)

    model = mlp()
    run = make_run(model, NappingSGD(model.parameters(), lr=0.01))
    run.train(52)
    repeated = [a for a in run.monitor.alerts if a.rule_id == "TWM-TIME-REPEATED"]
    assert repeated and repeated[0].severity is Severity.MEDIUM
