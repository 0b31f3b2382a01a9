"""The rule catalogue: every rule id TrainWarden can report, with its default severity and threat.

Each capability declares its rules with :func:`register` in its own ``rules`` module, which
imports nothing but this module and :mod:`trainwarden.findings`; :func:`catalogue` loads every
capability's module and returns the whole table (the SARIF rule list and ``docs/rules.md`` are
built from it).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Severity

__all__ = [
    "RULE_ID",
    "THREATS",
    "Rule",
    "catalogue",
    "lookup",
    "register",
]

RULE_ID = re.compile(r"TW[A-Z]-[A-Z0-9]+(?:-[A-Z0-9]+)*")
"""What a rule id looks like: a capability letter after ``TW``, then dash-separated words."""

THREATS: Mapping[str, str] = MappingProxyType(
    {
        "T1": "code hidden in a shared checkpoint runs when it is loaded",
        "T2": "edits to the shared framework installation (seeds, optimizer, data loading)",
        "T3": "optimizer sabotage at run time (sleeps, reversed updates, changed hyperparameters)",
        "T4": "sabotage triggered only at scale or only on some ranks",
        "T5": "processes killed so that the whole collective hangs",
        "T6": "edits to model weights and saved checkpoints",
        "T7": "a backdoor opened through a checkpoint (processes, sockets)",
        "T8": "evidence kept where the attacker can edit it",
    }
)
"""The threats of docs/threat-model.md, one line each."""

# The modules that declare each capability's rules, loaded by catalogue(). Named, not imported,
# so that this bottom layer never imports the capabilities above it.
_PROVIDERS = (
    "trainwarden.scan._rules",
    "trainwarden.loading._rules",
    "trainwarden.attest._rules",
    "trainwarden.monitor._rules",
    "trainwarden.audit._rules",
    "trainwarden.data._rules",
    "trainwarden.drill._rules",
)

_CAPABILITY = {
    "TWS": "scan",
    "TWL": "loading",
    "TWA": "attest",
    "TWM": "monitor",
    "TWR": "audit",
    "TWD": "data",
    "TWE": "drill",
}


@dataclass(frozen=True)
class Rule:
    """One stable rule id with what it means.

    ``severity`` is the default; where a check rates a finding by what it found,
    ``severity_note`` says how (``"HIGH (world) / MEDIUM (group)"``). ``threats`` are ids of
    :data:`THREATS`; ``guide`` is the user guide under docs/ that explains the check;
    ``tags`` are facts other capabilities ask about (``"code-replaced"``) instead of
    hard-coding ids.
    """

    rule_id: str
    severity: Severity
    title: str
    threats: tuple[str, ...] = ()
    guide: str = ""
    severity_note: str = ""
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not RULE_ID.fullmatch(self.rule_id):
            raise TrainWardenError(f"malformed rule id {self.rule_id!r}")
        unknown = [t for t in self.threats if t not in THREATS]
        if unknown:
            raise TrainWardenError(f"rule {self.rule_id}: unknown threat(s) {unknown}")
        if not self.title:
            raise TrainWardenError(f"rule {self.rule_id}: empty title")

    @property
    def meaning(self) -> str:
        """The title (the monitor's older name for it)."""
        return self.title

    @property
    def capability(self) -> str:
        """The capability that reports the rule (``scan``, ``loading``, ``attest`` ...)."""
        return _CAPABILITY.get(self.rule_id[:3], "")

    @property
    def anchor(self) -> str:
        """The rule's anchor in docs/rules.md (its id in lower case)."""
        return self.rule_id.lower()

    @property
    def doc(self) -> str:
        """The rule's place in the reference, relative to the repository root."""
        return f"docs/rules.md#{self.anchor}"


_REGISTRY: dict[str, Rule] = {}


def register(rules: Iterable[Rule]) -> dict[str, Rule]:
    """Add ``rules`` to the catalogue and return them by id.

    Registering the same id twice with a different definition is an error (two modules would
    disagree about what the id means).
    """
    mine: dict[str, Rule] = {}
    for rule in rules:
        known = _REGISTRY.get(rule.rule_id)
        if (known is not None and known != rule) or rule.rule_id in mine:
            raise TrainWardenError(f"rule {rule.rule_id} is declared twice")
        mine[rule.rule_id] = rule
    _REGISTRY.update(mine)
    return mine


def catalogue() -> Mapping[str, Rule]:
    """Every rule of every capability, sorted by id."""
    for name in _PROVIDERS:
        importlib.import_module(name)
    return MappingProxyType(dict(sorted(_REGISTRY.items())))


def lookup(rule_id: str) -> Rule | None:
    """The rule ``rule_id``, or ``None`` if no capability declares it."""
    rule = _REGISTRY.get(rule_id)
    if rule is None and RULE_ID.fullmatch(rule_id):
        rule = catalogue().get(rule_id)
    return rule
