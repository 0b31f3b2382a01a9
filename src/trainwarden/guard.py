"""The process-wide load guard (``trainwarden.guard.install()`` / ``uninstall()``).

A thin public face of :mod:`trainwarden.loading._guard`; see docs/loading.md.
"""

from __future__ import annotations

from trainwarden.loading._guard import Guard, active, install, uninstall

__all__ = ["Guard", "active", "install", "uninstall"]
