"""Lightning callback that runs the TrainWarden training monitor on every optimizer step.

Usage: ``lightning.Trainer(..., callbacks=[TrainWardenCallback()])``. The monitor attaches at
``on_train_start`` to the LightningModule, the trainer's (first) optimizer and its LR
scheduler(s), and closes at ``teardown``; alerts are in ``callback.alerts`` and in the sink.
With ``audit_every=K`` it also records the run for ``trainwarden audit replay`` (default
directory ``<default_root_dir>/trainwarden/audit``); :func:`audit_job` gives the replay's factory.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import lightning.pytorch as pl
import torch

from trainwarden._internal.sink import EventSink
from trainwarden.audit._types import AuditError, Job
from trainwarden.integrations.hf import unwrap_optimizer, unwrap_scheduler
from trainwarden.monitor._types import Alert

__all__ = ["TrainWardenCallback", "audit_job"]


def audit_job(
    module: pl.LightningModule,
    train_dataloader: torch.utils.data.DataLoader[Any],
    *,
    gradient_clip_val: float | None = None,
) -> Job:
    """The replay :class:`~trainwarden.audit.Job` of a LightningModule and its training loader.

    Return it from the factory that ``trainwarden audit replay --job`` names::

        def replay_job():
            return audit_job(MyModule(), make_loader(), gradient_clip_val=1.0)

    built by the same code as the fit (pass the Trainer's ``gradient_clip_val``; clipping by
    norm only). The optimizer and scheduler come from ``configure_optimizers()`` called without
    a Trainer: one optimizer, and at most one scheduler stepped every optimizer step
    (``{"scheduler": s, "interval": "step"}``); anything else is refused. The loss of a
    micro-batch is what ``training_step(batch, 0)`` returns (``self.log`` calls do nothing in
    the replay); Lightning divides it by ``accumulate_grad_batches`` as the replay does.
    """
    conf = module.configure_optimizers()
    optimizer, scheduler = _one_optimizer(conf)

    def loss_fn(model: Any, batch: Any) -> Any:
        with warnings.catch_warnings():
            # Outside a Trainer, self.log() warns and does nothing: the replay needs no logs.
            warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)`")
            out = model.training_step(batch, 0)
        return out["loss"] if isinstance(out, dict) else out

    return Job(
        model=module,
        optimizer=optimizer,
        dataset=train_dataloader.dataset,
        loss_fn=loss_fn,
        scheduler=scheduler,
        collate_fn=train_dataloader.collate_fn,
        max_grad_norm=float(gradient_clip_val) if gradient_clip_val else None,
    )


def _one_optimizer(conf: Any) -> tuple[torch.optim.Optimizer, Any]:
    sched: Any = None
    if isinstance(conf, torch.optim.Optimizer):
        return conf, None
    if isinstance(conf, dict) and isinstance(conf.get("optimizer"), torch.optim.Optimizer):
        opt, sched = conf["optimizer"], conf.get("lr_scheduler")
    elif (
        isinstance(conf, (list, tuple))
        and len(conf) == 2
        and all(isinstance(c, (list, tuple)) for c in conf)
        and len(conf[0]) == 1
        and len(conf[1]) <= 1
    ):
        opt, sched = conf[0][0], (conf[1][0] if conf[1] else None)
    else:
        raise AuditError(
            "configure_optimizers() must return one optimizer, optionally with one scheduler, "
            "for the replay audit",
            hint='return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "step"}}',
        )
    if sched is None:
        return opt, None
    if isinstance(sched, dict):
        if sched.get("interval", "epoch") != "step" or sched.get("frequency", 1) != 1:
            raise AuditError(
                "the replay audit steps the LR scheduler after every optimizer step",
                hint='configure it with "interval": "step" (and frequency 1)',
            )
        return opt, sched["scheduler"]
    raise AuditError(
        "a bare scheduler from configure_optimizers() is stepped every epoch; the replay audit "
        "steps it after every optimizer step",
        hint='return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "step"}}',
    )


class TrainWardenCallback(pl.Callback):
    """Attach ``trainwarden.watch`` to a Lightning fit.

    ``sink``: an EventSink or a JSONL path; default ``<trainer.default_root_dir>/trainwarden/
    rank<N>.jsonl``. ``fail_closed=True`` makes detected tampering raise ``TamperingDetected``
    out of ``trainer.fit()``. Other keyword arguments are monitor settings (``MonitorConfig``).
    With several optimizers only the first is monitored (one monitor per optimizer is the
    monitor's model). The loss returned by ``training_step`` is passed to the numerics check.

    Lightning runs forward and backward inside ``optimizer.step(closure)``; the monitor handles
    closure-based steps itself, so Lightning's loop is left exactly as it is.
    """

    def __init__(
        self,
        *,
        sink: EventSink | str | os.PathLike[str] | None = None,
        fail_closed: bool = False,
        **config: Any,
    ) -> None:
        super().__init__()
        self.sink = sink
        self.fail_closed = fail_closed
        self.config = config
        self.monitor: Any = None
        self._restore: tuple[Any, str] | None = None

    @property
    def alerts(self) -> list[Alert]:
        """Alerts raised so far (kept after training ended)."""
        return list(self.monitor.alerts) if self.monitor is not None else []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.config.get("audit_every") is None and self.config.get("audit_dir") is None:
            return
        # Lightning creates the training loader's iterator, and prefetches from it, before
        # on_train_start: the batches are tracked from here, the recorder adopts them there.
        from trainwarden.audit._hooks import pretrack

        source = trainer.fit_loop._data_source
        inst = source.instance
        if isinstance(inst, torch.utils.data.DataLoader):
            pretrack(inst)
        elif isinstance(inst, (pl.LightningModule, pl.LightningDataModule)):
            make = getattr(inst, source.name)

            def tracked() -> Any:
                return pretrack(make())

            object.__setattr__(inst, source.name, tracked)
            self._restore = (inst, source.name)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from trainwarden.monitor._core import watch

        if not trainer.optimizers:
            return
        if self.monitor is not None:
            self.monitor.close()
        optimizer = unwrap_optimizer(trainer.optimizers[0])
        schedulers = [
            unwrap_scheduler(cfg.scheduler)
            for cfg in trainer.lr_scheduler_configs
            if getattr(unwrap_scheduler(cfg.scheduler), "optimizer", None) is optimizer
        ]
        sink = self.sink
        if sink is None:
            sink = os.path.join(
                trainer.default_root_dir, "trainwarden", f"rank{trainer.global_rank}.jsonl"
            )
        clip = trainer.gradient_clip_val
        by_norm = trainer.gradient_clip_algorithm in (None, "norm")
        config = dict(self.config)
        if clip and not by_norm:
            # Clipping by value is not one uniform factor: the gradient source check cannot
            # tell it from an edit, so it is off (the hook inventory and update check remain).
            config.setdefault("grad_source_check", False)
        if config.get("audit_every") is not None and config.get("audit_dir") is None:
            config["audit_dir"] = os.path.join(trainer.default_root_dir, "trainwarden", "audit")
        self.monitor = watch(
            pl_module,
            optimizer,
            scheduler=schedulers or None,
            max_grad_norm=float(clip) if clip and by_norm else None,
            sink=sink,
            fail_closed=self.fail_closed,
            **config,
        )
        if self.monitor.audit is not None:
            self.monitor.audit.track(trainer.train_dataloader)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and hasattr(loss, "detach"):
            self.monitor.observe_loss(loss)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        restore, self._restore = self._restore, None
        if restore is not None:
            inst, name = restore
            if name in vars(inst):
                delattr(inst, name)
        if self.monitor is not None:
            self.monitor.close()
