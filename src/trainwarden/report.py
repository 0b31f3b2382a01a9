"""The ``Report`` protocol: what every command's result offers the CLI, the ledger and callers.

A report carries its findings, a JSON-serialisable form and the exit code it implies for a
severity threshold (``0`` clean, ``1`` a finding at or above ``fail_on``). Input and internal
errors are not reports: they raise :class:`~trainwarden.errors.TrainWardenError` (exit ``2``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from trainwarden.findings import Finding, Severity

__all__ = ["EXIT_CLEAN", "EXIT_ERROR", "EXIT_FINDINGS", "Report", "exit_code_for"]

#: Nothing at or above the threshold.
EXIT_CLEAN = 0
#: A finding at or above the threshold.
EXIT_FINDINGS = 1
#: A usage, input or internal error (never a verdict about the input).
EXIT_ERROR = 2


@runtime_checkable
class Report(Protocol):
    """The result of one check: its findings, its JSON form and the exit code they imply."""

    @property
    def findings(self) -> Sequence[Finding]:
        """Every finding, in the order the check produced them."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``--format json`` prints and the ledger stores)."""
        ...

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a finding is at or above ``fail_on``, else ``0``."""
        ...


def exit_code_for(findings: Iterable[Finding], fail_on: Severity = Severity.HIGH) -> int:
    """``EXIT_FINDINGS`` when a finding is at or above ``fail_on``, else ``EXIT_CLEAN``."""
    return EXIT_FINDINGS if any(f.severity >= fail_on for f in findings) else EXIT_CLEAN
