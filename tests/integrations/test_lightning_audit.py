"""Replay audit of real Lightning fits: recorded by the callback, replayed through the factory
``trainwarden.integrations.lightning.audit_job`` gives (a small regressor built in code, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from trainwarden.audit import AuditError, Job, replay
from trainwarden.integrations.lightning import TrainWardenCallback, audit_job

# Lightning 2.6 still uses torch's deprecated LeafSpec with torch 2.13 (third-party warning).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"
)

STEPS = 8
EVERY = 4
CLIP = 1.0


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss: torch.Tensor = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader() -> torch.utils.data.DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    ds = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    return torch.utils.data.DataLoader(
        ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3)
    )


def replay_job() -> Job:
    """The factory ``trainwarden audit replay --job`` names: one line over the script's parts."""
    return audit_job(Regressor(), loader(), gradient_clip_val=CLIP)


class FlipGradients(pl.Callback):
    """The saboteur: from optimizer step ``at`` on, a hook negates one layer's gradient."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.done = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.at and not self.done:
            self.done = True
            layer = pl_module.get_submodule("net.0")
            assert isinstance(layer, nn.Linear)
            layer.weight.register_hook(lambda g: -g)  # type: ignore[no-untyped-call]


def fit(tmp_path: Path, *extra: pl.Callback) -> Path:
    cb = TrainWardenCallback(sink=tmp_path / "events.jsonl", audit_every=EVERY, code_guard=False)
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=CLIP,
        accumulate_grad_batches=2,
        default_root_dir=str(tmp_path),
        callbacks=[cb, *extra],
    )
    trainer.fit(Regressor(), train_dataloaders=loader())
    return tmp_path / "trainwarden" / "audit"


def events(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


@pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers")
def test_lightning_fit_replays_clean_bitwise(tmp_path: Path) -> None:
    run = fit(tmp_path)
    first = json.loads((run / "steps.jsonl").read_text().splitlines()[0])
    assert len(first["micro"]) == 2
    report = replay(run, replay_job, seed=1, events=events(tmp_path))
    assert [(r.start, r.end, r.status, r.distance) for r in report.intervals] == [
        (0, 4, "reproduced", 0.0),
        (4, 8, "reproduced", 0.0),
    ]
    assert report.findings == ()


@pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers")
def test_flipped_gradient_in_a_lightning_fit_diverges_at_its_step(tmp_path: Path) -> None:
    run = fit(tmp_path, FlipGradients(5))
    first, second = replay(run, replay_job, seed=1).intervals
    assert first.status == "reproduced"
    assert (second.status, second.step, second.where) == ("diverged", 5, "backward")
    assert "net.0.weight" in second.tensors


@pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers")
def test_cli_replays_a_lightning_fit_with_the_integration_factory(tmp_path: Path) -> None:
    run = fit(tmp_path, FlipGradients(2))
    env = dict(os.environ)
    here = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore::FutureWarning",
            "-m",
            "trainwarden",
            "audit",
            "replay",
            str(run),
            "--job",
            "test_lightning_audit:replay_job",
            "--seed",
            "1",
            "--no-attest",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    # The hook stays from step 2 on: both intervals diverge, each at its first step.
    assert [(i["status"], i["step"]) for i in out["intervals"]] == [
        ("diverged", 2),
        ("diverged", 4),
    ]
    assert out["intervals"][0]["where"] == "backward"


def test_factory_refuses_a_scheduler_stepped_per_epoch() -> None:
    class PerEpoch(Regressor):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    with pytest.raises(AuditError, match="every optimizer step"):
        audit_job(PerEpoch(), loader())


class WithLoader(Regressor):
    """The module builds its own training loader (Lightning calls train_dataloader())."""

    def train_dataloader(self) -> Any:
        return loader()


@pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers")
def test_a_module_that_builds_its_own_loader_replays_clean(tmp_path: Path) -> None:
    cb = TrainWardenCallback(sink=tmp_path / "events.jsonl", audit_every=EVERY, code_guard=False)
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=CLIP,
        default_root_dir=str(tmp_path),
        callbacks=[cb],
    )
    module = WithLoader()
    trainer.fit(module)
    assert "train_dataloader" not in vars(module)  # the callback put the method back
    report = replay(tmp_path / "trainwarden" / "audit", replay_job, seed=1)
    assert [r.status for r in report.intervals] == ["reproduced", "reproduced"]
