"""The start-up fast path of ``trainwarden scan``: plain invocations parsed without Typer.

Typer (with click, pydantic and rich) costs more to import than a scan of a hundred model files
takes. :func:`parse` reads only the invocations whose meaning is certain from the option table
generated from the Typer command (``_scan_options``): options and paths, each option spelled
exactly, values that need no interpretation. Anything else (help, ``--``, an unknown, misspelt or
abbreviated option, a value that looks like an option, ``--format JSON``, an environment default)
returns None, and Typer parses the invocation with its own messages. A test compares the two
parsers on every option and on near-misses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from trainwarden.cli._fast_argv import parse_options
from trainwarden.cli._scan_options import DEFAULTS, ENVVARS, OPTIONS

__all__ = ["parse"]

_COUNT = re.compile(r"[1-9][0-9]{0,8}")
_SEVERITIES = ("info", "low", "medium", "high", "critical")


def _convert(kind: str, value: str) -> Any:
    """The value Typer passes for ``value``, or None when the fast path leaves it to Typer."""
    if kind == "str":
        return value
    if kind == "count":
        return int(value) if _COUNT.fullmatch(value) else None
    if kind == "format":
        from trainwarden.cli._scan_run import ScanFormat

        return ScanFormat(value) if value in ScanFormat._value2member_map_ else None
    if kind == "severity":
        from trainwarden.findings import Severity

        return Severity.parse(value) if value in _SEVERITIES else None
    return None


def parse(args: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The keyword arguments of ``_scan_run.run`` for ``trainwarden scan ARGS``, or None when
    the invocation is not a plain one and Typer must parse it."""
    got = parse_options(args, environ, OPTIONS, ENVVARS, DEFAULTS, _convert)
    if got is None or not got[1]:
        return None
    params, paths = got
    params["paths"] = paths
    return params
