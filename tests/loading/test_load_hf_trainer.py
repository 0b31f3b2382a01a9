"""A real Hugging Face Trainer resuming from a checkpoint folder under the guard."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import trainwarden
from trainwarden.loading._guard import Guard

from ._payloads import SystemPayload

transformers = pytest.importorskip("transformers")


class _Dataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 32, (16, 8), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(out: Path, max_steps: int) -> Any:
    config = transformers.GPT2Config(
        vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2, n_inner=32
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=_Dataset())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint folder written by Trainer after 2 steps."""
    out = tmp_path_factory.mktemp("hf")
    _trainer(out, 2).train()
    ckpt = out / "checkpoint-2"
    assert (ckpt / "rng_state.pth").exists() and (ckpt / "optimizer.pt").exists()
    return ckpt


def _poisoned(checkpoint: Path, tmp_path: Path, member: str, canary: Path) -> Path:
    bad = tmp_path / "checkpoint-2"
    shutil.copytree(checkpoint, bad)
    state = torch.load(bad / member, weights_only=False)
    state["extra"] = SystemPayload(canary)
    torch.save(state, bad / member)
    return bad


@pytest.mark.parametrize("member", ["rng_state.pth", "optimizer.pt"])
def test_resume_from_poisoned_checkpoint_is_stopped(
    checkpoint: Path,
    tmp_path: Path,
    canary: Path,
    guard: Callable[..., Guard],
    member: str,
) -> None:
    bad = _poisoned(checkpoint, tmp_path, member, canary)
    trainer = _trainer(tmp_path / "resume", 4)
    guard(mode="block")
    with pytest.raises(trainwarden.UnsafeModelError) as exc:
        trainer.train(resume_from_checkpoint=str(bad))
    assert member in exc.value.message and "system" in exc.value.message
    assert not canary.exists()


def test_clean_resume_works_unchanged_under_the_guard(
    checkpoint: Path, tmp_path: Path, guard: Callable[..., Guard]
) -> None:
    g = guard(mode="block")
    trainer = _trainer(tmp_path / "resume", 4)
    result = trainer.train(resume_from_checkpoint=str(checkpoint))
    assert result.global_step == 4
    assert not [f for f in g.findings if f.severity >= trainwarden.Severity.HIGH]


def test_every_pickle_file_of_the_checkpoint_loads_like_torch_load(checkpoint: Path) -> None:
    files = sorted(p for p in checkpoint.iterdir() if p.suffix in {".pt", ".pth", ".bin"})
    assert {"optimizer.pt", "rng_state.pth", "training_args.bin"} <= {p.name for p in files}
    for path in files:
        got = trainwarden.load(path)
        ref = torch.load(path, weights_only=False)
        assert type(got) is type(ref), path
        if isinstance(ref, dict):
            assert list(got) == list(ref), path
    args = trainwarden.load(checkpoint / "training_args.bin")
    assert args.max_steps == 2 and args.save_steps == 2
