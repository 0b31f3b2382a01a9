"""``trainwarden drill``: replay every sabotage technique against the drill job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trainwarden.cli._common import (
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_FINDINGS,
    FormatOpt,
    OutputFormat,
    err,
    out,
    print_json,
)
from trainwarden.errors import TrainWardenError

__all__ = ["register"]


def _drill_row(r: Any) -> dict[str, Any]:
    o = r.outcome
    return {
        "technique": r.technique.id,
        "threat": r.technique.threat,
        "description": r.technique.description,
        "control": r.technique.control,
        "caught": o.caught,
        "passed": r.passed,
        "check": o.check,
        "rule_id": o.rule_id,
        "detail": o.detail,
        "steps_to_detection": o.steps_to_detection,
        "seconds_to_detection": o.seconds_to_detection,
        "ledger_index": o.ledger_index,
        "works_unprotected": o.effective,
        "seconds": r.seconds,
        "error": r.error,
    }


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
    import tempfile

    from trainwarden.drill.runner import (
        NOT_RUN,
        TECHNIQUES,
        Ledger,
        local_ledger,
        run_drill,
    )

    known = {t.id for t in TECHNIQUES} | {t.threat for t in TECHNIQUES} | set(NOT_RUN)
    for t in technique or []:
        if t not in known:
            raise TrainWardenError(
                f"unknown technique {t!r}",
                hint="known: " + ", ".join(sorted(known - {"-"})),
            )
    ids = list(technique) if technique else None
    if ledger is not None and not ledger_token:
        raise TrainWardenError("--ledger needs --ledger-token (an admin token of that service)")
    results: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="trainwarden-drill-") as tmp:
        work = Path(tmp)

        def progress(tid: str) -> None:
            if fmt is OutputFormat.text:
                err.print(f"running {tid} ...", markup=False)

        def run_all(led: Any) -> None:
            results.extend(run_drill(work, ids, led, progress, ranks=ranks))

        if ledger is not None:
            run_all(Ledger(ledger, ledger_token or ""))
        else:
            with local_ledger(work) as led:
                run_all(led)
    rows = [_drill_row(r) for r in results]
    if report is not None:
        from trainwarden.drill.report import write_report

        write_report(report, rows, [r.outcome for r in results])
    skipped = [
        {"threat": k, "description": v} for k, v in NOT_RUN.items() if ids is None or k in ids
    ]
    missed = [r["technique"] for r in rows if not r["passed"]]
    if fmt is OutputFormat.json:
        print_json({"ok": not missed, "techniques": rows, "not_run": skipped, "missed": missed})
    else:
        header = ("technique", "threat", "caught", "by", "rule", "steps", "seconds", "ledger")
        lines: list[tuple[str, ...]] = [header]
        for r in rows:
            if r["error"]:
                verdict = "ERROR"
            elif r["control"]:
                verdict = "clean" if r["passed"] else "ALERTED"
            else:
                verdict = "yes" if r["passed"] else "MISSED"
            lines.append(
                (
                    r["technique"],
                    r["threat"],
                    verdict,
                    r["check"],
                    r["rule_id"],
                    "" if r["steps_to_detection"] is None else str(r["steps_to_detection"]),
                    "" if r["seconds_to_detection"] is None else f"{r['seconds_to_detection']:.2f}",
                    "" if r["ledger_index"] is None else str(r["ledger_index"]),
                )
            )
        for sk in skipped:
            lines.append((sk["threat"], sk["threat"], "not run", "", "", "", "", ""))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            out.print(
                "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(),
                markup=False,
            )
        for r in rows:
            if not r["passed"]:
                out.print(f"MISSED {r['technique']}: {r['detail']}", markup=False)
        out.print(
            f"{len(rows) - len(missed)}/{len(rows)} passed"
            + (f"; missed: {', '.join(missed)}" if missed else ""),
            markup=False,
        )
    errors = [r["technique"] for r in rows if r["error"]]
    if errors:
        err.print(f"error: the drill could not run {', '.join(errors)}", markup=False)
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if missed else EXIT_CLEAN)


def register(app: typer.Typer) -> None:
    app.command("drill")(drill_cmd)
