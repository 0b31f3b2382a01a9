"""What a replay audit needs besides the run directory: a clean replaying interpreter and the
job's own event log (a JSONL file or the ledger), gathered here so the command line only prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trainwarden._internal.files import read_lines
from trainwarden.audit._types import AuditError
from trainwarden.findings import Finding, Severity

__all__ = ["ReplayerNotClean", "attest_replayer", "events_from_ledger", "read_event_log"]


class ReplayerNotClean(AuditError):
    """The replaying interpreter failed attestation: a replay there proves nothing."""

    def __init__(self, findings: tuple[Finding, ...]) -> None:
        super().__init__(
            f"the replaying environment failed attestation ({len(findings)} findings at "
            "HIGH or above): a replay there proves nothing",
            hint="replay on a clean interpreter, or see `trainwarden attest verify`",
        )
        self.findings = findings


def attest_replayer(baseline: Path | None) -> None:
    """Verify the running interpreter (against ``baseline`` when given, else its own RECORD
    files and the OS package manager); raise :class:`ReplayerNotClean` on any HIGH finding."""
    from trainwarden.attest._cache import HashCache
    from trainwarden.attest._signing import load_snapshot
    from trainwarden.attest._verify import verify_environment

    loaded = load_snapshot(baseline) if baseline is not None else None
    report = verify_environment(None, baseline=loaded, code_dirs=[], cache=HashCache.default())
    bad = tuple(f for f in report.findings if f.severity >= Severity.HIGH)
    if bad:
        raise ReplayerNotClean(bad)


def read_event_log(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL event log (other lines are ignored)."""
    log: list[dict[str, Any]] = []
    try:
        # Written by the job: one line at a time, none longer than an event the sinks write.
        for line in read_lines(path, 1 << 20):
            if line.strip():
                rec = json.loads(line)
                if isinstance(rec, dict):
                    log.append(rec)
    except (OSError, ValueError, RecursionError) as e:
        raise AuditError(f"{path}: cannot read the event log ({e})") from e
    return log


def events_from_ledger(run: str) -> list[dict[str, Any]]:
    """The events of ledger run ``run``, read from ``TRAINWARDEN_LEDGER_URL`` with the reader
    token in ``TRAINWARDEN_LEDGER_TOKEN``."""
    from trainwarden.audit._replay import ledger_events

    url = os.environ.get("TRAINWARDEN_LEDGER_URL")
    token = os.environ.get("TRAINWARDEN_LEDGER_TOKEN")
    if not url or not token:
        raise AuditError(
            "--ledger-run needs TRAINWARDEN_LEDGER_URL and TRAINWARDEN_LEDGER_TOKEN",
            hint="export the ledger's URL and a reader token",
        )
    return ledger_events(url, token, run)
