"""Safe loading: checkpoint I/O that never runs code from a model file, and the load guard.

``load``/``save`` are the library entry points, ``guard`` patches every unpickling entry point
of the process, ``manifest`` writes and checks signed checkpoint manifests, ``convert`` turns
clean pickle checkpoints into safetensors, and ``telemetry`` records what happens during a load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainwarden.loading._loader import load, load_with_report, save
from trainwarden.loading._types import (
    LoadError,
    LoadReport,
    ManifestError,
    UnsafeModelError,
    UnsafeModelWarning,
)

if TYPE_CHECKING:
    from trainwarden.loading._convert import from_safetensors, to_safetensors
    from trainwarden.loading._manifest import create_manifest, verify_manifest
    from trainwarden.loading._telemetry import track

__all__ = [
    "LoadError",
    "LoadReport",
    "ManifestError",
    "UnsafeModelError",
    "UnsafeModelWarning",
    "create_manifest",
    "from_safetensors",
    "load",
    "load_with_report",
    "save",
    "to_safetensors",
    "track",
    "verify_manifest",
]


_EXPORTED = {
    "create_manifest": "trainwarden.loading._manifest",
    "from_safetensors": "trainwarden.loading._convert",
    "to_safetensors": "trainwarden.loading._convert",
    "track": "trainwarden.loading._telemetry",
    "verify_manifest": "trainwarden.loading._manifest",
}


def __getattr__(name: str) -> Any:
    # Documented entry points, imported only when asked for (they pull in heavier modules).
    module = _EXPORTED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
