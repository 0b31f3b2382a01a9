"""The start-up fast path of ``trainwarden attest verify``: plain invocations parsed without Typer.

Every node verifies its environment before a job starts, and Typer (with click, pydantic and rich)
costs as much to import and set up as a warm verify takes. :func:`parse` reads only the
invocations whose meaning is certain from the option table generated from the Typer command
(``_attest_options``), with the parser ``scan`` uses (``_fast_argv``); anything else (help, an
argument, an unknown, misspelt or abbreviated option, a value that looks like an option,
``--format JSON``, an environment default) returns None, and Typer parses the invocation with its
own messages. A test compares the two parsers on every option and on near-misses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainwarden.cli._attest_options import DEFAULTS, ENVVARS, OPTIONS
from trainwarden.cli._fast_argv import parse_options

__all__ = ["parse"]

_SEVERITIES = ("info", "low", "medium", "high", "critical")
# A value Typer reads as the same text: printable, no surrounding space.
_PLAIN = re.compile(r"\S(?:.*\S)?", re.DOTALL)


def _convert(kind: str, value: str) -> Any:
    """The value Typer passes for ``value``, or None when the fast path leaves it to Typer."""
    if kind == "str":
        return value
    if kind == "path":
        return Path(value) if _PLAIN.fullmatch(value) and value.isprintable() else None
    if kind == "format":
        from trainwarden.cli._output import OutputFormat

        return OutputFormat(value) if value in OutputFormat._value2member_map_ else None
    if kind == "severity":
        from trainwarden.findings import Severity

        return Severity.parse(value) if value in _SEVERITIES else None
    return None


def parse(args: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The keyword arguments of ``_attest_run.verify`` for ``trainwarden attest verify ARGS``, or
    None when the invocation is not a plain one and Typer must parse it."""
    got = parse_options(args, environ, OPTIONS, ENVVARS, DEFAULTS, _convert)
    if got is None or got[1]:
        return None
    return got[0]
