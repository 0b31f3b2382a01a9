"""Configuration of the training monitor: every setting of ``trainwarden.watch`` and its default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainwarden.findings import Severity
from trainwarden.monitor.types import MonitorError

__all__ = ["MonitorConfig"]


@dataclass(frozen=True)
class MonitorConfig:
    """Monitor settings; pass any of them as keyword arguments to ``watch()``.

    Defaults are chosen to cost well under 1% of step time on a small model (see
    docs/monitor.md for the measured figures).
    """

    check_every: int = 1
    """Run the continuity, update and cross-rank checks every N optimizer steps (1 = every step).
    With N > 1 edits made at unchecked step boundaries are not seen by checks 1-3."""
    update_check: bool = True
    """Recompute the optimizer update on a slice of parameters (check 3)."""
    update_check_fraction: float = 0.05
    """Fraction of the optimizer's parameter tensors checked per step (at least one); the set
    rotates under a secret key so that every tensor is checked every ~1/fraction steps."""
    update_check_elems: int = 64
    """Elements sampled (secret key) in each checked tensor."""
    update_rtol: float = 1e-3
    """Allowed relative difference between the actual and the reference update, on top of a
    few ulps of rounding of the parameter itself."""
    grad_norm_rtol: float = 1e-3
    """Relative tolerance on ``max_grad_norm`` when verifying the caller's clipping."""
    grad_source_check: bool = True
    """Take each gradient where accumulation finishes and verify that step() uses it times one
    uniform factor consistent with ``max_grad_norm`` (turn off with AMP's GradScaler, whose
    unscaling is a factor the monitor is not told about)."""
    check_weights_prestep: bool = True
    """Also hash the parameters at optimizer.step() and compare with the forward (catches
    edits during forward/backward or between gradient-accumulation micro-batches)."""
    code_guard: bool = True
    """Run the attestation code guard (check 6). Building it hashes the guarded sources: about
    0.1-0.5 s per watch() on an idle machine."""
    code_guard_every: int = 50
    """Run the attestation code guard every N steps (0 = only at start)."""
    rng_watch: bool = True
    """Wrap global seeding functions and fingerprint RNG states (check 5)."""
    numerics: bool = True
    """NaN/Inf and robust spike detection on loss and gradient norm (check 7)."""
    timing: bool = True
    """Per-phase step timing with robust anomaly detection (check 8)."""
    time_min_excess_s: float = 0.1
    """A timing spike must exceed the recent median by at least this many seconds."""
    spike_k: float = 8.0
    """Spike threshold in scaled MADs above the median (numerics and timing)."""
    spike_window: int = 64
    """Recent values used for the robust statistics."""
    spike_warmup: int = 16
    """Values needed before spikes are reported."""
    cross_rank: bool = True
    """Exchange a per-step digest with the other ranks when torch.distributed is initialised."""
    peer_timeout_s: float = 30.0
    """Multi-rank runs: how long a rank waits at each step for every other rank's monitor to
    reach the cross-rank exchange, at least (10 x the p99 step time if longer); a rank that
    does not arrive is named (TWM-MONITOR-OFF) and the exchange stops."""
    watchdog: bool = True
    """Run the hang watchdog (heartbeat per step, stack dumps on timeout, signal records)."""
    watchdog_min_timeout_s: float = 300.0
    """Lower bound of the watchdog's adaptive timeout."""
    selfcheck_interval_s: float = 1.0
    """How often a background thread checks that the monitor's hooks and code are intact (the
    same check also runs at every step). 0 = only at steps."""
    seed: int | None = None
    """Secret key for the checked slices and fingerprint weights; default: 8 bytes of
    os.urandom (set it only to make a run's choices reproducible)."""
    fail_severity: Severity = Severity.HIGH
    """With ``fail_closed=True``, alerts at or above this severity raise TamperingDetected."""
    record_steps: bool = True
    """Write one per-step record (lr, loss, grad norm, timings, RNG and batch fingerprints)."""
    keep_records: int = 256
    """Per-step records kept in memory in ``monitor.records``."""
    data: Any = None
    """A :class:`trainwarden.data.DataSpec`: check every training forward's input, and every
    batch its ``loader()`` yields, against the declared sampler and the dataset's manifest."""

    def __post_init__(self) -> None:
        positive = ("check_every", "update_check_elems", "spike_window", "keep_records")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise MonitorError(
                    f"monitor setting {name} must be >= 1, got {getattr(self, name)}"
                )
        if not 0.0 < self.update_check_fraction <= 1.0:
            raise MonitorError(
                f"update_check_fraction must be in (0, 1], got {self.update_check_fraction}"
            )
        for name in ("update_rtol", "grad_norm_rtol", "time_min_excess_s", "spike_k"):
            if float(getattr(self, name)) < 0:
                raise MonitorError(
                    f"monitor setting {name} must be >= 0, got {getattr(self, name)}"
                )
        if self.code_guard_every < 0 or self.spike_warmup < 0:
            raise MonitorError("code_guard_every and spike_warmup must be >= 0")
        if self.peer_timeout_s <= 0:
            raise MonitorError("peer_timeout_s must be > 0")
        if self.selfcheck_interval_s < 0:
            raise MonitorError("selfcheck_interval_s must be >= 0")
        if self.watchdog_min_timeout_s <= 0:
            raise MonitorError("watchdog_min_timeout_s must be > 0")

    @classmethod
    def from_kwargs(cls, config: dict[str, Any]) -> MonitorConfig:
        """Build from ``watch(**config)``; an unknown key is a MonitorError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise MonitorError(
                f"unknown monitor setting(s): {', '.join(unknown)}",
                hint=f"known settings: {', '.join(sorted(known))}",
            )
        values = dict(config)
        if "fail_severity" in values:
            values["fail_severity"] = Severity.parse(values["fail_severity"])
        return cls(**values)
