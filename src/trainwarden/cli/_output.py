"""What the command modules print with, importing neither Typer nor rich until used.

``trainwarden scan`` and ``trainwarden attest verify`` run through these without Typer on their
fast paths; every command reaches them through ``trainwarden.cli._common``.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwarden._internal.files import write_atomic
from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity

if TYPE_CHECKING:
    from rich.console import Console as _RichConsole
    from rich.table import Table as _RichTable

__all__ = [
    "SEVERITY_STYLE",
    "Console",
    "OutputFormat",
    "Table",
    "busy",
    "deprecated_flag",
    "emit",
    "err",
    "fail_on_or",
    "ledger_configured",
    "ledger_record",
    "out",
    "plain_stdout",
    "print_findings",
    "print_json",
    "print_refusal",
    "text_safe",
    "write_output",
]


# rich costs a noticeable share of start-up and most commands print a line or two, so the consoles
# and tables are created on first use (`Console(...)` and `Table(...)` keep their rich signatures).
def Console(*args: Any, **kwargs: Any) -> _RichConsole:
    from rich.console import Console as _Console

    return _Console(*args, **kwargs)


def Table(*args: Any, **kwargs: Any) -> _RichTable:
    from rich.table import Table as _Table

    return _Table(*args, **kwargs)


class _LazyConsole:
    """A rich Console made on first attribute access."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._console: _RichConsole | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = Console(**self._kwargs)
        return getattr(self._console, name)


out: Any = _LazyConsole(highlight=False, soft_wrap=True)
err: Any = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)


# ---- output ----------------------------------------------------------------------------


def write_output(text: str, output: str | os.PathLike[str] | None) -> None:
    """Write ``text`` to stdout, or atomically to ``output`` (never a half-written report)."""
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_atomic(Path(output), text.encode("utf-8"), make_parents=False)
    except OSError as e:
        raise TrainWardenError(
            f"cannot write the report to {output}: {e.strerror or e}",
            hint="check that the directory exists and is writable",
        ) from e


def plain_stdout() -> bool:
    """Whether stdout gets plain text: not a terminal and no colours forced (rich would print
    the same text there, so the caller can skip loading it)."""
    env = os.environ
    if env.get("FORCE_COLOR") or env.get("TTY_COMPATIBLE") or env.get("TTY_INTERACTIVE"):
        return False
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def text_safe(text: str) -> str:
    """``text`` with control, format (bidi) and undecodable characters written as escapes.

    File and member names come from the files scanned: a newline in one must not forge a line
    of the report, nor a right-to-left override reorder it.
    """
    if text.isascii() and text.isprintable():
        return text  # the common case: no control character is printable, and ASCII has no other
    import unicodedata

    chars = []
    for ch in text:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            chars.append(f"\\x{cp - 0xDC00:02x}")
        elif 0xD800 <= cp <= 0xDFFF or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            chars.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}")
        else:
            chars.append(ch)
    return "".join(chars)


SEVERITY_STYLE = {
    "CRITICAL": "bold red",
    "HIGH": "red",
    "MEDIUM": "yellow",
    "LOW": "cyan",
    "INFO": "dim",
}


# ---- ledger ------------------------------------------------------------------------------


def ledger_configured() -> bool:
    """Whether a ledger is configured or required (without importing the ledger client)."""
    env = os.environ
    return env.get("TRAINWARDEN_LEDGER") == "1" or bool(
        env.get("TRAINWARDEN_LEDGER_URL") and env.get("TRAINWARDEN_LEDGER_TOKEN")
    )


def ledger_record(kind: str, record: dict[str, Any], items_key: str | None = None) -> None:
    """Send a command's verdict to the ledger when one is configured: one entry per item of
    ``record[items_key]`` (e.g. each scanned file, with its sha256), then the record itself."""
    if not ledger_configured():
        return
    from trainwarden.ledger._client import configured_sink

    sink = configured_sink()
    if sink is None:
        return
    try:
        doc = dict(record)
        items = doc.pop(items_key, []) if items_key else []
        for item in items:
            sink.emit(f"{kind}.item", item)
        sink.emit(kind, {**doc, "items": len(items)} if items_key else doc)
        if not sink.flush(timeout=15):
            err.print(
                f"ledger: {sink.pending} event(s) not yet acknowledged ({sink.last_error});"
                f" they stay in {sink.spool_dir} and are sent by the next command",
                markup=False,
            )
    finally:
        sink.close(timeout=1)


class OutputFormat(str, enum.Enum):
    """Output formats of the reporting commands (``scan`` adds ``sarif``)."""

    text = "text"
    json = "json"


def fail_on_or(fail_on: Severity | None, default: Severity = Severity.HIGH) -> Severity:
    """The threshold: ``--fail-on`` when given, else ``default`` (HIGH unless a policy says)."""
    return default if fail_on is None else fail_on


def deprecated_flag(value: Any, old: str, new: str) -> Any:
    if value is not None:
        err.print(f"warning: {old} is deprecated here; use {new}", markup=False)
    return value


def print_json(data: Any, output: str | os.PathLike[str] | None = None) -> None:
    # Plain stdout write: rich would wrap or colour JSON.
    write_output(json.dumps(data, indent=2, sort_keys=False) + "\n", output)


def emit(
    report: Any,
    fmt: OutputFormat,
    text: Callable[[Any], None],
    output: str | os.PathLike[str] | None = None,
) -> None:
    """Render ``report`` in ``fmt``: JSON is ``report.to_dict()``; text is ``text(console)``.

    With ``output`` the rendering goes atomically to that file (text without colours).
    """
    if fmt is OutputFormat.json:
        print_json(report.to_dict(), output)
        return
    if output is None:
        text(out)
        return
    import io

    buf = io.StringIO()
    text(Console(file=buf, highlight=False, soft_wrap=True, no_color=True, width=120))
    write_output(buf.getvalue(), output)


def print_findings(findings: Sequence[Finding], limit: int = 60, console: Any = None) -> None:
    """A findings table (the first ``limit``), or "no findings"."""
    console = out if console is None else console
    if not findings:
        console.print("[green]no findings[/]")
        return
    table = Table(show_edge=False, show_header=True)
    table.add_column("severity")
    table.add_column("rule")
    table.add_column("message", overflow="fold")
    for f in findings[:limit]:
        sev = f.severity.name
        table.add_row(f"[{SEVERITY_STYLE[sev]}]{sev}[/]", f.rule_id, f.message)
    console.print(table)
    if len(findings) > limit:
        console.print(f"... and {len(findings) - limit} more (use --format json for all)")


def print_refusal(findings: Sequence[Finding]) -> None:
    for f in findings:
        where = f" at {f.location}" if f.location else ""
        err.print(f"  [{f.severity}] {f.rule_id}{where}: {f.message}", markup=False)


def busy(fmt: OutputFormat | Any, message: str) -> Any:
    """A spinner on stderr while long work runs, in text mode on a terminal only."""
    import contextlib

    if fmt is OutputFormat.text and err.is_terminal:
        return err.status(message)
    return contextlib.nullcontext()
