"""In-process sabotage that a replay audit must catch, each a realistic version of threat T3/T6.

Every attack here runs inside the training process, where it could also blind any in-process
check; :func:`train` runs the drill job with one of them under an :class:`AuditRecorder`, and the
replay, run elsewhere, must say where the run diverged. ``ATTACKS`` maps a name to its builder and
to where the replay should first see it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainwarden._internal.sink import EventSink
from trainwarden.audit import AuditRecorder, Job

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackSpec",
    "reverse_gradients_at",
    "rewrite_step_record",
    "train",
    "undo",
]

# Called before every optimizer step with the job and the step about to run.
Attack = Callable[[Job, int], None]


@dataclass(frozen=True)
class AttackSpec:
    """An attack builder (``start`` step -> attack) and the replay verdict it must produce."""

    build: Callable[[int], Attack]
    where: str
    what: str


def _once(start: int, act: Callable[[Job], None]) -> Attack:
    def attack(job: Job, step: int) -> None:
        if step == start:
            act(job)

    return attack


def _first_weight(job: Job) -> torch.Tensor:
    w: torch.Tensor = next(p for n, p in job.model.named_parameters() if n.endswith("mlp.0.weight"))
    return w


def _hook(job: Job, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    _first_weight(job).register_hook(fn)  # type: ignore[no-untyped-call]


def reverse_gradients(start: int) -> Attack:
    """A tensor hook that negates one layer's gradient (looks like ordinary loss noise)."""
    return _once(start, lambda job: _hook(job, lambda g: -g))


def reverse_gradients_at(steps: set[int]) -> Attack:
    """Negate one layer's gradient during exactly the given steps, and at no other."""
    handles: list[Any] = []

    def attack(job: Job, step: int) -> None:
        while handles:
            handles.pop().remove()
        if step in steps:
            handles.append(_first_weight(job).register_hook(lambda g: -g))  # type: ignore[no-untyped-call]

    return attack


def rescale_gradients(start: int) -> Attack:
    """A tensor hook that shrinks one layer's gradient to a tenth."""
    return _once(start, lambda job: _hook(job, lambda g: g * 0.1))


def spare_sampled_update(start: int) -> Attack:
    """A patched optimizer step that restores a few weight elements an auditor might sample."""

    def act(job: Job) -> None:
        opt = job.optimizer
        original = opt.step
        w = _first_weight(job)

        def step(*a: Any, **k: Any) -> Any:
            before = w.detach()[:2].clone()
            out = original(*a, **k)
            with torch.no_grad():
                w[:2] = before
            return out

        opt.step = step

    return _once(start, act)


