"""The ``trainwarden`` command line: the only module that prints, reads argv or exits.

Exit codes everywhere: 0 clean, 1 findings at or above the threshold, 2 usage or internal error.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os as _os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

from trainwarden import __version__
from trainwarden.errors import TrainWardenError

if TYPE_CHECKING:
    from rich.console import Console as _RichConsole
    from rich.table import Table as _RichTable

__all__ = ["app", "main"]

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
_EXIT_SIGINT = 130

app = typer.Typer(
    name="trainwarden",
    help="Integrity for ML training on shared clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# rich costs a noticeable share of start-up and most commands print a line or two, so the consoles
# and tables are created on first use (`Console(...)` and `Table(...)` keep their rich signatures).
def Console(*args: Any, **kwargs: Any) -> _RichConsole:
    from rich.console import Console as _Console

    return _Console(*args, **kwargs)


def Table(*args: Any, **kwargs: Any) -> _RichTable:
    from rich.table import Table as _Table

    return _Table(*args, **kwargs)


class _LazyConsole:
    """A rich Console made on first attribute access."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._console: _RichConsole | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = Console(**self._kwargs)
        return getattr(self._console, name)


out: Any = _LazyConsole(highlight=False, soft_wrap=True)
err: Any = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(str, enum.Enum):
    """Output formats shared by the reporting commands."""

    text = "text"
    json = "json"


def _print_json(data: Any) -> None:
    # Plain stdout write: rich would wrap or colour JSON.
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"trainwarden {__version__}\n")
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
    ledger: Annotated[
        bool,
        typer.Option(
            "--ledger",
            help="Send verdicts and events to the ledger service (TRAINWARDEN_LEDGER_URL and"
            " TRAINWARDEN_LEDGER_TOKEN must be set).",
        ),
    ] = False,
) -> None:
    """Integrity for ML training on shared clusters."""
    if ledger:
        import os

        # Child processes (the guarded script of `trainwarden run`) inherit the requirement.
        os.environ["TRAINWARDEN_LEDGER"] = "1"
        if not (
            os.environ.get("TRAINWARDEN_LEDGER_URL") and os.environ.get("TRAINWARDEN_LEDGER_TOKEN")
        ):
            raise TrainWardenError(
                "--ledger needs TRAINWARDEN_LEDGER_URL and TRAINWARDEN_LEDGER_TOKEN",
                hint="create a run with the ledger service and export its writer token",
            )


# ----------------------------------------------------------------------------------------------
# doctor
# ----------------------------------------------------------------------------------------------


@app.command()
def doctor(
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", envvar="TRAINWARDEN_FORMAT", help="Output format."),
    ] = OutputFormat.text,
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
    from trainwarden.doctor import run_doctor

    report = run_doctor(deep=deep)
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
# scan -- commands for the static scanner go below this line
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
        typer.Option(
            "--format",
            envvar=["TRAINWARDEN_SCAN_FORMAT", "TRAINWARDEN_FORMAT"],
            help="Report format.",
        ),
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
    from pathlib import Path

    from trainwarden.findings import Severity
    from trainwarden.scan import Policy, scan_paths
    from trainwarden.scan.report import json_safe, to_json, to_sarif

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
    policy_name = policy.source or "<built-in>"
    if fmt is ScanFormat.json:
        doc = to_json(report, threshold)
        doc["summary"]["policy"] = json_safe(policy_name)
        _write_output(json.dumps(doc, indent=2) + "\n", output)
    elif fmt is ScanFormat.sarif:
        doc = to_sarif(report, threshold)
        doc["runs"][0]["properties"]["policy"] = json_safe(policy_name)
        _write_output(json.dumps(doc, indent=2) + "\n", output)
    else:
        _render_scan_text(report, threshold, output, verbose=verbose, policy=policy.source)
    _ledger_record("scan", to_json(report, threshold), items_key="files")
    if report.errors:
        raise typer.Exit(EXIT_ERROR)
    if not report.files and not allow_empty:
        why = f"; {len(report.skipped)} entr{'ies' if len(report.skipped) != 1 else 'y'} skipped"
        err.print(
            "error: nothing was analysed: no regular file under "
            + ", ".join(_text_safe(str(x)) for x in paths)
            + (why if report.skipped else "")
            + " (a scan of nothing is not a pass; --allow-empty accepts it)",
            markup=False,
        )
        raise typer.Exit(EXIT_ERROR)
    if report.failed(threshold):
        raise typer.Exit(EXIT_FINDINGS)


def _text_safe(text: str) -> str:
    """``text`` with control, format (bidi) and undecodable characters written as escapes.

    File and member names come from the files scanned: a newline in one must not forge a line
    of the report, nor a right-to-left override reorder it.
    """
    import unicodedata

    out = []
    for ch in text:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif 0xD800 <= cp <= 0xDFFF or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _render_scan_text(
    report: Any,
    threshold: Any,
    output: str | None,
    *,
    verbose: bool = False,
    policy: str | None = None,
) -> None:
    from rich.markup import escape
    from rich.text import Text

    console = out
    buf = None
    if output is not None:
        import io

        buf = io.StringIO()
        console = Console(file=buf, highlight=False, soft_wrap=True, no_color=True, width=120)
    verdict_style = {"clean": "green", "flagged": "yellow", "unsafe": "bold red"}
    shown = 0
    for fr in report.files:
        verdict = fr.verdict(threshold)
        if not verbose and not fr.findings:
            continue
        shown += 1
        fmts = ",".join(fr.formats) or "unknown format"
        digest = f"  sha256:{fr.sha256}" if fr.sha256 else ""
        console.print(
            f"[{verdict_style[verdict]}]{verdict.upper():8}[/] "
            f"{escape(_text_safe(fr.path))}  ({escape(fmts)}){digest}",
            markup=True,
        )
        for f in fr.findings:
            sev = f.severity.name
            glob = f.evidence.get("global_")
            offset = f.evidence.get("offset")
            extra = "".join(
                [
                    f"  global={_text_safe(str(glob))}" if glob else "",
                    f"  offset={offset}" if offset is not None else "",
                ]
            )
            line = Text(f"    {sev:8}", style=_SEVERITY_STYLE[sev])
            line.append(f" {f.rule_id:24} {_text_safe(f.message)}")
            console.print(line)
            console.print(
                f"             at {_text_safe(f.location)}{extra}", markup=False, style="dim"
            )
    for path, reason in report.skipped:
        console.print(f"SKIPPED  {_text_safe(path)}  ({reason})", markup=False, style="dim")
    for e in report.errors:
        err.print(f"error: {_text_safe(e)}", markup=False)
    n_find = len(report.findings)
    unsafe = sum(1 for fr in report.files if fr.verdict(threshold) == "unsafe")
    hidden = len(report.files) - shown
    console.print(
        f"{len(report.files)} file(s) scanned in {report.elapsed_s:.2f}s: {unsafe} unsafe, "
        f"{n_find} finding(s); failing at {threshold.name} and above"
        + (f"; {len(report.skipped)} skipped" if report.skipped else "")
        + (
            f"; {hidden} file(s) without findings not listed (--verbose lists them)"
            if hidden
            else ""
        )
        + f"; policy: {_text_safe(policy or '<built-in>')}",
        markup=False,
    )
    if buf is not None:
        _write_output(buf.getvalue(), output)


