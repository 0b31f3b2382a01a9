"""Severity levels and the Finding record that every TrainWarden capability reports."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainwarden.errors import TrainWardenError

__all__ = ["Finding", "Severity"]


@functools.total_ordering
class Severity(enum.Enum):
    """Ordered severity: ``INFO < LOW < MEDIUM < HIGH < CRITICAL``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.value < other.value

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str | Severity) -> Severity:
        """Parse a severity name case-insensitively (``"high"`` -> ``Severity.HIGH``)."""
        if isinstance(text, Severity):
            return text
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise TrainWardenError(
                f"unknown severity {text!r}", hint=f"use one of: {names}"
            ) from None


@dataclass(frozen=True)
class Finding:
    """One thing a check found.

    ``rule_id`` is stable across releases (e.g. ``"TWS-PKL-DANGEROUS"``), ``location`` says where
    (a path, optionally with ``:member`` and ``@offset``), and ``evidence`` holds the
    JSON-serialisable facts that triggered it.
    """

    rule_id: str
    severity: Severity
    message: str
    location: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (severity as its name)."""
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.name,
            "message": self.message,
            "location": self.location,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict`; raises ``TrainWardenError`` on malformed input."""
        try:
            return cls(
                rule_id=str(data["rule_id"]),
                severity=Severity.parse(str(data["severity"])),
                message=str(data["message"]),
                location=str(data.get("location", "")),
                evidence=dict(data.get("evidence", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TrainWardenError(f"malformed finding record: {e}") from e
