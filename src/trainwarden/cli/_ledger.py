"""``trainwarden serve`` and ``trainwarden ledger``: the tamper-evident ledger and its verifier."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from trainwarden._internal.files import read_limited, write_atomic
from trainwarden.cli._common import (
    EXIT_CLEAN,
    EXIT_FINDINGS,
    FormatOpt,
    OutputFormat,
    err,
    out,
    print_json,
)
from trainwarden.errors import TrainWardenError
from trainwarden.ledger._types import VERIFY_MAX_BYTES, VERIFY_MAX_SECONDS, RunQuota

__all__ = ["register"]


def serve_cmd(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="TRAINWARDEN_LEDGER_DB",
            help="sqlite:///PATH or postgresql://... (default: STATE_DIR/ledger.db).",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", envvar="TRAINWARDEN_LEDGER_HOST", help="Bind address.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", envvar="TRAINWARDEN_LEDGER_PORT", help="TCP port.")
    ] = 8765,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="TRAINWARDEN_LEDGER_HOME",
            help="Signing key, origin and admin token (default ~/.trainwarden/ledger).",
        ),
    ] = None,
    origin: Annotated[
        str | None,
        typer.Option("--origin", help="Log name in checkpoints (fixed when the log is created)."),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="TLS certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="TLS private key.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback bind without TLS.")
    ] = False,
    no_deadman: Annotated[
        bool,
        typer.Option(
            "--no-deadman", help="Do not run the dead-man switch (run it on one server only)."
        ),
    ] = False,
    run_max_bytes: Annotated[
        int,
        typer.Option(
            "--run-max-bytes",
            envvar="TRAINWARDEN_LEDGER_RUN_MAX_BYTES",
            min=0,
            help="Bytes of entries one run may store (0: no limit).",
        ),
    ] = RunQuota.max_bytes,
    run_events_per_s: Annotated[
        float,
        typer.Option(
            "--run-events-per-s",
            envvar="TRAINWARDEN_LEDGER_RUN_EVENTS_PER_S",
            min=0,
            help="Events a second one run may append, sustained (0: no limit).",
        ),
    ] = RunQuota.events_per_s,
    run_bytes_per_s: Annotated[
        float,
        typer.Option(
            "--run-bytes-per-s",
            envvar="TRAINWARDEN_LEDGER_RUN_BYTES_PER_S",
            min=0,
            help="Bytes a second one run may append, sustained (0: no limit).",
        ),
    ] = RunQuota.bytes_per_s,
    run_burst_s: Annotated[
        float,
        typer.Option(
            "--run-burst-s",
            envvar="TRAINWARDEN_LEDGER_RUN_BURST_S",
            help="A run may send this many seconds' worth of its rate at once.",
        ),
    ] = RunQuota.burst_s,
) -> None:
    """Serve the ledger over HTTP (OpenAPI at /docs)."""
    from trainwarden.service._app import create_app
    from trainwarden.service._server import ServeConfig, build_service

    try:
        quota = RunQuota(
            max_bytes=run_max_bytes,
            events_per_s=run_events_per_s,
            bytes_per_s=run_bytes_per_s,
            burst_s=run_burst_s,
        )
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        raise typer.BadParameter(str(e), param_hint=f"--run-{field.replace('_', '-')}") from e

    cfg = ServeConfig(
        db_url=db,
        host=host,
        port=port,
        state_dir=state_dir,
        origin=origin,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        deadman=not no_deadman,
        quota=quota,
    )
    service, token_path, created = build_service(cfg)
    import uvicorn

    out.print(f"trainwarden ledger serving {cfg.url} (API docs: {cfg.url}/docs)", markup=False)
    out.print(f"log origin: {service.ledger.origin}; entries: {service.ledger.size}", markup=False)
    out.print(
        f"admin token: {token_path}{' (new)' if created else ''}; verifier key:"
        f" {cfg.state / 'keys' / 'ledger.vkey'}",
        markup=False,
    )
    sys.stdout.flush()
    uvicorn.run(
        create_app(service),
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="warning",
        access_log=False,
    )


LedgerUrl = Annotated[
    str | None,
    typer.Option("--url", envvar="TRAINWARDEN_LEDGER_URL", help="Ledger service URL."),
]
LedgerToken = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TRAINWARDEN_LEDGER_TOKEN",
        help="Bearer token (prefer the environment variable: argv is visible to others).",
    ),
]
LedgerDb = Annotated[
    str | None,
    typer.Option("--db", envvar="TRAINWARDEN_LEDGER_DB", help="Database URL (server side)."),
]
LedgerState = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="TRAINWARDEN_LEDGER_HOME", help="Server state directory."),
]


def _saved_note(path: Path) -> str:
    """A checkpoint saved earlier: a signed note is a few hundred bytes of text."""
    try:
        return read_limited(path, 64 * 1024).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TrainWardenError(f"cannot read saved checkpoint {path}: {e}") from e


def ledger_verify(
    db: LedgerDb = None,
    url: LedgerUrl = None,
    token: LedgerToken = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Verifier key (ledger.vkey file or string, or PEM public key)."),
    ] = None,
    saved: Annotated[
        list[Path] | None,
        typer.Option("--saved", help="A checkpoint saved earlier; today's log must extend it."),
    ] = None,
    state_dir: LedgerState = None,
    max_bytes: Annotated[
        int,
        typer.Option(
            "--max-bytes",
            min=1,
            help="With --url: stop (exit 2) once the server has sent this many bytes.",
        ),
    ] = VERIFY_MAX_BYTES,
    max_seconds: Annotated[
        float,
        typer.Option(
            "--max-seconds",
            min=1,
            help="With --url: stop (exit 2) after this many seconds.",
        ),
    ] = VERIFY_MAX_SECONDS,
    fmt: FormatOpt = OutputFormat.text,
) -> None:
    """Recompute the whole log, check every checkpoint and proof; exit 1 naming the first bad
    entry when anything disagrees."""
    from trainwarden.service._tools import verify_db, verify_url

    if (db is None) == (url is None):
        raise TrainWardenError("give exactly one of --db and --url")
    notes = [_saved_note(p) for p in saved or []]
    if db is not None:
        report = verify_db(db, key=key, state_dir=state_dir, saved=notes)
    else:
        report = verify_url(
            url or "", token, key=key, saved=notes, max_bytes=max_bytes, max_seconds=max_seconds
        )
    first = report.first_bad
    if fmt is OutputFormat.json:
        print_json(report.to_dict())
    elif report.ok:
        out.print(
            f"ledger OK: {report.size} entries, {report.checkpoints} checkpoints,"
            f" {report.inclusion_proofs} inclusion and {report.consistency_proofs} consistency"
            " proofs verified"
            + ("" if report.rows_authenticated else " (rows not individually authenticated)"),
            markup=False,
        )
    else:
        err.print(f"ledger FAILED verification: first bad {first}", markup=False)
        for p in report.problems:
            err.print(f"  {p}", markup=False)
    raise typer.Exit(EXIT_CLEAN if report.ok else EXIT_FINDINGS)


def ledger_checkpoint(
    url: LedgerUrl = None,
    token: LedgerToken = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the signed note here.")
    ] = None,
) -> None:
    """Fetch the latest signed checkpoint (keep it: `ledger verify --saved` checks it later)."""
    from trainwarden.ledger._client import LedgerClient

    if not url:
        raise TrainWardenError("--url (or TRAINWARDEN_LEDGER_URL) is required")
    client = LedgerClient(url, token)
    try:
        got = client.get("/v1/checkpoint")
    finally:
        client.close()
    note = got.get("note") if isinstance(got, dict) else None
    # A signed note is a few hundred bytes: anything else is not one (and is not saved).
    if not isinstance(note, str) or not note.endswith("\n") or len(note) > 64 * 1024:
        raise TrainWardenError(f"{url}/v1/checkpoint: the server's answer holds no signed note")
    if output:
        write_atomic(output, note.encode("utf-8", "surrogateescape"))
    else:
        sys.stdout.write(note)


def ledger_token_create(
    role: Annotated[str, typer.Option("--role", help="admin, writer or reader.")],
    run: Annotated[str | None, typer.Option("--run", help="The run a writer appends to.")] = None,
    ranks: Annotated[
        str | None,
        typer.Option(
            "--ranks",
            help="A writer for these ranks only: N or FIRST-LAST (e.g. one node's 8-15).",
        ),
    ] = None,
    db: LedgerDb = None,
    state_dir: LedgerState = None,
    url: LedgerUrl = None,
    token: LedgerToken = None,
) -> None:
    """Create a token (printed once; only its hash is stored). Through the service with an admin
    --token, or directly in the server's --db."""
    from trainwarden.service._tools import create_token, parse_ranks

    bound = parse_ranks(ranks) if ranks is not None else None
    tok, token_id = create_token(
        role, run, db=db, state_dir=state_dir, url=url, token=token, ranks=bound
    )
    err.print(f"created {role} token {token_id}", markup=False)
    sys.stdout.write(tok + "\n")


