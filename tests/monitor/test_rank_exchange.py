"""ReplicaComparator (the analysis half of RankExchange) on gathered rows built in code.

The collective itself runs for real under torchrun in test_torchrun_xrank.py.
"""

from __future__ import annotations

import pytest
import torch

from trainwarden.monitor._distributed import RankExchange, ReplicaComparator, StragglerPolicy
from trainwarden.monitor._types import MonitorError

FIELDS = ("w_sum", "w_sq", "lr")


def rows(
    digests: list[list[float]],
    *,
    step: int = 3,
    timings: list[list[float]] | None = None,
    waits: list[float] | None = None,
    suspects: list[int] | None = None,
) -> torch.Tensor:
    n = len(digests)
    timings = timings or [[0.1, 0.03, 0.05, 0.02]] * n
    waits = waits or [0.0] * n
    suspects = suspects or []
    schema = ReplicaComparator(FIELDS, rank=0, world_size=1).schema
    out = [
        [*d, *t, float(step), w, 1.0 if r in suspects else 0.0, schema]
        for r, (d, t, w) in enumerate(zip(digests, timings, waits, strict=True))
    ]
    return torch.tensor(out, dtype=torch.float64)


def test_majority_names_the_odd_rank_and_the_fields() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=4)
    good = [1.0, 2.0, 1e-3]
    bad = [1.0 + 1e-12, 2.0, 1e-3]
    alerts = c.analyse(3, rows([good, bad, good, good]))
    assert [a.rule_id for a in alerts] == ["TWM-XRANK-DIVERGED"]
    ev = alerts[0].evidence
    assert ev["ranks"] == [1] and ev["fields"] == ["w_sum"] and ev["majority"] == [0, 2, 3]
    assert ev["differences"]["1"]["w_sum"]["reference"] == 1.0
    # Same divergence next step: no repeat; back in agreement and diverging again: a new alert.
    assert c.analyse(4, rows([good, bad, good, good], step=4)) == []
    assert c.analyse(5, rows([good] * 4, step=5)) == []
    assert len(c.analyse(6, rows([good, good, good, bad], step=6))) == 1


def test_two_ranks_name_both_and_the_suspect_breaks_the_tie() -> None:
    c = ReplicaComparator(FIELDS, rank=1, world_size=2)
    alerts = c.analyse(3, rows([[1.0, 2.0, 0.1], [1.0, 2.0, 0.2]], suspects=[1]))
    assert len(alerts) == 1
    assert "ranks 0 and 1 disagree on lr" in alerts[0].message
    assert alerts[0].evidence["likely_culprit"] == 1
    assert alerts[0].rank == 1


def test_no_majority_lists_the_groups() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=4)
    a, b = [1.0, 2.0, 0.1], [1.0, 3.0, 0.1]
    alerts = c.analyse(3, rows([a, a, b, b]))
    assert "no majority" in alerts[0].message
    assert alerts[0].evidence["groups"] == [[0, 1], [2, 3]]


def test_identical_nan_digests_agree_but_nan_versus_number_differs() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3)
    nan = [float("nan"), 2.0, 0.1]
    assert c.analyse(3, rows([nan, nan, nan])) == []
    alerts = c.analyse(4, rows([nan, nan, [1.0, 2.0, 0.1]], step=4))
    assert alerts and alerts[0].evidence["ranks"] == [2]


def test_rtol_tolerates_rounding_noise() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3, rtol=1e-9)
    assert c.analyse(3, rows([[1.0, 2.0, 0.1], [1.0 + 1e-12, 2.0, 0.1], [1.0, 2.0, 0.1]])) == []


def test_step_counter_mismatch_is_named() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3)
    g = torch.cat([rows([[1.0, 2.0, 0.1]] * 3)])
    g[2, len(FIELDS) + 4] = 2.0
    alerts = c.analyse(3, g)
    assert [a.rule_id for a in alerts] == ["TWM-XRANK-STEP"]
    assert alerts[0].evidence["ranks"] == [2]


def test_straggler_needs_patience_or_a_huge_outlier() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=4, straggler=StragglerPolicy(patience=3))
    d = [[1.0, 2.0, 0.1]] * 4
    # Rank 3 spends 0.3 s more outside backward (forward/optimizer): its own time.
    slow = [[0.1, 0.03, 0.05, 0.02]] * 3 + [[0.4, 0.33, 0.05, 0.02]]
    assert c.analyse(1, rows(d, step=1, timings=slow)) == []
    assert c.analyse(2, rows(d, step=2, timings=slow)) == []
    alerts = c.analyse(3, rows(d, step=3, timings=slow))
    assert [a.evidence["ranks"] for a in alerts] == [[3]]
    assert c.analyse(4, rows(d, step=4, timings=slow)) == []  # already reported
    huge = ReplicaComparator(FIELDS, rank=0, world_size=2)
    t = [[0.1, 0.03, 0.05, 0.02], [5.1, 5.03, 0.05, 0.02]]
    assert [a.evidence["ranks"] for a in huge.analyse(1, rows(d[:2], step=1, timings=t))] == [[1]]


def test_victims_waiting_in_backward_are_not_stragglers() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=2, straggler=StragglerPolicy(patience=1))
    d = [[1.0, 2.0, 0.1]] * 2
    # Rank 1 slept in forward; rank 0 waited for it inside backward's all-reduce.
    t = [[0.5, 0.01, 0.47, 0.02], [0.5, 0.45, 0.03, 0.02]]
    alerts = c.analyse(1, rows(d, step=1, timings=t))
    assert [a.evidence["ranks"] for a in alerts] == [[1]]


def test_late_arrival_at_the_previous_exchange_names_the_rank() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3, straggler=StragglerPolicy(patience=1))
    d = [[1.0, 2.0, 0.1]] * 3
    alerts = c.analyse(2, rows(d, step=2, waits=[0.6, 0.6, 0.0]))
    assert [a.evidence["ranks"] for a in alerts] == [[2]]


def test_configuration_errors() -> None:
    with pytest.raises(MonitorError, match="duplicate"):
        ReplicaComparator(("a", "a"), rank=0, world_size=2)
    with pytest.raises(MonitorError, match="patience"):
        StragglerPolicy(patience=0)
    with pytest.raises(MonitorError, match="initialised"):
        RankExchange(FIELDS)


def test_different_field_lists_are_reported_instead_of_compared() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3)
    g = rows([[1.0, 2.0, 0.1], [1.0, 9.0, 0.1], [1.0, 2.0, 0.1]])
    g[1, -1] = ReplicaComparator(("w_sum", "lr", "w_sq"), rank=0, world_size=1).schema
    alerts = c.analyse(3, g)
    assert [a.rule_id for a in alerts] == ["TWM-XRANK-FIELDS"]
    assert alerts[0].evidence["ranks"] == [1]
    assert c.analyse(4, g) == []  # reported once
