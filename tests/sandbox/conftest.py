"""Fixtures for the sandbox tests: they run real jobs against the running kernel's Landlock."""

from __future__ import annotations

import pytest

from trainwarden.sandbox import abi_version

ABI = abi_version()

# The sandbox's guarantees (ports, scopes) need ABI 6; a kernel without them cannot show them.
needs_landlock = pytest.mark.skipif(
    ABI.version < 6,
    reason=f"needs Landlock ABI >= 6 in the running kernel (found {ABI.version}: {ABI.reason})",
)
