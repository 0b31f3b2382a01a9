"""Replay audit on the drill GPT: clean runs reproduce bitwise; every in-process attack is named.

Each attack runs inside the recorded training process (where it could blind an in-process
check); the replay is an independent re-execution from the run's own checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from trainwarden._internal.sink import MemorySink
from trainwarden.audit import AuditError, AuditRecorder, Job, replay
from trainwarden.drill._replay_attacks import ATTACKS, rewrite_step_record, train
from trainwarden.drill.gpt import make_tiny_job
from trainwarden.findings import Severity

# The `run_cli` fixture (tests/conftest.py): `python -m trainwarden ARGS` in a real subprocess.
RunCli = Callable[..., subprocess.CompletedProcess[str]]


STEPS = 8
EVERY = 4


def _record(tmp_path: Path, attack: str | None = None, start: int = 5, **kw: object) -> Path:
    run = tmp_path / "run"
    spec = ATTACKS[attack].build(start) if attack else None
    train(make_tiny_job(), run, steps=STEPS, audit_every=EVERY, attack=spec, **kw)  # type: ignore[arg-type]
    return run


def test_clean_run_reproduces_every_interval_bitwise(tmp_path: Path) -> None:
    run = _record(tmp_path)
    report = replay(run, make_tiny_job, seed=1)
    assert [(r.start, r.end, r.status) for r in report.intervals] == [
        (0, 4, "reproduced"),
        (4, 8, "reproduced"),
    ]
    assert all(r.distance == 0.0 for r in report.intervals)
    assert report.findings == ()
    assert report.exit_code() == 0


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_named_at_its_step(tmp_path: Path, name: str) -> None:
    run = _record(tmp_path, name, start=5)
    report = replay(run, make_tiny_job, seed=1)
    first, second = report.intervals
    assert first.status == "reproduced"  # the attack starts in the second interval
    assert second.status == "diverged"
    assert second.step == 5
    assert second.where == ATTACKS[name].where
    assert report.exit_code() == 1
    (finding,) = report.findings
    assert finding.rule_id == "TWR-DIVERGED" and finding.severity is Severity.CRITICAL
    assert "step 5 diverged" in finding.message


def test_forward_divergence_names_the_edited_module(tmp_path: Path) -> None:
    run = _record(tmp_path, "edit-weights-in-forward", start=5)
    diverged = replay(run, make_tiny_job, seed=1).intervals[1]
    assert diverged.tensors == ("blocks.0.mlp.0",)


def test_backward_divergence_names_the_hooked_parameter(tmp_path: Path) -> None:
    run = _record(tmp_path, "reverse-gradients", start=5)
    diverged = replay(run, make_tiny_job, seed=1).intervals[1]
    # Clipping spreads one layer's flipped gradient to the total norm, so every gradient moves;
    # the hooked layer must be among those named.
    assert "blocks.0.mlp.0.weight" in diverged.tensors


def test_attack_is_caught_while_the_monitor_is_switched_off(tmp_path: Path) -> None:
    from trainwarden import watch

    job = make_tiny_job()
    mon = watch(job.model, job.optimizer, sink=MemorySink())
    flip = ATTACKS["reverse-gradients"].build(5)

    def attack(j: object, step: int) -> None:
        if step == 5:
            mon.close()  # the saboteur switches the in-process monitor off first
        flip(job, step)

    train(job, tmp_path / "run", steps=STEPS, audit_every=EVERY, attack=attack)
    diverged = replay(tmp_path / "run", make_tiny_job, seed=1).intervals[1]
    assert (diverged.status, diverged.step, diverged.where) == ("diverged", 5, "backward")


def test_sampling_picks_intervals_with_the_seed(tmp_path: Path) -> None:
    run = _record(tmp_path)
    a = replay(run, make_tiny_job, samples=1, seed=11)
    b = replay(run, make_tiny_job, samples=1, seed=11)
    assert len(a.intervals) == 1
    assert (a.intervals[0].start, a.seed) == (b.intervals[0].start, 11)


def test_edited_step_record_breaks_the_chain(tmp_path: Path) -> None:
    run = _record(tmp_path)
    lines = (run / "steps.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])
    rec["loss"] = 0.5
    lines[2] = json.dumps(rec)
    (run / "steps.jsonl").write_text("\n".join(lines) + "\n")
    report = replay(run, make_tiny_job, seed=1)
    assert report.findings[0].rule_id == "TWR-RECORD-TAMPERED"
    assert report.findings[0].location.endswith("steps.jsonl:3")
    # Steps 2.. are no longer vouched for: the first interval cannot be replayed.
    assert report.intervals[0].status == "not-replayable"


def test_rewritten_chain_is_caught_against_the_event_log(tmp_path: Path) -> None:
    sink = MemorySink()
    run = _record(tmp_path, sink=sink)
    # The attacker rewrites a record and recomputes the whole chain after it.
    rewrite_step_record(run, 3, loss=0.25)
    assert replay(run, make_tiny_job, seed=1).record_findings == ()
    events = [{"kind": k, **r} for k, r in sink.events]
    report = replay(run, make_tiny_job, seed=1, events=events)
    (f,) = report.record_findings
    assert f.rule_id == "TWR-RECORD-TAMPERED" and f.location.endswith("@3")


def test_checkpoint_edited_on_disk_is_refused_by_its_signed_manifest(tmp_path: Path) -> None:
    from trainwarden.loading._manifest import generate_keypair

    priv, pub = generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    run = _record(tmp_path, sign_key=priv)
    ck = run / "checkpoints" / "step_00000004.pt"
    state = torch.load(ck, weights_only=True)
    state["model"]["head.weight"].mul_(-1)
    torch.save(state, ck)
    report = replay(run, make_tiny_job, seed=1, manifest_key=pub)
    assert [r.status for r in report.intervals] == ["not-replayable", "not-replayable"]
    assert "checkpoint" in report.intervals[0].detail


def test_checkpoint_rewritten_with_its_manifest_diverges_from_the_record(tmp_path: Path) -> None:
    from trainwarden.loading import save

    run = _record(tmp_path)
    ck = run / "checkpoints" / "step_00000004.pt"
    state = torch.load(ck, weights_only=True)
    state["model"]["head.weight"].mul_(-1)
    save(state, ck)  # an unsigned run: the attacker can rewrite the manifest too
    first, second = replay(run, make_tiny_job, seed=1).intervals
    assert (first.status, first.where, first.step) == ("diverged", "checkpoint", 4)
    assert (second.status, second.where) == ("diverged", "checkpoint")
    assert "model.head.weight" in second.tensors


def test_missing_records_make_an_interval_not_replayable(tmp_path: Path) -> None:
    run = _record(tmp_path)
    lines = (run / "steps.jsonl").read_text().splitlines()
    (run / "steps.jsonl").write_text("\n".join(lines[:6]) + "\n")  # the recorder was stopped
    report = replay(run, make_tiny_job, seed=1)
    assert [r.status for r in report.intervals] == ["reproduced", "not-replayable"]
    assert "no trusted record of step 6" in report.intervals[1].detail
    assert report.findings[0].severity is Severity.HIGH


def test_a_deleted_last_checkpoint_does_not_hide_the_sabotaged_interval(tmp_path: Path) -> None:
    run = _record(tmp_path, "reverse-gradients", start=5)
    # The saboteur deletes the checkpoint that ends the interval it sabotaged, so that no pair
    # of checkpoints on disk spans it any more.
    (run / "checkpoints" / "step_00000008.pt").unlink()
    report = replay(run, make_tiny_job, seed=1)
    assert [(r.start, r.end, r.status) for r in report.intervals] == [
        (0, 4, "reproduced"),
        (4, 8, "not-replayable"),
    ]
    assert "step_00000008.pt" in report.intervals[1].detail
    assert report.exit_code() == 1


def test_a_deleted_middle_checkpoint_is_not_a_merged_interval(tmp_path: Path) -> None:
    run = _record(tmp_path)
    (run / "checkpoints" / "step_00000004.pt").unlink()
    report = replay(run, make_tiny_job, seed=1)
    assert [(r.start, r.end, r.status) for r in report.intervals] == [
        (0, 4, "not-replayable"),
        (4, 8, "not-replayable"),
    ]
    assert report.exit_code() == 1


def test_records_and_checkpoints_removed_after_the_sabotage_are_caught_against_the_event_log(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    run = _record(tmp_path, "reverse-gradients", start=5, sink=sink)
    # The run is cut back to its clean first interval: trailing records and checkpoint gone.
    lines = (run / "steps.jsonl").read_text().splitlines()
    (run / "steps.jsonl").write_text("\n".join(lines[:4]) + "\n")
    (run / "checkpoints" / "step_00000008.pt").unlink()
    events = [{"kind": k, **r} for k, r in sink.events]
    report = replay(run, make_tiny_job, seed=1, events=events)
    tampered = [f for f in report.record_findings if f.rule_id == "TWR-RECORD-TAMPERED"]
    assert len(tampered) == 1 and tampered[0].severity is Severity.CRITICAL
    assert tampered[0].location.endswith("@4")
    assert [(r.start, r.end, r.status) for r in report.intervals] == [
        (0, 4, "reproduced"),
        (4, 8, "not-replayable"),
    ]
    assert report.exit_code() == 1


def test_a_planted_far_checkpoint_name_costs_one_interval(tmp_path: Path) -> None:
    run = _record(tmp_path)
    (run / "checkpoints" / "step_99999999.pt").write_bytes(b"")
    report = replay(run, make_tiny_job, seed=1)
    assert [(r.start, r.end, r.status) for r in report.intervals] == [
        (0, 4, "reproduced"),
        (4, 8, "reproduced"),
        (8, 99999999, "not-replayable"),
    ]


def test_tolerance_mode_passes_clean_and_flags_a_sign_flip(tmp_path: Path) -> None:
    clean = _record(tmp_path)
    rep = replay(clean, make_tiny_job, seed=1, tolerance=1e-3)
    assert [r.status for r in rep.intervals] == ["reproduced", "reproduced"]
    shutil.move(clean, tmp_path / "clean")
    bad = _record(tmp_path, "reverse-gradients", start=5)
    res = replay(bad, make_tiny_job, seed=1, tolerance=1e-3).intervals[1]
    assert res.status == "diverged" and res.distance is not None and res.distance > 1e-3


class _NegateMomentsAfter(MemorySink):
    """A sink inside the job that, once step ``step`` is recorded and before the checkpoint
    after it is written, negates Adam's first moments in memory (the job goes on with them)."""

    def __init__(self, job: Job, step: int) -> None:
        super().__init__()
        self.job, self.step = job, step

    def emit(self, kind: str, record: Mapping[str, Any]) -> None:
        super().emit(kind, record)
        if kind == "audit.step" and record["step"] == self.step:
            with torch.no_grad():
                for st in self.job.optimizer.state.values():
                    st["exp_avg"].mul_(-1)


