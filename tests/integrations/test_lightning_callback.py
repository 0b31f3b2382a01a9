"""TrainWardenCallback in real lightning.Trainer runs on a tiny model built in code (CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from trainwarden.findings import Severity
from trainwarden.integrations.lightning import TrainWardenCallback

# Lightning 2.6 still uses torch's deprecated LeafSpec with torch 2.13 (third-party warning).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss: torch.Tensor = nn.functional.mse_loss(self(x), y)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader() -> torch.utils.data.DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    ds = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    return torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)


def fit(tmp_path: Path, *callbacks: pl.Callback, steps: int = 12, accumulate: int = 1) -> None:
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        accumulate_grad_batches=accumulate,
        default_root_dir=str(tmp_path),
        callbacks=list(callbacks),
    )
    trainer.fit(Regressor(), train_dataloaders=loader())


def test_clean_lightning_run_raises_nothing(tmp_path: Path) -> None:
    cb = TrainWardenCallback(sink=tmp_path / "tw.jsonl")
    fit(tmp_path, cb, accumulate=2)
    assert cb.monitor is not None and cb.monitor.step == 12
    assert [a for a in cb.alerts if a.severity >= Severity.MEDIUM] == []
    assert all(r["loss"] is not None for r in cb.monitor.records)


class EditWeight(pl.Callback):
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == 4:
            layer = pl_module.get_submodule("net.0")
            assert isinstance(layer, nn.Linear)
            with torch.no_grad():
                layer.weight[0, 0] += 0.5


def test_weight_edited_between_steps_is_caught(tmp_path: Path) -> None:
    cb = TrainWardenCallback(sink=tmp_path / "tw.jsonl")
    fit(tmp_path, cb, EditWeight())
    edits = [a for a in cb.alerts if a.rule_id == "TWM-WEIGHT-EDIT"]
    assert edits, cb.alerts
    assert edits[0].step == 4 and "net.0.weight" in edits[0].message
