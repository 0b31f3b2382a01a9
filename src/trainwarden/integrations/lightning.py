"""Lightning callback that runs the TrainWarden training monitor on every optimizer step.

Usage: ``lightning.Trainer(..., callbacks=[TrainWardenCallback()])``. The monitor attaches at
``on_train_start`` to the LightningModule, the trainer's (first) optimizer and its LR
scheduler(s), and closes at ``teardown``; alerts are in ``callback.alerts`` and in the sink.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl

from trainwarden._internal.sink import EventSink
from trainwarden.integrations.hf import unwrap_optimizer, unwrap_scheduler
from trainwarden.monitor.types import Alert

__all__ = ["TrainWardenCallback"]


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

    @property
    def alerts(self) -> list[Alert]:
        """Alerts raised so far (kept after training ended)."""
        return list(self.monitor.alerts) if self.monitor is not None else []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from trainwarden.monitor.core import watch

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
        self.monitor = watch(
            pl_module,
            optimizer,
            scheduler=schedulers or None,
            max_grad_norm=float(clip) if clip and by_norm else None,
            sink=sink,
            fail_closed=self.fail_closed,
            **config,
        )

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
        if self.monitor is not None:
            self.monitor.close()
