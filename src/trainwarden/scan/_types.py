"""Public types of the static scanner: verdicts, limits, per-file and whole-scan reports."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity

if TYPE_CHECKING:
    from trainwarden.scan._policy import Policy

__all__ = [
    "FileReport",
    "FormatHandler",
    "Limits",
    "ScanContext",
    "ScanError",
    "ScanReport",
    "Verdict",
]


class ScanError(TrainWardenError):
    """The scan could not run at all (missing path, unreadable file, bad policy file).

    A file that *can* be read but not parsed is never a ScanError: it is a finding.
    """


class Verdict(enum.Enum):
    """Classification of one imported global by the policy."""

    SAFE = "safe"
    DANGEROUS = "dangerous"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one file; exceeding any of them is a finding, never a crash or hang."""

    max_opcodes: int = 50_000_000
    max_memo: int = 10_000_000
    max_stack_depth: int = 100_000
    max_nesting: int = 1_000
    max_decompressed_bytes: int = 64 * 1024**3
    max_members: int = 100_000
    max_archive_depth: int = 8
    max_seconds_per_file: float = 120.0
    #: Decompressed bytes per compressed byte, judged once a member (or a file's members together)
    #: produced more than 64 MiB; real model data stays far below (bombs run at 1000:1).
    max_compression_ratio: int = 200
    #: Bytes of one decompressed container member held for analysis (in memory or a temporary
    #: file); a member that needs more is reported instead of spilled to disk.
    max_member_bytes: int = 768 * 1024**2
    #: Values one pickled tuple holds, counted as a tree (tuples shared through the memo count
    #: each time they are referred to): hashing a tuple visits all of them.
    max_tuple_expansion: int = 16_000_000

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ScanError(
                    f"invalid scan limit {name}={value!r}", hint="limits must be positive numbers"
                )


@dataclass(frozen=True)
class FileReport:
    """Everything the scanner found in one input file (members of containers included)."""

    path: str
    size: int
    formats: tuple[str, ...]
    findings: tuple[Finding, ...]
    globals: tuple[str, ...] = ()
    sha256: str | None = None
    elapsed_s: float = 0.0

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def verdict(self, fail_on: Severity = Severity.HIGH) -> str:
        """``"clean"``, ``"flagged"`` (findings below ``fail_on``) or ``"unsafe"``."""
        worst = self.max_severity
        if worst is None:
            return "clean"
        return "unsafe" if worst >= fail_on else "flagged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "formats": list(self.formats),
            "globals": list(self.globals),
            "elapsed_s": round(self.elapsed_s, 6),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class ScanReport:
    """The result of scanning one or more paths."""

    files: tuple[FileReport, ...]
    elapsed_s: float = 0.0
    errors: tuple[str, ...] = field(default=())
    #: Entries of the walked trees that were not analysed, as (path, reason): symlinks to
    #: directories (never followed), dangling symlinks, pipes, devices, sockets, unreadable
    #: directories.
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for fr in self.files for f in fr.findings)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def failed(self, fail_on: Severity = Severity.HIGH) -> bool:
        worst = self.max_severity
        return worst is not None and worst >= fail_on

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a finding is at or above ``fail_on``, else ``0`` (errors are the CLI's)."""
        return 1 if self.failed(fail_on) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "elapsed_s": round(self.elapsed_s, 6),
            "errors": list(self.errors),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


class ScanContext(Protocol):
    """Everything a format handler may use while scanning one input file.

    The scanner core implements it (``trainwarden.scan._engine.FileScan``); handlers use nothing
    else, so a context of another kind gets the same behaviour, the user's policy included.
    Handlers append findings with :meth:`add`, hand the bytes of any embedded member back with
    :meth:`scan_member` (dispatched by content, with depth and member limits enforced by the
    core), ask the policy about Python references with :meth:`classify` or :attr:`policy`, and
    account for the time and decompressed bytes the file costs.
    """

    #: The allowlist policy of this scan. A container handler may narrow it for its own members
    #: (TorchScript archives trust their own classes) and must restore it afterwards.
    policy: Policy

    @property
    def limits(self) -> Limits: ...

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` value after which the file is out of time (``None``: no limit)."""
        ...

    @property
    def decompressed(self) -> int:
        """Decompressed bytes this file has produced so far (members of every container)."""
        ...

    def add(self, finding: Finding) -> None: ...

    def scan_member(self, data: bytes, location: str) -> None: ...

    def classify(self, module: str, name: str) -> tuple[Verdict, str]: ...

    def note_format(self, fmt: str) -> None: ...

    def note_globals(self, names: Iterable[str]) -> None:
        """Record the Python globals a pickle in this file references (for the report)."""
        ...

    def limit(self, which: str, message: str, location: str) -> None:
        """Report that the :class:`Limits` field ``which`` was exceeded (HIGH, once per field)."""
        ...

    def out_of_time(self, location: str) -> bool:
        """True (and the limit reported) once the file's time budget is spent."""
        ...

    def decompress_budget(self) -> int:
        """Decompressed bytes the file may still produce before a limit is exceeded."""
        ...

    def charge_decompressed(self, nbytes: int, location: str) -> bool:
        """Account ``nbytes`` decompressed bytes; False (and the limit reported) once over."""
        ...


class FormatHandler(Protocol):
    """A container or file format the scanner understands (one module per format)."""

    name: str

    def sniff(self, data: bytes) -> bool:
        """True when ``data`` is this format, judged by content only (never by file name)."""
        ...

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        """Report findings about ``data`` (found at ``location``) into ``ctx``."""
        ...
