"""Training integrity monitor: ``watch(model, optimizer)`` checks every step of a PyTorch run.

See docs/monitor.md for the checks, their rule ids, the configuration and the sink format.
Importing this package is cheap: torch is only imported when ``watch`` (or ``Monitor``,
``MonitorConfig``, ``RULES``) is first used, so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trainwarden.monitor.types import Alert, MonitorError, TamperingDetected

if TYPE_CHECKING:
    from trainwarden.monitor.check import Check
    from trainwarden.monitor.config import MonitorConfig
    from trainwarden.monitor.core import Monitor, watch
    from trainwarden.monitor.rules import RULES

__all__ = [
    "RULES",
    "Alert",
    "Check",
    "Monitor",
    "MonitorConfig",
    "MonitorError",
    "TamperingDetected",
    "watch",
]

_LAZY = {
    "Check": "trainwarden.monitor.check",
    "watch": "trainwarden.monitor.core",
    "Monitor": "trainwarden.monitor.core",
    "MonitorConfig": "trainwarden.monitor.config",
    "RULES": "trainwarden.monitor.rules",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
