"""TrainWardenCallback in real Hugging Face Trainer runs on a tiny GPT-2 built in code (CPU)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tests.integrations import _hf_job
from trainwarden.findings import Severity
from trainwarden.integrations.hf import TrainWardenCallback


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Intra-op threads only fight each other (and other jobs) on a 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_trainer(tmp_path: Path, *callbacks: TrainerCallback, steps: int = 8) -> Trainer:
    return _hf_job.make_trainer(str(tmp_path / "out"), *callbacks, steps=steps)


def sink_alerts(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["kind"] == "alert"]


def test_clean_trainer_run_raises_nothing(tmp_path: Path) -> None:
    cb = TrainWardenCallback(sink=tmp_path / "tw.jsonl")
    make_trainer(tmp_path, cb).train()
    assert cb.monitor is not None and cb.monitor.step == 8
    loud = [a for a in cb.alerts if a.severity >= Severity.MEDIUM]
    assert loud == []
    steps = [
        json.loads(line)
        for line in (tmp_path / "tw.jsonl").read_text().splitlines()
        if '"kind": "step"' in line
    ]
    assert len(steps) == 8 and all(s["loss"] is not None for s in steps)


class EditWeight(TrainerCallback):
    """Edits one weight between two optimizer steps (outside the optimizer)."""

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == 3:
            with torch.no_grad():
                kw["model"].transformer.h[1].mlp.c_fc.weight[0, 0] += 0.5


class LrBehindScheduler(TrainerCallback):
    """Multiplies the lr in the param group without going through the scheduler."""

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == 4:
            for group in kw["optimizer"].param_groups:
                group["lr"] *= 10


def test_weight_edited_between_steps_is_caught_within_one_step(tmp_path: Path) -> None:
    cb = TrainWardenCallback(sink=tmp_path / "tw.jsonl")
    make_trainer(tmp_path, cb, EditWeight()).train()
    edits = [a for a in cb.alerts if a.rule_id == "TWM-WEIGHT-EDIT"]
    assert edits, cb.alerts
    assert edits[0].step == 3
    assert "transformer.h.1.mlp.c_fc.weight" in edits[0].message
    assert sink_alerts(tmp_path / "tw.jsonl")


def test_lr_changed_behind_the_scheduler_is_caught(tmp_path: Path) -> None:
    cb = TrainWardenCallback(sink=tmp_path / "tw.jsonl")
    make_trainer(tmp_path, cb, LrBehindScheduler()).train()
    loud = [a for a in cb.alerts if a.severity >= Severity.HIGH]
    assert loud, cb.alerts
    assert any("lr" in a.message for a in loud)
    assert min(a.step for a in loud) <= 5
