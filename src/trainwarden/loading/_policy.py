"""Access to the scanner's policy and pickle analysis, shared by the loader and the guard."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainwarden.scan._policy import Policy

__all__ = ["require_manifest", "resolve_policy", "trusted_manifest_key"]


@functools.lru_cache(maxsize=8)
def _discovered(cwd: str) -> Policy:
    from trainwarden.scan._policy import Policy

    return Policy.discover(Path(cwd))


def resolve_policy(policy: Policy | None) -> Policy:
    """Return ``policy``, or the project policy found from the working directory, or the default.

    The discovered policy is cached per working directory (policy files are read once).
    """
    if policy is not None:
        return policy
    return _discovered(str(Path.cwd()))


def require_manifest(policy: Any) -> bool:
    """Whether a manifest is required before any load: the policy's ``require_manifest``
    attribute (when it has one) or ``TRAINWARDEN_REQUIRE_MANIFEST=1``."""
    if getattr(policy, "require_manifest", False):
        return True
    return os.environ.get("TRAINWARDEN_REQUIRE_MANIFEST", "").strip().lower() in _TRUE


def trusted_manifest_key() -> str | None:
    """The public key manifests must be signed by (``TRAINWARDEN_MANIFEST_PUBKEY``), if set."""
    return os.environ.get("TRAINWARDEN_MANIFEST_PUBKEY") or None


_TRUE = {"1", "true", "yes", "on"}
