"""The monitor's checks, in the order the core runs them at every hook.

The order matters where one check uses what another produced in the same step: the continuity
and hyperparameter checks fill the digest the cross-rank check exchanges; gradient clipping
stores the gradient norm numerics looks at; the rank-outlier check reads what the cross-rank
exchange carried, so it runs after it, and so does the rank-timing check; the hang watchdog
beats last, once the step is done.
"""

from __future__ import annotations

from trainwarden.monitor.check import Check
from trainwarden.monitor.checks.clipping import GradClipping
from trainwarden.monitor.checks.code import CodeGuardCheck, StepIdentity
from trainwarden.monitor.checks.continuity import OptimizerStateContinuity, WeightContinuity
from trainwarden.monitor.checks.cross_rank import CrossRank
from trainwarden.monitor.checks.data import DataCheck
from trainwarden.monitor.checks.gradients import GradientSource, HookInventory
from trainwarden.monitor.checks.hang import HangWatch
from trainwarden.monitor.checks.hyper import Hyperparameters
from trainwarden.monitor.checks.liveness import PeerLiveness
from trainwarden.monitor.checks.numerics import Numerics
from trainwarden.monitor.checks.rank_outlier import RankOutlier
from trainwarden.monitor.checks.rank_timing import RankSlowdown
from trainwarden.monitor.checks.rng import RngWatch
from trainwarden.monitor.checks.state import ModuleConfig, RngProgress, SchedulerState
from trainwarden.monitor.checks.timing import Timing
from trainwarden.monitor.checks.timing_shift import TimingShift
from trainwarden.monitor.checks.update import UpdateRule

__all__ = ["CHECKS", "Check"]

CHECKS: tuple[type[Check], ...] = (
    StepIdentity,
    WeightContinuity,
    Hyperparameters,
    SchedulerState,
    OptimizerStateContinuity,
    GradClipping,
    GradientSource,
    HookInventory,
    ModuleConfig,
    UpdateRule,
    RngWatch,
    RngProgress,
    DataCheck,
    Numerics,
    Timing,
    TimingShift,
    CodeGuardCheck,
    CrossRank,
    RankOutlier,
    RankSlowdown,
    PeerLiveness,
    HangWatch,
)
