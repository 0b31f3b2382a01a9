"""TrainWarden: integrity for ML training on shared clusters.

The package root exports the types every capability shares: :class:`TrainWardenError`,
:class:`Severity` and :class:`Finding`, and the safe-loading entry points ``load``, ``save`` and
:class:`UnsafeModelError`.
"""

from __future__ import annotations

from trainwarden._version import __version__

# typing.TYPE_CHECKING without importing typing, so `trainwarden --version` stays cheap.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from trainwarden.errors import TrainWardenError
    from trainwarden.findings import Finding, Severity
    from trainwarden.loading import UnsafeModelError, load, save
    from trainwarden.monitor._core import watch
    from trainwarden.monitor._types import Alert, TamperingDetected

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


# Imported on first use, so `import trainwarden` (and every CLI command) stays fast: watch() needs
# torch, and the safe loader pulls in the scanner and the restricted unpickler.
_LAZY = {
    "TrainWardenError": "trainwarden.errors",
    "Finding": "trainwarden.findings",
    "Severity": "trainwarden.findings",
    "watch": "trainwarden.monitor._core",
    "load": "trainwarden.loading",
    "save": "trainwarden.loading",
    "UnsafeModelError": "trainwarden.loading",
    "Alert": "trainwarden.monitor._types",
    "TamperingDetected": "trainwarden.monitor._types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
