"""A real Lightning ``load_from_checkpoint`` under the guard."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import trainwarden
from trainwarden.loading._guard import Guard

from ._payloads import SystemPayload

L = pytest.importorskip("lightning")


class TinyModule(L.LightningModule):  # type: ignore[misc,name-defined]
    def __init__(self, hidden: int = 4, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(hidden, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pl")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    with warnings.catch_warnings():
        # Lightning warns that the DataLoader has no workers and similar; irrelevant here.
        warnings.simplefilter("ignore")
        trainer.fit(TinyModule(hidden=4, lr=0.05), loader)
    path = out / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_load_from_checkpoint_clean_works(checkpoint: Path, guard: Callable[..., Guard]) -> None:
    reference = TinyModule.load_from_checkpoint(checkpoint)
    g = guard(mode="block")
    model = TinyModule.load_from_checkpoint(checkpoint)
    assert not [f for f in g.findings if f.severity >= trainwarden.Severity.HIGH]
    assert model.hparams.lr == 0.05
    assert torch.equal(model.layer.weight, reference.layer.weight)


def test_load_from_poisoned_checkpoint_is_stopped(
    checkpoint: Path, tmp_path: Path, canary: Path, guard: Callable[..., Guard]
) -> None:
    state = torch.load(checkpoint, weights_only=False)
    state["callbacks"] = {"evil": SystemPayload(canary)}
    bad = tmp_path / "poisoned.ckpt"
    torch.save(state, bad)
    guard(mode="block")
    with pytest.raises(trainwarden.UnsafeModelError) as exc:
        TinyModule.load_from_checkpoint(bad)
    assert "poisoned.ckpt" in exc.value.message and "system" in exc.value.message
    assert not canary.exists()
