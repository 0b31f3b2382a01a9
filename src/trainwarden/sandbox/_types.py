"""Public types of the job sandbox: its error, its modes and the report of what was enforced."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from trainwarden.errors import TrainWardenError

__all__ = ["Mode", "SandboxError", "SandboxReport", "SandboxUnavailable"]


class SandboxError(TrainWardenError):
    """The sandbox could not be set up as asked (bad policy, thread already running, ...)."""


class SandboxUnavailable(SandboxError):
    """The kernel cannot enforce what the policy asks (no Landlock, or an ABI too old)."""


class Mode(str, enum.Enum):
    """How :func:`trainwarden.sandbox.apply` treats the policy.

    ``enforce`` refuses to start unless the kernel enforces every part of the policy;
    ``best_effort`` enforces what the kernel offers and reports the rest as not enforced;
    ``warn`` enforces nothing and reports, through Python audit events, what would be denied.
    """

    enforce = "enforce"
    warn = "warn"
    best_effort = "best-effort"

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        if isinstance(value, Mode):
            return value
        spelled = value.strip().lower().replace("_", "-")
        for m in cls:
            if m.value == spelled:
                return m
        raise SandboxError(
            f"unknown sandbox mode {value!r}",
            hint="use --sandbox=enforce, --sandbox=warn or --sandbox=best-effort",
        )


@dataclass(frozen=True)
class FsRule:
    """One ``path beneath`` rule: ``path`` (as resolved by the kernel) and the rights granted."""

    path: str
    rights: tuple[str, ...]
    origin: str
    """Where the rule came from: a preset name, ``policy`` or ``code``."""


@dataclass(frozen=True)
class SandboxReport:
    """What :func:`trainwarden.sandbox.apply` did. ``enforced`` is False in warn mode and when
    best-effort found no Landlock; ``not_enforced`` names each part of the policy the kernel
    could not enforce (empty in enforce mode, which refuses instead)."""

    mode: Mode
    abi: int
    enforced: bool
    fs_rules: tuple[FsRule, ...] = ()
    bind_ports: tuple[str, ...] = ()
    connect_ports: tuple[str, ...] = ()
    scoped: tuple[str, ...] = ()
    not_enforced: tuple[str, ...] = ()
    tmpdir: str | None = None
    policy_source: str | None = None
    kernel_reason: str | None = field(default=None)

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable record for an event sink (``kind = "sandbox.applied"``)."""
        return {
            "mode": self.mode.value,
            "abi": self.abi,
            "enforced": self.enforced,
            "fs_rules": [
                {"path": r.path, "rights": list(r.rights), "origin": r.origin}
                for r in self.fs_rules
            ],
            "bind_ports": list(self.bind_ports),
            "connect_ports": list(self.connect_ports),
            "scoped": list(self.scoped),
            "not_enforced": list(self.not_enforced),
            "tmpdir": self.tmpdir,
            "policy": self.policy_source,
            "kernel_reason": self.kernel_reason,
        }
