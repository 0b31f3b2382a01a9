"""What every command module shares: consoles, the shared options, renderers and exit codes.

Options that several commands take are defined once here (``FormatOpt``, ``FailOnOpt``,
``PolicyOpt``, ...) so they have one spelling, one environment variable and one parser.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from trainwarden.cli._output import (
    Console,
    OutputFormat,
    Table,
    busy,
    deprecated_flag,
    emit,
    err,
    fail_on_or,
    ledger_configured,
    ledger_record,
    out,
    plain_stdout,
    print_findings,
    print_json,
    print_refusal,
    text_safe,
    write_output,
)
from trainwarden.errors import TrainWardenError
from trainwarden.findings import Severity
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


# ---- output ------------------------------------------------------------------------------


# ---- ledger ------------------------------------------------------------------------------


def with_ledger(sink: Any) -> Any:
    """``sink`` plus the ledger when TRAINWARDEN_LEDGER_URL/TOKEN are set (or --ledger)."""
    if not ledger_configured():
        return sink
    from trainwarden.ledger._client import with_ledger as _with_ledger

    return _with_ledger(sink)
