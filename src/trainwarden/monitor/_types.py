"""Public types of the training monitor: alerts (findings with a step and a rank) and errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity

__all__ = ["Alert", "MonitorError", "TamperingDetected"]


class MonitorError(TrainWardenError):
    """The monitor was misconfigured (bad argument, unsupported optimizer in strict mode)."""


@dataclass(frozen=True, init=False)
class Alert(Finding):
    """A :class:`~trainwarden.findings.Finding` the monitor raised at ``step`` on ``rank``.

    Constructed as ``Alert(rule_id, severity, step, rank, message, evidence)``; ``location`` is
    optional (an alert is located by its step and rank).
    """

    # An alert's evidence is a plain dict (the monitor adds to it while reporting).
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)
    step: int = 0
    rank: int = 0

    def __init__(
        self,
        rule_id: str,
        severity: Severity,
        step: int,
        rank: int,
        message: str,
        evidence: Mapping[str, Any] | None = None,
        location: str = "",
    ) -> None:
        if evidence is None:
            evidence = {}
        elif not isinstance(evidence, dict):
            evidence = dict(evidence)
        super().__init__(rule_id, severity, message, location, evidence)
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "rank", rank)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: the finding's fields with ``step`` and ``rank``."""
        out: dict[str, Any] = {
            "rule_id": self.rule_id,
            "severity": self.severity.name,
            "step": self.step,
            "rank": self.rank,
            "message": self.message,
            "evidence": dict(self.evidence),
        }
        if self.location:
            out["location"] = self.location
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`; raises ``TrainWardenError`` on malformed input."""
        base = Finding.from_dict(data)
        try:
            step, rank = int(data["step"]), int(data["rank"])
        except (KeyError, TypeError, ValueError) as e:
            raise TrainWardenError(f"malformed alert record: {e}") from e
        return cls(
            base.rule_id, base.severity, step, rank, base.message, base.evidence, base.location
        )


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
