"""Recording switched on from ``watch(..., audit_every=K)`` around the job's own training loop.

The loop below is an ordinary PyTorch loop over a DataLoader: the monitor records it from hooks,
and ``trainwarden audit replay`` (the library call and the command) re-executes every interval.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from trainwarden import watch
from trainwarden.audit import AuditError, Job, replay
from trainwarden.drill._replay_attacks import ATTACKS, undo
from trainwarden.drill.gpt import make_tiny_job

# The `run_cli` fixture (tests/conftest.py): `python -m trainwarden ARGS` in a real subprocess.
RunCli = Callable[..., subprocess.CompletedProcess[str]]


STEPS = 8
EVERY = 4


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def own_loop(
    tmp_path: Path,
    attack: Callable[[Job, int], None] | None = None,
    *,
    accumulate: int = 1,
    track: bool = True,
    **settings: Any,
) -> Path:
    """The job's own loop (not the recorder's step): zero, forward, backward, clip, step."""
    job = make_tiny_job()
    run = tmp_path / "run"
    g = torch.Generator().manual_seed(7)
    loader = torch.utils.data.DataLoader(job.dataset, batch_size=8, shuffle=True, generator=g)
    mon = watch(
        job.model,
        job.optimizer,
        scheduler=job.scheduler,
        max_grad_norm=job.max_grad_norm,
        sink=tmp_path / "events.jsonl",
        audit_every=EVERY,
        audit_dir=run,
        audit_activation_every=1,
        code_guard=False,
        **settings,
    )
    if track:
        mon.audit.track(loader)
    batches = iter(loader)
    try:
        for step in range(STEPS):
            if attack is not None:
                attack(job, step)
            job.optimizer.zero_grad(set_to_none=True)
            for _ in range(accumulate):
                loss = job.loss_fn(job.model, next(batches)) / accumulate
                loss.backward()
            assert job.max_grad_norm is not None
            torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.max_grad_norm)
            job.optimizer.step()
            assert job.scheduler is not None
            job.scheduler.step()
    finally:
        undo(attack)
    mon.close()
    return run


def events(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_watch_records_and_every_interval_reproduces_bitwise(tmp_path: Path) -> None:
    run = own_loop(tmp_path)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == [
        "step_00000000.pt",
        "step_00000004.pt",
        "step_00000008.pt",
    ]
    report = replay(run, make_tiny_job, seed=1, events=events(tmp_path))
    assert [(r.start, r.end, r.status, r.distance) for r in report.intervals] == [
        (0, 4, "reproduced", 0.0),
        (4, 8, "reproduced", 0.0),
    ]
    assert report.findings == ()


def test_records_go_to_the_monitors_sink(tmp_path: Path) -> None:
    run = own_loop(tmp_path)
    log = events(tmp_path)
    steps = [e for e in log if e["kind"] == "audit.step"]
    chain = [json.loads(line)["hash"] for line in (run / "steps.jsonl").read_text().splitlines()]
    assert [e["hash"] for e in steps] == chain
    assert [e["step"] for e in log if e["kind"] == "audit.checkpoint"] == [0, 4, 8]
    # The monitor raised nothing about the recorder's hooks.
    assert not [e for e in log if e["kind"] == "alert"]


def test_gradient_accumulation_replays(tmp_path: Path) -> None:
    run = own_loop(tmp_path, accumulate=2)
    rec = json.loads((run / "steps.jsonl").read_text().splitlines()[0])
    assert len(rec["micro"]) == 2
    report = replay(run, make_tiny_job, seed=1)
    assert [r.status for r in report.intervals] == ["reproduced", "reproduced"]


@pytest.mark.parametrize(
    "name",
    [
        "reverse-gradients",
        "spare-sampled-update",
        "patch-functional-optimizer",
        "edit-weights-in-forward",
        "flip-samples",
        "raise-dropout",
        "tamper-schedule",
    ],
)
def test_tampered_own_loop_diverges_at_its_step(tmp_path: Path, name: str) -> None:
    run = own_loop(tmp_path, ATTACKS[name].build(5))
    first, second = replay(run, make_tiny_job, seed=1).intervals
    assert first.status == "reproduced"
    assert (second.status, second.step, second.where) == ("diverged", 5, ATTACKS[name].where)


def test_rewritten_records_are_caught_against_the_monitor_sink(tmp_path: Path) -> None:
    from trainwarden.drill._replay_attacks import rewrite_step_record

    run = own_loop(tmp_path)
    rewrite_step_record(run, 2, loss=0.1)
    report = replay(run, make_tiny_job, seed=1, events=events(tmp_path))
    assert [f.rule_id for f in report.record_findings] == ["TWR-RECORD-TAMPERED"]


def test_an_untracked_loader_makes_the_run_not_replayable(tmp_path: Path) -> None:
    run = own_loop(tmp_path, track=False)
    report = replay(run, make_tiny_job, seed=1)
    assert [r.status for r in report.intervals] == ["not-replayable", "not-replayable"]
    assert "was not tracked" in report.intervals[0].detail
    assert report.exit_code() == 1


def test_cli_replays_a_watched_run(tmp_path: Path, run_cli: RunCli) -> None:
    run = own_loop(tmp_path, ATTACKS["reverse-gradients"].build(5))
    proc = run_cli(
        [
            "audit",
            "replay",
            str(run),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
            "--events",
            str(tmp_path / "events.jsonl"),
            "--seed",
            "3",
            "--no-attest",
            "--format",
            "json",
        ]
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert [i["status"] for i in out["intervals"]] == ["reproduced", "diverged"]
    assert (out["intervals"][1]["step"], out["intervals"][1]["where"]) == (5, "backward")


def test_track_refuses_worker_processes(tmp_path: Path) -> None:
    job = make_tiny_job()
    mon = watch(
        job.model,
        job.optimizer,
        sink=tmp_path / "e.jsonl",
        audit_dir=tmp_path / "run",
        code_guard=False,
    )
    try:
        loader = torch.utils.data.DataLoader(job.dataset, batch_size=4, num_workers=2)
        with pytest.raises(AuditError, match="num_workers=0"):
            mon.audit.track(loader)
        assert json.loads((tmp_path / "run" / "audit.json").read_text())["audit_every"] == 50
    finally:
        mon.close()


def test_audit_every_must_be_positive() -> None:
    from trainwarden.monitor._types import MonitorError

    job = make_tiny_job()
    with pytest.raises(MonitorError, match="audit_every"):
        watch(job.model, job.optimizer, audit_every=0)


def test_cli_tolerance_reports_every_intervals_distance(tmp_path: Path, run_cli: RunCli) -> None:
    # The calibration command in the guide reads each clean interval's distance from this JSON.
    run = own_loop(tmp_path)
    proc = run_cli(
        [
            "audit",
            "replay",
            str(run),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
            "--tolerance",
            "1e9",
            "--seed",
            "1",
            "--no-attest",
            "--format",
            "json",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    intervals = json.loads(proc.stdout)["intervals"]
    assert [i["status"] for i in intervals] == ["reproduced", "reproduced"]
    assert all(isinstance(i["distance"], float) for i in intervals)


def _run_whose_recorder_stops_at_step_5(tmp_path: Path) -> Path:
    """A watched run of 8 steps in which the saboteur removes the recorder's hooks at step 5;
    the monitor keeps counting."""
    from trainwarden.monitor._core import Monitor

    watched: list[Monitor] = []
    original = Monitor.__init__

    def keep(self: Monitor, *a: Any, **k: Any) -> None:
        original(self, *a, **k)
        watched.append(self)

    def stop_recording(job: Job, step: int) -> None:
        if step == 5:
            for h in watched[0].audit.handles:
                h.remove()

    Monitor.__init__ = keep  # type: ignore[method-assign]
    try:
        return own_loop(tmp_path, stop_recording)
    finally:
        Monitor.__init__ = original  # type: ignore[method-assign]


def test_recorder_hooks_removed_mid_run_are_caught_by_the_monitors_count(tmp_path: Path) -> None:
    run = _run_whose_recorder_stops_at_step_5(tmp_path)
    report = replay(run, make_tiny_job, seed=1, events=events(tmp_path))
    # Step 4's state was taken only at close, after three unrecorded updates: it diverges.
    assert [(r.start, r.end, r.status) for r in report.intervals] == [
        (0, 4, "reproduced"),
        (4, 5, "diverged"),
    ]
    # And the unrecorded tail is a HIGH finding of its own, not a silent gap.
    (f,) = report.record_findings
    assert f.rule_id == "TWR-NOT-REPLAYABLE" and "steps 5-7 were never recorded" in f.message
    assert report.exit_code() == 1


def test_a_second_smaller_monitor_count_does_not_hide_the_unrecorded_steps(
    tmp_path: Path,
) -> None:
    # Whoever can write the event log (or the ledger run, with its writer token) adds a
    # monitor_stop of its own claiming fewer steps: the largest count still decides.
    run = _run_whose_recorder_stops_at_step_5(tmp_path)
    forged = [*events(tmp_path), {"kind": "monitor_stop", "rank": 0, "step": 5}]
    report = replay(run, make_tiny_job, seed=1, events=forged)
    (f,) = report.record_findings
    assert f.rule_id == "TWR-NOT-REPLAYABLE" and "steps 5-7 were never recorded" in f.message
