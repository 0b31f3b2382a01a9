"""What ``audit replay`` gathers besides the record: a clean replaying interpreter and the job's
event log. An auditor's replay in a tampered interpreter proves nothing, so it is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden.audit import AuditError
from trainwarden.audit._inputs import events_from_ledger, read_event_log


def test_event_log_keeps_objects_and_names_an_unreadable_file(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text('{"kind": "step", "step": 1}\n\n[1, 2]\n{"kind": "step", "step": 2}\n')
    assert read_event_log(log) == [{"kind": "step", "step": 1}, {"kind": "step", "step": 2}]
    log.write_text('{"kind": "step"\n')
    with pytest.raises(AuditError, match=r"events\.jsonl: cannot read the event log"):
        read_event_log(log)
    with pytest.raises(AuditError, match=r"missing\.jsonl: cannot read the event log"):
        read_event_log(tmp_path / "missing.jsonl")


def test_ledger_run_needs_the_ledger_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINWARDEN_LEDGER_URL", raising=False)
    monkeypatch.setenv("TRAINWARDEN_LEDGER_TOKEN", "t")
    with pytest.raises(AuditError, match="TRAINWARDEN_LEDGER_URL"):
        events_from_ledger("run-1")


def test_replay_is_refused_in_an_interpreter_that_fails_attestation(tmp_path: Path) -> None:
    """A PYTHONPATH entry that shadows a standard module makes the replaying interpreter fail
    attestation: the command exits 2 naming the finding before it replays anything."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "tabnanny.py").write_text("raise SystemExit('the shadowing module ran')\n")
    canary = tmp_path / "replayed"
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), *paths]), COLUMNS="400")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainwarden",
            "audit",
            "replay",
            str(canary),
            "--job",
            "trainwarden.drill.gpt:make_tiny_job",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "failed attestation" in proc.stderr and "Traceback" not in proc.stderr
    assert f"PYTHONPATH entry {shadow} shadows" in proc.stdout + proc.stderr
    assert "tabnanny" in proc.stdout + proc.stderr
    # Refused before the record was even read: the missing run directory is never reported.
    assert "not an audit record" not in proc.stderr
