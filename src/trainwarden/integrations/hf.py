"""Hugging Face ``Trainer`` callback that runs the TrainWarden training monitor on every step.

Usage: ``Trainer(..., callbacks=[TrainWardenCallback()])``. The monitor attaches at
``on_train_begin`` (after the Trainer created its optimizer and LR scheduler) and closes at
``on_train_end``; alerts are in ``callback.monitor.alerts`` and in the sink.
With ``audit_every=K`` it also records the run for ``trainwarden audit replay`` (default
directory ``<output_dir>/trainwarden/audit``); :func:`audit_job` gives the replay's factory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainwarden._internal.sink import EventSink
from trainwarden.audit._types import Job
from trainwarden.monitor._types import Alert, MonitorError

__all__ = ["TrainWardenCallback", "audit_job", "unwrap_optimizer", "unwrap_scheduler"]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """Return the torch optimizer inside wrappers (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``): the monitor hooks the optimizer that really steps."""
    seen = 0
    opt = optimizer
    while seen < 8:
        inner = getattr(opt, "optimizer", None) or getattr(opt, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is opt:
            break
        opt, seen = inner, seen + 1
    if not isinstance(opt, torch.optim.Optimizer):
        raise MonitorError(
            f"cannot monitor optimizer of type {type(optimizer).__name__}: "
            "it is not (and does not wrap) a torch.optim.Optimizer"
        )
    return opt


def unwrap_scheduler(scheduler: Any) -> Any:
    """Return the LR scheduler inside accelerate's ``AcceleratedScheduler`` (or the argument)."""
    inner = getattr(scheduler, "scheduler", None)
    if inner is not None and hasattr(inner, "get_last_lr"):
        return inner
    return scheduler


def audit_job(trainer: Any) -> Job:
    """The replay :class:`~trainwarden.audit.Job` of a ``Trainer`` built by the job's own code.

    Return it from the factory that ``trainwarden audit replay --job`` names::

        def replay_job():
            return audit_job(make_trainer())   # the function the training script calls

    The optimizer and LR scheduler come from the Trainer's own ``create_optimizer_and_scheduler``
    (for the number of steps its ``train()`` would plan), the dataset and collator from its
    training DataLoader, and each micro-batch's forward and backward from its
    ``training_step`` with the accumulated step's ``num_items_in_batch``, so a clean run replays
    bitwise on the recording build. Single process, no DeepSpeed or FSDP, no AMP loss scaling.
    """
    loader = trainer.get_train_dataloader()
    base = getattr(loader, "base_dataloader", loader)
    args = trainer.args
    max_steps = trainer.set_initial_training_values(args, loader)[-1]
    trainer.create_optimizer_and_scheduler(num_training_steps=max_steps)
    device = args.device

    def micro_step(model: Any, batches: Sequence[Any], i: int) -> Any:
        trainer.current_gradient_accumulation_steps = len(batches)
        num_items = trainer._get_num_items_in_batch(list(batches), device)
        return trainer.training_step(model, batches[i], num_items)

    def loss_fn(model: Any, batch: Any) -> Any:
        return trainer.compute_loss(model, trainer._prepare_inputs(batch))

    max_norm = float(args.max_grad_norm) if args.max_grad_norm else 0.0
    return Job(
        model=trainer.model,
        optimizer=unwrap_optimizer(trainer.optimizer),
        dataset=base.dataset,
        loss_fn=loss_fn,
        scheduler=unwrap_scheduler(trainer.lr_scheduler),
        collate_fn=base.collate_fn,
        max_grad_norm=max_norm if max_norm > 0 else None,
        micro_step=micro_step,
    )


class TrainWardenCallback(TrainerCallback):
    """Attach ``trainwarden.watch`` to the Trainer's model, optimizer and scheduler.

    ``sink``: an EventSink or a JSONL path; default ``<output_dir>/trainwarden/rank<N>.jsonl``.
    ``fail_closed=True`` makes detected tampering raise ``TamperingDetected`` out of
    ``trainer.train()`` at the next step boundary. Other keyword arguments are monitor settings
    (see ``MonitorConfig``). Gradient accumulation needs nothing: the monitor checks weights at
    every micro-batch's forward and the update once per optimizer step. The loss is taken from
    the model's output (``ModelOutput.loss``); when the model computes none (a custom
    ``compute_loss``), the logged training loss is used instead.
    """

    def __init__(
        self,
        *,
        sink: EventSink | str | os.PathLike[str] | None = None,
        fail_closed: bool = False,
        **config: Any,
    ) -> None:
        self.sink = sink
        self.fail_closed = fail_closed
        self.config = config
        self.monitor: Any = None

    @property
    def alerts(self) -> list[Alert]:
        """Alerts raised so far (kept after training ended)."""
        return list(self.monitor.alerts) if self.monitor is not None else []

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        from trainwarden.monitor._core import watch

        model = kwargs.get("model")
        optimizer = kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise MonitorError(
                "TrainWardenCallback.on_train_begin got no model/optimizer from the Trainer",
                hint="use it as Trainer(callbacks=[TrainWardenCallback()])",
            )
        if self.monitor is not None:
            self.monitor.close()
        sink = self.sink
        if sink is None:
            rank = int(os.environ.get("RANK", "0"))
            sink = os.path.join(args.output_dir or ".", "trainwarden", f"rank{rank}.jsonl")
        scheduler = kwargs.get("lr_scheduler")
        max_norm = float(args.max_grad_norm) if args.max_grad_norm else None
        config = dict(self.config)
        if config.get("audit_every") is not None and config.get("audit_dir") is None:
            config["audit_dir"] = os.path.join(args.output_dir or ".", "trainwarden", "audit")
        self.monitor = watch(
            model,
            unwrap_optimizer(optimizer),
            scheduler=unwrap_scheduler(scheduler) if scheduler is not None else None,
            max_grad_norm=max_norm if max_norm and max_norm > 0 else None,
            sink=sink,
            fail_closed=self.fail_closed,
            **config,
        )
        if self.monitor.audit is not None:
            loader = kwargs.get("train_dataloader")
            if loader is None:
                raise MonitorError(
                    "the Trainer passed no train_dataloader: the audit cannot record batches"
                )
            self.monitor.audit.track(loader)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.monitor is None or not logs or "loss" not in logs:
            return
        last = self.monitor.records[-1] if self.monitor.records else None
        if last is not None and last.get("loss") is None:
            # The model's outputs carried no loss: feed the logged one to the numerics check.
            self.monitor.observe_loss(float(logs["loss"]))

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.monitor is not None:
            self.monitor.close()
