"""What ``trainwarden scan`` does once its options are parsed, without Typer.

The Typer command (``trainwarden.cli._scan``) and the start-up fast path of ``trainwarden.cli``
(``_scan_argv``, for the plain invocations) both call :func:`run`, so the two give the same
report, output and exit code.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sys
from collections.abc import Sequence
from typing import Any

from trainwarden.cli._output import (
    SEVERITY_STYLE,
    Console,
    err,
    ledger_configured,
    ledger_record,
    out,
    plain_stdout,
    text_safe,
    write_output,
)
from trainwarden.findings import Severity
from trainwarden.report import EXIT_ERROR

__all__ = ["ScanFormat", "run"]


class ScanFormat(str, enum.Enum):
    """Output formats of ``trainwarden scan``."""

    text = "text"
    json = "json"
    sarif = "sarif"


def run(
    paths: Sequence[str],
    fmt: ScanFormat = ScanFormat.text,
    fail_on: Severity | None = None,
    policy_file: str | None = None,
    allow: Sequence[str] | None = None,
    deny: Sequence[str] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    workers: int | None = None,
    hash_files: bool = False,
    output: str | None = None,
    verbose: bool = False,
    allow_empty: bool = False,
) -> int:
    """Scan ``paths``, write the report, and return the exit code (0, 1 or 2)."""
    from pathlib import Path

    from trainwarden.scan import Policy, scan_paths

    policy = Policy.from_file(policy_file) if policy_file else Policy.discover(Path.cwd())
    policy = policy.with_overrides(allow=allow or (), deny=deny or ())
    threshold = fail_on if fail_on is not None else policy.fail_on
    options: dict[str, Any] = {
        "include": include or (),
        "exclude": exclude or (),
        "workers": workers,
        "hash_files": hash_files,
    }
    if fmt is ScanFormat.text and output is None and sys.stderr.isatty() and err.is_terminal:
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

            report = scan_paths(paths, policy, progress=tick, **options)
    else:
        report = scan_paths(paths, policy, **options)
    try:
        policy_name = policy.source or "<built-in>"
        if fmt is not ScanFormat.text:  # the JSON and SARIF writers are not needed for text
            from trainwarden.scan._report import json_safe, to_json, to_sarif
        if fmt is ScanFormat.json:
            doc = to_json(report, threshold)
            doc["summary"]["policy"] = json_safe(policy_name)
            write_output(json.dumps(doc, indent=2) + "\n", output)
        elif fmt is ScanFormat.sarif:
            doc = to_sarif(report, threshold)
            doc["runs"][0]["properties"]["policy"] = json_safe(policy_name)
            write_output(json.dumps(doc, indent=2) + "\n", output)
        else:
            _render_text(report, threshold, output, verbose=verbose, policy=policy.source)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): the report was not delivered.
        _discard_stdout()
        err.print("error: stdout was closed before the whole report was written", markup=False)
        return EXIT_ERROR
    if ledger_configured():
        from trainwarden.scan._report import to_json

        ledger_record("scan", to_json(report, threshold), items_key="files")
    if report.errors:
        return EXIT_ERROR
    if not report.files and not allow_empty:
        why = f"; {len(report.skipped)} entr{'ies' if len(report.skipped) != 1 else 'y'} skipped"
        err.print(
            "error: nothing was analysed: no regular file under "
            + ", ".join(text_safe(str(x)) for x in paths)
            + (why if report.skipped else "")
            + " (a scan of nothing is not a pass; --allow-empty accepts it)",
            markup=False,
        )
        return EXIT_ERROR
    return report.exit_code(threshold)


def _discard_stdout() -> None:
    """Point stdout at the null device, so the interpreter's final flush does not fail again."""
    import os

    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


Segments = list[tuple[str, str | None]]


def _scan_lines(
    report: Any, threshold: Severity, *, verbose: bool, policy: str | None
) -> list[Segments]:
    """The text report as lines of (text, style) segments; names are already made safe."""
    verdict_style = {"clean": "green", "flagged": "yellow", "unsafe": "bold red"}
    lines: list[Segments] = []
    shown = 0
    for fr in report.files:
        verdict = fr.verdict(threshold)
        if not verbose and not fr.findings:
            continue
        shown += 1
        fmts = ",".join(fr.formats) or "unknown format"
        digest = f"  sha256:{fr.sha256}" if fr.sha256 else ""
        lines.append(
            [
                (f"{verdict.upper():8}", verdict_style[verdict]),
                (f" {text_safe(fr.path)}  ({fmts}){digest}", None),
            ]
        )
        for f in fr.findings:
            sev = f.severity.name
            glob = f.evidence.get("global_")
            offset = f.evidence.get("offset")
            extra = "".join(
                [
                    f"  global={text_safe(str(glob))}" if glob else "",
                    f"  offset={offset}" if offset is not None else "",
                ]
            )
            lines.append(
                [
                    (f"    {sev:8}", SEVERITY_STYLE[sev]),
                    (f" {f.rule_id:24} {text_safe(f.message)}", None),
                ]
            )
            lines.append([(f"             at {text_safe(f.location)}{extra}", "dim")])
    for path, reason in report.skipped:
        lines.append([(f"SKIPPED  {text_safe(path)}  ({reason})", "dim")])
    n_find = len(report.findings)
    unsafe = sum(1 for fr in report.files if fr.verdict(threshold) == "unsafe")
    hidden = len(report.files) - shown
    # Entries the walk could not read are reported (unsafe) but were not scanned.
    scanned = sum(1 for fr in report.files if fr.formats != ("unscanned",))
    lines.append(
        [
            (
                f"{scanned} file(s) scanned in {report.elapsed_s:.2f}s: {unsafe} unsafe, "
                f"{n_find} finding(s); failing at {threshold.name} and above"
                + (f"; {len(report.skipped)} skipped" if report.skipped else "")
                + (
                    f"; {hidden} file(s) without findings not listed (--verbose lists them)"
                    if hidden
                    else ""
                )
                + f"; policy: {text_safe(policy or '<built-in>')}",
                None,
            )
        ]
    )
    return lines


def _render_text(
    report: Any,
    threshold: Severity,
    output: str | None,
    *,
    verbose: bool = False,
    policy: str | None = None,
) -> None:
    for e in report.errors:
        err.print(f"error: {text_safe(e)}", markup=False)
    lines = _scan_lines(report, threshold, verbose=verbose, policy=policy)
    if output is not None or not plain_stdout():
        # Colours for a terminal; a file gets the same text without them.
        from rich.text import Text

        console = out
        buf = None
        if output is not None:
            import io

            buf = io.StringIO()
            console = Console(file=buf, highlight=False, soft_wrap=True, no_color=True, width=120)
        for segments in lines:
            console.print(Text.assemble(*((t, style or "") for t, style in segments)))
        if buf is not None:
            write_output(buf.getvalue(), output)
        return
    # Not a terminal: plain lines, without the cost of loading rich.
    write_output("".join("".join(t for t, _ in seg) + "\n" for seg in lines), None)
