"""Stable rule ids of training-data verification, registered in the catalogue
(:mod:`trainwarden.rules`)."""

from __future__ import annotations

from trainwarden.findings import Severity
from trainwarden.rules import Rule, register

__all__ = ["RULES", "Rule"]

RULES: dict[str, Rule] = register(
    [
        Rule(
            "TWD-BATCH-MISMATCH",
            Severity.CRITICAL,
            "a batch is not the one the declared sampler yields from the manifest's items "
            "(reordered, dropped, duplicated, substituted or altered samples)",
            threats=("T2",),
            guide="data.md",
        ),
        Rule(
            "TWD-ITEM-TAMPERED",
            Severity.CRITICAL,
            "the dataset serves an item that is not the one its manifest hashed",
            threats=("T2",),
            guide="data.md",
        ),
        Rule(
            "TWD-BATCH-UNVERIFIABLE",
            Severity.HIGH,
            "a batch's structure cannot be compared with the declared one (fail closed)",
            threats=("T2",),
            guide="data.md",
        ),
    ]
)
