"""The cross-rank comparison's decisions, as the rank that tampers with its replica sees them.

A tampered rank differs from the others in one digest field: by one bit of a 64-bit weight
hash, by a signed zero, by a NaN, or only by a step counter. Each test hands ReplicaComparator a
gathered matrix built in code and asserts the whole alert (rule, severity, step, rank, message,
evidence), since the alert is what names the culprit to the operator.
"""

from __future__ import annotations

import math
import struct

import pytest
import torch

from trainwarden.findings import Severity
from trainwarden.monitor._distributed import ReplicaComparator, StragglerPolicy
from trainwarden.monitor._types import Alert, MonitorError

FIELDS = ("weight:w", "optimizer_state", "lr")
_T = [0.1, 0.03, 0.05, 0.02]


def _bits_of(i: int) -> float:
    """The float64 that carries the 64-bit pattern ``i`` (how hashes travel)."""
    return float(struct.unpack("<d", struct.pack("<q", i))[0])


def gathered(
    digests: list[list[float]],
    *,
    step: int = 3,
    steps: list[int] | None = None,
    suspects: tuple[int, ...] = (),
    fields: tuple[str, ...] = FIELDS,
    schemas: dict[int, float] | None = None,
    timings: list[list[float]] | None = None,
) -> torch.Tensor:
    n = len(digests)
    schema = ReplicaComparator(fields, rank=0, world_size=1).schema
    steps = steps or [step] * n
    timings = timings or [_T] * n
    out = [
        [
            *d,
            *timings[r],
            float(steps[r]),
            0.0,
            1.0 if r in suspects else 0.0,
            (schemas or {}).get(r, schema),
        ]
        for r, d in enumerate(digests)
    ]
    return torch.tensor(out, dtype=torch.float64)


def _one(alerts: list[Alert]) -> Alert:
    assert len(alerts) == 1, alerts
    return alerts[0]


def _whole(a: Alert) -> tuple[object, ...]:
    return (a.rule_id, a.severity, a.step, a.rank, a.message, a.evidence)


GOOD = [1.0, 2.0, 1e-3]


def test_a_weight_hash_one_bit_off_is_named_with_global_ranks() -> None:
    # The hash arrives as a bit pattern: one flipped low bit must be a difference, even though
    # the two patterns are the same number once rounded to a double.
    h = 0x3FF0_0000_0000_0000
    good, bad = [_bits_of(h), 2.0, 1e-3], [_bits_of(h + 1), 2.0, 1e-3]
    c = ReplicaComparator(FIELDS, rank=1, world_size=3, global_ranks=[10, 11, 12])
    a = _one(c.analyse(7, gathered([good, good, bad], step=7)))
    assert _whole(a) == (
        "TWM-XRANK-DIVERGED",
        Severity.HIGH,
        7,
        11,
        "rank(s) [12] disagree with the majority (2/3 ranks) on weight:w",
        {
            "world_size": 3,
            "suspects": [],
            "ranks": [12],
            "fields": ["weight:w"],
            "differences": {"12": {"weight:w": {"value": bad[0], "reference": good[0]}}},
            "majority": [10, 11],
        },
    )


def test_two_fields_differing_are_listed_in_order() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3)
    bad = [9.0, 2.0, 0.5]
    a = _one(c.analyse(3, gathered([GOOD, bad, GOOD])))
    assert a.message == "rank(s) [1] disagree with the majority (2/3 ranks) on lr, weight:w"


def test_two_ranks_disagreeing_name_both_and_the_one_suspect() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=2, global_ranks=[4, 5])
    other = [1.0, 3.0, 2e-3]
    a = _one(c.analyse(2, gathered([GOOD, other], step=2, suspects=(1,))))
    assert _whole(a) == (
        "TWM-XRANK-DIVERGED",
        Severity.HIGH,
        2,
        4,
        "ranks 4 and 5 disagree on lr, optimizer_state; rank 5 also failed its own step-to-step "
        "continuity check, so it is the likely culprit",
        {
            "world_size": 2,
            "suspects": [5],
            "ranks": [4, 5],
            "fields": ["lr", "optimizer_state"],
            "groups": [[4], [5]],
            "differences": {
                "lr": {"4": 1e-3, "5": 2e-3},
                "optimizer_state": {"4": 2.0, "5": 3.0},
            },
            "likely_culprit": 5,
        },
    )


def test_no_majority_names_every_group() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=4, global_ranks=[8, 9, 10, 11])
    b = [1.5, 2.0, 5e-3]
    a = _one(c.analyse(3, gathered([GOOD, GOOD, b, b])))
    assert a.message == (
        "no majority among replicas: groups [8, 9] vs [10, 11] differ on lr, weight:w"
    )
    assert a.evidence["groups"] == [[8, 9], [10, 11]]
    assert a.evidence["differences"] == {
        "lr": {"8": 1e-3, "10": 5e-3},
        "weight:w": {"8": 1.0, "10": 1.5},
    }
    assert "likely_culprit" not in a.evidence


def test_a_repeated_divergence_is_reported_once_and_again_after_agreement() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3)
    bad = [1.5, 2.0, 1e-3]
    assert len(c.analyse(1, gathered([GOOD, GOOD, bad], step=1))) == 1
    assert c.analyse(2, gathered([GOOD, GOOD, bad], step=2)) == []
    assert c.analyse(3, gathered([GOOD] * 3, step=3)) == []
    assert len(c.analyse(4, gathered([GOOD, GOOD, bad], step=4))) == 1


