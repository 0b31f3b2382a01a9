"""``trainwarden drill``: replay every sabotage technique against the drill job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainwarden.cli._common import EXIT_ERROR, FormatOpt, OutputFormat, err, out, print_json

__all__ = ["register"]


def drill_cmd(
    technique: Annotated[
        list[str] | None,
        typer.Option(
            "--technique", help="Technique id or threat (T1..T8) to run; repeat. Default: all."
        ),
    ] = None,
    ledger: Annotated[
        str | None,
        typer.Option(
            "--ledger",
            envvar="TRAINWARDEN_DRILL_LEDGER",
            help="Ledger service URL (default: start a local SQLite one on 127.0.0.1).",
        ),
    ] = None,
    ledger_token: Annotated[
        str | None,
        typer.Option(
            "--ledger-token",
            envvar="TRAINWARDEN_DRILL_LEDGER_TOKEN",
            help="Admin token of the --ledger service (the drill creates one run per technique).",
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
    ranks: Annotated[
        int,
        typer.Option(
            "--ranks",
            envvar="TRAINWARDEN_DRILL_RANKS",
            min=2,
            help="World size of the multi-rank techniques (T4, T5) under torchrun.",
        ),
    ] = 2,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            envvar="TRAINWARDEN_DRILL_REPORT",
            help="Also write a self-contained HTML report (table, loss and step-time plots).",
        ),
    ] = None,
) -> None:
    """Replay each sabotage technique with a benign payload against the drill's GPT job and show
    what caught it; exit 1 naming any technique that was missed or a control that alerted."""
    from trainwarden.drill._runner import check_ids, execute

    check_ids(technique or [])  # an unknown id is a usage error before anything runs

    def progress(tid: str) -> None:
        if fmt is OutputFormat.text:
            err.print(f"running {tid} ...", markup=False)

    result = execute(
        list(technique) if technique else None,
        ledger_url=ledger,
        ledger_token=ledger_token,
        ranks=ranks,
        progress=progress,
    )
    if report is not None:
        result.write_html(report)
    if fmt is OutputFormat.json:
        print_json(result.to_dict())
    else:
        for line in result.text_lines():
            out.print(line, markup=False)
    if result.errors:
        err.print(f"error: the drill could not run {', '.join(result.errors)}", markup=False)
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(result.exit_code())


def register(app: typer.Typer) -> None:
    app.command("drill")(drill_cmd)
