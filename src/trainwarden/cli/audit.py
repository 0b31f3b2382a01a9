"""``trainwarden audit replay``: re-execute sampled steps of a recorded run outside the job."""

from __future__ import annotations

import json
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
from trainwarden.cli.attest import hash_cache

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
    from trainwarden.audit.types import AuditError
    from trainwarden.findings import Severity

    threshold = fail_on_or(fail_on)
    attestation: list[Any] = []
    if not no_attest:
        from trainwarden.attest.signing import load_snapshot
        from trainwarden.attest.verify import verify_environment

        loaded = load_snapshot(baseline) if baseline is not None else None
        with busy(fmt, "attesting the replaying interpreter..."):
            att = verify_environment(None, baseline=loaded, code_dirs=[], cache=hash_cache(False))
        attestation = [f for f in att.findings if f.severity >= Severity.HIGH]
        if attestation:
            print_findings(attestation)
            raise AuditError(
                f"the replaying environment failed attestation ({len(attestation)} findings at "
                "HIGH or above): a replay there proves nothing",
                hint="replay on a clean interpreter, or see `trainwarden attest verify`",
            )
    log: list[dict[str, Any]] | None = None
    if events is not None:
        log = []
        try:
            for line in events.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        log.append(rec)
        except (OSError, ValueError) as e:
            raise AuditError(f"{events}: cannot read the event log ({e})") from e
    if ledger_run is not None:
        import os

        from trainwarden.audit.replay import ledger_events

        url = os.environ.get("TRAINWARDEN_LEDGER_URL")
        token = os.environ.get("TRAINWARDEN_LEDGER_TOKEN")
        if not url or not token:
            raise AuditError(
                "--ledger-run needs TRAINWARDEN_LEDGER_URL and TRAINWARDEN_LEDGER_TOKEN",
                hint="export the ledger's URL and a reader token",
            )
        log = (log or []) + ledger_events(url, token, ledger_run)
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
        out.print(
            f"replayed {len(report.intervals)} of {report.meta.get('intervals_total')} intervals "
            f"of {run_dir} (seed {report.seed})"
        )
        for r in report.intervals:
            line = f"  steps {r.start}-{r.end - 1}: {r.status}"
            if r.status == "diverged":
                line += f" at step {r.step} in {r.where}"
                if r.rank is not None:
                    line += f" on rank {r.rank}"
                if r.tensors:
                    line += f" ({', '.join(r.tensors[:3])}{' ...' if len(r.tensors) > 3 else ''})"
            if r.detail:
                line += f": {r.detail}"
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