# ----------------------------------------------------------------------------------------------
# load, guard, run, manifest, convert -- safe-loading commands go below this line
# ----------------------------------------------------------------------------------------------


class GuardMode(str, enum.Enum):
    """What the load guard does with a load that needs a global the policy does not allow."""

    block = "block"
    warn = "warn"


def _load_policy(policy_file: str | None) -> Any:
    if not policy_file:
        return None
    from trainwarden.scan.policy import Policy

    return Policy.from_file(policy_file)


def _print_refusal(findings: Any) -> None:
    for f in findings:
        where = f" at {f.location}" if f.location else ""
        err.print(f"  [{f.severity}] {f.rule_id}{where}: {f.message}", markup=False)


class _RunCommand(typer.core.TyperCommand):
    """``run`` with ``--sandbox`` usable bare (enforce) or as ``--sandbox=MODE``."""

    _VALUED = frozenset({"--guard", "--policy", "--events", "--sandbox-policy"})

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        i = 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] == "--sandbox":
                args[i] = "--sandbox=enforce"
            elif args[i] in self._VALUED:
                i += 1
            i += 1
        return super().parse_args(ctx, args)


@app.command(
    cls=_RunCommand,
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Script to run (or module name with -m).")],
    guard: Annotated[
        GuardMode,
        typer.Option("--guard", envvar="TRAINWARDEN_GUARD", help="block or warn."),
    ] = GuardMode.block,
    module: Annotated[
        bool, typer.Option("-m", "--module", help="Run TARGET as a module (python -m).")
    ] = False,
    policy_file: Annotated[
        str | None,
        typer.Option("--policy", envvar="TRAINWARDEN_POLICY", help="Policy file (TOML)."),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option("--events", envvar="TRAINWARDEN_EVENTS", help="Append load events (JSONL)."),
    ] = None,
    sandbox: Annotated[
        str | None,
        typer.Option(
            "--sandbox",
            envvar="TRAINWARDEN_SANDBOX",
            help="Confine the job with Landlock: --sandbox (enforce) or "
            "--sandbox=enforce|warn|best-effort.",
        ),
    ] = None,
    sandbox_policy: Annotated[
        str | None,
        typer.Option(
            "--sandbox-policy",
            envvar="TRAINWARDEN_SANDBOX_POLICY",
            help="Sandbox policy file (TOML, [sandbox] table).",
        ),
    ] = None,
) -> None:
    """Run a Python script with the load guard installed (arguments after it go to the script)."""
    from trainwarden._internal.sink import JsonlSink
    from trainwarden.loading.runner import run_guarded
    from trainwarden.loading.types import UnsafeModelError

    args = list(ctx.args)
    sink = _with_ledger(JsonlSink(events) if events else None)
    private_tmp = None
    try:
        if sandbox is not None:
            private_tmp = _start_sandbox(sandbox, sandbox_policy, target, module, sink)
        run_guarded(
            target,
            args,
            mode=guard.value,
            module=module,
            policy=_load_policy(policy_file),
            sink=sink,
        )
    except UnsafeModelError as e:
        err.print(f"trainwarden: blocked an unsafe load: {e.diagnostics()}", markup=False)
        raise typer.Exit(EXIT_FINDINGS) from None
    except TrainWardenError:
        raise
    except Exception:
        # The script's own uncaught exception: shown and exited as `python script.py` would
        # (this traceback is the script's output, not trainwarden's).
        import traceback

        traceback.print_exc()
        raise typer.Exit(1) from None
    finally:
        if sink is not None:
            sink.close()
        if private_tmp is not None:
            import shutil

            shutil.rmtree(private_tmp, ignore_errors=True)


def _start_sandbox(
    mode: str, policy_file: str | None, target: str, module: bool, sink: Any
) -> str | None:
    import os

    from trainwarden.sandbox import Mode, SandboxPolicy, apply

    policy = SandboxPolicy.from_file(policy_file) if policy_file else SandboxPolicy.default()
    code: list[str] = []
    if not module and os.path.isfile(target):
        code.append(os.path.dirname(os.path.abspath(target)))
    report = apply(policy, mode=Mode.parse(mode), code=code, sink=sink)
    if not report.enforced and report.mode is not Mode.warn:
        err.print(
            f"trainwarden: sandbox NOT enforced (best-effort): {report.kernel_reason}",
            markup=False,
        )
    elif report.not_enforced:
        err.print(
            "trainwarden: sandbox enforced without: " + ", ".join(report.not_enforced),
            markup=False,
        )
    return report.tmpdir


