"""Stable rule ids of the training monitor, with the meaning and default severity of each."""

from __future__ import annotations

from trainwarden.findings import Severity

__all__ = ["RULES", "Rule"]


class Rule:
    """A rule id with its default severity and a one-line meaning (used by the docs and alerts)."""

    __slots__ = ("meaning", "rule_id", "severity")

    def __init__(self, rule_id: str, severity: Severity, meaning: str) -> None:
        self.rule_id = rule_id
        self.severity = severity
        self.meaning = meaning


_ALL = [
    Rule(
        "TWM-WEIGHT-EDIT",
        Severity.CRITICAL,
        "a parameter or buffer changed between the optimizer step and the next forward",
    ),
    Rule(
        "TWM-WEIGHT-EDIT-PRESTEP",
        Severity.CRITICAL,
        "a parameter or buffer changed between the forward and the optimizer step",
    ),
    Rule(
        "TWM-WEIGHT-REPLACED",
        Severity.HIGH,
        "a parameter or buffer tensor was replaced, added or removed while training",
    ),
    Rule(
        "TWM-OPTSTATE-EDIT",
        Severity.CRITICAL,
        "optimizer state (moments, momentum buffers, step) changed between two steps",
    ),
    Rule(
        "TWM-UPDATE-MISMATCH",
        Severity.HIGH,
        "the update applied by step() differs from the reference optimizer's update",
    ),
    Rule(
        "TWM-UPDATE-SIGN",
        Severity.CRITICAL,
        "the update applied by step() points against the reference update (sign flip)",
    ),
    Rule(
        "TWM-STATE-MISMATCH",
        Severity.HIGH,
        "optimizer state written by step() differs from the reference optimizer's state",
    ),
    Rule(
        "TWM-CLIP-MISSING",
        Severity.HIGH,
        "the gradient norm at step() exceeds max_grad_norm: clipping did not happen",
    ),
    Rule(
        "TWM-GRAD-EDIT",
        Severity.CRITICAL,
        "a gradient changed between accumulation and optimizer.step() other than by the step's "
        "one uniform clipping factor (rescaled, sign-flipped, replaced, or set without backward)",
    ),
    Rule(
        "TWM-GRAD-CLIP",
        Severity.HIGH,
        "every gradient was scaled by a factor that the declared max_grad_norm does not give",
    ),
    Rule(
        "TWM-HOOK-ADDED",
        Severity.HIGH,
        "a hook that can change gradients, weights or the step was added after watch()",
    ),
    Rule(
        "TWM-HOOK-PRESENT",
        Severity.LOW,
        "hooks that can change gradients, weights or the step were present at watch() (listed)",
    ),
    Rule(
        "TWM-HP-CHANGE",
        Severity.HIGH,
        "a hyperparameter changed and no scheduler explains the change",
    ),
    Rule("TWM-HP-INSTEP", Severity.HIGH, "a hyperparameter changed inside optimizer.step()"),
    Rule("TWM-HP-GROUPS", Severity.HIGH, "optimizer param_groups were added or removed"),
    Rule(
        "TWM-RNG-RESEED",
        Severity.HIGH,
        "a global RNG was reseeded after training started (caller's stack in evidence)",
    ),
    Rule(
        "TWM-RNG-REWIND",
        Severity.HIGH,
        "a global RNG state went back to a state already seen at an earlier step",
    ),
    Rule(
        "TWM-CODE",
        Severity.CRITICAL,
        "the run-time code guard (trainwarden.attest) found a replaced or patched callable; "
        "CRITICAL for optimizer, seeding, data-loading and clipping code; else the guard's own",
    ),
    Rule(
        "TWM-CODE-STEP",
        Severity.CRITICAL,
        "optimizer.step was replaced or wrapped after watch() (monitor hooks may be bypassed)",
    ),
    Rule("TWM-NUM-NONFINITE", Severity.HIGH, "loss or gradient norm is NaN or infinite"),
    Rule(
        "TWM-NUM-SPIKE",
        Severity.LOW,
        "loss or gradient norm spiked far above its robust (median/MAD) recent range",
    ),
    Rule(
        "TWM-TIME-SPIKE",
        Severity.LOW,
        "a step phase (forward, backward, optimizer, step) took far longer than usual",
    ),
    Rule(
        "TWM-TIME-REPEATED",
        Severity.MEDIUM,
        "timing spikes repeat within the recent window (pattern of injected sleeps)",
    ),
    Rule(
        "TWM-MONITOR-TAMPERED",
        Severity.CRITICAL,
        "the monitor's own hooks were removed or replaced, or its code or sink was patched",
    ),
    Rule(
        "TWM-MONITOR-OFF",
        Severity.CRITICAL,
        "another rank's monitor stopped taking part in the per-step exchange (switched off, "
        "stopped or stuck); the rank is named",
    ),
    Rule(
        "TWM-UNSUPPORTED",
        Severity.INFO,
        "a check is disabled for this setup (unknown optimizer, missing component)",
    ),
    Rule(
        "TWM-DATA-MISMATCH",
        Severity.CRITICAL,
        "a batch is not the one the declared sampler yields: samples reordered, dropped, "
        "duplicated, substituted or altered",
    ),
    Rule(
        "TWM-DATA-TAMPERED",
        Severity.CRITICAL,
        "the dataset served an item that differs from its manifest",
    ),
    Rule(
        "TWM-DATA-UNVERIFIABLE",
        Severity.HIGH,
        "a batch could not be compared with the declared one (its structure differs)",
    ),
    Rule(
        "TWM-INTERNAL",
        Severity.MEDIUM,
        "the monitor itself failed; training continued (fail-open) but a check was skipped",
    ),
]

RULES: dict[str, Rule] = {r.rule_id: r for r in _ALL}
