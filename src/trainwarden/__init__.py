"""TrainWarden: integrity for ML training on shared clusters.

The package root exports the types every capability shares: :class:`TrainWardenError`,
:class:`Severity` and :class:`Finding`, and the safe-loading entry points ``load``, ``save`` and
:class:`UnsafeModelError`.
"""

from __future__ import annotations

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity
from trainwarden.loading import UnsafeModelError, load, save

__version__ = "0.1.0"

__all__ = [
    "Finding",
    "Severity",
    "TrainWardenError",
    "UnsafeModelError",
    "__version__",
    "load",
    "save",
]
