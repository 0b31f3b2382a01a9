"""What a sandbox policy allows and what this kernel can enforce of it (``sandbox explain``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainwarden.sandbox._apply import unenforceable
from trainwarden.sandbox._landlock import abi_version
from trainwarden.sandbox._policy import ResolvedPolicy, SandboxPolicy, compress_ports

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True)
class Explanation:
    """A resolved policy next to the Landlock ABI of the running kernel."""

    policy: ResolvedPolicy
    abi: int
    abi_reason: str
    not_enforceable: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        p = self.policy
        return {
            "policy": p.source,
            "landlock_abi": self.abi,
            "rules": [{"path": r.path, "kind": r.kind, "origin": r.origin} for r in p.rules],
            "bind_ports": list(compress_ports(p.bind_ports)),
            "connect_ports": list(compress_ports(p.connect_ports)),
            "scope_signals": p.scope_signals,
            "scope_abstract_unix": p.scope_abstract_unix,
            "private_tmp": p.private_tmp,
            "not_enforceable_here": list(self.not_enforceable),
        }

    def lines(self) -> list[str]:
        out = self.policy.describe()
        kernel = f"Landlock ABI {self.abi}" if self.abi else f"no Landlock ({self.abi_reason})"
        out.append(f"this kernel: {kernel}")
        if self.not_enforceable:
            out.append("this kernel cannot enforce: " + ", ".join(self.not_enforceable))
        return out


def explain(policy_file: str | None = None) -> Explanation:
    """Resolve ``policy_file`` (the built-in default when ``None``) against this kernel."""
    policy = SandboxPolicy.from_file(policy_file) if policy_file else SandboxPolicy.default()
    resolved = policy.resolve()
    abi = abi_version()
    reason = abi.reason or ""
    return Explanation(resolved, abi.version, reason, unenforceable(resolved, abi.version))