@app.command("load")
def load_cmd(
    path: Annotated[str, typer.Argument(help="Checkpoint, pickle, numpy or joblib file.")],
    policy_file: Annotated[
        str | None,
        typer.Option("--policy", envvar="TRAINWARDEN_POLICY", help="Policy file (TOML)."),
    ] = None,
    pub: Annotated[
        str | None,
        typer.Option("--pub", envvar="TRAINWARDEN_MANIFEST_PUBKEY", help="Trusted public key."),
    ] = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", envvar="TRAINWARDEN_FORMAT", help="Output format."),
    ] = OutputFormat.text,
) -> None:
    """Load a file safely and summarise it (exit 1 if it was refused)."""
    from trainwarden.loading import load_with_report
    from trainwarden.loading.types import ManifestError, UnsafeModelError

    try:
        obj, report = load_with_report(
            path, policy=_load_policy(policy_file), manifest_key=pub, hash_file=True
        )
    except (UnsafeModelError, ManifestError) as e:
        if fmt is OutputFormat.json:
            _print_json(
                {
                    "path": path,
                    "refused": True,
                    "error": e.message,
                    "findings": [f.to_dict() for f in e.findings],
                }
            )
        else:
            err.print(f"refused: {e.diagnostics()}", markup=False)
        # A file that needs an unsafe global is a finding (1); a manifest that does not match,
        # is missing when required or cannot be read is an input error (2), in every command.
        raise typer.Exit(EXIT_ERROR if isinstance(e, ManifestError) else EXIT_FINDINGS) from None
    summary = type(obj).__name__
    if isinstance(obj, dict):
        summary += f" with {len(obj)} keys: " + ", ".join(map(str, list(obj)[:8]))
        summary += ", ..." if len(obj) > 8 else ""
    if fmt is OutputFormat.json:
        _print_json({**report.to_dict(), "refused": False, "object": summary})
        return
    out.print(f"{report.path}: {report.format}, {report.size} bytes, sha256 {report.sha256}")
    out.print(f"manifest: {report.manifest or 'none'}")
    out.print(f"object: {summary}", markup=False)
    for f in report.findings:
        if f.severity.value > 0:
            out.print(f"  [{f.severity}] {f.rule_id}: {f.message}", markup=False)


def _deprecated_flag(value: Any, old: str, new: str) -> Any:
    if value is not None:
        err.print(f"warning: {old} is deprecated here; use {new}", markup=False)
    return value


# `--key` named a private key in one command and a public key in others: private keys are now
# given with --sign and public keys with --pub everywhere; --key stays as a hidden alias.
_DeprecatedKeyOpt = Annotated[str | None, typer.Option("--key", hidden=True)]


manifest_app = typer.Typer(
    help="Create and verify checkpoint manifests (in-toto, optionally Ed25519-signed).",
    no_args_is_help=True,
)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("create")
def manifest_create(
    path: Annotated[str, typer.Argument(help="Checkpoint file or folder.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--sign",
            envvar="TRAINWARDEN_MANIFEST_KEY",
            help="Ed25519 private key (PEM): sign the manifest.",
        ),
    ] = None,
    old_key: _DeprecatedKeyOpt = None,
) -> None:
    """Write the manifest of a checkpoint file or folder (signed with --sign)."""
    from trainwarden.loading.manifest import create_manifest, subjects_of

    key = key or _deprecated_flag(old_key, "--key", "--sign")

    target = create_manifest(path, key=key)
    n = len(list(subjects_of(target)))
    out.print(f"wrote {target} ({n} file{'s' if n != 1 else ''}{', signed' if key else ''})")
    _ledger_record("manifest.create", {"path": path, "manifest": str(target), "files": n})


@manifest_app.command("verify")
def manifest_verify(
    path: Annotated[str, typer.Argument(help="Checkpoint file or folder.")],
    pub: Annotated[
        str | None,
        typer.Option(
            "--pub", envvar="TRAINWARDEN_MANIFEST_PUBKEY", help="Require a signature by this key."
        ),
    ] = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", envvar="TRAINWARDEN_FORMAT", help="Output format."),
    ] = OutputFormat.text,
) -> None:
    """Check every file against the manifest (exit 2 on a changed, missing or extra file)."""
    from trainwarden.loading.manifest import verify_manifest
    from trainwarden.loading.types import ManifestError

    try:
        check = verify_manifest(path, public_key=pub)
    except ManifestError as e:
        if fmt is OutputFormat.json:
            _print_json(
                {
                    "path": path,
                    "ok": False,
                    "error": e.message,
                    "findings": [f.to_dict() for f in e.findings],
                }
            )
        else:
            err.print(f"FAILED: {e.message}", markup=False)
            _print_refusal(e.findings)
            if e.hint:
                err.print(f"  hint: {e.hint}", markup=False)
        _ledger_record(
            "manifest.verify",
            {
                "path": path,
                "ok": False,
                "error": e.message,
                "findings": [f.to_dict() for f in e.findings],
            },
        )
        raise typer.Exit(EXIT_ERROR) from None
    _ledger_record(
        "manifest.verify",
        {"path": path, "ok": True, "manifest": check.manifest, "files": check.subjects},
    )
    if fmt is OutputFormat.json:
        _print_json(
            {
                "path": path,
                "ok": True,
                "manifest": check.manifest,
                "files": check.subjects,
                "signed_by": list(check.signed_by),
                "signature_verified": check.signature_verified,
                "unverified_signatures": len(check.unverified_keyids),
            }
        )
        return
    # An unchecked signature entry proves nothing (anyone can write any key id): never name it.
    n_unverified = len(check.unverified_keyids)
    sig = (
        f"signature verified (key {check.signed_by[0][:16]})"
        if check.signature_verified
        else (
            f"signature NOT verified ({n_unverified} unchecked signature "
            f"entr{'ies' if n_unverified != 1 else 'y'}; give --pub to check)"
            if n_unverified
            else "unsigned"
        )
    )
    out.print(f"OK: {check.subjects} file(s) match {check.manifest}; {sig}")


