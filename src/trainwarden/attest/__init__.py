"""Environment and code attestation: what a training job will run, and whether it was changed.

The public entry points live in one module per concept: :mod:`~trainwarden.attest.snapshot`
(in-toto statements of an interpreter), :mod:`~trainwarden.attest.verify` (findings against RECORD
and a baseline), :mod:`~trainwarden.attest.diff`, :mod:`~trainwarden.attest.perms` and the run-time
:mod:`~trainwarden.attest.code_guard`.
"""

from __future__ import annotations

from trainwarden.errors import TrainWardenError

__all__ = ["AttestationError"]


class AttestationError(TrainWardenError):
    """An attestation input could not be read or trusted (snapshot, key, interpreter, target)."""
