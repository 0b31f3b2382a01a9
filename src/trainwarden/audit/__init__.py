"""Replay audit: record a run cheaply inside the job, re-execute sampled steps outside it.

:class:`AuditRecorder` writes periodic checkpoints and hash-chained per-step records;
:func:`replay` re-runs sampled intervals in another process and reports, per interval, whether
the run reproduced, where it diverged, or what is missing.
"""

from __future__ import annotations

from trainwarden.audit._recorder import DEFAULT_AUDIT_EVERY, AuditRecorder
from trainwarden.audit._replay import replay
from trainwarden.audit._types import AuditError, IntervalResult, Job, ReplayReport

__all__ = [
    "DEFAULT_AUDIT_EVERY",
    "AuditError",
    "AuditRecorder",
    "IntervalResult",
    "Job",
    "ReplayReport",
    "replay",
]