@manifest_app.command("keygen")
def manifest_keygen(
    keyfile: Annotated[str, typer.Argument(help="Where to write the private key (PEM, 0600).")],
    pub: Annotated[
        str | None, typer.Option("--pub", help="Public key path (default KEYFILE.pub).")
    ] = None,
) -> None:
    """Create an Ed25519 key pair for signing manifests."""
    from pathlib import Path

    from trainwarden.loading.manifest import generate_keypair

    priv, public = generate_keypair(Path(keyfile), Path(pub) if pub else None)
    out.print(f"wrote private key {priv} and public key {public}")


class ConvertTarget(str, enum.Enum):
    """Formats ``convert`` can write."""

    safetensors = "safetensors"


@app.command()
def convert(
    path: Annotated[str, typer.Argument(help="Pickle-based checkpoint to convert.")],
    to: Annotated[ConvertTarget, typer.Option("--to", help="Output format.")],
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="Output file (default PATH.safetensors).")
    ] = None,
    policy_file: Annotated[
        str | None,
        typer.Option("--policy", envvar="TRAINWARDEN_POLICY", help="Policy file (TOML)."),
    ] = None,
) -> None:
    """Scan, safely load and rewrite a checkpoint as safetensors plus a JSON sidecar."""
    from trainwarden.loading.convert import to_safetensors
    from trainwarden.loading.types import UnsafeModelError

    try:
        result = to_safetensors(path, output, policy=_load_policy(policy_file))
    except UnsafeModelError as e:
        err.print(f"refused to convert: {e.diagnostics()}", markup=False)
        raise typer.Exit(EXIT_FINDINGS) from None
    out.print(
        f"wrote {result.output} ({result.tensors} tensors, {result.aliases} aliases) and "
        f"{result.sidecar} ({result.metadata_keys} metadata keys)",
        markup=False,
    )
    for item in result.lossy:
        err.print(f"  kept only as text (not a tensor or plain data): {item}", markup=False)


# ----------------------------------------------------------------------------------------------
# attest -- attestation commands go below this line
# ----------------------------------------------------------------------------------------------
# Imported here, not at the top, so this block merges without touching other issues' lines.
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

attest_app = typer.Typer(
    name="attest",
    help="Attest the Python environment and code a job runs; verify, diff, check permissions.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(attest_app, name="attest")

_PythonOpt = Annotated[
    str | None,
    typer.Option(
        "--python",
        envvar="TRAINWARDEN_PYTHON",
        help="Interpreter to attest (default: the one running trainwarden).",
    ),
]
_CodeOpt = Annotated[
    list[Path] | None,
    typer.Option("--code", help="Code directory the job runs (repeatable)."),
]
_FormatOpt = Annotated[
    OutputFormat,
    typer.Option("--format", envvar="TRAINWARDEN_FORMAT", help="Output format."),
]
_FailOnOpt = Annotated[
    str,
    typer.Option(
        "--fail-on",
        envvar="TRAINWARDEN_FAIL_ON",
        help="Exit 1 when a finding is at or above this severity (info..critical).",
    ),
]
_NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        envvar="TRAINWARDEN_NO_CACHE",
        help="Hash every file again; neither read nor update the hash cache.",
    ),
]


def _hash_cache(no_cache: bool) -> Any:
    from trainwarden.attest.cache import HashCache

    return HashCache(None) if no_cache else HashCache.default()


def _cache_warning(cache: Any) -> None:
    if cache.reason:
        err.print(f"[yellow]warning:[/] {cache.reason}")


def _busy(fmt: OutputFormat, message: str) -> Any:
    import contextlib

    if fmt is OutputFormat.text and err.is_terminal:
        return err.status(message)
    return contextlib.nullcontext()


_SEV_STYLE = {
    "CRITICAL": "bold red",
    "HIGH": "red",
    "MEDIUM": "yellow",
    "LOW": "cyan",
    "INFO": "dim",
}


def _print_findings(findings: Sequence[Any], limit: int = 60) -> None:
    if not findings:
        out.print("[green]no findings[/]")
        return
    table = Table(show_edge=False, show_header=True)
    table.add_column("severity")
    table.add_column("rule")
    table.add_column("message", overflow="fold")
    for f in findings[:limit]:
        table.add_row(f"[{_SEV_STYLE[f.severity.name]}]{f.severity.name}[/]", f.rule_id, f.message)
    out.print(table)
    if len(findings) > limit:
        out.print(f"... and {len(findings) - limit} more (use --format json for all)")


def _exit_for(findings: Sequence[Any], fail_on: str) -> None:
    from trainwarden.findings import Severity

    threshold = Severity.parse(fail_on)
    if any(f.severity >= threshold for f in findings):
        raise typer.Exit(EXIT_FINDINGS)


def _snapshot_summary(snap: Any) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for d in snap.distributions:
        for k, v in d.counts().items():
            totals[k] = totals.get(k, 0) + v
    return {
        "interpreter": snap.interpreter.path,
        "version": snap.interpreter.version,
        "prefix": snap.interpreter.prefix,
        "distributions": len(snap.distributions),
        "files": totals,
        "orphans": len(snap.orphans),
        "pth_files": len(snap.pth_files),
        "customize": [c.path for c in snap.customize],
        "environment": sorted(snap.environment),
        "path_files": _path_file_counts(snap),
        "bytecode_checked": snap.bytecode_checked,
        "code": [
            {"path": c.path, "kind": c.kind, "commit": c.commit, "dirty": c.dirty}
            for c in snap.code
        ],
    }