def test_optimizer_state_edited_at_a_checkpoint_is_caught_in_tolerance_mode(
    tmp_path: Path,
) -> None:
    job = make_tiny_job()
    run = tmp_path / "run"
    train(job, run, steps=STEPS, audit_every=EVERY, sink=_NegateMomentsAfter(job, 3))
    # The checkpoint of step 4 holds the negated moments and the job trained on from them, so
    # the second interval reproduces; the checkpoint is not the state step 3 recorded.
    for tolerance in (4.5e-2, None):
        first, second = replay(run, make_tiny_job, seed=1, tolerance=tolerance).intervals
        assert (first.status, first.step, first.where) == ("diverged", 4, "checkpoint")
        assert (second.status, second.step, second.where) == ("diverged", 4, "checkpoint")
        assert any(t.startswith("optim.") and t.endswith(".exp_avg") for t in first.tensors)


class _RaiseLrAfter(MemorySink):
    """A sink inside the job that, once step ``step`` is recorded and before the checkpoint
    after it is written, multiplies the scheduler's base learning rates by ten (or, with no
    scheduler in the way, the optimizer's own lr); the job trains on with them."""

    def __init__(self, job: Job, step: int, where: str) -> None:
        super().__init__()
        self.job, self.step, self.where = job, step, where

    def emit(self, kind: str, record: Mapping[str, Any]) -> None:
        super().emit(kind, record)
        if kind == "audit.step" and record["step"] == self.step:
            sched = self.job.scheduler
            if self.where == "scheduler" and sched is not None:
                sched.base_lrs = [b * 10 for b in sched.base_lrs]
            else:
                for g in self.job.optimizer.param_groups:
                    g["lr"] *= 10


