"""``trainwarden audit replay``: re-execute sampled steps of a recorded run outside the job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trainwarden.cli._common import (
    FailOnOpt,
    FormatOpt,
    OutputFormat,
    busy,
    fail_on_or,
    out,
    print_findings,
    print_json,
)

__all__ = ["register"]


def audit_replay(
    run_dir: Annotated[Path, typer.Argument(help="The run directory an AuditRecorder wrote.")],
    job: Annotated[
        str,
        typer.Option(
            "--job",
            envvar="TRAINWARDEN_AUDIT_JOB",
            help="Job factory as module:function; returns the job's trainwarden.audit.Job.",
        ),
    ],
    samples: Annotated[
        int | None,
        typer.Option("--samples", min=1, help="Intervals to replay (default: all)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed that picks the intervals (default: a random one)."),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            min=0.0,
            help="Compare weights within this relative distance instead of bit for bit "
            "(replays on another build or a GPU).",
        ),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            help="JSONL event log the job wrote to; its step hashes must match the record.",
        ),
    ] = None,
    ledger_run: Annotated[
        str | None,
        typer.Option(
            "--ledger-run",
            help="Ledger run the job logged to: its step hashes (read from "
            "TRAINWARDEN_LEDGER_URL with the reader token in TRAINWARDEN_LEDGER_TOKEN) must "
            "match the record.",
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--pub", help="Ed25519 public key the checkpoint manifests must be signed with."
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline", help="Environment snapshot the replaying interpreter must match."
        ),
    ] = None,
    no_attest: Annotated[
        bool,
        typer.Option("--no-attest", help="Skip attesting the replaying interpreter."),
    ] = False,
    fmt: FormatOpt = OutputFormat.text,
    fail_on: FailOnOpt = None,
) -> None:
    """Re-execute sampled intervals of a recorded run and report where it diverged."""
    from trainwarden.audit import replay
    from trainwarden.audit._inputs import (
        ReplayerNotClean,
        attest_replayer,
        events_from_ledger,
        read_event_log,
    )

    threshold = fail_on_or(fail_on)
    if not no_attest:
        try:
            with busy(fmt, "attesting the replaying interpreter..."):
                attest_replayer(baseline)
        except ReplayerNotClean as e:
            print_findings(list(e.findings))
            raise
    log: list[dict[str, Any]] | None = read_event_log(events) if events is not None else None
    if ledger_run is not None:
        log = (log or []) + events_from_ledger(ledger_run)
    with busy(fmt, "replaying..."):
        report = replay(
            run_dir,
            job,
            samples=samples,
            seed=seed,
            tolerance=tolerance,
            events=log,
            manifest_key=key,
        )
    if fmt is OutputFormat.json:
        print_json({**report.to_dict(), "attested": not no_attest})
    else:
        for line in report.lines():
            out.print(line, markup=False)
        print_findings(report.findings)
    raise typer.Exit(report.exit_code(threshold))


def register(app: typer.Typer) -> None:
    audit_app = typer.Typer(
        help="Replay sampled training steps outside the job and compare with its record.",
        no_args_is_help=True,
    )
    audit_app.command("replay")(audit_replay)
    app.add_typer(audit_app, name="audit")
