"""Replay audit of real Hugging Face Trainer runs: recorded by the callback, replayed through the
factory ``trainwarden.integrations.hf.audit_job`` gives (tiny GPT-2 built in code, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
from trainwarden.audit import Job, replay
from trainwarden.integrations.hf import TrainWardenCallback, audit_job

STEPS = 8
EVERY = 4


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_trainer(out: str | None = None, *callbacks: TrainerCallback) -> Trainer:
    """The training script's Trainer: the job and the auditor both build it with this."""
    out = out or os.path.join(tempfile.gettempdir(), "tw-hf-audit-replay")
    return _hf_job.make_trainer(out, *callbacks, steps=STEPS)


def replay_job() -> Job:
    """The factory ``trainwarden audit replay --job`` names: one line over the script's Trainer."""
    return audit_job(make_trainer())


class FlipGradients(TrainerCallback):
    """The saboteur: from optimizer step ``at`` on, a hook negates one layer's gradient."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == self.at:
            w = kw["model"].transformer.h[0].mlp.c_fc.weight
            w.register_hook(lambda g: -g)


def train(tmp_path: Path, *extra: TrainerCallback) -> Path:
    cb = TrainWardenCallback(sink=tmp_path / "events.jsonl", audit_every=EVERY, code_guard=False)
    make_trainer(str(tmp_path / "out"), cb, *extra).train()
    return tmp_path / "out" / "trainwarden" / "audit"


def events(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def test_trainer_run_replays_clean_bitwise(tmp_path: Path) -> None:
    run = train(tmp_path)
    first = json.loads((run / "steps.jsonl").read_text().splitlines()[0])
    assert len(first["micro"]) == 2  # the accumulation layout was recorded
    report = replay(run, replay_job, seed=1, events=events(tmp_path))
    assert [(r.start, r.end, r.status, r.distance) for r in report.intervals] == [
        (0, 4, "reproduced", 0.0),
        (4, 8, "reproduced", 0.0),
    ]
    assert report.findings == ()


def test_flipped_gradient_in_a_trainer_run_diverges_at_its_step(tmp_path: Path) -> None:
    run = train(tmp_path, FlipGradients(5))
    first, second = replay(run, replay_job, seed=1).intervals
    assert first.status == "reproduced"
    assert (second.status, second.step, second.where) == ("diverged", 5, "backward")
    assert "transformer.h.0.mlp.c_fc.weight" in second.tensors


def test_cli_replays_a_trainer_run_with_the_integration_factory(tmp_path: Path) -> None:
    run = train(tmp_path, FlipGradients(6))
    env = dict(os.environ)
    here = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainwarden",
            "audit",
            "replay",
            str(run),
            "--job",
            "test_hf_audit:replay_job",
            "--events",
            str(tmp_path / "events.jsonl"),
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
    assert [i["status"] for i in out["intervals"]] == ["reproduced", "diverged"]
    assert (out["intervals"][1]["step"], out["intervals"][1]["where"]) == (6, "backward")
