"""Kernel-enforced job sandbox: Landlock confines a training job and all its children.

``apply(policy)`` restricts the calling process (and everything it starts later) to the paths,
TCP ports and scopes its :class:`SandboxPolicy` declares; ``trainwarden run --sandbox`` calls it
before any user code or model file is loaded. See docs/sandbox.md for what is and is not covered.
"""

from __future__ import annotations

from trainwarden.sandbox._apply import apply, thread_count
from trainwarden.sandbox._explain import Explanation, explain
from trainwarden.sandbox._landlock import abi_version
from trainwarden.sandbox._policy import PRESETS, ResolvedPolicy, SandboxPolicy
from trainwarden.sandbox._types import (
    FsRule,
    Mode,
    SandboxError,
    SandboxReport,
    SandboxUnavailable,
)

__all__ = [
    "PRESETS",
    "Explanation",
    "FsRule",
    "Mode",
    "ResolvedPolicy",
    "SandboxError",
    "SandboxPolicy",
    "SandboxReport",
    "SandboxUnavailable",
    "abi_version",
    "apply",
    "explain",
    "thread_count",
]
