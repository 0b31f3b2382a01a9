"""Stable rule ids of the replay audit, registered in the catalogue (:mod:`trainwarden.rules`)."""

from __future__ import annotations

from trainwarden.findings import Severity
from trainwarden.rules import Rule, register

__all__ = ["RULES", "Rule"]

RULES: dict[str, Rule] = register(
    [
        Rule(
            "TWR-DIVERGED",
            Severity.CRITICAL,
            "a replayed training interval did not reproduce the recorded step (names the step, "
            "the phase and the tensors)",
            threats=("T3", "T4", "T6"),
            guide="audit.md",
        ),
        Rule(
            "TWR-NOT-REPLAYABLE",
            Severity.HIGH,
            "a sampled interval cannot be replayed (no checkpoint, missing inputs or code)",
            threats=("T3", "T4", "T6"),
            guide="audit.md",
        ),
        Rule(
            "TWR-RECORD-TAMPERED",
            Severity.CRITICAL,
            "a step record was altered, inserted, removed or reordered after it was written",
            threats=("T8",),
            guide="audit.md",
        ),
        Rule(
            "TWR-RECORD-UNANCHORED",
            Severity.HIGH,
            "a step record never reached the event log, so it cannot be trusted",
            threats=("T8",),
            guide="audit.md",
        ),
    ]
)
