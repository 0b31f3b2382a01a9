"""The monitor's checks, in the order the core runs them at every hook.

The order matters where one check uses what another produced in the same step: the continuity
and hyperparameter checks fill the digest the cross-rank check exchanges; gradient clipping
stores the gradient norm numerics looks at; the rank-outlier check reads what the cross-rank
exchange carried, so it runs after it, and so does the rank-timing check; the hang watchdog
beats last, once the step is done.
"""

from __future__ import annotations

from trainwarden.monitor._check import Check
from trainwarden.monitor._checks.clipping import GradClipping
from trainwarden.monitor._checks.code import CodeGuardCheck, StepIdentity
from trainwarden.monitor._checks.continuity import OptimizerStateContinuity, WeightContinuity
from trainwarden.monitor._checks.cross_rank import CrossRank
from trainwarden.monitor._checks.data import DataCheck
from trainwarden.monitor._checks.gradients import GradientSource, HookInventory
from trainwarden.monitor._checks.hang import HangWatch
from trainwarden.monitor._checks.hyper import Hyperparameters
from trainwarden.monitor._checks.liveness import PeerLiveness
from trainwarden.monitor._checks.numerics import Numerics
from trainwarden.monitor._checks.rank_outlier import RankOutlier
from trainwarden.monitor._checks.rank_timing import RankSlowdown
from trainwarden.monitor._checks.rng import RngWatch
from trainwarden.monitor._checks.state import ModuleConfig, RngProgress, SchedulerState
from trainwarden.monitor._checks.timing import Timing
from trainwarden.monitor._checks.timing_shift import TimingShift
from trainwarden.monitor._checks.update import UpdateRule

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