def _path_file_counts(snap: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in snap.path_files:
        by = f.source.split(":", 1)[0] if f.source else f.status
        counts[by] = counts.get(by, 0) + 1
    return dict(sorted(counts.items()))


def _print_summary(summary: dict[str, Any]) -> None:
    files = summary["files"]
    out.print(f"interpreter  {summary['interpreter']} (Python {summary['version']})")
    out.print(f"prefix       {summary['prefix']}")
    out.print(
        f"distributions {summary['distributions']}: "
        + ", ".join(f"{k} {v}" for k, v in files.items())
    )
    out.print(f"orphans      {summary['orphans']}   .pth files {summary['pth_files']}")
    out.print(f"customize    {', '.join(summary['customize']) or '-'}")
    out.print(f"loader env   {', '.join(summary['environment']) or '-'}")
    path_files = summary["path_files"]
    out.print(
        f"sys.path     {sum(path_files.values())} files outside site-packages"
        + (f" ({', '.join(f'{k} {v}' for k, v in path_files.items())})" if path_files else "")
        + f"; bytecode checked {summary['bytecode_checked']}"
    )
    for c in summary["code"]:
        state = (
            f"git {c['commit'][:12]}{' (dirty)' if c['dirty'] else ''}"
            if c["commit"]
            else c["kind"]
        )
        out.print(f"code         {c['path']}: {state}")


@attest_app.command("snapshot")
def attest_snapshot(
    python: _PythonOpt = None,
    code: _CodeOpt = None,
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
    fmt: _FormatOpt = OutputFormat.text,
    no_cache: _NoCacheOpt = False,
) -> None:
    """Write an in-toto Statement describing the interpreter, its packages and the code."""
    from trainwarden.attest.signing import sign_statement, write_atomic
    from trainwarden.attest.snapshot import take_snapshot

    cache = _hash_cache(no_cache)
    with _busy(fmt, "hashing the environment..."):
        snap = take_snapshot(python, code_dirs=code or [], cache=cache)
    _cache_warning(cache)
    statement = snap.to_statement()
    doc = sign_statement(statement, sign) if sign is not None else statement
    data = json.dumps(doc, separators=(",", ":")).encode()
    if output is None:
        sys.stdout.write(data.decode() + "\n")
        return
    write_atomic(output, data)
    summary = _snapshot_summary(snap)
    summary["output"] = str(output)
    summary["signed"] = sign is not None
    summary["subject"] = statement["subject"]
    if fmt is OutputFormat.json:
        _print_json(summary)
    else:
        _print_summary(summary)
        out.print(f"wrote {output}" + (" (signed DSSE envelope)" if sign else ""))


@attest_app.command("verify")
def attest_verify(
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            envvar="TRAINWARDEN_ATTEST_BASELINE",
            help="Snapshot to compare with (plain or signed).",
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--pub",
            envvar=["TRAINWARDEN_ATTEST_PUBKEY", "TRAINWARDEN_ATTEST_KEY"],
            help="Ed25519 public key the baseline must be signed with.",
        ),
    ] = None,
    python: _PythonOpt = None,
    code: _CodeOpt = None,
    fmt: _FormatOpt = OutputFormat.text,
    fail_on: _FailOnOpt = "high",
    no_cache: _NoCacheOpt = False,
    old_key: _DeprecatedKeyOpt = None,
) -> None:
    """Check installed files against RECORD, start-up hooks, loader variables and a baseline."""
    from trainwarden.attest.signing import load_snapshot
    from trainwarden.attest.verify import verify_environment
    from trainwarden.findings import Severity

    if key is None and old_key is not None:
        key = Path(_deprecated_flag(old_key, "--key", "--pub"))

    Severity.parse(fail_on)
    loaded = load_snapshot(baseline, key=key) if baseline is not None else None
    code_dirs = list(code or [])
    if not code_dirs and loaded is not None and loaded.verified is not False:
        code_dirs = [Path(c.path) for c in loaded.snapshot.code]
    cache = _hash_cache(no_cache)
    with _busy(fmt, "verifying the environment..."):
        report = verify_environment(
            python,
            baseline=loaded,
            code_dirs=code_dirs,
            require_signature=key is not None,
            cache=cache,
        )
    _cache_warning(cache)
    summary = _snapshot_summary(report.snapshot)
    if fmt is OutputFormat.json:
        _print_json(
            {
                "summary": summary,
                "baseline": None
                if loaded is None
                else {
                    "path": loaded.source,
                    "signed": loaded.signed,
                    "signature_verified": loaded.verified,
                    "created": loaded.snapshot.created,
                    "host": loaded.snapshot.host,
                },
                **report.to_dict(),
            }
        )
    else:
        _print_summary(summary)
        if loaded is not None:
            sig = {True: "signature OK", False: "SIGNATURE INVALID", None: "signature not checked"}
            out.print(
                f"baseline     {loaded.source} ({loaded.snapshot.host}, {loaded.snapshot.created}, "
                f"{'signed, ' + sig[loaded.verified] if loaded.signed else 'unsigned'})"
            )
        _print_findings(report.findings)
    _ledger_record(
        "attest.verify",
        {"summary": summary, "findings": [f.to_dict() for f in report.findings]},
    )
    _exit_for(report.findings, fail_on)


def _render_diff(d: Any) -> None:
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


