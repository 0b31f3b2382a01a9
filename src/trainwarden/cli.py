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


class ScanFormat(str, enum.Enum):
    """Output formats of ``trainwarden scan``."""

    text = "text"
    json = "json"
    sarif = "sarif"


_SEVERITY_STYLE = {
    "CRITICAL": "bold red",
    "HIGH": "red",
    "MEDIUM": "yellow",
    "LOW": "cyan",
    "INFO": "dim",
}


def _write_output(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    import os
    import tempfile
    from pathlib import Path

    target = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except OSError as e:
        raise TrainWardenError(
            f"cannot write the report to {output}: {e.strerror or e}",
            hint="check that the directory exists and is writable",
        ) from e


@app.command()
def scan(
    paths: Annotated[list[str], typer.Argument(help="Files or directories to scan (recursively).")],
    fmt: Annotated[
        ScanFormat,
        typer.Option("--format", envvar="TRAINWARDEN_SCAN_FORMAT", help="Report format."),
    ] = ScanFormat.text,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            envvar="TRAINWARDEN_FAIL_ON",
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
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            envvar="TRAINWARDEN_OUTPUT",
            help="Write the report to this file instead of stdout.",
        ),
    ] = None,
) -> None:
    """Scan model files for code execution and tampering without loading them."""
    from pathlib import Path

    from trainwarden.findings import Severity
    from trainwarden.scan import Policy, scan_paths
    from trainwarden.scan.report import to_json, to_sarif

    policy = Policy.from_file(policy_file) if policy_file else Policy.discover(Path.cwd())
    policy = policy.with_overrides(allow=allow or (), deny=deny or ())
    threshold = Severity.parse(fail_on) if fail_on else policy.fail_on
    show_progress = fmt is ScanFormat.text and output is None and err.is_terminal
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("", total=None)

            def tick(done: int, total: int, path: str) -> None:
                bar.update(task, completed=done, total=total, description=path[-60:])

            report = scan_paths(
                paths,
                policy,
                include=include or (),
                exclude=exclude or (),
                workers=workers,
                hash_files=hash_files,
                progress=tick,
            )
    else:
        report = scan_paths(
            paths,
            policy,
            include=include or (),
            exclude=exclude or (),
            workers=workers,
            hash_files=hash_files,
        )
    if fmt is ScanFormat.json:
        _write_output(json.dumps(to_json(report, threshold), indent=2) + "\n", output)
    elif fmt is ScanFormat.sarif:
        _write_output(json.dumps(to_sarif(report, threshold), indent=2) + "\n", output)
    else:
        _render_scan_text(report, threshold, output)
    if report.errors:
        raise typer.Exit(EXIT_ERROR)
    if report.failed(threshold):
        raise typer.Exit(EXIT_FINDINGS)


def _render_scan_text(report: Any, threshold: Any, output: str | None) -> None:
    console = out
    buf = None
    if output is not None:
        import io

        buf = io.StringIO()
        console = Console(file=buf, highlight=False, soft_wrap=True, no_color=True, width=120)
    verdict_style = {"clean": "green", "flagged": "yellow", "unsafe": "bold red"}
    for fr in report.files:
        verdict = fr.verdict(threshold)
        fmts = ",".join(fr.formats) or "unknown format"
        digest = f"  sha256:{fr.sha256}" if fr.sha256 else ""
        console.print(
            f"[{verdict_style[verdict]}]{verdict.upper():8}[/] {fr.path}  ({fmts}){digest}",
            markup=True,
        )
        for f in fr.findings:
            sev = f.severity.name
            glob = f.evidence.get("global_")
            offset = f.evidence.get("offset")
            extra = "".join(
                [
                    f"  global={glob}" if glob else "",
                    f"  offset={offset}" if offset is not None else "",
                ]
            )
            console.print(
                f"    [{_SEVERITY_STYLE[sev]}]{sev:8}[/] {f.rule_id:24} {f.message}",
                markup=True,
            )
            console.print(f"             at {f.location}{extra}", markup=False, style="dim")
    for e in report.errors:
        err.print(f"[bold red]error:[/] {e}")
    n_find = len(report.findings)
    unsafe = sum(1 for fr in report.files if fr.verdict(threshold) == "unsafe")
    console.print(
        f"{len(report.files)} file(s) scanned in {report.elapsed_s:.2f}s: {unsafe} unsafe, "
        f"{n_find} finding(s); failing at {threshold.name} and above",
        markup=False,
    )
    if buf is not None:
        _write_output(buf.getvalue(), output)


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
