"""TrainWarden: integrity for ML training on shared clusters.

The package root exports the types every capability shares: :class:`TrainWardenError`,
:class:`Severity` and :class:`Finding`, and the safe-loading entry points ``load``, ``save`` and
:class:`UnsafeModelError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity
from trainwarden.loading import UnsafeModelError, load, save
from trainwarden.monitor.types import Alert, TamperingDetected

if TYPE_CHECKING:
    from trainwarden.monitor.core import watch

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "Finding",
    "Severity",
    "TamperingDetected",
    "TrainWardenError",
    "UnsafeModelError",
    "__version__",
    "load",
    "save",
    "watch",
]


def __getattr__(name: str) -> Any:
    # watch() needs torch: import it on first use so `import trainwarden` (and the CLI) stays fast.
    if name == "watch":
        from trainwarden.monitor.core import watch

        return watch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
