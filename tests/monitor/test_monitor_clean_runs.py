"""Clean 200-step runs of common training setups raise no alert at MEDIUM or above."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._support import Run, TinyGPT, mlp, warmup_cosine


def test_adamw_warmup_cosine_with_clipping_and_dropout(make_run: Callable[..., Run]) -> None:
    model = mlp(dropout=0.2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    run = make_run(model, opt, sched=warmup_cosine(opt, 20, 200), clip=0.5, code_guard=True)
    run.train(200)
    assert run.serious() == []
    assert run.monitor.step == 200
    # The clipping was really exercised: the loop clipped to exactly max_grad_norm.
    assert max(r["grad_norm"] for r in run.monitor.records) <= 0.5 * 1.001


def test_gradient_accumulation_with_batchnorm(make_run: Callable[..., Run]) -> None:
    model = mlp(dropout=0.1, batchnorm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=200)
    run = make_run(model, opt, sched=sched, accum=4, code_guard=True)
    run.train(200)
    assert run.serious() == []


def test_sgd_nesterov_with_step_decay(make_run: Callable[..., Run]) -> None:
    model = mlp(dropout=0.1)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[60, 120], gamma=0.3)
    run = make_run(model, opt, sched=sched, clip=1.0, code_guard=True)
    run.train(200)
    assert run.serious() == []


def test_mixed_schedulers_on_two_param_groups(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.AdamW(
        [
            {"params": model[0].parameters(), "weight_decay": 0.1},
            {"params": model[3].parameters(), "weight_decay": 0.0, "lr": 5e-4},
        ],
        lr=1e-3,
    )
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=20)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.995)
    chained = torch.optim.lr_scheduler.ChainedScheduler([warm, decay])
    run = make_run(model, opt, sched=chained, code_guard=True)
    run.train(200)
    assert run.serious() == []


def test_tiny_gpt_adamw(make_run: Callable[..., Run]) -> None:
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    run = make_run(
        model, opt, sched=warmup_cosine(opt, 10, 100), clip=1.0, gpt=True, code_guard=True
    )
    run.train(100)
    assert run.serious() == []
