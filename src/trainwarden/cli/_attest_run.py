"""What ``trainwarden attest verify`` does once its options are parsed, without Typer.

The Typer command (``trainwarden.cli._attest``) and the start-up fast path of ``trainwarden.cli``
(``_attest_argv``, for the plain invocations) both call :func:`verify`, so the two give the same
report, output and exit code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainwarden.cli._output import (
    OutputFormat,
    busy,
    deprecated_flag,
    emit,
    err,
    fail_on_or,
    ledger_record,
    print_findings,
)
from trainwarden.findings import Severity

__all__ = ["cache_warning", "hash_cache", "print_summary", "verify"]


def hash_cache(no_cache: bool) -> Any:
    from trainwarden.attest._cache import HashCache

    return HashCache(None) if no_cache else HashCache.default()


def cache_warning(cache: Any) -> None:
    if cache.reason:
        err.print(f"[yellow]warning:[/] {cache.reason}")


def print_summary(summary: dict[str, Any], console: Any) -> None:
    files = summary["files"]
    console.print(f"interpreter  {summary['interpreter']} (Python {summary['version']})")
    console.print(f"prefix       {summary['prefix']}")
    console.print(
        f"distributions {summary['distributions']}: "
        + ", ".join(f"{k} {v}" for k, v in files.items())
    )
    console.print(f"orphans      {summary['orphans']}   .pth files {summary['pth_files']}")
    console.print(f"customize    {', '.join(summary['customize']) or '-'}")
    console.print(f"loader env   {', '.join(summary['environment']) or '-'}")
    path_files = summary["path_files"]
    console.print(
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
        console.print(f"code         {c['path']}: {state}")


def verify(
    baseline: Path | None = None,
    key: Path | None = None,
    python: str | None = None,
    code: list[Path] | None = None,
    fmt: OutputFormat = OutputFormat.text,
    fail_on: Severity | None = None,
    no_cache: bool = False,
    old_key: str | None = None,
    report_to: str | None = None,
    ledger_token: str | None = None,
    report_sign: Path | None = None,
) -> int:
    """Verify the environment, print the report, and return the exit code (0, 1 or 2)."""
    from trainwarden.attest._signing import load_snapshot
    from trainwarden.attest._verify import baseline_code_dirs, verify_environment
    from trainwarden.errors import TrainWardenError

    if key is None and old_key is not None:
        key = Path(deprecated_flag(old_key, "--key", "--pub"))
    threshold = fail_on_or(fail_on)
    if report_to and not ledger_token:
        raise TrainWardenError(
            "--report-to needs a ledger token",
            hint="pass --ledger-token or set TRAINWARDEN_LEDGER_TOKEN to a run's writer token",
        )
    if report_sign is not None and not report_to:
        raise TrainWardenError("--sign signs what --report-to sends; pass --report-to as well")
    loaded = load_snapshot(baseline, key=key) if baseline is not None else None
    cache = hash_cache(no_cache)
    with busy(fmt, "verifying the environment..."):
        report = verify_environment(
            python,
            baseline=loaded,
            code_dirs=list(code or []) or baseline_code_dirs(loaded),
            require_signature=key is not None,
            cache=cache,
        )
    cache_warning(cache)
    doc = report.to_dict()

    def text(console: Any) -> None:
        print_summary(doc["summary"], console)
        if loaded is not None:
            sig = {True: "signature OK", False: "SIGNATURE INVALID", None: "signature not checked"}
            console.print(
                f"baseline     {loaded.source} ({loaded.snapshot.host}, {loaded.snapshot.created}, "
                f"{'signed, ' + sig[loaded.verified] if loaded.signed else 'unsigned'})"
            )
        print_findings(report.findings, console=console)

    emit(report, fmt, text)
    if report_to and ledger_token:
        from trainwarden.attest._report import report_to_ledger

        report_to_ledger(
            report,
            report_to,
            ledger_token,
            sign_key=report_sign,
            spool_dir=os.environ.get("TRAINWARDEN_LEDGER_SPOOL") or None,
        )
    else:
        ledger_record("attest.verify", {"summary": doc["summary"], "findings": doc["findings"]})
    return report.exit_code(threshold)
