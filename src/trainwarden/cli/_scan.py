"""``trainwarden scan``: static analysis of model files, reported as text, JSON or SARIF."""

from __future__ import annotations

from typing import Annotated

import typer

from trainwarden.cli._common import OutputOpt, parse_severity
from trainwarden.cli._scan_run import ScanFormat, run
from trainwarden.findings import Severity

__all__ = ["ScanFormat", "register"]


def scan(
    paths: Annotated[list[str], typer.Argument(help="Files or directories to scan (recursively).")],
    fmt: Annotated[
        ScanFormat,
        typer.Option(
            "--format",
            envvar=["TRAINWARDEN_SCAN_FORMAT", "TRAINWARDEN_FORMAT"],
            help="Report format.",
        ),
    ] = ScanFormat.text,
    fail_on: Annotated[
        Severity | None,
        typer.Option(
            "--fail-on",
            envvar="TRAINWARDEN_FAIL_ON",
            parser=parse_severity,
            metavar="SEVERITY",
            help="Exit 1 when a finding is at least this severe (info|low|medium|high|critical; "
            "default: the policy's, high).",
        ),
    ] = None,
    policy_file: Annotated[
        str | None,
        typer.Option(
            "--policy",
            envvar="TRAINWARDEN_POLICY",
            help="Policy file (trainwarden.toml or pyproject.toml); default: discovered from "
            "the current directory upwards.",
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            envvar="TRAINWARDEN_ALLOW",
            help="Allow a global (module.name or module.*); repeatable.",
        ),
    ] = None,
    deny: Annotated[
        list[str] | None,
        typer.Option("--deny", envvar="TRAINWARDEN_DENY", help="Deny a global; repeatable."),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            envvar="TRAINWARDEN_INCLUDE",
            help="Only files matching this glob inside directories; repeatable.",
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            envvar="TRAINWARDEN_EXCLUDE",
            help="Skip files or directories matching this glob; repeatable.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            envvar="TRAINWARDEN_WORKERS",
            min=1,
            help="Worker processes (default: automatic, parallel only for large trees).",
        ),
    ] = None,
    hash_files: Annotated[
        bool,
        typer.Option("--hash", envvar="TRAINWARDEN_HASH", help="Add the sha256 of every file."),
    ] = False,
    output: OutputOpt = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            envvar="TRAINWARDEN_VERBOSE",
            help="Text format: list every file scanned, not only those with findings.",
        ),
    ] = False,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            envvar="TRAINWARDEN_ALLOW_EMPTY",
            help="Exit 0 when nothing was analysed (default: exit 2, not a pass).",
        ),
    ] = False,
) -> None:
    """Scan model files for code execution and tampering without loading them."""
    raise typer.Exit(
        run(
            paths,
            fmt,
            fail_on,
            policy_file,
            allow,
            deny,
            include,
            exclude,
            workers,
            hash_files,
            output,
            verbose,
            allow_empty,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
