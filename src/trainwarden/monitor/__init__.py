"""Training integrity monitor: ``watch(model, optimizer)`` checks every step of a PyTorch run.

See docs/monitor.md for the checks, their rule ids, the configuration and the sink format.
Importing this package is cheap: torch is only imported when ``watch`` (or ``Monitor``,
``MonitorConfig``, ``RULES``) is first used, so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trainwarden.monitor._types import Alert, MonitorError, TamperingDetected

if TYPE_CHECKING:
    from trainwarden.monitor._check import Check
    from trainwarden.monitor._config import MonitorConfig
    from trainwarden.monitor._core import Monitor, watch
    from trainwarden.monitor._distributed import RankExchange
    from trainwarden.monitor._rules import RULES
    from trainwarden.monitor._watchdog import Watchdog, record_signals_early

__all__ = [
    "RULES",
    "Alert",
    "Check",
    "Monitor",
    "MonitorConfig",
    "MonitorError",
    "RankExchange",
    "TamperingDetected",
    "Watchdog",
    "record_signals_early",
    "watch",
]

_LAZY = {
    "RankExchange": "trainwarden.monitor._distributed",
    "Watchdog": "trainwarden.monitor._watchdog",
    "record_signals_early": "trainwarden.monitor._watchdog",
    "Check": "trainwarden.monitor._check",
    "watch": "trainwarden.monitor._core",
    "Monitor": "trainwarden.monitor._core",
    "MonitorConfig": "trainwarden.monitor._config",
    "RULES": "trainwarden.monitor._rules",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
