"""Lightning fit with the TrainWarden callback (tiny regressor built in code, CPU).

    python examples/monitor_lightning.py OUT_DIR [--tamper]

With --tamper, the lr is multiplied behind the scheduler's back before step 4.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from trainwarden.integrations.lightning import TrainWardenCallback


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Tamper(pl.Callback):
    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
        if trainer.global_step == 4:
            trainer.optimizers[0].param_groups[0]["lr"] *= 10


x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), 8)
guard = TrainWardenCallback()  # sink: OUT_DIR/trainwarden/rank0.jsonl
callbacks: list[pl.Callback] = [guard] + ([Tamper()] if "--tamper" in sys.argv else [])
trainer = pl.Trainer(
    max_steps=8,
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    gradient_clip_val=1.0,
    default_root_dir=sys.argv[1],
    callbacks=callbacks,
)
trainer.fit(Regressor(), loader)
print(f"monitored steps: {guard.monitor.step}")
for alert in guard.alerts:
    if alert.severity.name != "INFO":
        print(f"{alert.rule_id} [{alert.severity.name}] step {alert.step}: {alert.message}")
