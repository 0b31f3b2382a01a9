"""Guarantees docs/monitor.md makes, each with a test that fails if the guarantee is false: the
default fingerprint rotation's detection window, a hidden eps change, repeated injected sleeps."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainwarden.findings import Severity
from trainwarden.monitor import watch

from ._support import Run, mlp

UPDATE_RULES = {"TWM-UPDATE-MISMATCH", "TWM-UPDATE-SIGN", "TWM-STATE-MISMATCH"}


def _four_large() -> nn.Sequential:
    # four weights of 8192 elements (above the fingerprint's small size): with the default
    # fingerprint_mix_fraction of 0.25 one of them gets the keyed dot product per boundary
    return nn.Sequential(
        nn.Linear(1024, 8), nn.Tanh(), nn.Linear(8, 1024), nn.Tanh(), nn.Linear(1024, 8),
        nn.Tanh(), nn.Linear(8, 1024), nn.Tanh(), nn.Linear(1024, 1),
    )  # fmt: skip


def test_default_rotation_covers_each_large_tensor_once_per_round_of_four() -> None:
    """The rotation itself, over 4000 boundaries: every large tensor is covered once in each
    aligned round of 4 boundaries (each round in its own secret order), so two coverages are at
    most 2 * 4 - 1 = 7 boundaries apart: a swap repeated at every step is caught at the latest
    at its 7th boundary, at its 2.8th on average (not "within 4": the order changes per round)."""
    model = _four_large()
    mon = watch(model, torch.optim.SGD(model.parameters(), lr=0.1), watchdog=False,
                code_guard=False)  # fmt: skip
    try:
        weights: list[tuple[str, torch.Tensor]] = list(model.named_parameters())
        large = sorted(n for n, t in weights if t.numel() > 4096)
        assert len(large) == 4
        covered: list[frozenset[str]] = []
        for _ in range(4000):
            mon._choose_mix(weights)  # the choice the next boundary's fingerprints use
            chosen = mon._mix_names
            assert chosen is not None and len(chosen) == 1
            covered.append(chosen)
    finally:
        mon.close()
    for r in range(0, 4000, 4):
        assert sorted(n for c in covered[r : r + 4] for n in c) == large
    waits = []
    for name in large:
        at = [i for i, c in enumerate(covered) if name in c]
        assert max(b - a for a, b in itertools.pairwise(at)) <= 7
        waits += [next(i for i in at if i >= start) - start for start in range(3990)]
    assert max(waits) == 6  # the covering boundary is at most 6 after the first swapped one
    assert 1.65 < sum(waits) / len(waits) < 1.95  # 29/16 = 1.8125 in expectation


def test_repeated_swap_is_caught_within_the_window_with_the_default_fraction(
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
    assert run.monitor.config.fingerprint_mix_fraction == 0.25
    run.train(12, attack=swap)
    alert = run.first("TWM-WEIGHT-EDIT")
    assert alert.evidence["tensors"] == ["0.weight"]
    assert alert.step <= 2 + 7
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