@attest_app.command("diff")
def attest_diff(
    snapshots: Annotated[
        list[Path],
        typer.Argument(
            help="Two snapshots: reference (baseline, or node A) and the one to compare; with "
            "--fleet, any number of node snapshots."
        ),
    ],
    key: Annotated[
        Path | None,
        typer.Option(
            "--pub",
            envvar=["TRAINWARDEN_ATTEST_PUBKEY", "TRAINWARDEN_ATTEST_KEY"],
            help="Ed25519 public key every snapshot must be signed with.",
        ),
    ] = None,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet",
            help="Compare every snapshot with the majority of all of them; name the odd ones out.",
        ),
    ] = False,
    fmt: _FormatOpt = OutputFormat.text,
    fail_on: _FailOnOpt = "medium",
    old_key: _DeprecatedKeyOpt = None,
) -> None:
    """Show node-to-node or run-to-run differences, or each node against the fleet majority."""
    from trainwarden.attest import AttestationError
    from trainwarden.attest.diff import diff_snapshots
    from trainwarden.attest.signing import load_snapshot
    from trainwarden.findings import Severity

    if key is None and old_key is not None:
        key = Path(_deprecated_flag(old_key, "--key", "--pub"))

    Severity.parse(fail_on)

    def load(path: Path) -> Any:
        snap = load_snapshot(path, key=key)
        if key is not None and (not snap.signed or not snap.verified):
            raise AttestationError(
                f"{snap.source}: "
                + ("signature does not verify" if snap.signed else "not signed")
                + f" with key {key}",
                hint="re-create it with `trainwarden attest snapshot --sign KEY`",
            )
        return snap

    if fleet:
        _attest_fleet(snapshots, load, fmt, fail_on)
        return
    if len(snapshots) != 2:
        raise AttestationError(
            f"attest diff compares two snapshots, got {len(snapshots)}",
            hint="pass exactly two, or --fleet to compare many with their majority",
        )
    a, b = snapshots
    la, lb = load(a), load(b)
    d = diff_snapshots(la.snapshot, lb.snapshot, a_label=str(a), b_label=str(b))
    findings = d.findings()
    if fmt is OutputFormat.json:
        _print_json(
            {
                "a": str(a),
                "b": str(b),
                "interpreter": d.interpreter,
                "platform": d.platform,
                "environment": d.environment,
                "orphans": d.orphans,
                "pth_files": d.pth_files,
                "customize": d.customize,
                "code": d.code,
                "path_files": d.path_files,
                "distributions": [
                    {
                        "name": x.name,
                        "change": x.change,
                        "version_a": x.version_a,
                        "version_b": x.version_b,
                        "changed": [
                            {
                                "path": p,
                                "sha256_a": sa,
                                "sha256_b": sb,
                                "status_a": ta,
                                "status_b": tb,
                            }
                            for p, sa, sb, ta, tb in x.changed
                        ],
                        "added": list(x.added),
                        "removed": list(x.removed),
                    }
                    for x in d.distributions
                ],
                "findings": [f.to_dict() for f in findings],
            }
        )
    else:
        _render_diff(d)
    _exit_for(findings, fail_on)


def _attest_fleet(paths: Sequence[Path], load: Any, fmt: OutputFormat, fail_on: str) -> None:
    from trainwarden.attest import AttestationError
    from trainwarden.attest.fleet import fleet_diff

    if len(paths) < 2:
        raise AttestationError(
            "--fleet needs at least two snapshots", hint="pass one snapshot per node"
        )
    report = fleet_diff((str(p), load(p).snapshot) for p in paths)
    findings = report.findings()
    if fmt is OutputFormat.json:
        _print_json(
            {
                "nodes": report.nodes,
                "distinct_environments": report.groups,
                "majority_nodes": report.majority_nodes,
                "odd_ones_out": [
                    {
                        "snapshot": n.label,
                        "host": n.host,
                        "differences": n.count,
                        "items": [
                            {"item": k, "node": v, "majority": m} for k, v, m in n.differences
                        ],
                    }
                    for n in report.odd
                ],
                "split": list(report.split),
                "findings": [f.to_dict() for f in findings],
            }
        )
    else:
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
    _exit_for(findings, fail_on)


@attest_app.command("perms")
def attest_perms(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Extra paths the job loads (checkpoint or data directories)."),
    ] = None,
    python: _PythonOpt = None,
    code: _CodeOpt = None,
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
    fmt: _FormatOpt = OutputFormat.text,
    fail_on: _FailOnOpt = "high",
) -> None:
    """List what the job imports or loads that someone other than its owner or root can change."""
    from trainwarden.attest import AttestationError
    from trainwarden.attest.perms import check_permissions
    from trainwarden.attest.snapshot import job_sys_path
    from trainwarden.findings import Severity

    Severity.parse(fail_on)
    uid: int | None = None
    if owner is not None:
        if owner.isdigit():
            uid = int(owner)
        else:
            import pwd

            try:
                uid = pwd.getpwnam(owner).pw_uid
            except KeyError:
                raise AttestationError(f"unknown user {owner!r}") from None
    roots: list[str] = []
    if sys_path:
        roots.extend(job_sys_path(python))
    roots.extend(str(c) for c in code or [])
    roots.extend(str(p) for p in paths or [])
    with _busy(fmt, "checking permissions..."):
        report = check_permissions(roots, owner_uid=uid)
    if fmt is OutputFormat.json:
        _print_json(
            {
                "owner_uid": report.owner_uid,
                "roots": list(report.roots),
                "checked": report.checked,
                "findings": [f.to_dict() for f in report.findings],
            }
        )
    else:
        out.print(
            f"checked {report.checked} paths under {len(report.roots)} roots for owner uid "
            f"{report.owner_uid}"
        )
        _print_findings(report.findings)
    _exit_for(report.findings, fail_on)


@attest_app.command("keygen")
def attest_keygen(
    keyfile: Annotated[
        Path, typer.Argument(help="Private key to create (public key: KEYFILE.pub).")
    ],
) -> None:
    """Create an Ed25519 key pair for signing snapshots."""
    from trainwarden.attest.signing import generate_key

    pub, keyid = generate_key(keyfile)
    out.print(f"wrote {keyfile} (private, mode 0600) and {pub} (keyid {keyid})")


# ----------------------------------------------------------------------------------------------
# monitor -- training-monitor commands go below this line
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# serve, ledger -- the tamper-evident ledger service and its verifier
# ----------------------------------------------------------------------------------------------


def _with_ledger(sink: Any) -> Any:
    """``sink`` plus the ledger when TRAINWARDEN_LEDGER_URL/TOKEN are set (or --ledger)."""
    from trainwarden.ledger.client import with_ledger

    return with_ledger(sink)


def _ledger_record(kind: str, record: dict[str, Any], items_key: str | None = None) -> None:
    """Send a command's verdict to the ledger when one is configured: one entry per item of
    ``record[items_key]`` (e.g. each scanned file, with its sha256), then the record itself."""
    from trainwarden.ledger.client import configured_sink

    sink = configured_sink()
    if sink is None:
        return
    try:
        doc = dict(record)
        items = doc.pop(items_key, []) if items_key else []
        for item in items:
            sink.emit(f"{kind}.item", item)
        sink.emit(kind, {**doc, "items": len(items)} if items_key else doc)
        if not sink.flush(timeout=15):
            err.print(
                f"ledger: {sink.pending} event(s) not yet acknowledged ({sink.last_error});"
                f" they stay in {sink.spool_dir} and are sent by the next command",
                markup=False,
            )
    finally:
        sink.close(timeout=1)


