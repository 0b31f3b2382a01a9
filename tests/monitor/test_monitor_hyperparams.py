"""Check 4: every param_group change is recorded; unexplained changes are alerts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from trainwarden.findings import Severity

from ._support import Run, mlp, warmup_cosine


def test_lr_changed_behind_the_scheduler(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run = make_run(model, opt, sched=warmup_cosine(opt, 5, 50))

    def bump(step: int, m: Any, o: Any) -> None:
        if step == 10:
            o.param_groups[0]["lr"] *= 10

    run.train(14, attack=bump)
    alert = run.first("TWM-HP-CHANGE")
    assert alert.step == 11 and alert.severity == Severity.HIGH
    assert alert.evidence["key"] == "lr"
    assert alert.evidence["new"] == pytest.approx(alert.evidence["old"] * 10, rel=0.05)
    assert [a.rule_id for a in run.serious()] == ["TWM-HP-CHANGE"]
    # The scheduler's own changes were recorded as explained.
    changes = [r for k, r in run.sink.events if k == "hparam"]
    assert sum(1 for r in changes if r["explained"]) >= 10
    assert next(r for r in changes if not r["explained"])["step"] == 11


def test_lr_change_without_scheduler(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = make_run(model, opt)

    def bump(step: int, m: Any, o: Any) -> None:
        if step == 3:
            o.param_groups[0]["lr"] = 0.5

    run.train(5, attack=bump)
    alert = run.first("TWM-HP-CHANGE")
    assert alert.evidence["reason"] == "no scheduler was given to watch()"


def test_any_other_key_change_is_an_alert(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run = make_run(model, opt, sched=warmup_cosine(opt, 2, 20))

    def tweak(step: int, m: Any, o: Any) -> None:
        if step == 3:
            o.param_groups[0]["betas"] = (0.9, 0.99)
        if step == 5:
            o.param_groups[0]["weight_decay"] = 0.5

    run.train(7, attack=tweak)
    keys = [a.evidence["key"] for a in run.monitor.alerts if a.rule_id == "TWM-HP-CHANGE"]
    assert keys == ["betas", "weight_decay"]


def test_chained_and_sequential_schedulers_are_clean(make_run: Callable[..., Run]) -> None:
    model = mlp(dropout=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[10])
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99)
    # Two schedulers stepping the same optimizer one after the other ("mixed").
    run = make_run(model, opt, sched=[seq, decay], clip=5.0)
    run.train(50)
    assert run.serious() == []


def test_param_group_added_is_recorded(make_run: Callable[..., Run]) -> None:
    model = mlp()
    extra = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = make_run(model, opt)

    def add(step: int, m: Any, o: Any) -> None:
        if step == 2:
            o.add_param_group({"params": [extra], "lr": 1.0})

    run.train(4, attack=add)
    assert run.first("TWM-HP-GROUPS").evidence["groups"] == [1, 2]
