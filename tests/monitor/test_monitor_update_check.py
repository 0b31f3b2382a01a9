"""Check 3: the update applied by step() is recomputed by an independent reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from trainwarden.findings import Severity

from ._support import Run, mlp, warmup_cosine

UPDATE_RULES = {"TWM-UPDATE-MISMATCH", "TWM-UPDATE-SIGN", "TWM-STATE-MISMATCH"}

SGD_CONFIGS: list[dict[str, Any]] = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    {"momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-3, "maximize": True},
    {"momentum": 0.9, "foreach": False},
    {"momentum": 0.9, "nesterov": True, "foreach": True},
]
ADAM_CONFIGS: list[dict[str, Any]] = [
    {},
    {"weight_decay": 0.1},
    {"amsgrad": True, "weight_decay": 1e-2},
    {"betas": (0.8, 0.95), "eps": 1e-6, "maximize": True},
    {"foreach": False, "amsgrad": True},
    {"fused": True},
]


@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=str)
def test_reference_sgd_matches_torch(make_run: Callable[..., Run], cfg: dict[str, Any]) -> None:
    model = mlp(dropout=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, **cfg)
    run = make_run(model, opt, update_check_fraction=1.0, update_check_elems=1000, clip=1.0)
    run.train(15)
    assert run.serious() == []


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("cfg", ADAM_CONFIGS, ids=str)
def test_reference_adam_matches_torch(
    make_run: Callable[..., Run], cls: type[torch.optim.Adam], cfg: dict[str, Any]
) -> None:
    model = mlp(dropout=0.1)
    opt = cls(model.parameters(), lr=1e-2, **cfg)
    run = make_run(model, opt, sched=warmup_cosine(opt, 3, 15), update_check_fraction=1.0)
    run.train(15)
    assert run.serious() == []


def test_step_patched_to_flip_the_update_sign(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = torch.optim.AdamW.step

    def flipped_step(self: torch.optim.AdamW, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.neg_()
        return original(self, closure)

    monkeypatch.setattr(torch.optim.AdamW, "step", flipped_step)
    model = mlp()
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    run.train(3)
    alert = run.first("TWM-UPDATE-SIGN")
    assert alert.severity == Severity.CRITICAL
    assert alert.step == 1
    ev = alert.evidence
    assert ev["reference"] == "adamw" and ev["param"] in dict(model.named_parameters())
    assert len(ev["expected"]) == len(ev["actual"]) == len(ev["indices"]) > 0


def test_subclass_flipping_the_sign_is_caught(make_run: Callable[..., Run]) -> None:
    class SneakySGD(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(-1.0)
            return super().step(closure)

    model = mlp()
    run = make_run(model, SneakySGD(model.parameters(), lr=0.05, momentum=0.9))
    run.train(2)
    assert run.first("TWM-UPDATE-SIGN").step == 1


def test_step_replaced_after_watch_is_caught(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run = make_run(model, opt)
    run.train(2)
    original = torch.optim.AdamW.step

    def flipped_step(self: torch.optim.AdamW, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.neg_()
        return original(self, closure)

    monkeypatch.setattr(torch.optim.AdamW, "step", flipped_step)
    run.train(2)
    alert = run.first("TWM-CODE-STEP")
    assert alert.severity == Severity.CRITICAL
    assert "flipped_step" in alert.message
    assert alert.step == 2  # at the first forward after the replacement (2 steps done)


def test_instance_step_replaced_after_watch_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = make_run(model, opt)
    run.train(2)
    bound = opt.step

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        return bound(*args, **kwargs)

    opt.step = slow_step  # type: ignore[method-assign]
    run.train(1)
    assert "slow_step" in run.first("TWM-CODE-STEP").message


def test_scheduler_created_after_watch_is_not_tampering(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run = make_run(model, opt)
    run.sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    run.monitor.add_scheduler(run.sched)
    run.train(8)
    assert run.serious() == []


def test_hidden_lr_change_inside_step_is_caught(make_run: Callable[..., Run]) -> None:
    class BoostedAdamW(torch.optim.AdamW):
        def step(self, closure: Any = None) -> Any:
            saved = [g["lr"] for g in self.param_groups]
            for g in self.param_groups:
                g["lr"] = g["lr"] * 3
            try:
                return super().step(closure)
            finally:
                for g, lr in zip(self.param_groups, saved, strict=True):
                    g["lr"] = lr

    model = mlp()
    run = make_run(model, BoostedAdamW(model.parameters(), lr=1e-2))
    run.train(3)
    alert = run.first("TWM-UPDATE-MISMATCH")
    assert alert.step == 1 and alert.severity == Severity.HIGH
    assert alert.evidence["hyperparameters"]["lr"] == pytest.approx(1e-2)
    assert "TWM-HP-INSTEP" not in run.rules()


def test_lr_left_changed_by_step_is_caught_as_in_step_change(make_run: Callable[..., Run]) -> None:
    class DriftingSGD(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            out = super().step(closure)
            self.param_groups[0]["lr"] *= 1.01
            return out

    model = mlp()
    run = make_run(model, DriftingSGD(model.parameters(), lr=0.05))
    run.train(2)
    alert = run.first("TWM-HP-INSTEP")
    assert alert.evidence["key"] == "lr" and alert.step == 1


def test_hidden_weight_decay_is_caught(make_run: Callable[..., Run]) -> None:
    class DecayingSGD(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            out = super().step(closure)
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.mul_(1 - 1e-3)
            return out

    model = mlp()
    run = make_run(model, DecayingSGD(model.parameters(), lr=0.05, momentum=0.9))
    run.train(2)
    assert run.first("TWM-UPDATE-MISMATCH").step == 1


def test_hidden_gradient_scaling_is_caught(make_run: Callable[..., Run]) -> None:
    class ClippingAdam(torch.optim.Adam):
        def step(self, closure: Any = None) -> Any:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(0.25)
            return super().step(closure)

    model = mlp()
    run = make_run(model, ClippingAdam(model.parameters(), lr=1e-2))
    run.train(3)
    # Adam is scale invariant at step 1 (m/sqrt(v)); the second moment gives it away.
    assert {"TWM-UPDATE-MISMATCH", "TWM-STATE-MISMATCH"} & set(run.rules())
    assert min(a.step for a in run.monitor.alerts if a.rule_id in UPDATE_RULES) == 1


def test_hidden_beta_change_is_caught(make_run: Callable[..., Run]) -> None:
    class ForgetfulAdamW(torch.optim.AdamW):
        def step(self, closure: Any = None) -> Any:
            saved = [g["betas"] for g in self.param_groups]
            for g in self.param_groups:
                g["betas"] = (0.5, 0.9)
            try:
                return super().step(closure)
            finally:
                for g, b in zip(self.param_groups, saved, strict=True):
                    g["betas"] = b

    model = mlp()
    run = make_run(model, ForgetfulAdamW(model.parameters(), lr=1e-2))
    run.train(3)
    assert {"TWM-UPDATE-MISMATCH", "TWM-STATE-MISMATCH"} & set(run.rules())


def test_missing_clipping_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    run.monitor.max_grad_norm = 1e-3  # the loop below does not clip at all
    run.train(2)
    alert = run.first("TWM-CLIP-MISSING")
    assert alert.step == 0 and alert.evidence["grad_norm"] > 1e-3


def test_unknown_optimizer_disables_check_with_one_note(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.RMSprop(model.parameters(), lr=1e-3))
    run.train(5)
    notes = [a for a in run.monitor.alerts if a.evidence.get("check") == "update-check"]
    assert len(notes) == 1 and notes[0].severity == Severity.INFO
    assert "RMSprop" in notes[0].message
    assert run.serious() == []