@app.command("serve")
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
) -> None:
    """Serve the ledger over HTTP (OpenAPI at /docs)."""
    from trainwarden.service.app import create_app
    from trainwarden.service.server import ServeConfig, build_service

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


ledger_app = typer.Typer(
    help="Verify the tamper-evident ledger and manage its tokens.",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger")
ledger_token_app = typer.Typer(help="Create, list and revoke ledger tokens.", no_args_is_help=True)
ledger_app.add_typer(ledger_token_app, name="token")

_LedgerUrl = Annotated[
    str | None,
    typer.Option("--url", envvar="TRAINWARDEN_LEDGER_URL", help="Ledger service URL."),
]
_LedgerToken = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TRAINWARDEN_LEDGER_TOKEN",
        help="Bearer token (prefer the environment variable: argv is visible to others).",
    ),
]
_LedgerDb = Annotated[
    str | None,
    typer.Option("--db", envvar="TRAINWARDEN_LEDGER_DB", help="Database URL (server side)."),
]
_LedgerState = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="TRAINWARDEN_LEDGER_HOME", help="Server state directory."),
]


@ledger_app.command("verify")
def ledger_verify(
    db: _LedgerDb = None,
    url: _LedgerUrl = None,
    token: _LedgerToken = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Verifier key (ledger.vkey file or string, or PEM public key)."),
    ] = None,
    saved: Annotated[
        list[Path] | None,
        typer.Option("--saved", help="A checkpoint saved earlier; today's log must extend it."),
    ] = None,
    state_dir: _LedgerState = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = (
        OutputFormat.text
    ),
) -> None:
    """Recompute the whole log, check every checkpoint and proof; exit 1 naming the first bad
    entry when anything disagrees."""
    from trainwarden.ledger.tools import verify_db, verify_url

    if (db is None) == (url is None):
        raise TrainWardenError("give exactly one of --db and --url")
    notes = [p.read_text() for p in saved or []]
    if db is not None:
        report = verify_db(db, key=key, state_dir=state_dir, saved=notes)
    else:
        report = verify_url(url or "", token, key=key, saved=notes)
    first = report.first_bad
    if fmt is OutputFormat.json:
        _print_json(
            {
                "ok": report.ok,
                "size": report.size,
                "checkpoints": report.checkpoints,
                "inclusion_proofs": report.inclusion_proofs,
                "consistency_proofs": report.consistency_proofs,
                "rows_authenticated": report.rows_authenticated,
                "first_bad": None
                if first is None
                else {"index": first.index, "run": first.run, "message": first.message},
                "problems": [
                    {"index": p.index, "run": p.run, "message": p.message} for p in report.problems
                ],
            }
        )
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


@ledger_app.command("checkpoint")
def ledger_checkpoint(
    url: _LedgerUrl = None,
    token: _LedgerToken = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the signed note here.")
    ] = None,
) -> None:
    """Fetch the latest signed checkpoint (keep it: `ledger verify --saved` checks it later)."""
    from trainwarden.ledger.client import LedgerClient

    if not url:
        raise TrainWardenError("--url (or TRAINWARDEN_LEDGER_URL) is required")
    note = LedgerClient(url, token).get("/v1/checkpoint")["note"]
    if output:
        output.write_text(note)
    else:
        sys.stdout.write(note)


@ledger_token_app.command("create")
def ledger_token_create(
    role: Annotated[str, typer.Option("--role", help="admin, writer or reader.")],
    run: Annotated[str | None, typer.Option("--run", help="The run a writer appends to.")] = None,
    db: _LedgerDb = None,
    state_dir: _LedgerState = None,
    url: _LedgerUrl = None,
    token: _LedgerToken = None,
) -> None:
    """Create a token (printed once; only its hash is stored). Through the service with an admin
    --token, or directly in the server's --db."""
    from trainwarden.ledger.tools import create_token

    tok, token_id = create_token(role, run, db=db, state_dir=state_dir, url=url, token=token)
    err.print(f"created {role} token {token_id}", markup=False)
    sys.stdout.write(tok + "\n")


@ledger_token_app.command("revoke")
def ledger_token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token id (tok_...).")],
    db: _LedgerDb = None,
    state_dir: _LedgerState = None,
    url: _LedgerUrl = None,
    token: _LedgerToken = None,
) -> None:
    """Revoke a token."""
    from trainwarden.ledger.tools import revoke_token

    revoke_token(token_id, db=db, state_dir=state_dir, url=url, token=token)
    out.print(f"revoked {token_id}", markup=False)


@ledger_token_app.command("list")
def ledger_token_list(
    db: _LedgerDb = None,
    state_dir: _LedgerState = None,
    url: _LedgerUrl = None,
    token: _LedgerToken = None,
) -> None:
    """List tokens (ids, roles, runs; never the tokens)."""
    from trainwarden.ledger.tools import list_tokens

    _print_json(list_tokens(db=db, state_dir=state_dir, url=url, token=token))


# ----------------------------------------------------------------------------------------------
# sandbox
# ----------------------------------------------------------------------------------------------

