"""State the weight and update checks do not see, attacked by someone who read them.

The lr stays equal to the scheduler's ``get_last_lr()`` in every scheduler attack (the scheduler
itself is what is changed), reseeding goes through the generator objects rather than the
wrapped functions, and module settings are changed on the module, not through any hook.
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from trainwarden.findings import Severity

from ._support import Run, TinyGPT, mlp, warmup_cosine


def _adam_run(make_run: Callable[..., Run], **kw: Any) -> Run:
    model = mlp(dropout=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return make_run(model, opt, sched=warmup_cosine(opt, 5, 60), **kw)


def _serious_rules(run: Run) -> list[str]:
    return [a.rule_id for a in run.serious()]


def _sched_attack(at: int, edit: Callable[[Any], None]) -> Callable[[int, Any, Any], None]:
    def attack(step: int, model: Any, opt: Any) -> None:
        if step == at:
            sched = run_sched[0]
            edit(sched)
            # Keep the optimizer's lr consistent with the tampered scheduler, as an attacker
            # who read the hyperparameter check would.
            for g, lr in zip(opt.param_groups, sched.get_last_lr(), strict=True):
                g["lr"] = lr

    return attack


run_sched: list[Any] = []


def _skip_ahead_with_count(sched: Any) -> None:
    sched.last_epoch += 40
    sched._step_count += 40


def _extra_steps(sched: Any) -> None:
    for _ in range(3):
        sched.step()


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.base_lrs.__setitem__(0, s.base_lrs[0] * 10),
        lambda s: s.lr_lambdas.__setitem__(0, lambda e: 1.0),
        lambda s: setattr(s, "last_epoch", s.last_epoch + 40),
        lambda s: _skip_ahead_with_count(s),
        lambda s: _extra_steps(s),
    ],
    ids=["base_lrs", "lambda", "last_epoch", "last_epoch_and_count", "extra_steps"],
)
def test_scheduler_internals_tampered_with_a_consistent_lr_are_caught(
    make_run: Callable[..., Run], edit: Callable[[Any], None]
) -> None:
    run = _adam_run(make_run)
    run_sched[:] = [run.sched]
    run.train(12, attack=_sched_attack(6, edit))
    alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-SCHED-STATE"]
    assert alerts and alerts[0].step == 7 and alerts[0].severity == Severity.HIGH
    assert "TWM-HP-CHANGE" not in _serious_rules(run)  # the lr itself looked explained


def test_lambda_whose_closure_state_is_edited_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = {"warmup": 5}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: min(1.0, (e + 1) / cfg["warmup"]))
    run = make_run(model, opt, sched=sched)
    run.train(10, attack=lambda step, *_: cfg.__setitem__("warmup", 500) if step == 3 else None)
    assert "TWM-SCHED-STATE" in _serious_rules(run)
    first = next(a for a in run.monitor.alerts if a.rule_id == "TWM-SCHED-STATE")
    assert first.step == 4


def test_lambda_that_changes_only_far_ahead_is_caught_by_the_probes(
    make_run: Callable[..., Run],
) -> None:
    # The closure and code stay the same objects; the function reads a global-free mutable
    # object only for epochs the run has not reached: the secret probes evaluate those.
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    class Plan:
        late = 1.0

        def __call__(self, e: int) -> float:
            return 1.0 if e < 500 else self.late

    plan = Plan()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, plan)
    run = make_run(model, opt, sched=sched)
    run.train(40, attack=lambda step, *_: setattr(plan, "late", 50.0) if step == 2 else None)
    assert "TWM-SCHED-STATE" in _serious_rules(run)


@pytest.mark.parametrize(
    "reseed",
    [
        lambda: torch.default_generator.manual_seed(1234),
        lambda: torch.default_generator.set_state(torch.Generator().manual_seed(9).get_state()),
    ],
    ids=["generator_manual_seed", "generator_set_state_same_every_step"],
)
def test_reseeding_through_the_generator_object_every_step_is_caught(
    make_run: Callable[..., Run], reseed: Callable[[], None]
) -> None:
    run = _adam_run(make_run)
    run.train(10, attack=lambda step, *_: reseed() if step >= 4 else None)
    rules = _serious_rules(run)
    assert "TWM-RNG-STUCK" in rules or "TWM-RNG-RESEED" in rules, run.monitor.alerts
    first = min(
        a.step for a in run.monitor.alerts if a.rule_id in ("TWM-RNG-STUCK", "TWM-RNG-RESEED")
    )
    assert first <= 6  # the second reseeded step at the latest: stuck needs two equal states


def test_reseed_to_a_new_seed_through_the_generator_object_is_caught(
    make_run: Callable[..., Run],
) -> None:
    run = _adam_run(make_run)

    def attack(step: int, *_: Any) -> None:
        if step == 4:
            torch.default_generator.manual_seed(step)

    run.train(8, attack=attack)
    reseeds = [a for a in run.monitor.alerts if a.rule_id == "TWM-RNG-RESEED"]
    assert reseeds and reseeds[0].step == 5 and reseeds[0].evidence["generator"] == "torch"


@pytest.mark.parametrize(
    "restore",
    [
        lambda st: random.setstate(st["random"]),
        lambda st: np.random.mtrand._rand.set_state(st["numpy"]),
    ],
    ids=["random_instance", "numpy_randomstate"],
)
def test_python_and_numpy_generators_held_still_are_caught(
    make_run: Callable[..., Run], restore: Callable[[dict[str, Any]], None]
) -> None:
    # A loop that draws from random and numpy every step (augmentation); the attacker restores
    # their state every step so the "random" choices repeat.
    saved: dict[str, Any] = {}

    def attack(step: int, *_: Any) -> None:
        random.random()  # noqa: S311 -- the loop draws from the global RNG (augmentation)
        np.random.random()
        if step == 12:
            saved["random"], saved["numpy"] = random.getstate(), np.random.get_state()
        if step > 12:
            restore(saved)

    run = _adam_run(make_run)
    run.train(18, attack=attack)
    assert "TWM-RNG-STUCK" in _serious_rules(run) or "TWM-RNG-REWIND" in _serious_rules(run)


@pytest.mark.parametrize(
    ("target", "edit"),
    [
        ("3.p", lambda m: setattr(m[3], "p", 0.0)),
        ("1.eps", lambda m: setattr(m[1], "eps", 1e-1)),
        ("1.momentum", lambda m: setattr(m[1], "momentum", 0.9)),
    ],
    ids=["dropout_p", "norm_eps", "norm_momentum"],
)
def test_module_settings_changed_mid_training_are_caught(
    make_run: Callable[..., Run], target: str, edit: Callable[[Any], None]
) -> None:
    model = mlp(dropout=0.1, batchnorm=True)
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    run.train(6, attack=lambda step, m, _: edit(m) if step == 2 else None)
    alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-MODULE-CONFIG"]
    assert alerts and alerts[0].step == 3 and target in alerts[0].evidence["keys"][0]


def test_dropout_switched_to_eval_for_training_forwards_is_caught(
    make_run: Callable[..., Run],
) -> None:
    model = mlp(dropout=0.3, batchnorm=True)
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    run.train(6, attack=lambda step, m, _: m[3].eval() if step == 2 else None)
    alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-MODULE-MODE"]
    assert alerts and alerts[0].step == 3 and "3 train -> eval" in alerts[0].evidence["changed"]


def test_evaluation_between_steps_and_a_gpt_raise_nothing(make_run: Callable[..., Run]) -> None:
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    run = make_run(model, opt, sched=warmup_cosine(opt, 4, 30), gpt=True)

    def evaluate(step: int, m: Any, _: Any) -> None:
        if step % 5 == 4:
            m.eval()
            with torch.no_grad():
                m(torch.randint(0, 64, (2, 16)))
            m.train()

    run.train(20, attack=evaluate)
    assert run.serious() == []


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    "target",
    [
        "torch.optim.adam._single_tensor_adam",
        "torch._foreach_add_",
        "torch.nn.functional.dropout",
        "torch.Tensor.backward",
        "torch.optim.lr_scheduler.LambdaLR.get_lr",
        "torch.utils.data.sampler.RandomSampler.__iter__",
        "trainwarden.attest._code_guard.CodeGuard.check",
    ],
)
def test_code_guard_covers_kernels_schedulers_dropout_backward_and_itself(
    make_run: Callable[..., Run], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = make_run(model, opt, code_guard=True, code_guard_every=1)
    run.train(2)
    owner_path, _, attr = target.rpartition(".")
    parts = owner_path.split(".")
    used = max(i for i in range(1, len(parts) + 1) if _importable(".".join(parts[:i])))
    owner: Any = importlib.import_module(".".join(parts[:used]))
    for p in parts[used:]:
        owner = getattr(owner, p)
    original = getattr(owner, attr)

    def wrapper(*a: Any, **k: Any) -> Any:
        return original(*a, **k)

    monkeypatch.setattr(owner, attr, wrapper)
    run.train(2)
    code = [a for a in run.monitor.alerts if a.rule_id in ("TWM-CODE", "TWM-MONITOR-TAMPERED")]
    assert code, run.monitor.alerts
    assert code[0].severity == Severity.CRITICAL
    assert any(attr in a.message or attr in str(a.evidence) for a in code)
    assert math.isfinite(run.monitor.step)


def test_code_guard_check_replaced_by_a_no_op_is_named(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainwarden.attest._code_guard import CodeGuard

    model = mlp()
    run = make_run(model, torch.optim.Adam(model.parameters(), lr=1e-3), code_guard=True)
    run.train(2)
    monkeypatch.setattr(CodeGuard, "check", lambda self: [])
    run.train(1)
    code = [a for a in run.monitor.alerts if a.rule_id == "TWM-CODE"]
    assert code and code[0].step == 3 and code[0].severity == Severity.CRITICAL
    assert "CodeGuard.check was replaced" in code[0].message
