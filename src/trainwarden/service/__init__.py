"""The ledger service: an HTTP API (FastAPI) over :mod:`trainwarden.ledger` with admin, writer
and reader tokens, signed checkpoints issued while entries arrive, and the dead-man switch."""

from __future__ import annotations

from trainwarden.service._core import LedgerService, Principal, ServiceError
from trainwarden.service._server import ServeConfig, build_service, check_bind

__all__ = [
    "LedgerService",
    "Principal",
    "ServeConfig",
    "ServiceError",
    "build_service",
    "check_bind",
]