sandbox_app = typer.Typer(
    help="Kernel-enforced job sandbox (Landlock).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("explain")
def sandbox_explain(
    policy_file: Annotated[
        str | None,
        typer.Option(
            "--policy", envvar="TRAINWARDEN_SANDBOX_POLICY", help="Sandbox policy file (TOML)."
        ),
    ] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="text or json.")] = (
        OutputFormat.text
    ),
) -> None:
    """Print what a sandbox policy allows and what this kernel can enforce of it."""
    from trainwarden.sandbox import SandboxPolicy, abi_version
    from trainwarden.sandbox.apply import unenforceable

    policy = SandboxPolicy.from_file(policy_file) if policy_file else SandboxPolicy.default()
    resolved = policy.resolve()
    abi = abi_version()
    missing = unenforceable(resolved, abi.version)
    if fmt is OutputFormat.json:
        from trainwarden.sandbox.policy import compress_ports

        _print_json(
            {
                "policy": resolved.source,
                "landlock_abi": abi.version,
                "rules": [
                    {"path": r.path, "kind": r.kind, "origin": r.origin} for r in resolved.rules
                ],
                "bind_ports": list(compress_ports(resolved.bind_ports)),
                "connect_ports": list(compress_ports(resolved.connect_ports)),
                "scope_signals": resolved.scope_signals,
                "scope_abstract_unix": resolved.scope_abstract_unix,
                "private_tmp": resolved.private_tmp,
                "not_enforceable_here": list(missing),
            }
        )
        return
    for line in resolved.describe():
        out.print(line, markup=False)
    kernel = f"Landlock ABI {abi.version}" if abi.version else f"no Landlock ({abi.reason})"
    out.print(f"this kernel: {kernel}", markup=False)
    if missing:
        out.print("this kernel cannot enforce: " + ", ".join(missing), markup=False)


# ----------------------------------------------------------------------------------------------
# audit -- replay audit of a recorded training run
# ----------------------------------------------------------------------------------------------

audit_app = typer.Typer(
    help="Replay sampled training steps outside the job and compare with its record.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.command("replay")
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
    fmt: _FormatOpt = OutputFormat.text,
    fail_on: _FailOnOpt = "high",
) -> None:
    """Re-execute sampled intervals of a recorded run and report where it diverged."""
    from trainwarden.audit import replay
    from trainwarden.audit.types import AuditError
    from trainwarden.findings import Severity

    threshold = Severity.parse(fail_on)
    attestation: list[Any] = []
    if not no_attest:
        from trainwarden.attest.signing import load_snapshot
        from trainwarden.attest.verify import verify_environment

        loaded = load_snapshot(baseline) if baseline is not None else None
        with _busy(fmt, "attesting the replaying interpreter..."):
            att = verify_environment(None, baseline=loaded, code_dirs=[], cache=_hash_cache(False))
        attestation = [f for f in att.findings if f.severity >= Severity.HIGH]
        if attestation:
            _print_findings(attestation)
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
    with _busy(fmt, "replaying..."):
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
        _print_json({**report.to_dict(), "attested": not no_attest})
    else:
        out.print(
            f"replayed {len(report.intervals)} of {report.meta.get('intervals_total')} intervals "
            f"of {run_dir} (seed {report.seed})"
        )
        for r in report.intervals:
            line = f"  steps {r.start}-{r.end - 1}: {r.status}"
            if r.status == "diverged":
                line += f" at step {r.step} in {r.where}"
                if r.tensors:
                    line += f" ({', '.join(r.tensors[:3])}{' ...' if len(r.tensors) > 3 else ''})"
            if r.detail:
                line += f": {r.detail}"
            out.print(line, markup=False)
        _print_findings(report.findings)
    raise typer.Exit(report.exit_code(threshold))


# ----------------------------------------------------------------------------------------------
# drill
# ----------------------------------------------------------------------------------------------


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


@app.command("drill")
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
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = (
        OutputFormat.text
    ),
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
        _print_json({"ok": not missed, "techniques": rows, "not_run": skipped, "missed": missed})
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


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------


def _plain_help(command: Any) -> None:
    """Name every value in help as ``PATH``-style words, and accept choices in any case.

    Typer otherwise prints Python types (``<str>``, ``<list[str]>``) as placeholders and
    matches ``--format JSON`` case-sensitively.
    """
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)
    for param in getattr(command, "params", ()):
        desc = getattr(param, "type_descriptor", None)
        if desc is not None and getattr(desc, "is_choice", False):
            with contextlib.suppress(AttributeError):
                desc.parameter_info.case_sensitive = False
            continue
        if param.metavar is None and not getattr(param, "is_flag", False):
            param.metavar = (param.name or "value").upper()
        if param.param_type_name == "argument" and hasattr(param, "display_type_rich"):
            # The argument's name already says what it is: no Python type after it.
            param.display_type_rich = lambda ctx: ""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`TrainWardenError` is printed with its diagnostics and exits 2."""
    # click's base error, found from a public class (typer vendors click in some versions).
    click_error: type[Exception] = next(
        c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
    )
    try:
        command = typer.main.get_command(app)
        _plain_help(command)
        rv = command.main(args=argv, prog_name="trainwarden", standalone_mode=False)
    except click_error as e:
        # Usage errors (unknown option, bad value): always 2, whatever click's own code.
        e.show()  # type: ignore[attr-defined]
        raise SystemExit(EXIT_ERROR) from None
    except typer.Abort:
        err.print("interrupted")
        raise SystemExit(EXIT_ERROR) from None
    except TrainWardenError as e:
        err.print(f"[bold red]error:[/] {e.diagnostics()}")
        raise SystemExit(EXIT_ERROR) from e
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(EXIT_ERROR) from None
    except RecursionError:
        err.print("error: the input is nested too deeply to analyse", markup=False)
        raise SystemExit(EXIT_ERROR) from None
    except Exception as e:
        # No traceback reaches a user; exit 2 (an error), never 1 (which CI reads as findings).
        detail = str(e).splitlines()[0][:300] if str(e) else ""
        err.print(
            f"error: internal error: {type(e).__name__}{': ' + detail if detail else ''} "
            "(set TRAINWARDEN_DEBUG=1 for the traceback, and please report it)",
            markup=False,
        )
        if _os.environ.get("TRAINWARDEN_DEBUG"):
            import traceback

            traceback.print_exc()
        raise SystemExit(EXIT_ERROR) from None
    if rv == _EXIT_SIGINT:  # typer turns Ctrl-C inside a command into exit code 130
        err.print("interrupted")
        raise SystemExit(EXIT_ERROR)
    raise SystemExit(rv if isinstance(rv, int) else EXIT_CLEAN)