def patch_functional_optimizer(start: int) -> Attack:
    """Patch torch's functional Adam/AdamW (``torch.optim.adam.adam``, which the optimizer's
    ``step`` looks up at every call) so that every hundredth element of each parameter keeps its
    old value: the optimizer object, its hooks and its ``step`` method are untouched.

    The returned attack has ``undo()``, which puts the original function back (``train`` calls
    it when the run ends).
    """
    import torch.optim.adam as adam_module

    original = adam_module.adam

    def act(job: Job) -> None:
        own = {id(p) for p in job.model.parameters()}

        def adam(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> Any:
            if not params or id(params[0]) not in own:
                return original(params, *args, **kwargs)
            spared = [p.detach().reshape(-1)[::100].clone() for p in params]
            out = original(params, *args, **kwargs)
            with torch.no_grad():
                for p, old in zip(params, spared, strict=True):
                    p.view(-1)[::100] = old
            return out

        adam_module.adam = adam

    attack = _once(start, act)

    def undo() -> None:
        adam_module.adam = original

    attack.undo = undo  # type: ignore[attr-defined]
    return attack


def undo(attack: Attack | None) -> None:
    """Take back what an attack patched process-wide (a no-op for most attacks)."""
    fn = getattr(attack, "undo", None)
    if fn is not None:
        fn()


def edit_weights_in_forward(start: int) -> Attack:
    """Add a delta to a weight for the forward only, and take it out again afterwards."""

    def act(job: Job) -> None:
        block = next(m for n, m in job.model.named_modules() if n.endswith("mlp.0"))

        # Through .data, so autograd's version counter does not notice the edit.
        def pre(m: Any, _inp: Any) -> None:
            m.weight.data.add_(0.01)

        def post(m: Any, _inp: Any, _out: Any) -> None:
            m.weight.data.sub_(0.01)

        block.register_forward_pre_hook(pre)
        block.register_forward_hook(post)

    return _once(start, act)


def raise_dropout(start: int) -> Attack:
    """Quietly raise every dropout probability."""

    def act(job: Job) -> None:
        for m in job.model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.5

    return _once(start, act)


def tamper_schedule(start: int) -> Attack:
    """Scale the scheduler's base learning rates so the reported lr stays self-consistent."""

    def act(job: Job) -> None:
        sched = job.scheduler
        if sched is None:
            return
        sched.base_lrs = [lr * 3 for lr in sched.base_lrs]
        sched.step()  # the lr the next step uses now comes from the inflated base

    return _once(start, act)


def flip_samples(start: int) -> Attack:
    """Corrupt every fourth character of the training data in memory (what the loader serves)."""

    def act(job: Job) -> None:
        data = job.dataset.data
        vocab = int(job.dataset.vocab_size)
        data[::4] = (data[::4] + 1) % vocab

    return _once(start, act)


def reseed_every_step(start: int) -> Attack:
    """Reset the global RNG to one fixed seed before every step (dropout masks repeat)."""

    def attack(job: Job, step: int) -> None:
        if step >= start:
            torch.manual_seed(0)

    return attack


ATTACKS: dict[str, AttackSpec] = {
    "reverse-gradients": AttackSpec(reverse_gradients, "backward", "gradient hook negates"),
    "rescale-gradients": AttackSpec(rescale_gradients, "backward", "gradient hook rescales"),
    "spare-sampled-update": AttackSpec(
        spare_sampled_update, "update", "patched optimizer spares elements"
    ),
    "patch-functional-optimizer": AttackSpec(
        patch_functional_optimizer, "update", "functional Adam patched to spare elements"
    ),
    "edit-weights-in-forward": AttackSpec(
        edit_weights_in_forward, "forward", "weights edited for the forward, then restored"
    ),
    "raise-dropout": AttackSpec(raise_dropout, "forward", "dropout probability raised"),
    "tamper-schedule": AttackSpec(tamper_schedule, "hyperparameters", "scheduler base lr edited"),
    "flip-samples": AttackSpec(flip_samples, "data", "training samples altered in memory"),
    "reseed-every-step": AttackSpec(reseed_every_step, "rng", "RNG reset every step"),
}


def rewrite_step_record(run_dir: Path, step: int, **changes: Any) -> None:
    """After the run: change fields of one step record and recompute the hash chain after it,
    as a saboteur editing the evidence would (only the event log's copy shows the rewrite)."""
    from trainwarden.audit._recorder import chain_hash

    path = run_dir / "steps.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[step].update(changes)
    prev = recs[step - 1]["hash"] if step else "0" * 64
    for r in recs[step:]:
        r["prev"] = prev
        r["hash"] = chain_hash(r)
        prev = r["hash"]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def train(
    job: Job,
    run_dir: Path,
    *,
    steps: int,
    audit_every: int,
    attack: Attack | None = None,
    batch_size: int = 8,
    sink: EventSink | None = None,
    sign_key: Any | None = None,
    activation_every: int = 1,
) -> list[float]:
    """Train ``job`` for ``steps`` recorded steps, applying ``attack`` before each; the losses."""
    losses = []
    with AuditRecorder(
        job,
        run_dir,
        audit_every=audit_every,
        sink=sink,
        sign_key=sign_key,
        activation_every=activation_every,
    ) as rec:
        batches = iter(rec.loader(batch_size, seed=7))
        try:
            for s in range(steps):
                if attack is not None:
                    attack(job, s)
                losses.append(rec.step([next(batches)]))
        finally:
            undo(attack)
    return losses
