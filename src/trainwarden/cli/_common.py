"""What every command module shares: consoles, the shared options, renderers and exit codes.

Options that several commands take are defined once here (``FormatOpt``, ``FailOnOpt``,
``PolicyOpt``, ...) so they have one spelling, one environment variable and one parser.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from trainwarden.cli._output import (
    SEVERITY_STYLE,
    Console,
    Table,
    err,
    ledger_configured,
    ledger_record,
    out,
    plain_stdout,
    text_safe,
    write_output,
)
from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity
from trainwarden.report import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS

__all__ = [
    "EXIT_CLEAN",
    "EXIT_ERROR",
    "EXIT_FINDINGS",
    "Console",
    "DeprecatedKeyOpt",
    "FailOnOpt",
    "FormatOpt",
    "OutputFormat",
    "OutputOpt",
    "PolicyOpt",
    "Table",
    "busy",
    "deprecated_flag",
    "emit",
    "err",
    "fail_on_or",
    "ledger_configured",
    "ledger_record",
    "out",
    "parse_severity",
    "plain_stdout",
    "print_findings",
    "print_json",
    "print_refusal",
    "root",
    "text_safe",
    "write_output",
]


# ---- the root options ----------------------------------------------------------------------


def _version_callback(value: bool) -> None:
    if value:
        from trainwarden._version import __version__

        sys.stdout.write(f"trainwarden {__version__}\n")
        raise typer.Exit(EXIT_CLEAN)


def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
    ledger: Annotated[
        bool,
        typer.Option(
            "--ledger",
            help="Send verdicts and events to the ledger service (TRAINWARDEN_LEDGER_URL and"
            " TRAINWARDEN_LEDGER_TOKEN must be set).",
        ),
    ] = False,
) -> None:
    """Integrity for ML training on shared clusters."""
    if ledger:
        # Child processes (the guarded script of `trainwarden run`) inherit the requirement.
        os.environ["TRAINWARDEN_LEDGER"] = "1"
        if not (
            os.environ.get("TRAINWARDEN_LEDGER_URL") and os.environ.get("TRAINWARDEN_LEDGER_TOKEN")
        ):
            raise TrainWardenError(
                "--ledger needs TRAINWARDEN_LEDGER_URL and TRAINWARDEN_LEDGER_TOKEN",
                hint="create a run with the ledger service and export its writer token",
            )


# ---- shared options -----------------------------------------------------------------------------


class OutputFormat(str, enum.Enum):
    """Output formats of the reporting commands (``scan`` adds ``sarif``)."""

    text = "text"
    json = "json"


def parse_severity(value: str | Severity) -> Severity:
    try:
        return Severity.parse(value)
    except TrainWardenError as e:
        raise typer.BadParameter(f"{e.message} ({e.hint})") from None


FormatOpt = Annotated[
    OutputFormat,
    typer.Option("--format", envvar="TRAINWARDEN_FORMAT", help="Output format."),
]
FailOnOpt = Annotated[
    Severity | None,
    typer.Option(
        "--fail-on",
        envvar="TRAINWARDEN_FAIL_ON",
        parser=parse_severity,
        metavar="SEVERITY",
        help="Exit 1 when a finding is at or above this severity "
        "(info|low|medium|high|critical; default: high).",
    ),
]
PolicyOpt = Annotated[
    str | None,
    typer.Option("--policy", envvar="TRAINWARDEN_POLICY", help="Policy file (TOML)."),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        envvar="TRAINWARDEN_OUTPUT",
        help="Write the report to this file instead of stdout.",
    ),
]
# `--key` named a private key in one command and a public key in others: private keys are given
# with --sign and public keys with --pub everywhere; --key stays as a hidden alias.
DeprecatedKeyOpt = Annotated[str | None, typer.Option("--key", hidden=True)]


def fail_on_or(fail_on: Severity | None, default: Severity = Severity.HIGH) -> Severity:
    """The threshold: ``--fail-on`` when given, else ``default`` (HIGH unless a policy says)."""
    return default if fail_on is None else fail_on


def deprecated_flag(value: Any, old: str, new: str) -> Any:
    if value is not None:
        err.print(f"warning: {old} is deprecated here; use {new}", markup=False)
    return value


# ---- output ------------------------------------------------------------------------------


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


# ---- ledger ------------------------------------------------------------------------------


def with_ledger(sink: Any) -> Any:
    """``sink`` plus the ledger when TRAINWARDEN_LEDGER_URL/TOKEN are set (or --ledger)."""
    if not ledger_configured():
        return sink
    from trainwarden.ledger._client import with_ledger as _with_ledger

    return _with_ledger(sink)
