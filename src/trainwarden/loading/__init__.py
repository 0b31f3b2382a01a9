"""Safe loading: checkpoint I/O that never runs code from a model file, and the load guard.

``load``/``save`` are the library entry points, ``guard`` patches every unpickling entry point
of the process, ``manifest`` writes and checks signed checkpoint manifests, ``convert`` turns
clean pickle checkpoints into safetensors, and ``telemetry`` records what happens during a load.
"""

from __future__ import annotations

from trainwarden.loading.loader import load, load_with_report, save
from trainwarden.loading.types import (
    LoadError,
    LoadReport,
    ManifestError,
    UnsafeModelError,
    UnsafeModelWarning,
)

__all__ = [
    "LoadError",
    "LoadReport",
    "ManifestError",
    "UnsafeModelError",
    "UnsafeModelWarning",
    "load",
    "load_with_report",
    "save",
]
