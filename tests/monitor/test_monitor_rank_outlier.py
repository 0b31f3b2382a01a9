"""The per-rank outlier judgement, fed many steps of per-rank values (the torchrun tests feed it
real ones): an attacker who read it corrupts from the first step, keeps the corruption below
the early cap, or hides among several ranks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch

from trainwarden.monitor._checks.rank_outlier import RankOutlier

from ._support import Run, mlp


def _check(make_run: Callable[..., Run], ranks: int) -> tuple[Run, RankOutlier]:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    run.monitor.world_size = ranks  # as in a job of that size: the history spans every rank
    check = RankOutlier(run.monitor)
    return run, check


def _seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 -- reproducible synthetic per-rank values


def _clean(rng: random.Random, ranks: int, level: float) -> dict[str, list[float]]:
    """Per-rank values of healthy data parallelism: each rank's batch differs (30% jitter)."""
    return {
        "loss": [level * math.exp(rng.gauss(0.0, 0.1)) for _ in range(ranks)],
        "grad_norm": [2.0 * level * math.exp(rng.gauss(0.0, 0.3)) for _ in range(ranks)],
    }


def _named(run: Run) -> list[tuple[int, list[int]]]:
    return [
        (i, a.evidence["ranks"])
        for i, a in enumerate(run.monitor.alerts)
        if a.rule_id == "TWM-XRANK-OUTLIER"
    ]


def test_clean_ranks_with_a_falling_loss_are_never_named(make_run: Callable[..., Run]) -> None:
    for ranks in (2, 3, 8):
        run, check = _check(make_run, ranks)
        rng = _seeded(ranks)
        for step in range(2000):
            check.compare(_clean(rng, ranks, 4.0 * math.exp(-step / 400)))
        assert _named(run) == [], ranks


def test_garbage_share_after_a_clean_start_is_named_at_once(make_run: Callable[..., Run]) -> None:
    for ranks, sick in ((2, 1), (3, 0), (8, 5)):
        run, check = _check(make_run, ranks)
        rng = _seeded(10 + ranks)
        for _ in range(50):
            check.compare(_clean(rng, ranks, 3.0))
        assert _named(run) == []
        step = _clean(rng, ranks, 3.0)
        step["loss"][sick] *= 5.0
        step["grad_norm"][sick] *= 40.0
        check.compare(step)
        alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-XRANK-OUTLIER"]
        assert len(alerts) == 1 and alerts[0].evidence["ranks"] == [sick], (ranks, alerts)
        assert alerts[0].severity.name == "HIGH"  # both loss and gradient norm disagree


def test_moderate_corruption_present_from_the_first_step_is_named_as_persistent(
    make_run: Callable[..., Run],
) -> None:
    # 3x: under the early cap (4x), and absorbed by the spread history from the start.
    run, check = _check(make_run, 2)
    rng = _seeded(7)
    step = -1
    while step < 40:
        step += 1
        values = _clean(rng, 2, 3.0)
        values["loss"][1] *= 3.0
        check.compare(values)
        if _named(run):
            break
    alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-XRANK-OUTLIER"]
    assert alerts and alerts[0].evidence["ranks"] == [1]
    assert alerts[0].evidence["loss"]["persistent"]["1"]["above_steps"] >= 30
    assert step == 31  # the 32nd step completes the window


def test_an_infinite_local_value_names_its_rank(make_run: Callable[..., Run]) -> None:
    run, check = _check(make_run, 3)
    check.compare({"loss": [1.0, math.inf, 1.1], "grad_norm": [1.0, 1.0, 1.0]})
    assert [r for _, r in _named(run)] == [[1]]


def test_every_rank_spiking_together_is_not_one_outlier(make_run: Callable[..., Run]) -> None:
    for ranks in (2, 4):
        run, check = _check(make_run, ranks)
        rng = _seeded(3)
        for _ in range(30):
            check.compare(_clean(rng, ranks, 3.0))
        step = _clean(rng, ranks, 30.0)  # a global loss spike (numerics reports it on each rank)
        check.compare(step)
        assert _named(run) == []