def ledger_token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token id (tok_...).")],
    db: LedgerDb = None,
    state_dir: LedgerState = None,
    url: LedgerUrl = None,
    token: LedgerToken = None,
) -> None:
    """Revoke a token."""
    from trainwarden.service._tools import revoke_token

    revoke_token(token_id, db=db, state_dir=state_dir, url=url, token=token)
    out.print(f"revoked {token_id}", markup=False)


def ledger_token_list(
    db: LedgerDb = None,
    state_dir: LedgerState = None,
    url: LedgerUrl = None,
    token: LedgerToken = None,
) -> None:
    """List tokens (ids, roles, runs; never the tokens)."""
    from trainwarden.service._tools import list_tokens

    print_json(list_tokens(db=db, state_dir=state_dir, url=url, token=token))


# ----------------------------------------------------------------------------------------------
# sandbox


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    ledger_app = typer.Typer(
        help="Verify the tamper-evident ledger and manage its tokens.",
        no_args_is_help=True,
    )
    ledger_app.command("verify")(ledger_verify)
    ledger_app.command("checkpoint")(ledger_checkpoint)
    token_app = typer.Typer(help="Create, list and revoke ledger tokens.", no_args_is_help=True)
    token_app.command("create")(ledger_token_create)
    token_app.command("revoke")(ledger_token_revoke)
    token_app.command("list")(ledger_token_list)
    ledger_app.add_typer(token_app, name="token")
    app.add_typer(ledger_app, name="ledger")
