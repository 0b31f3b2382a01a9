"""Replay audit of real data-parallel runs: torchrun, gloo, two ranks, the drill GPT under DDP.

The driver records every rank (its batches, RNG state and local gradient contribution); the
replay, in this process, rebuilds each rank's contribution and the all-reduce on one machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.audit import replay
from trainwarden.drill.gpt import make_tiny_job
from trainwarden.findings import Severity

# The `run_cli` fixture (tests/conftest.py): `python -m trainwarden ARGS` in a real subprocess.
RunCli = Callable[..., subprocess.CompletedProcess[str]]


DRIVER = Path(__file__).parent / "scripts" / "ddp_audit_driver.py"
SRC = Path(__file__).resolve().parents[2] / "src"


def torchrun(run: Path, attack: str | None = None) -> Path:
    """Train 8 steps on 2 ranks (checkpoints every 4) with an optional ``ATTACK:RANK@STEP``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(DRIVER),
        str(run),
        "8",
        "4",
        *([attack] if attack else []),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return torchrun(tmp_path_factory.mktemp("ddp") / "clean")


def test_clean_two_rank_run_replays_with_zero_divergence(clean_run: Path) -> None:
    assert sorted(p.name for p in clean_run.glob("steps*.jsonl")) == [
        "steps.rank0.jsonl",
        "steps.rank1.jsonl",
    ]
    report = replay(clean_run, make_tiny_job, seed=1)
    assert report.meta["world_size"] == 2
    assert [(r.start, r.end, r.status, r.distance) for r in report.intervals] == [
        (0, 4, "reproduced", 0.0),
        (4, 8, "reproduced", 0.0),
    ]
    assert report.findings == ()
    # The two ranks really trained on different batches, and each recorded its own share.
    r0, r1 = (
        [json.loads(line) for line in (clean_run / f"steps.rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    )
    assert r0[3]["micro"] != r1[3]["micro"]
    assert r0[3]["local"] != r1[3]["local"]
    assert r0[3]["grads"] == r1[3]["grads"]  # ...and updated with the same all-reduced mean


def test_corrupted_gradient_share_names_the_rank(tmp_path: Path) -> None:
    run = torchrun(tmp_path / "run", "negate-share:1@5")
    first, second = replay(run, make_tiny_job, seed=1).intervals
    assert first.status == "reproduced"
    assert (second.status, second.step, second.where, second.rank) == (
        "diverged",
        5,
        "backward",
        1,
    )
    assert second.tensors == ("blocks.0.mlp.0.weight",)
    assert "rank 1's gradient contribution" in second.detail


def test_corrupted_share_is_named_through_the_cli(tmp_path: Path, run_cli: RunCli) -> None:
    run = torchrun(tmp_path / "run", "negate-share:0@2")
    proc = run_cli(
        [
            "audit",
            "replay",
            str(run),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
            "--no-attest",
            "--format",
            "json",
        ]
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["meta"]["world_size"] == 2
    finding = out["findings"][0]  # the hook stays: both intervals diverge, the first at step 2
    assert finding["message"].startswith(
        "step 2 diverged in backward on rank 0 (blocks.0.mlp.0.weight)"
    )


def test_tampered_reduction_is_caught_even_though_no_rank_can_be_named(tmp_path: Path) -> None:
    run = torchrun(tmp_path / "run", "tamper-reduce:1@5")
    second = replay(run, make_tiny_job, seed=1).intervals[1]
    assert (second.status, second.step, second.where, second.rank) == (
        "diverged",
        5,
        "all-reduce",
        None,
    )


def test_one_replica_edited_after_its_update_is_named(tmp_path: Path) -> None:
    run = torchrun(tmp_path / "run", "edit-replica:1@5")
    second = replay(run, make_tiny_job, seed=1).intervals[1]
    # The edit lands after step 5's record; step 6's forward on rank 1 is the first to see it.
    assert (second.status, second.step, second.rank) == ("diverged", 6, 1)
    assert second.where in {"forward", "backward"}


def test_one_ranks_rewritten_records_break_its_chain(clean_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    path = run / "steps.rank1.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[6])
    rec["micro"][0][0] += 1
    lines[6] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    report = replay(run, make_tiny_job, seed=1)
    (f,) = report.record_findings
    assert f.rule_id == "TWR-RECORD-TAMPERED" and f.location.endswith("steps.rank1.jsonl:7")
    second = report.intervals[1]
    assert (second.status, second.rank) == ("not-replayable", 1)
    assert "rank 1" in second.detail
    assert report.exit_code() == 1
    assert max(x.severity for x in report.findings) is Severity.CRITICAL
