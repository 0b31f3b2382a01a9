"""The ``trainwarden`` command line: the only module that prints, reads argv or exits.

Exit codes everywhere: 0 clean, 1 findings at or above the threshold, 2 usage or internal error.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trainwarden import __version__
from trainwarden.errors import TrainWardenError

__all__ = ["app", "main"]

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

app = typer.Typer(
    name="trainwarden",
    help="Integrity for ML training on shared clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(str, enum.Enum):
    """Output formats shared by the reporting commands."""

    text = "text"
    json = "json"


def _print_json(data: Any) -> None:
    # Plain stdout write: rich would wrap or colour JSON.
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"trainwarden {__version__}")
        raise typer.Exit(EXIT_CLEAN)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Integrity for ML training on shared clusters."""


# ----------------------------------------------------------------------------------------------
# doctor
# ----------------------------------------------------------------------------------------------


@app.command()
def doctor(
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", envvar="TRAINWARDEN_FORMAT", help="Output format."),
    ] = OutputFormat.text,
) -> None:
    """Report the interpreter, optional frameworks and which features are usable."""
    from trainwarden.doctor import run_doctor

    report = run_doctor()
    if fmt is OutputFormat.json:
        _print_json(
            {
                "trainwarden": report.trainwarden_version,
                "python": report.python,
                "python_executable": report.python_executable,
                "platform": report.platform,
                "components": [
                    {"name": c.name, "state": c.state, "version": c.version, "detail": c.detail}
                    for c in report.components
                ],
                "features": [
                    {"name": f.name, "usable": f.usable, "missing": list(f.missing)}
                    for f in report.features
                ],
                "problems": list(report.problems),
                "ok": report.ok,
            }
        )
    else:
        out.print(f"trainwarden {report.trainwarden_version}")
        out.print(f"python      {report.python} ({report.python_executable})")
        out.print(f"platform    {report.platform}")
        comp = Table(title="components", show_edge=False)
        comp.add_column("component")
        comp.add_column("state")
        comp.add_column("version")
        comp.add_column("detail")
        for c in report.components:
            style = {"ok": "green", "absent": "dim", "broken": "bold red"}[c.state]
            comp.add_row(c.name, f"[{style}]{c.state}[/]", c.version or "-", c.detail)
        out.print(comp)
        feat = Table(title="features", show_edge=False)
        feat.add_column("feature")
        feat.add_column("usable")
        feat.add_column("missing")
        for f in report.features:
            feat.add_row(
                f.name,
                "[green]yes[/]" if f.usable else "[yellow]no[/]",
                ", ".join(f.missing) or "-",
            )
        out.print(feat)
        for p in report.problems:
            err.print(f"[bold red]problem:[/] {p}")
    if not report.ok:
        raise typer.Exit(EXIT_ERROR)


# ----------------------------------------------------------------------------------------------
# scan (issue 3) -- commands for the static scanner go below this line
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# load, guard, run, manifest, convert (issue 4) -- safe-loading commands go below this line
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# attest (issue 5) -- attestation commands go below this line
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# monitor (issue 6) -- training-monitor commands go below this line
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`TrainWardenError` is printed with its diagnostics and exits 2."""
    try:
        app(args=argv, prog_name="trainwarden")
    except TrainWardenError as e:
        err.print(f"[bold red]error:[/] {e.diagnostics()}")
        raise SystemExit(EXIT_ERROR) from e
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(EXIT_ERROR) from None