@pytest.mark.parametrize("rtol", [1e-3, 0.5])
def test_with_a_tolerance_a_nan_is_equal_only_to_a_nan(rtol: float) -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3, rtol=rtol)
    nan = [math.nan, 2.0, 1e-3]
    assert c.analyse(1, gathered([nan, nan, nan], step=1)) == []
    a = _one(c.analyse(2, gathered([nan, nan, GOOD], step=2)))
    assert a.evidence["ranks"] == [2]
    c2 = ReplicaComparator(FIELDS, rank=0, world_size=3, rtol=rtol)
    a = _one(c2.analyse(2, gathered([GOOD, GOOD, nan], step=2)))
    assert a.evidence["ranks"] == [2]


def test_the_tolerance_is_relative_only() -> None:
    # rtol=1e-3 accepts 1.0005 against 1.0 but never an absolute slack: 0.0 against 0.5 differs.
    c = ReplicaComparator(FIELDS, rank=0, world_size=3, rtol=1e-3)
    near = [1.0005, 2.0, 1e-3]
    assert c.analyse(1, gathered([GOOD, GOOD, near], step=1)) == []
    zero, half = [0.0, 2.0, 1e-3], [0.5, 2.0, 1e-3]
    a = _one(c.analyse(2, gathered([zero, zero, half], step=2)))
    assert a.evidence["ranks"] == [2]


def test_with_a_tolerance_signed_zeros_are_the_same_value() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3, rtol=0.5)
    zeros = [[0.0, 2.0, 1e-3], [-0.0, 2.0, 1e-3], [0.0, 2.0, 1e-3]]
    assert c.analyse(1, gathered(zeros, step=1)) == []


def test_without_a_tolerance_signed_zeros_differ() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3)
    a = _one(c.analyse(1, gathered([[0.0, 2.0, 1e-3]] * 2 + [[-0.0, 2.0, 1e-3]], step=1)))
    assert a.evidence["ranks"] == [2]


def test_with_a_tolerance_the_reference_is_the_majoritys_first_rank() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=4, rtol=1e-3)
    close = [1.0004, 2.0, 1e-3]
    far = [5.0, 2.0, 1e-3]
    a = _one(c.analyse(1, gathered([GOOD, close, GOOD, far], step=1)))
    assert a.evidence["majority"] == [0, 1, 2]
    assert a.evidence["differences"] == {"3": {"weight:w": {"value": 5.0, "reference": 1.0}}}


def test_a_step_counter_odd_one_out_is_named_once() -> None:
    c = ReplicaComparator(FIELDS, rank=2, world_size=3, global_ranks=[0, 1, 2])
    g = gathered([GOOD] * 3, step=5, steps=[5, 5, 4])
    a = _one(c.analyse(5, g))
    assert _whole(a) == (
        "TWM-XRANK-STEP",
        Severity.HIGH,
        5,
        2,
        "ranks are at different step counters: rank 0=5, rank 1=5, rank 2=4 (odd rank(s) out: [2])",
        {"steps": [5, 5, 4], "ranks": [2]},
    )
    assert c.analyse(5, g) == []  # the same disagreement is not repeated
    assert c.analyse(6, gathered([GOOD] * 3, step=6)) == []
    assert len(c.analyse(7, gathered([GOOD] * 3, step=7, steps=[7, 7, 6]))) == 1


@pytest.mark.parametrize(
    "steps", [[3, 4], [3, 3, 4, 4], [3, 3, 4, 5]], ids=["two", "even-split", "plurality"]
)
def test_a_step_counter_split_without_majority_names_nobody(steps: list[int]) -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=len(steps))
    a = _one(c.analyse(3, gathered([GOOD] * len(steps), steps=steps)))
    listed = ", ".join(f"rank {r}={s}" for r, s in enumerate(steps))
    assert a.message == f"ranks are at different step counters: {listed}"
    assert a.evidence == {"steps": steps, "ranks": []}


def test_different_field_lists_are_one_alert_naming_the_odd_ranks() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=3, global_ranks=[20, 21, 22])
    other = ReplicaComparator(("lr", "weight:w", "optimizer_state"), rank=0, world_size=1)
    g = gathered([GOOD] * 3, schemas={2: other.schema})
    a = _one(c.analyse(9, g))
    assert _whole(a) == (
        "TWM-XRANK-FIELDS",
        Severity.HIGH,
        9,
        20,
        "ranks exchange different digest fields (rank(s) [22] differ from [20, 21]): models, "
        "optimizers or param groups are not the same on every rank; digests were not compared",
        {"ranks": [22], "schemas": [int(c.schema), int(c.schema), int(other.schema)]},
    )
    assert c.analyse(10, g) == []


def test_a_straggler_alert_carries_the_step() -> None:
    c = ReplicaComparator(FIELDS, rank=0, world_size=2, straggler=StragglerPolicy(patience=1))
    t = [_T, [0.5, 0.45, 0.03, 0.02]]
    a = _one(c.analyse(4, gathered([GOOD] * 2, step=4, timings=t)))
    assert (a.rule_id, a.step, a.evidence["ranks"]) == ("TWM-XRANK-STRAGGLER", 4, [1])


def test_slow_steps_that_left_the_window_no_longer_count() -> None:
    pol = StragglerPolicy(patience=2, window=2)
    c = ReplicaComparator(FIELDS, rank=0, world_size=3, straggler=pol)
    slow = [_T, _T, [0.5, 0.45, 0.03, 0.02]]
    seq = [slow, [_T] * 3, [_T] * 3, slow]
    alerts = [c.analyse(s, gathered([GOOD] * 3, step=s, timings=t)) for s, t in enumerate(seq)]
    assert alerts == [[], [], [], []]


def test_a_negative_tolerance_is_refused_with_its_value() -> None:
    with pytest.raises(MonitorError) as e:
        ReplicaComparator(FIELDS, rank=0, world_size=2, rtol=-1.0)
    assert str(e.value).startswith("rtol must be >= 0, got -1.0")
