"""Access to the scanner's policy and pickle analysis, shared by the loader and the guard."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainwarden.scan.policy import Policy

__all__ = ["resolve_policy"]


@functools.lru_cache(maxsize=8)
def _discovered(cwd: str) -> Policy:
    from trainwarden.scan.policy import Policy

    return Policy.discover(Path(cwd))


def resolve_policy(policy: Policy | None) -> Policy:
    """Return ``policy``, or the project policy found from the working directory, or the default.

    The discovered policy is cached per working directory (policy files are read once).
    """
    if policy is not None:
        return policy
    return _discovered(str(Path.cwd()))


def require_manifest(policy: Any) -> bool:
    """Whether the policy demands a manifest before any load (attribute may be absent)."""
    return bool(getattr(policy, "require_manifest", False))
