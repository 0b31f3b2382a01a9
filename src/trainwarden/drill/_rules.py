"""Stable rule ids of the sabotage drill's verdict, registered in the rule catalogue."""

from __future__ import annotations

from trainwarden.findings import Severity
from trainwarden.rules import THREATS, Rule, register

__all__ = ["RULES", "Rule"]

_ALL = tuple(THREATS)

RULES: dict[str, Rule] = register(
    [
        Rule(
            "TWE-MISSED",
            Severity.HIGH,
            "a sabotage technique replayed by the drill was not caught by any check",
            threats=_ALL,
            guide="drill.md",
        ),
        Rule(
            "TWE-CONTROL-ALERTED",
            Severity.HIGH,
            "the drill's clean control run raised an alert at MEDIUM or above (a false alarm)",
            threats=_ALL,
            guide="drill.md",
        ),
        Rule(
            "TWE-ERROR",
            Severity.HIGH,
            "a technique of the drill could not run; it is never counted as caught (fail closed)",
            threats=_ALL,
            guide="drill.md",
        ),
    ]
)
