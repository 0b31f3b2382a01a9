"""Checks 5, 7 and 8: reseeding, RNG rewinds, non-finite values, spikes and injected sleeps."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from trainwarden._internal.sink import MemorySink
from trainwarden.findings import Severity
from trainwarden.monitor import watch

from ._support import Run, mlp


@pytest.mark.parametrize(
    "reseed",
    [
        lambda: torch.manual_seed(7),
        lambda: torch.random.manual_seed(7),
        lambda: torch.cuda.manual_seed_all(7),
        lambda: random.seed(7),
        lambda: np.random.seed(7),
    ],
    ids=["torch", "torch.random", "cuda_all", "random", "numpy"],
)
def test_reseed_after_training_started_is_caught_with_stack(
    make_run: Callable[..., Run], reseed: Callable[[], None]
) -> None:
    model = mlp(dropout=0.2)
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def attack(step: int, m: Any, o: Any) -> None:
        if step == 4:
            reseed()

    run.train(6, attack=attack)
    alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-RNG-RESEED"]
    assert len(alerts) == 1
    assert alerts[0].step == 5 and alerts[0].severity == Severity.HIGH
    assert any("test_monitor_rng_numerics_timing.py" in f for f in alerts[0].evidence["stack"])
    assert any("reseed()" in f for f in alerts[0].evidence["stack"])


def test_seeding_before_the_first_step_is_recorded_not_alerted(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    torch.manual_seed(3)
    run.train(3)
    assert "TWM-RNG-RESEED" not in run.rules()
    seeds = [r for k, r in run.sink.events if k == "seed"]
    assert len(seeds) == 1
    assert seeds[0]["function"] == "torch.manual_seed" and seeds[0]["training_started"] is False


def test_rng_state_rewound_without_seeding_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp(dropout=0.5)
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    saved: list[torch.Tensor] = []

    def attack(step: int, m: Any, o: Any) -> None:
        if step == 1:
            saved.append(torch.get_rng_state())
        if step == 5:
            torch.set_rng_state(saved[0])

    run.train(8, attack=attack)
    alert = run.first("TWM-RNG-REWIND")
    assert alert.evidence["generator"] == "torch" and alert.step == 6


def test_step_records_carry_rng_and_batch_fingerprints(make_run: Callable[..., Run]) -> None:
    model = mlp(dropout=0.1)
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    run.train(4)
    steps = [r for k, r in run.sink.events if k == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert set(steps[1]["rng"]) >= {"torch", "random", "numpy"}
    assert steps[1]["rng"]["torch"] != steps[2]["rng"]["torch"]  # dropout consumed randomness
    # One keyed hash per micro-batch; different batches, different hashes.
    assert len(steps[0]["batch"]) == 1 and steps[0]["batch"] != steps[1]["batch"]
    assert all(isinstance(r["loss"], float) and isinstance(r["grad_norm"], float) for r in steps)


def _seeding_functions() -> tuple[Any, ...]:
    """The global seeding functions as they are now. ``torch._dynamo`` replaces
    ``torch.manual_seed`` with a wrapper of its own when it is first imported (which a watched
    step may do): it is imported first, so the comparison does not depend on test order."""
    import torch._dynamo  # imported for its side effect on torch.manual_seed

    return (torch.manual_seed, torch.random.manual_seed, random.seed, np.random.seed)


def test_wrappers_are_removed_on_close() -> None:
    originals = _seeding_functions()
    model = mlp()
    with watch(
        model, torch.optim.SGD(model.parameters(), lr=0.1), sink=MemorySink(), watchdog=False
    ):
        assert torch.manual_seed is not originals[0]
    assert (torch.manual_seed, torch.random.manual_seed, random.seed, np.random.seed) == originals


@pytest.mark.parametrize("how", ["cleared", "rebound"])
def test_wrappers_are_removed_on_close_whatever_became_of_the_list_of_checks(how: str) -> None:
    # The job emptied the monitor's list of checks (the self-check names that): close() still
    # undoes what the checks it started installed, or the wrappers outlive the monitor.
    originals = _seeding_functions()
    model = mlp()
    mon = watch(
        model, torch.optim.SGD(model.parameters(), lr=0.1), sink=MemorySink(), watchdog=False
    )
    assert torch.manual_seed is not originals[0]
    if how == "cleared":
        mon.checks.clear()
    else:
        mon.checks = []
    mon.close()
    assert (torch.manual_seed, torch.random.manual_seed, random.seed, np.random.seed) == originals


def _loop(model: nn.Module, opt: torch.optim.Optimizer, steps: int, **kw: Any) -> list[Any]:
    sink = MemorySink()
    gen = torch.Generator().manual_seed(0)
    with watch(model, opt, sink=sink, watchdog=False, **kw) as mon:
        for step in range(steps):
            x = torch.randn(16, 8, generator=gen)
            if step == steps - 2:
                x[0, 0] = float("nan")
            loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
            mon.observe_loss(loss)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return mon.alerts


def test_nan_loss_and_gradient_are_reported() -> None:
    model = mlp()
    alerts = _loop(model, torch.optim.SGD(model.parameters(), lr=0.01), 6)
    nonfinite = [a for a in alerts if a.rule_id == "TWM-NUM-NONFINITE"]
    assert {a.evidence["metric"] for a in nonfinite} == {"loss", "grad_norm"}
    assert min(a.step for a in nonfinite) == 5


def test_loss_spike_is_reported_with_context(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    run.train(25)
    for _ in range(3):
        run.monitor.observe_loss(1e6)
        run.train(1)
    spikes = [a for a in run.monitor.alerts if a.rule_id == "TWM-NUM-SPIKE"]
    assert spikes and spikes[0].evidence["metric"] == "loss"
    assert spikes[0].severity == Severity.LOW and len(spikes[0].evidence["recent"]) == 8


def test_sleep_inside_step_is_a_timing_spike(make_run: Callable[..., Run]) -> None:
    class NappingSGD(torch.optim.SGD):
        calls = 0

        def step(self, closure: Any = None) -> Any:
            NappingSGD.calls += 1
            if NappingSGD.calls == 30:
                time.sleep(0.4)
            return super().step(closure)

    model = mlp()
    run = make_run(model, NappingSGD(model.parameters(), lr=0.01))
    run.train(32)
    spikes = [a for a in run.monitor.alerts if a.rule_id == "TWM-TIME-SPIKE"]
    phases = {a.evidence["phase"] for a in spikes if a.evidence["step"] == 30}
    assert "optimizer" in phases
    timing = next(r["timing"] for k, r in run.sink.events if k == "step" and r["step"] == 30)
    assert set(timing) == {"forward", "backward", "optimizer", "step"}
