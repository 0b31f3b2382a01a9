"""The replay audit's step hashes reach the ledger, and a rewritten record is caught against it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.audit import replay
from trainwarden.audit._replay import ledger_events
from trainwarden.drill._replay_attacks import rewrite_step_record, train
from trainwarden.drill.gpt import make_tiny_job

from .conftest import Server

# The `run_cli` fixture (tests/conftest.py): `python -m trainwarden ARGS` in a real subprocess.
RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _replay_from_ledger(
    run_cli: RunCli, run: Path, run_id: str
) -> subprocess.CompletedProcess[str]:
    """``trainwarden audit replay RUN --ledger-run RUN_ID`` (JSON), in a real subprocess, with
    the ledger URL and reader token from the environment."""
    return run_cli(
        [
            "audit",
            "replay",
            str(run),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
            "--ledger-run",
            run_id,
            "--no-attest",
            "--format",
            "json",
        ]
    )


def test_rewritten_records_are_caught_against_the_ledger(
    start_server: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: RunCli,
) -> None:

    srv = start_server(extra=["--no-deadman"])
    run_id, token = srv.create_run(ranks=0)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_URL", srv.url)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_TOKEN", token)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_SPOOL", str(tmp_path / "spool"))
    run = tmp_path / "run"
    train(make_tiny_job(), run, steps=4, audit_every=2)  # closing the recorder ships the spool
    with srv.client(srv.admin_token) as c:
        reader = c.post("/v1/tokens", json={"role": "reader"}).json()["token"]
    events = ledger_events(srv.url, reader, run_id)
    assert sorted(e["record"]["step"] for e in events) == [0, 1, 2, 3]
    assert replay(run, make_tiny_job, seed=0, events=events).findings == ()

    # The saboteur rewrites step 1's record and recomputes the chain after it.
    rewrite_step_record(run, 1, loss=0.125)

    monkeypatch.setenv("TRAINWARDEN_LEDGER_TOKEN", reader)
    proc = _replay_from_ledger(run_cli, run, run_id)
    assert proc.returncode == 1, proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    assert findings[0]["rule_id"] == "TWR-RECORD-TAMPERED"
    assert findings[0]["location"].endswith("@1")


def test_records_and_checkpoint_removed_after_a_sabotage_are_caught_against_the_ledger(
    start_server: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: RunCli,
) -> None:
    from trainwarden.drill._replay_attacks import ATTACKS

    srv = start_server(extra=["--no-deadman"])
    run_id, token = srv.create_run(ranks=0)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_URL", srv.url)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_TOKEN", token)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_SPOOL", str(tmp_path / "spool"))
    run = tmp_path / "run"
    attack = ATTACKS["reverse-gradients"].build(3)
    train(make_tiny_job(), run, steps=4, audit_every=2, attack=attack)
    # The saboteur cuts the run back to its clean first interval: the sabotaged interval's
    # records and its ending checkpoint are deleted, so no pair of checkpoints spans it.
    lines = (run / "steps.jsonl").read_text().splitlines()
    (run / "steps.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (run / "checkpoints" / "step_00000004.pt").unlink()
    with srv.client(srv.admin_token) as c:
        reader = c.post("/v1/tokens", json={"role": "reader"}).json()["token"]
    monkeypatch.setenv("TRAINWARDEN_LEDGER_TOKEN", reader)
    proc = _replay_from_ledger(run_cli, run, run_id)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert [(i["start"], i["end"], i["status"]) for i in out["intervals"]] == [
        (0, 2, "reproduced"),
        (2, 4, "not-replayable"),
    ]
    (f,) = [f for f in out["findings"] if f["rule_id"] == "TWR-RECORD-TAMPERED"]
    assert f["location"].endswith("@2")


def test_a_recorder_stopped_mid_run_is_caught_against_the_ledger(
    start_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The saboteur removes the recorder's hooks at step 5 while training goes on; the monitor's
    # own count of steps reaches the ledger with the step hashes, so a replay from the ledger
    # (not only from the JSONL event log) names the unrecorded steps.
    import torch

    from trainwarden import watch

    srv = start_server(extra=["--no-deadman"])
    run_id, token = srv.create_run(ranks=0)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_URL", srv.url)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_TOKEN", token)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_SPOOL", str(tmp_path / "spool"))
    job = make_tiny_job()
    run = tmp_path / "run"
    loader = torch.utils.data.DataLoader(
        job.dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(7)
    )
    mon = watch(
        job.model,
        job.optimizer,
        scheduler=job.scheduler,
        max_grad_norm=job.max_grad_norm,
        sink=tmp_path / "events.jsonl",
        audit_every=4,
        audit_dir=run,
        audit_activation_every=1,
        code_guard=False,
    )
    assert mon.audit is not None and job.scheduler is not None
    mon.audit.track(loader)
    batches = iter(loader)
    for step in range(8):
        if step == 5:  # the saboteur removes the recorder's hooks; the monitor keeps counting
            for h in mon.audit.handles:
                h.remove()
        job.optimizer.zero_grad(set_to_none=True)
        job.loss_fn(job.model, next(batches)).backward()
        job.optimizer.step()
        job.scheduler.step()
    mon.close()
    with srv.client(srv.admin_token) as c:
        reader = c.post("/v1/tokens", json={"role": "reader"}).json()["token"]
    events = ledger_events(srv.url, reader, run_id)
    assert {e["kind"] for e in events} == {"audit.step", "monitor_stop"}
    report = replay(run, make_tiny_job, seed=1, events=events)
    (f,) = report.record_findings
    assert f.rule_id == "TWR-NOT-REPLAYABLE" and "steps 5-7 were never recorded" in f.message
    assert report.exit_code() == 1
