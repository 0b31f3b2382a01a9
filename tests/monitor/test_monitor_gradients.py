"""Gradients from accumulation to the step, and the hooks that could change them.

Each attack is written by someone who read the checks: hooks registered before watch() (so the
monitor's own step pre-hook runs after them), global optimizer hooks, tensor hooks, a forward
replaced on a module instance, and clipping at another threshold than the declared one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainwarden._internal.sink import MemorySink
from trainwarden.findings import Severity
from trainwarden.monitor import watch

from ._support import Run, mlp


def test_step_pre_hook_registered_before_watch_is_listed_and_its_edit_caught(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def halve_one(optimizer: Any, args: Any, kwargs: Any) -> None:
        first: Any = model[0]
        first.weight.grad.mul_(0.5)  # runs before the monitor's step pre-hook

    opt.register_step_pre_hook(halve_one)
    run = make_run(model, opt)
    run.train(2)
    present = run.first("TWM-HOOK-PRESENT")
    assert any("halve_one" in h for h in present.evidence["hooks"])
    edit = run.first("TWM-GRAD-EDIT")
    assert list(edit.evidence["params"]) == ["0.weight"] and edit.step == 0
    assert edit.severity == Severity.CRITICAL


def test_global_optimizer_hook_added_later_flipping_signs_is_named(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-3), clip=1.0)
    handles: list[Any] = []

    def flip(optimizer: Any, args: Any, kwargs: Any) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.neg_()

    def install(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            handles.append(register_optimizer_step_pre_hook(flip))

    try:
        run.train(5, attack=install)
    finally:
        for h in handles:
            h.remove()
    added = run.first("TWM-HOOK-ADDED")
    assert added.step == 3 and "flip" in added.message
    edit = run.first("TWM-GRAD-EDIT")
    assert edit.step == 3 and "sign flipped" in edit.message


def test_tensor_hook_added_later_is_named(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))

    def install(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            m[0].weight.register_hook(lambda g: g * 0.1)  # before accumulation: only the
            # inventory can see it

    run.train(4, attack=install)
    added = run.first("TWM-HOOK-ADDED")
    assert added.step == 2 and "0.weight._backward_hooks" in added.message


def test_forward_replaced_on_an_instance_and_restoring_forward_hook_are_named(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    saved: dict[str, torch.Tensor] = {}

    def edit_during_forward(module: Any, args: Any) -> None:
        saved["w"] = module.weight.detach().clone()
        module.weight.data.mul_(2.0)  # the forward sees other weights (no version bump)...

    def restore_after(module: Any, args: Any, out: Any) -> None:
        module.weight.data.copy_(saved["w"])  # ...and the step boundary sees the right ones

    def install(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            m[3].register_forward_pre_hook(edit_during_forward)
            m[3].register_forward_hook(restore_after)
        if step == 3:
            original = m[0].forward
            m[0].forward = lambda x: original(x) * 1.01

    run.train(6, attack=install)
    added = [a for a in run.monitor.alerts if a.rule_id == "TWM-HOOK-ADDED"]
    assert added[0].step == 2
    assert {h.split(":")[0] for h in added[0].evidence["hooks"]} == {
        "3._forward_pre_hooks",
        "3._forward_hooks",
    }
    assert added[1].step == 4
    assert added[1].evidence["hooks"][0].startswith("0.forward (replaced on the instance)")


def _loop(declared: float | None, applied: float | None, steps: int = 4) -> list[Any]:
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    with watch(model, opt, max_grad_norm=declared, sink=MemorySink(), watchdog=False) as mon:
        for _ in range(steps):
            x = torch.randn(16, 8, generator=g) * 10
            opt.zero_grad()
            nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)).backward()  # type: ignore[no-untyped-call]
            if applied is not None:
                nn.utils.clip_grad_norm_(model.parameters(), applied)
            opt.step()
    return [a for a in mon.alerts if a.rule_id.startswith("TWM-GRAD")]


def test_clipping_at_another_threshold_than_declared_is_caught() -> None:
    assert _loop(declared=1.0, applied=1.0) == []
    assert _loop(declared=None, applied=None) == []
    tighter = _loop(declared=1.0, applied=0.1)
    assert [a.rule_id for a in tighter][:1] == ["TWM-GRAD-CLIP"] and tighter[0].step == 0
    undeclared = _loop(declared=None, applied=0.5)
    assert undeclared and undeclared[0].rule_id == "TWM-GRAD-CLIP"
    assert "no clipping was declared" in undeclared[0].message


def test_gradient_set_directly_without_backward_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def replace(optimizer: Any, args: Any, kwargs: Any) -> None:
        last: Any = model[3]
        last.bias.grad = torch.ones_like(last.bias)  # a new tensor, not accumulated

    opt.register_step_pre_hook(replace)
    run = make_run(model, opt)
    run.train(2)
    edit = run.first("TWM-GRAD-EDIT")
    assert "3.bias" in edit.message and edit.step == 0


def test_unused_parameter_with_a_zeroed_gradient_is_clean() -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"used": nn.Linear(8, 1), "unused": nn.Linear(8, 1)})
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 8)
    with watch(model, opt, sink=MemorySink(), watchdog=False) as mon:
        for step in range(4):
            opt.zero_grad(set_to_none=False)
            branch = model["used"] if step else model["unused"]
            branch(x).pow(2).mean().backward()
            opt.step()
    assert [a.rule_id for a in mon.alerts if a.rule_id.startswith("TWM-GRAD")] == []
