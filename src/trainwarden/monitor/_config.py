"""Configuration of the training monitor: every setting of ``trainwarden.watch`` and its default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainwarden.findings import Severity
from trainwarden.monitor._types import MonitorError

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
    scheduler_state: bool = True
    """Check the declared schedulers' settings, lambdas and epoch accounting every step."""
    module_config: bool = True
    """Check the modules' forward-changing settings (dropout p, norm eps/momentum, activations)
    and the training flags of every forward that feeds a gradient (turn off for a run that
    schedules dropout or freezes layers on purpose mid-training)."""
    numerics: bool = True
    """NaN/Inf and robust spike detection on loss and gradient norm (check 7)."""
    timing: bool = True
    """Per-phase step timing with robust anomaly detection (check 8)."""
    time_min_excess_s: float = 0.1
    """A timing spike must exceed the recent median by at least this many seconds."""
    time_baseline_steps: int = 64
    """Steps (after ``spike_warmup``) that make the run's own step-time baseline; the timing-shift
    check compares every later step with it."""
    time_shift_window: int = 16
    """Recent steps compared with the baseline by a rank-sum test (a sustained slowdown is
    reported within this many steps of its onset)."""
    time_shift_min: float = 0.3
    """A sustained slowdown must make the recent median step at least this much slower than the
    baseline median (0.3 = 30%) to be reported."""
    time_shift_z: float = 4.0
    """Rank-sum z the recent window must reach against the baseline."""
    time_spike_ratio: float = 2.0
    """A step counts as a relative spike above this many times the baseline median (and
    ``time_spike_k`` scaled MADs); there is no absolute floor."""
    time_spike_k: float = 3.0
    """Scaled MADs (of the baseline's log step times) above its median for a relative spike;
    the rate test calibrates it against the baseline, so it can be far lower than ``spike_k``."""
    time_spike_alpha: float = 1e-6
    """Relative spikes are reported when their count over the last 100 steps has a binomial tail
    probability below this, given the baseline's own rate of such steps."""
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
    rank_outlier: bool = True
    """Multi-rank runs: carry each rank's local loss and local gradient norm in the cross-rank
    exchange and name a rank whose values disagree with the others' (a corrupted forward)."""
    rank_outlier_min_ratio: float = 2.0
    """A rank is never named for disagreeing with the others by less than this factor."""
    rank_outlier_max_ratio: float = 4.0
    """Until the run has its own history of cross-rank spread (8 steps), a rank is named only for
    disagreeing by more than this factor; afterwards ``spike_k`` times the median spread (at least
    ``rank_outlier_min_ratio``) decides."""
    rank_slowdown: bool = True
    """Multi-rank runs: carry each rank's own time per step (step minus backward and exchange
    waits) in the cross-rank exchange and name a rank that became slower than the others."""
    rank_slowdown_min: float = 0.25
    """A rank is named for a slowdown only when it adds at least this share (0.25 = 25%) to the
    step the other ranks would take without it, over a window, as a shift or persistently."""
    liveness: bool = True
    """Multi-rank runs: a background thread beats a counter in the process group's store and
    names a rank whose counter stops (a stopped process, SIGSTOP or a debugger)."""
    liveness_min_s: float = 30.0
    """Lower bound of the liveness window; the window is max(this, 10 x the p99 step time)."""
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
    audit_every: int | None = None
    """Record the run for ``trainwarden audit replay``: a checkpoint every N optimizer steps and
    one hash-chained record per step (see docs/audit.md for the disk cost). Setting it, or
    ``audit_dir``, switches recording on (N defaults to 50); wrap the training DataLoader with
    ``monitor.audit.track(loader)`` so each step's dataset indices are recorded."""
    audit_dir: Any = None
    """Where the audit record goes; default ``$TRAINWARDEN_MONITOR_DIR/audit`` (or
    ``./trainwarden-monitor/audit``). Its events go to the monitor's sink."""
    audit_activation_every: int = 10
    """Record per-module activation digests (which localise a divergence to one module's forward)
    every N recorded steps; 0 = never."""
    audit_sign_key: Any = None
    """Ed25519 private key (a path) that signs every audit checkpoint's manifest."""

    def __post_init__(self) -> None:
        positive = (
            "check_every",
            "update_check_elems",
            "spike_window",
            "keep_records",
            "time_baseline_steps",
            "time_shift_window",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise MonitorError(
                    f"monitor setting {name} must be >= 1, got {getattr(self, name)}"
                )
        if not 0.0 < self.update_check_fraction <= 1.0:
            raise MonitorError(
                f"update_check_fraction must be in (0, 1], got {self.update_check_fraction}"
            )
        for name in (
            "update_rtol",
            "grad_norm_rtol",
            "time_min_excess_s",
            "spike_k",
            "time_spike_k",
        ):
            if float(getattr(self, name)) < 0:
                raise MonitorError(
                    f"monitor setting {name} must be >= 0, got {getattr(self, name)}"
                )
        if self.time_spike_ratio <= 1.0 or self.time_shift_min <= 0 or self.time_shift_z <= 0:
            raise MonitorError("time_spike_ratio must be > 1, time_shift_min and time_shift_z > 0")
        if not 0.0 < self.time_spike_alpha < 1.0:
            raise MonitorError(f"time_spike_alpha must be in (0, 1), got {self.time_spike_alpha}")
        if self.code_guard_every < 0 or self.spike_warmup < 0:
            raise MonitorError("code_guard_every and spike_warmup must be >= 0")
        if self.peer_timeout_s <= 0:
            raise MonitorError("peer_timeout_s must be > 0")
        if self.selfcheck_interval_s < 0:
            raise MonitorError("selfcheck_interval_s must be >= 0")
        if not 1.0 < self.rank_outlier_min_ratio <= self.rank_outlier_max_ratio:
            raise MonitorError(
                "rank_outlier_min_ratio must be > 1 and <= rank_outlier_max_ratio, got "
                f"{self.rank_outlier_min_ratio} and {self.rank_outlier_max_ratio}"
            )
        if not self.rank_slowdown_min > 0:
            raise MonitorError(f"rank_slowdown_min must be > 0, got {self.rank_slowdown_min}")
        if self.liveness_min_s <= 0:
            raise MonitorError("liveness_min_s must be > 0")
        if self.watchdog_min_timeout_s <= 0:
            raise MonitorError("watchdog_min_timeout_s must be > 0")
        if self.audit_every is not None and int(self.audit_every) < 1:
            raise MonitorError(f"audit_every must be >= 1, got {self.audit_every}")
        if self.audit_activation_every < 0:
            raise MonitorError("audit_activation_every must be >= 0")

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
