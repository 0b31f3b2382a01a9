"""Timing below any absolute threshold: sustained slowdowns and repeated relative spikes.

Written as the attacker who read the check: the delays stay under ``time_min_excess_s`` where the
machine allows it, the slowdown is applied to every step, a creep is slow enough that a rolling
baseline would follow it, and sparse spikes are counted against the run's own spike rate. The
real-loop tests make the injected effect large relative to the noise the run itself measured
(never an absolute time), and assert on steps, never on seconds.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from trainwarden.findings import Severity
from trainwarden.monitor._checks.timing_shift import (
    _SPIKE_HISTORY,
    TimingShift,
    binomial_tail,
    rank_sum_z,
)

from ._support import Run, mlp

WARMUP, BASELINE, WINDOW = 4, 32, 16


def _run(make_run: Callable[..., Run], **kw: Any) -> Run:
    model = mlp()
    kw.setdefault("spike_warmup", WARMUP)
    kw.setdefault("time_baseline_steps", BASELINE)
    kw.setdefault("time_shift_window", WINDOW)
    return make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), **kw)


def _seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 -- reproducible synthetic step times, not a secret


def _median_step_s(run: Run) -> float:
    times: list[float] = [
        r["timing"]["step"] for r in run.monitor.records if r["timing"] and "step" in r["timing"]
    ]
    return float(statistics.median(times))


def _check(run: Run) -> TimingShift:
    check = run.monitor.check_named(TimingShift.name)
    assert isinstance(check, TimingShift)
    return check


def test_rank_sum_z_and_binomial_tail_match_their_definitions() -> None:
    rng = _seeded(3)
    a = [rng.random() for _ in range(9)]
    b = [rng.random() for _ in range(13)]
    u = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)
    expected = (u - 9 * 13 / 2) / math.sqrt(9 * 13 * (9 + 13 + 1) / 12)
    assert rank_sum_z(a, b) == pytest.approx(expected)
    assert rank_sum_z([2.0] * 4, [1.0] * 8) > 0 > rank_sum_z([0.0] * 4, [1.0] * 8)
    for n, k, p in [(100, 11, 1 / 66), (45, 22, 0.1), (10, 0, 0.3), (10, 11, 0.3)]:
        direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert binomial_tail(n, k, p) == pytest.approx(direct, rel=1e-9, abs=1e-300)


def test_steady_slowdown_of_every_step_is_a_shift_within_the_window(
    make_run: Callable[..., Run],
) -> None:
    # A 2x margin: load swings on a shared machine stay under it, the injected 3x does not.
    run = _run(make_run, time_shift_min=1.0)
    run.train(WARMUP + BASELINE + 8)
    # Twice the run's own median step time, slept in every step: each step takes ~3x.
    nap = 2.0 * _median_step_s(run)
    onset = run.monitor.step + 2  # the attack sleeps after a step; the next step pays for it
    run.train(WINDOW + 8, attack=lambda *_: time.sleep(nap))
    shifts = [
        a
        for a in run.monitor.alerts
        if a.rule_id == "TWM-TIME-SHIFT" and a.evidence["step"] >= onset
    ]
    assert shifts, run.monitor.alerts
    assert shifts[0].severity == Severity.MEDIUM
    assert onset <= shifts[0].evidence["step"] <= onset + WINDOW
    assert shifts[0].evidence["ratio"] >= 1.3 and shifts[0].evidence["z"] >= 4.0


def test_repeated_sleeps_under_the_absolute_threshold_are_repeated_spikes(
    make_run: Callable[..., Run],
) -> None:
    # The default 64-step baseline: on a loaded machine its own rate of slow steps is what the
    # sleeps are judged against, and a shorter one estimates that rate poorly.
    run = _run(make_run, time_baseline_steps=64)
    run.train(WARMUP + 64 + 4)
    # Just under time_min_excess_s (0.1 s) on this machine, yet several times its median step.
    nap = max(0.09, 6.0 * _median_step_s(run))
    onset = run.monitor.step
    spikes: list[Any] = []
    # Within the 100 steps of the spike history: 50 sleeps there outnumber what even a baseline
    # that had a slow step at every fourth step would explain (P < 1e-6).
    while not spikes and run.monitor.step < onset + _SPIKE_HISTORY:
        run.train(10, attack=lambda step, *_: time.sleep(nap) if step % 2 == 0 else None)
        spikes = [
            a for a in run.monitor.alerts if a.rule_id == "TWM-TIME-SPIKES" and a.step > onset
        ]
    assert spikes, run.monitor.alerts
    assert spikes[0].severity == Severity.MEDIUM and spikes[0].step > onset
    assert spikes[0].evidence["p_value"] <= 1e-6
    assert all(s > onset for s in spikes[0].evidence["steps"][-4:])
    assert binomial_tail(_SPIKE_HISTORY, _SPIKE_HISTORY // 2, 17 / 66) < 1e-6


def _feed(check: TimingShift, series: list[float]) -> None:
    for i, seconds in enumerate(series, start=1):
        check.add(i, seconds)


def _noisy(rng: random.Random, n: int, median: float = 0.02) -> list[float]:
    """Step times of a loaded machine: lognormal jitter and a 3% rate of 3x stalls."""
    out = []
    for _ in range(n):
        s = median * math.exp(rng.gauss(0.0, 0.15))
        if rng.random() < 0.03:
            s *= 3.0
        out.append(s)
    return out


def test_heavy_tailed_clean_step_times_raise_nothing(make_run: Callable[..., Run]) -> None:
    run = _run(make_run, time_baseline_steps=64)
    _feed(_check(run), _noisy(_seeded(11), 3000))
    assert [a.rule_id for a in run.monitor.alerts if a.rule_id.startswith("TWM-TIME")] == []


def test_slow_creep_that_a_rolling_baseline_would_follow_is_a_shift(
    make_run: Callable[..., Run],
) -> None:
    run = _run(make_run, time_baseline_steps=64)
    rng = _seeded(5)
    clean = _noisy(rng, 100)
    # +0.5% per step: no two neighbouring windows differ, the run ends up 2.7x slower.
    creep = [s * 1.005**i for i, s in enumerate(_noisy(rng, 200), start=1)]
    _feed(_check(run), clean + creep)
    shifts = [a for a in run.monitor.alerts if a.rule_id == "TWM-TIME-SHIFT"]
    assert len(shifts) == 1
    # 30% slower is reached after ~53 steps of creep; the window's median lags by half of it.
    assert 100 < shifts[0].evidence["step"] <= 100 + 53 + WINDOW


def test_sparse_spikes_are_judged_against_the_runs_own_spike_rate(
    make_run: Callable[..., Run],
) -> None:
    rng = _seeded(9)
    series = _noisy(rng, 100)
    base = statistics.median(series)
    every_5th = [base * 8 if i % 5 == 0 else s for i, s in enumerate(_noisy(rng, 100))]
    run = _run(make_run, time_baseline_steps=64)
    _feed(_check(run), series + every_5th)
    assert "TWM-TIME-SPIKES" in [a.rule_id for a in run.monitor.alerts]
    # The same spikes in a run whose baseline already stalled that often are not evidence.
    stalls = [base * 8 if i % 5 == 0 else s for i, s in enumerate(_noisy(rng, 100))]
    run2 = _run(make_run, time_baseline_steps=64)
    _feed(_check(run2), stalls + every_5th)
    assert "TWM-TIME-SPIKES" not in [a.rule_id for a in run2.monitor.alerts]


def test_spikes_below_the_documented_rate_are_not_claimed(make_run: Callable[..., Run]) -> None:
    # The documented limit: with a clean 64-step baseline, fewer than 11 relative spikes per
    # 100 steps are not reported at the default alpha.
    rng = _seeded(2)
    series = [0.02 * math.exp(rng.gauss(0.0, 0.05)) for _ in range(400)]
    every_10th = [s * 8 if i % 10 == 0 else s for i, s in enumerate(series[100:])]
    run = _run(make_run, time_baseline_steps=64)
    _feed(_check(run), series[:100] + every_10th)
    assert "TWM-TIME-SPIKES" not in [a.rule_id for a in run.monitor.alerts]
    assert binomial_tail(100, 11, 1 / 66) < 1e-6 < binomial_tail(100, 10, 1 / 66)


def test_one_long_stall_counts_once_not_as_repeated_spikes(make_run: Callable[..., Run]) -> None:
    rng = _seeded(4)
    series = _noisy(rng, 100)
    stall = [s * 10 for s in _noisy(rng, 30)]  # 30 consecutive slow steps: one node-wide stall
    run = _run(make_run, time_baseline_steps=64)
    _feed(_check(run), series + stall + _noisy(rng, 30))
    assert "TWM-TIME-SPIKES" not in [a.rule_id for a in run.monitor.alerts]


def test_one_stall_while_the_baseline_is_taken_does_not_blind_the_spike_test(
    make_run: Callable[..., Run],
) -> None:
    # A stall of 8 consecutive steps inside the baseline (a checkpoint save, a neighbour's
    # burst) is one run of slow steps, as it would be in the recent window: counted as 8, it
    # would make 20 spikes in 100 steps look ordinary (P ~ 0.05 at a rate of 9/66).
    rng = _seeded(6)
    series = [0.02 * math.exp(rng.gauss(0.0, 0.05)) for _ in range(200)]
    stalled = [s * 10 if 30 <= i < 38 else s for i, s in enumerate(series[:100])]
    every_5th = [s * 8 if i % 5 == 0 else s for i, s in enumerate(series[100:])]
    run = _run(make_run, time_baseline_steps=64)
    _feed(_check(run), stalled + every_5th)
    spikes = [a for a in run.monitor.alerts if a.rule_id == "TWM-TIME-SPIKES"]
    assert spikes, run.monitor.alerts
    assert spikes[0].evidence["baseline_rate"] == pytest.approx(2 / 66)
    assert all(s > 100 for s in spikes[0].evidence["steps"])
    assert binomial_tail(100, 20, 9 / 66) > 1e-2
