"""Public types of the training monitor: alerts and the tampering exception."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Severity

__all__ = ["Alert", "MonitorError", "TamperingDetected"]


class MonitorError(TrainWardenError):
    """The monitor was misconfigured (bad argument, unsupported optimizer in strict mode)."""


@dataclass(frozen=True)
class Alert:
    """Something the monitor saw at a given step on a given rank."""

    rule_id: str
    severity: Severity
    step: int
    rank: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.name,
            "step": self.step,
            "rank": self.rank,
            "message": self.message,
            "evidence": dict(self.evidence),
        }


class TamperingDetected(TrainWardenError):
    """Raised at a step boundary when ``fail_closed=True`` and tampering was detected."""

    def __init__(self, alerts: list[Alert]) -> None:
        worst = max(alerts, key=lambda a: a.severity)
        super().__init__(
            f"tampering detected at step {worst.step} on rank {worst.rank}: {worst.message}"
            + (f" (and {len(alerts) - 1} more alert(s))" if len(alerts) > 1 else ""),
            hint="inspect the alerts in the monitor's sink; the step was not allowed to continue",
        )
        self.alerts = alerts