@pytest.mark.parametrize("where", ["scheduler", "optimizer"])
@pytest.mark.parametrize("tolerance", [None, 4.5e-2])
def test_a_schedule_edited_at_a_checkpoint_is_named(
    tmp_path: Path, where: str, tolerance: float | None
) -> None:
    job = make_tiny_job()
    if where == "optimizer":
        job = dataclasses.replace(job, scheduler=None)
    run = tmp_path / "run"
    train(job, run, steps=STEPS, audit_every=EVERY, sink=_RaiseLrAfter(job, 3, where))

    def factory() -> Job:
        fresh = make_tiny_job()
        return dataclasses.replace(fresh, scheduler=None) if where == "optimizer" else fresh

    # The checkpoint of step 4 carries the raised schedule and the job trained on with it, so
    # the second interval, replayed from that checkpoint, agrees with its own records.
    first, second = replay(run, factory, seed=1, tolerance=tolerance).intervals
    assert (first.status, first.step, first.where, first.tensors) == (
        "diverged",
        4,
        "checkpoint",
        ("schedule",),
    )
    assert (second.status, second.step, second.where) == ("diverged", 4, "checkpoint")
    assert "schedule" in second.tensors


def test_a_checkpoint_missing_the_sabotaged_tensors_is_no_tolerance_pass(tmp_path: Path) -> None:
    from trainwarden.loading import save

    run = _record(tmp_path, "reverse-gradients", start=5)
    ck = run / "checkpoints" / "step_00000008.pt"
    state = torch.load(ck, weights_only=True)
    # Only the tensors that replay close to the record are left in the final checkpoint.
    state["model"] = {k: v for k, v in state["model"].items() if not v.is_floating_point()}
    save(state, ck)  # an unsigned run: the manifest is rewritten too
    report = replay(run, make_tiny_job, seed=1, tolerance=4.5e-2)
    assert [r.status for r in report.intervals] == ["reproduced", "not-replayable"]
    assert "cannot be restored" in report.intervals[1].detail
    assert report.exit_code() == 1


