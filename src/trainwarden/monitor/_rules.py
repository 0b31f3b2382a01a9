"""Stable rule ids of the training monitor, registered in the rule catalogue."""

from __future__ import annotations

from trainwarden.findings import Severity
from trainwarden.rules import Rule, register

__all__ = ["RULES", "Rule"]

RULES: dict[str, Rule] = register(
    [
        Rule(
            "TWM-CLIP-MISSING",
            Severity.HIGH,
            "the gradient norm at step() exceeds max_grad_norm: clipping did not happen",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-CODE",
            Severity.CRITICAL,
            "the run-time code guard (trainwarden.attest) found a replaced or patched callable; "
            "CRITICAL for optimizer, seeding, data-loading and clipping code; else the guard's "
            "own",
            threats=("T2", "T3"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-CODE-STEP",
            Severity.CRITICAL,
            "optimizer.step was replaced or wrapped after watch() (monitor hooks may be bypassed)",
            threats=("T2", "T3"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-GRAD-CLIP",
            Severity.HIGH,
            "every gradient was scaled by a factor that the declared max_grad_norm does not give",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-GRAD-EDIT",
            Severity.CRITICAL,
            "a gradient changed between accumulation and optimizer.step() other than by the "
            "step's one uniform clipping factor (rescaled, sign-flipped, replaced, or set without"
            " backward)",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-HANG",
            Severity.HIGH,
            "no step completed within the adaptive timeout; all stacks dumped",
            threats=("T5",),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-HOOK-ADDED",
            Severity.HIGH,
            "a hook that can change gradients, weights or the step was added after watch()",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-HOOK-PRESENT",
            Severity.LOW,
            "hooks that can change gradients, weights or the step were present at watch() (listed)",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-HP-CHANGE",
            Severity.HIGH,
            "a hyperparameter changed and no scheduler explains the change",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-HP-GROUPS",
            Severity.HIGH,
            "optimizer param_groups were added or removed",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-HP-INSTEP",
            Severity.HIGH,
            "a hyperparameter changed inside optimizer.step()",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-INTERNAL",
            Severity.MEDIUM,
            "the monitor itself failed; training continued (fail-open) but a check was skipped",
            threats=(),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-LOST-RANK",
            Severity.CRITICAL,
            "which rank was lost first (process gone) or which live rank the others wait for",
            threats=("T5",),
            guide="monitor-distributed.md",
            severity_note="CRITICAL / HIGH",
        ),
        Rule(
            "TWM-MONITOR-OFF",
            Severity.CRITICAL,
            "another rank's monitor stopped taking part in the per-step exchange (switched off, "
            "stopped or stuck); the rank is named",
            threats=("T8",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-MONITOR-CLOSED",
            Severity.HIGH,
            "training went on without the monitor: a step after close(), a step its hooks did "
            "not see, the monitor garbage-collected while its model lives, or the optimizer's own "
            "step counter ahead of the monitor at exit",
            threats=("T8",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-MONITOR-TAMPERED",
            Severity.CRITICAL,
            "the monitor's own hooks were removed or replaced, or its code or sink was patched",
            threats=("T8",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-NUM-NONFINITE",
            Severity.HIGH,
            "loss or gradient norm is NaN or infinite",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-NUM-SPIKE",
            Severity.LOW,
            "loss or gradient norm spiked far above its robust (median/MAD) recent range",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-OPTSTATE-EDIT",
            Severity.CRITICAL,
            "optimizer state (moments, momentum buffers, step) changed between two steps",
            threats=("T3", "T6"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-RNG-RESEED",
            Severity.HIGH,
            "a global RNG was reseeded after training started (caller's stack in evidence)",
            threats=("T2", "T3"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-RNG-REWIND",
            Severity.HIGH,
            "a global RNG state went back to a state already seen at an earlier step",
            threats=("T2", "T3"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-SIGNAL",
            Severity.MEDIUM,
            "a catchable signal arrived; sender pid/uid recorded (HIGH: another user)",
            threats=("T5",),
            guide="monitor-distributed.md",
            severity_note="MEDIUM / HIGH",
        ),
        Rule(
            "TWM-STATE-MISMATCH",
            Severity.HIGH,
            "optimizer state written by step() differs from the reference optimizer's state",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-TIME-REPEATED",
            Severity.MEDIUM,
            "timing spikes repeat within the recent window (pattern of injected sleeps)",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-TIME-SPIKE",
            Severity.LOW,
            "a step phase (forward, backward, optimizer, step) took far longer than usual",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-UNSUPPORTED",
            Severity.INFO,
            "a check is disabled for this setup (unknown optimizer, missing component)",
            threats=(),
            guide="monitor.md",
        ),
        Rule(
            "TWM-UPDATE-MISMATCH",
            Severity.HIGH,
            "the update applied by step() differs from the reference optimizer's update",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-UPDATE-SIGN",
            Severity.CRITICAL,
            "the update applied by step() points against the reference update (sign flip)",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-WEIGHT-EDIT",
            Severity.CRITICAL,
            "a parameter or buffer changed between the optimizer step and the next forward",
            threats=("T3", "T6"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-WEIGHT-EDIT-PRESTEP",
            Severity.CRITICAL,
            "a parameter or buffer changed between the forward and the optimizer step",
            threats=("T3", "T6"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-WEIGHT-REPLACED",
            Severity.HIGH,
            "a parameter or buffer tensor was replaced, added or removed while training",
            threats=("T3", "T6"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-XRANK-COLLECTIVE",
            Severity.HIGH,
            "the exchange's all_gather failed (a peer is gone, group broken)",
            threats=("T4",),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-XRANK-DIGEST",
            Severity.MEDIUM,
            "the digest passed to the exchange has the wrong shape (step not exchanged)",
            threats=("T4",),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-XRANK-DIVERGED",
            Severity.HIGH,
            "replicas disagree on the digest; names the odd rank(s) and fields",
            threats=("T4",),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-XRANK-FIELDS",
            Severity.HIGH,
            "ranks exchange different digest fields (different models/param groups)",
            threats=("T4",),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-XRANK-STEP",
            Severity.HIGH,
            "ranks are at different step counters",
            threats=("T4",),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-XRANK-STRAGGLER",
            Severity.MEDIUM,
            "a rank is repeatedly (or hugely) slower than the others",
            threats=("T3", "T4"),
            guide="monitor-distributed.md",
        ),
        Rule(
            "TWM-TIME-SHIFT",
            Severity.MEDIUM,
            "the recent steps are significantly and materially slower than the run's own baseline "
            "(a sustained slowdown, measured relative to the run, with no absolute floor)",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-TIME-SPIKES",
            Severity.MEDIUM,
            "steps far above the baseline step time recur improbably often (repeated small delays)",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-SCHED-STATE",
            Severity.HIGH,
            "a declared LR scheduler's settings, lr lambdas or epoch accounting changed after "
            "watch()",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-MODULE-CONFIG",
            Severity.HIGH,
            "a module setting that changes the forward (dropout p, norm eps/momentum, activation) "
            "changed after watch()",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-MODULE-MODE",
            Severity.HIGH,
            "a forward that feeds the gradient ran with other training flags than the first one",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-RNG-STUCK",
            Severity.HIGH,
            "a global RNG that training draws from did not advance over a step (reseeded to the "
            "same seed or restored every step)",
            threats=("T2", "T3"),
            guide="monitor.md",
        ),
        Rule(
            "TWM-RANK-STOPPED",
            Severity.CRITICAL,
            "another rank's heartbeat stopped for max(liveness_min_s, 10 x p99 step time): a "
            "stopped process (SIGSTOP, debugger); the rank is named",
            threats=("T5",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-XRANK-OUTLIER",
            Severity.MEDIUM,
            "a rank's local loss or local gradient norm disagrees with the other ranks' (HIGH when "
            "both do): its own forward or backward is corrupted; the rank is named",
            threats=("T4",),
            guide="monitor.md",
            severity_note="MEDIUM / HIGH",
        ),
        Rule(
            "TWM-XRANK-SLOWDOWN",
            Severity.MEDIUM,
            "one rank's own time per step shifted above the other ranks' (change point or "
            "persistent excess of at least rank_slowdown_min of the step); the rank is named",
            threats=("T3",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-DATA-MISMATCH",
            Severity.CRITICAL,
            "a batch is not the one the declared sampler yields: samples reordered, dropped, "
            "duplicated, substituted or altered",
            threats=("T2",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-DATA-TAMPERED",
            Severity.CRITICAL,
            "the dataset served an item that differs from its manifest",
            threats=("T2",),
            guide="monitor.md",
        ),
        Rule(
            "TWM-DATA-UNVERIFIABLE",
            Severity.HIGH,
            "a batch could not be compared with the declared one (its structure differs)",
            threats=("T2",),
            guide="monitor.md",
        ),
    ]
)
