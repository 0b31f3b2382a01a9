"""Public types of safe loading: the errors a load can raise and the report a load produces."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity

__all__ = [
    "LoadError",
    "LoadReport",
    "ManifestError",
    "UnsafeModelError",
    "UnsafeModelWarning",
]

_ALLOW_HINT = (
    "if you trust this file and the named global, allow it in your policy "
    "(trainwarden.toml or [tool.trainwarden] in pyproject.toml, or "
    'Policy.default().with_overrides(allow=["module.name"])); otherwise ask for the checkpoint '
    "as safetensors (`trainwarden convert PATH --to safetensors` turns a clean pickle checkpoint "
    "into one)"
)

_DANGER_HINT = (
    "this file would run code when loaded: do not load it, and find out who wrote it "
    "(`trainwarden scan` shows everything it contains); ask for the weights as safetensors"
)


def _with_findings(message: str, findings: tuple[Finding, ...], hint: str | None) -> str:
    lines = [message]
    for f in findings[:20]:
        where = f" at {f.location}" if f.location else ""
        lines.append(f"  [{f.severity}] {f.rule_id}{where}: {f.message}")
    if len(findings) > 20:
        lines.append(f"  ... and {len(findings) - 20} more findings")
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)


class LoadError(TrainWardenError):
    """A file could not be loaded safely (unreadable, unsupported format, malformed)."""


class UnsafeModelError(LoadError):
    """The file would need code TrainWarden does not allow to load it; nothing untrusted ran.

    ``findings`` lists every reason (the scanner's and the loader's); ``path`` names the file.
    """

    #: A refused load is a finding about the file, not an error of the command.
    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        findings: Iterable[Finding] = (),
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        found = tuple(findings)
        if hint is None:
            critical = any(f.severity is Severity.CRITICAL for f in found)
            hint = _DANGER_HINT if critical else _ALLOW_HINT
        super().__init__(message, hint=hint)
        self.findings: tuple[Finding, ...] = found
        self.path = path

    def diagnostics(self) -> str:
        return _with_findings(self.message, self.findings, self.hint)


class ManifestError(LoadError):
    """A checkpoint manifest is missing, malformed, does not match the files, or is badly signed.

    ``findings`` carries one finding per file or signature problem. Whatever the command, the
    CLI exits 2 (an input error, like an unreadable file), never 1.
    """

    def __init__(
        self,
        message: str,
        *,
        findings: Iterable[Finding] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.findings: tuple[Finding, ...] = tuple(findings)

    def diagnostics(self) -> str:
        return _with_findings(self.message, self.findings, self.hint)


class UnsafeModelWarning(UserWarning):
    """Issued in ``warn`` mode when a load uses a global the policy does not list as safe."""


@dataclass(frozen=True)
class LoadReport:
    """What one safe load did: the file, its digest, the format, and every finding."""

    path: str
    format: str
    sha256: str | None
    size: int
    findings: tuple[Finding, ...] = ()
    manifest: str | None = None
    events: tuple[dict[str, Any], ...] = field(default=(), hash=False)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a finding is at or above ``fail_on``, else ``0``."""
        return 1 if any(f.severity >= fail_on for f in self.findings) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "size": self.size,
            "manifest": self.manifest,
            "findings": [f.to_dict() for f in self.findings],
            "events": [dict(e) for e in self.events],
        }
