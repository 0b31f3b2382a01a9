"""``trainwarden doctor``: the interpreter, optional frameworks and which features are usable."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from trainwarden.cli._common import EXIT_ERROR, FormatOpt, OutputFormat, Table, emit, err

__all__ = ["register"]


def doctor(
    fmt: FormatOpt = OutputFormat.text,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            envvar="TRAINWARDEN_DOCTOR_DEEP",
            help="Import every component to prove it works (slow); default: locate only.",
        ),
    ] = False,
) -> None:
    """Report the interpreter, optional frameworks and which features are usable."""
    from trainwarden._doctor import run_doctor

    report = run_doctor(deep=deep)

    def text(out: Any) -> None:
        _render(report, out)

    emit(report, fmt, text)
    if not report.ok:
        raise typer.Exit(EXIT_ERROR)


def _render(report: Any, out: Any) -> None:
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


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
