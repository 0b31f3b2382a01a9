"""Environment and code attestation: what a training job will run, and whether it was changed.

The commands (``trainwarden attest snapshot|verify|diff|perms|fleet``) are the interface;
the run-time code guard is :class:`CodeGuard` (see docs/attest.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainwarden.errors import TrainWardenError

if TYPE_CHECKING:
    from trainwarden.attest._code_guard import DEFAULT_TARGETS, CodeGuard, trust_wrapper_code

__all__ = [
    "DEFAULT_TARGETS",
    "AttestationError",
    "CodeGuard",
    "trust_wrapper_code",
]


class AttestationError(TrainWardenError):
    """An attestation input could not be read or trusted (snapshot, key, interpreter, target)."""


_EXPORTED = {
    "CodeGuard": "trainwarden.attest._code_guard",
    "DEFAULT_TARGETS": "trainwarden.attest._code_guard",
    "trust_wrapper_code": "trainwarden.attest._code_guard",
}


def __getattr__(name: str) -> Any:
    # Documented entry points, imported only when asked for (they pull in heavier modules).
    module = _EXPORTED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
