"""The investigator dashboard served by ``trainwarden serve`` under ``/ui/``: a reader logs in
with a reader (or admin) token and sees runs, alert timelines whose entries the browser checks
against the latest signed checkpoint, per-rank plots, attestations, artifacts and the ledger's
status. It only reads: no page or form of it can write to the ledger."""

from __future__ import annotations

from trainwarden.service._dashboard.model import RunIndex, RunsModel, RunSummary, downsample
from trainwarden.service._dashboard.routes import DashboardConfig, install_dashboard

__all__ = [
    "DashboardConfig",
    "RunIndex",
    "RunSummary",
    "RunsModel",
    "downsample",
    "install_dashboard",
]
