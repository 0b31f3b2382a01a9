"""``trainwarden attest``: snapshot, verify and diff the environment a job runs; permissions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trainwarden.cli._attest_run import cache_warning, hash_cache, print_summary, verify
from trainwarden.cli._common import (
    DeprecatedKeyOpt,
    FailOnOpt,
    FormatOpt,
    OutputFormat,
    busy,
    deprecated_flag,
    emit,
    fail_on_or,
    out,
    print_findings,
    print_json,
)

__all__ = ["register"]

PythonOpt = Annotated[
    str | None,
    typer.Option(
        "--python",
        envvar="TRAINWARDEN_PYTHON",
        help="Interpreter to attest (default: the one running trainwarden).",
    ),
]
CodeOpt = Annotated[
    list[Path] | None,
    typer.Option("--code", help="Code directory the job runs (repeatable)."),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        envvar="TRAINWARDEN_NO_CACHE",
        help="Hash every file again; neither read nor update the hash cache.",
    ),
]
PubOpt = Annotated[
    Path | None,
    typer.Option(
        "--pub",
        envvar=["TRAINWARDEN_ATTEST_PUBKEY", "TRAINWARDEN_ATTEST_KEY"],
        help="Ed25519 public key the snapshots must be signed with.",
    ),
]


def attest_snapshot(
    python: PythonOpt = None,
    code: CodeOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the statement here (default: stdout)."),
    ] = None,
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            envvar="TRAINWARDEN_SIGNING_KEY",
            help="Ed25519 private key (PEM): write a signed DSSE envelope.",
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.text,
    no_cache: NoCacheOpt = False,
) -> None:
    """Write an in-toto Statement describing the interpreter, its packages and the code."""
    from trainwarden._internal.files import write_atomic
    from trainwarden.attest._signing import sign_statement
    from trainwarden.attest._snapshot import take_snapshot

    cache = hash_cache(no_cache)
    with busy(fmt, "hashing the environment..."):
        snap = take_snapshot(python, code_dirs=code or [], cache=cache)
    cache_warning(cache)
    statement = snap.to_statement()
    doc = sign_statement(statement, sign) if sign is not None else statement
    data = json.dumps(doc, separators=(",", ":")).encode()
    if output is None:
        sys.stdout.write(data.decode() + "\n")
        return
    write_atomic(output, data)
    summary = snap.summary()
    summary["output"] = str(output)
    summary["signed"] = sign is not None
    summary["subject"] = statement["subject"]
    if fmt is OutputFormat.json:
        print_json(summary)
    else:
        print_summary(summary, out)
        out.print(f"wrote {output}" + (" (signed DSSE envelope)" if sign else ""))


def attest_verify(
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            envvar="TRAINWARDEN_ATTEST_BASELINE",
            help="Snapshot to compare with (plain or signed).",
        ),
    ] = None,
    key: PubOpt = None,
    python: PythonOpt = None,
    code: CodeOpt = None,
    fmt: FormatOpt = OutputFormat.text,
    fail_on: FailOnOpt = None,
    no_cache: NoCacheOpt = False,
    old_key: DeprecatedKeyOpt = None,
    report_to: Annotated[
        str | None,
        typer.Option(
            "--report-to",
            envvar="TRAINWARDEN_ATTEST_REPORT_TO",
            help="Ledger service URL: send the statement digest and the findings there.",
        ),
    ] = None,
    ledger_token: Annotated[
        str | None,
        typer.Option(
            "--ledger-token",
            envvar="TRAINWARDEN_LEDGER_TOKEN",
            help="Writer token of the ledger run that --report-to sends to.",
        ),
    ] = None,
    report_sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            envvar="TRAINWARDEN_ATTEST_REPORT_KEY",
            help="Ed25519 private key (PEM): sign the statement whose digest --report-to sends.",
        ),
    ] = None,
) -> None:
    """Check installed files against RECORD, start-up hooks, loader variables and a baseline."""
    raise typer.Exit(
        verify(
            baseline=baseline,
            key=key,
            python=python,
            code=code,
            fmt=fmt,
            fail_on=fail_on,
            no_cache=no_cache,
            old_key=old_key,
            report_to=report_to,
            ledger_token=ledger_token,
            report_sign=report_sign,
        )
    )


def _render_diff(d: Any, out: Any) -> None:
    out.print(f"diff {d.a} -> {d.b}")
    if d.empty and not d.platform:
        out.print("[green]no differences[/]")
        return
    for title, pairs in (
        ("interpreter", d.interpreter),
        ("platform", d.platform),
        ("environment", d.environment),
        ("orphan files", d.orphans),
        (".pth files", d.pth_files),
        ("sitecustomize/usercustomize", d.customize),
        ("code", d.code),
        ("sys.path files outside site-packages", d.path_files),
    ):
        if pairs:
            out.print(f"[bold]{title}[/]")
            for k, (va, vb) in list(pairs.items())[:50]:
                before = "(absent)" if va is None else va
                after = "(absent)" if vb is None else vb
                out.print(f"  {k}: {before} -> {after}")
    if d.distributions:
        out.print("[bold]distributions[/]")
    for dd in d.distributions:
        if dd.change == "added":
            out.print(f"  [red]+ {dd.name} {dd.version_b}[/]")
        elif dd.change == "removed":
            out.print(f"  [yellow]- {dd.name} {dd.version_a}[/]")
        elif dd.change == "version":
            out.print(f"  ~ {dd.name} {dd.version_a} -> {dd.version_b}")
        else:
            out.print(
                f"  ~ {dd.name} {dd.version_b}: {len(dd.changed)} changed, {len(dd.added)} added, "
                f"{len(dd.removed)} removed"
            )
            for path, _, _, _, status_b in dd.changed[:20]:
                out.print(f"      changed  {path} (now {status_b})")
            for path in dd.added[:20]:
                out.print(f"      added    {path}")
            for path in dd.removed[:20]:
                out.print(f"      removed  {path}")


def _render_fleet(report: Any, out: Any) -> None:
    out.print(
        f"fleet: {report.nodes} snapshots, {report.groups} distinct environment(s), "
        f"{report.majority_nodes} match the majority"
    )
    if not report.odd and not report.split:
        out.print("[green]no odd ones out[/]")
    for n in report.odd:
        out.print(f"[red]odd one out[/] {n.label} ({n.host}): {n.count} item(s) differ")
        for k, v, m in n.differences[:20]:
            out.print(
                f"    {k}: {v if v is not None else '(absent)'} (majority: "
                f"{m if m is not None else '(absent)'})"
            )
    for k in report.split[:20]:
        out.print(f"[yellow]split[/] no strict majority for {k}")


def attest_diff(
    snapshots: Annotated[
        list[Path],
        typer.Argument(
            help="Two snapshots: reference (baseline, or node A) and the one to compare; with "
            "--fleet, any number of node snapshots."
        ),
    ],
    key: PubOpt = None,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet",
            help="Compare every snapshot with the majority of all of them; name the odd ones out.",
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.text,
    fail_on: FailOnOpt = None,
    old_key: DeprecatedKeyOpt = None,
) -> None:
    """Show node-to-node or run-to-run differences, or each node against the fleet majority."""
    from trainwarden.attest import AttestationError
    from trainwarden.attest._diff import diff_snapshots
    from trainwarden.attest._fleet import fleet_diff
    from trainwarden.attest._signing import load_signed_snapshot

    if key is None and old_key is not None:
        key = Path(deprecated_flag(old_key, "--key", "--pub"))
    threshold = fail_on_or(fail_on)
    if fleet:
        if len(snapshots) < 2:
            raise AttestationError(
                "--fleet needs at least two snapshots", hint="pass one snapshot per node"
            )
        fleet_report = fleet_diff(
            (str(p), load_signed_snapshot(p, key=key).snapshot) for p in snapshots
        )
        emit(fleet_report, fmt, lambda console: _render_fleet(fleet_report, console))
        raise typer.Exit(fleet_report.exit_code(threshold))
    if len(snapshots) != 2:
        raise AttestationError(
            f"attest diff compares two snapshots, got {len(snapshots)}",
            hint="pass exactly two, or --fleet to compare many with their majority",
        )
    a, b = snapshots
    la, lb = load_signed_snapshot(a, key=key), load_signed_snapshot(b, key=key)
    d = diff_snapshots(la.snapshot, lb.snapshot, a_label=str(a), b_label=str(b))
    emit(d, fmt, lambda console: _render_diff(d, console))
    raise typer.Exit(d.exit_code(threshold))


def attest_perms(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Extra paths the job loads (checkpoint or data directories)."),
    ] = None,
    python: PythonOpt = None,
    code: CodeOpt = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="Job owner (user name or uid; default: you)."),
    ] = None,
    sys_path: Annotated[
        bool,
        typer.Option(
            "--sys-path/--no-sys-path",
            help="Also check every sys.path entry of the interpreter (default: yes).",
        ),
    ] = True,
    fmt: FormatOpt = OutputFormat.text,
    fail_on: FailOnOpt = None,
) -> None:
    """List what the job imports or loads that someone other than its owner or root can change."""
    from trainwarden.attest._perms import check_permissions, owner_uid
    from trainwarden.attest._snapshot import job_sys_path

    threshold = fail_on_or(fail_on)
    uid = owner_uid(owner)
    roots: list[str] = []
    if sys_path:
        roots.extend(job_sys_path(python))
    roots.extend(str(c) for c in code or [])
    roots.extend(str(p) for p in paths or [])
    with busy(fmt, "checking permissions..."):
        report = check_permissions(roots, owner_uid=uid)

    def text(console: Any) -> None:
        console.print(
            f"checked {report.checked} paths under {len(report.roots)} roots for owner uid "
            f"{report.owner_uid}"
        )
        print_findings(report.findings, console=console)

    emit(report, fmt, text)
    raise typer.Exit(report.exit_code(threshold))


def register(app: typer.Typer) -> None:
    from trainwarden.cli._keys import keygen_alias

    attest_app = typer.Typer(
        name="attest",
        help="Attest the Python environment and code a job runs; verify, diff, check permissions.",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    attest_app.command("snapshot")(attest_snapshot)
    attest_app.command("verify")(attest_verify)
    attest_app.command("diff")(attest_diff)
    attest_app.command("perms")(attest_perms)
    attest_app.command("keygen", hidden=True)(keygen_alias("attest keygen"))
    app.add_typer(attest_app, name="attest")
