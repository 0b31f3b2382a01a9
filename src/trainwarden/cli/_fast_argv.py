"""The shared parser of the start-up fast paths (``scan``, ``attest verify``).

It reads only invocations whose meaning is certain from an option table generated from the Typer
command: options spelled exactly, values that need no interpretation, no environment default.
Anything else returns None and Typer parses the invocation with its own messages. Each command's
tests compare the two parsers on every option and on near-misses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["parse_options"]

#: click reads these too (shell completion); their presence leaves the invocation to Typer.
CLICK_ENVVARS = ("_TRAINWARDEN_COMPLETE",)


def parse_options(
    args: Sequence[str],
    environ: Mapping[str, str],
    options: Mapping[str, tuple[str, str, bool]],
    envvars: Sequence[str],
    defaults: Mapping[str, object],
    convert: Callable[[str, str], Any],
) -> tuple[dict[str, Any], list[str]] | None:
    """``(keyword arguments, positional arguments)`` for ``args``, or None when Typer must parse
    them. ``options`` maps each option string to (parameter name, kind, repeatable); ``convert``
    turns a value of a kind into what Typer passes (None: leave it to Typer). A default of kind
    ``format`` is given by its name and converted too."""
    if any(name in environ for name in (*envvars, *CLICK_ENVVARS)):
        return None
    params: dict[str, Any] = dict(defaults)
    for key, kind, _multiple in options.values():
        if kind == "format" and isinstance(params.get(key), str):
            params[key] = convert("format", str(params[key]))
    repeated: dict[str, list[Any]] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            positional.append(arg)
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        spec = options.get(name)
        if spec is None:
            return None
        key, kind, multiple = spec
        if kind == "flag":
            if eq:
                return None
            params[key] = True
            continue
        if not eq:
            if i >= len(args):
                return None
            value = args[i]
            i += 1
        if not value or value.startswith("-"):
            return None
        converted = convert(kind, value)
        if converted is None:
            return None
        if multiple:
            repeated.setdefault(key, []).append(converted)
        else:
            params[key] = converted
    params.update(repeated)
    return params, positional