def test_a_malformed_record_costs_its_interval_not_the_report(tmp_path: Path) -> None:
    run = _record(tmp_path)
    rewrite_step_record(run, 5, rng=None)  # chain recomputed: only the field is wrong
    report = replay(run, make_tiny_job, seed=1)
    assert [r.status for r in report.intervals] == ["reproduced", "not-replayable"]
    assert "cannot be replayed" in report.intervals[1].detail
    assert report.exit_code() == 1


def test_a_reseed_at_a_checkpoint_is_named(tmp_path: Path) -> None:
    def reseed_at_the_checkpoint(job: Job, step: int) -> None:
        if step == EVERY:
            torch.manual_seed(1234)  # once, between the interval's last step and the next

    run = tmp_path / "run"
    train(make_tiny_job(), run, steps=STEPS, audit_every=EVERY, attack=reseed_at_the_checkpoint)
    first, second = replay(run, make_tiny_job, seed=1).intervals
    assert (first.status, first.step, first.where) == ("diverged", EVERY, "rng")
    assert second.status == "reproduced"  # it starts from its own record's RNG state


def test_a_made_up_thread_count_is_refused_not_run(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    run = _record(tmp_path)
    meta = json.loads((run / "audit.json").read_text())
    meta["threads"] = 100_000  # the replay would ask torch's thread pool for that many
    (run / "audit.json").write_text(json.dumps(meta))
    proc = run_cli(
        [
            "audit",
            "replay",
            str(run),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
            "--seed",
            "1",
            "--no-attest",
        ]
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "malformed threads 100000" in proc.stdout + proc.stderr


def test_an_rng_state_that_inflates_past_its_size_is_refused_without_inflating(
    tmp_path: Path,
) -> None:
    import base64
    import tracemalloc
    import zlib

    from trainwarden.audit._step import set_rng_blob

    # A zlib stream of 200 MB of zeros fits a step record line in a few hundred kilobytes.
    bomb = base64.b64encode(zlib.compress(bytes(200 << 20), 9)).decode("ascii")
    before = torch.get_rng_state()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="inflates past"):
            set_rng_blob(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    assert torch.equal(torch.get_rng_state(), before)
    run = _record(tmp_path)
    rewrite_step_record(run, 5, rng=bomb)
    report = replay(run, make_tiny_job, seed=1)
    assert [r.status for r in report.intervals] == ["reproduced", "not-replayable"]
    assert "inflates past" in report.intervals[1].detail


def test_claiming_hooks_in_audit_json_does_not_switch_the_rng_check_off(tmp_path: Path) -> None:
    run = _record(tmp_path, "reseed-every-step", start=5)
    # The RNG continuity check is off for runs recorded from hooks; the saboteur says so in
    # the one file the chain does not cover.
    meta = json.loads((run / "audit.json").read_text())
    meta["recorded_by"] = "hooks"
    (run / "audit.json").write_text(json.dumps(meta))
    second = replay(run, make_tiny_job, seed=1).intervals[1]
    assert (second.status, second.step, second.where) == ("diverged", 5, "rng")


def test_recorder_refuses_batches_it_did_not_see_sampled(tmp_path: Path) -> None:
    job = make_tiny_job()
    rec = AuditRecorder(job, tmp_path / "run", audit_every=2)
    x = torch.zeros(2, 16, dtype=torch.long)
    with pytest.raises(AuditError, match="did not see these batches"):
        rec.step([(x, x)])
    rec.close()


def test_cli_replay_reports_divergence_with_exit_1(tmp_path: Path, run_cli: RunCli) -> None:
    run = _record(tmp_path, "reverse-gradients", start=5)
    proc = run_cli(
        [
            "audit",
            "replay",
            str(run),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
            "--seed",
            "1",
            "--no-attest",
            "--format",
            "json",
        ]
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert [i["status"] for i in out["intervals"]] == ["reproduced", "diverged"]
    assert out["intervals"][1]["where"] == "backward"


def test_cli_replay_bad_run_dir_is_a_one_line_error(tmp_path: Path, run_cli: RunCli) -> None:
    proc = run_cli(
        [
            "audit",
            "replay",
            str(tmp_path),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
            "--no-attest",
        ]
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "not an audit record" in proc.stderr


def test_without_activation_digests_a_forward_edit_is_still_caught(tmp_path: Path) -> None:
    run = _record(tmp_path, "edit-weights-in-forward", start=5, activation_every=0)
    diverged = replay(run, make_tiny_job, seed=1).intervals[1]
    # Not narrowed to the module's forward, but caught at the same step by its gradients.
    assert (diverged.status, diverged.step, diverged.where) == ("diverged", 5, "backward")
    assert "blocks.0.mlp.0.weight" in diverged.tensors
