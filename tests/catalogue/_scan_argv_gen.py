"""Render ``src/trainwarden/cli/_scan_options.py``, the option table of ``trainwarden scan``'s
start-up fast path, from the Typer command itself.

Run ``python tests/catalogue/_scan_argv_gen.py`` after changing an option of ``trainwarden scan``;
``tests/catalogue/test_scan_fast_path.py`` fails while the table and the command disagree, and this
generator refuses an option kind the fast path does not know.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parents[2] / "src" / "trainwarden" / "cli" / "_scan_options.py"


def scan_command() -> Any:
    """The click command Typer builds for ``trainwarden scan``, as ``trainwarden`` runs it."""
    import typer.main

    from trainwarden.cli._app import _plain_help, build_app

    group = typer.main.get_command(build_app(["scan"]))
    _plain_help(group)
    return group.commands["scan"]  # type: ignore[attr-defined]


def typer_params(command: Any, name: str, args: list[str]) -> dict[str, Any] | None:
    """The values Typer passes to ``command``'s callback for ``args``, or None when it refuses
    them (what a fast path's answers are compared with)."""
    try:
        ctx = command.make_context(name, list(args))
    except Exception:  # click's usage and parameter errors
        return None
    return dict(ctx.params)


def _kind(param: Any) -> str:
    from trainwarden.cli._scan_run import ScanFormat

    return option_kind(param, ScanFormat)


def option_kind(param: Any, fmt: type) -> str:
    """The fast-path kind of a Typer option (``fmt``: the command's format enum); an option the
    fast path cannot read exactly as Typer does is refused."""
    from trainwarden.cli._common import parse_severity

    info = param.type_descriptor.parameter_info
    annotation = param.type_descriptor.annotation
    if param.callback is not None or getattr(param, "prompt", None) or param.is_eager:
        raise ValueError(f"{param.name}: callbacks and prompts are not on the fast path")
    if getattr(info, "parser", None) is not None:
        if info.parser is parse_severity:
            return "severity"
        raise ValueError(f"{param.name}: unknown custom parser {info.parser!r}")
    if param.is_flag:
        if param.secondary_opts or param.default is not False:
            raise ValueError(f"{param.name}: only plain on-flags are on the fast path")
        return "flag"
    if annotation is fmt:
        return "format"
    if annotation in (str, list[str]):
        return "str"
    if annotation in (Path, list[Path]):
        return "path"
    if annotation is int:
        if param.min != 1 or param.max is not None:
            raise ValueError(f"{param.name}: only integers >= 1 are on the fast path")
        return "count"
    raise ValueError(f"{param.name}: no fast-path kind for {annotation!r}")


def _lit(value: object) -> str:
    """A Python literal as ``ruff format`` writes it (double quotes)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        inner = ", ".join(_lit(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if value is None or isinstance(value, bool | int):
        return repr(value)
    raise ValueError(f"no literal for {value!r}")


def render() -> str:
    command = scan_command()
    options: list[str] = []
    envvars: list[str] = []
    defaults: list[str] = []
    for param in command.params:
        default = param.default
        if param.param_type_name == "argument":
            if param.name != "paths" or param.nargs != -1 or not param.required:
                raise ValueError(f"{param.name}: unexpected argument")
            continue
        kind = _kind(param)
        for opt in param.opts:
            options.append(f"    {_lit(opt)}: {_lit((param.name, kind, param.multiple))},")
        env = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
        envvars.extend(f"    {_lit(e)}," for e in env if e)
        if param.multiple:
            default = ()
        default = getattr(default, "value", default)
        defaults.append(f"    {_lit(param.name)}: {_lit(default)},")
    return table_module("trainwarden scan", "_scan_argv_gen.py", options, envvars, defaults)


def table_module(
    command: str, generator: str, options: list[str], envvars: list[str], defaults: list[str]
) -> str:
    """The text of a fast path's option table module (``options``, ``envvars`` and ``defaults``
    are its rendered lines)."""
    return "\n".join(
        [
            f'"""The options of ``{command}`` for its start-up fast path.',
            "",
            f"Generated from the Typer command by ``python tests/catalogue/{generator}``;",
            "do not edit. A test fails while this table and the command disagree.",
            '"""',
            "",
            "from __future__ import annotations",
            "",
            "#: Option string -> (parameter name, kind, repeatable).",
            "OPTIONS: dict[str, tuple[str, str, bool]] = {",
            *options,
            "}",
            "",
            "#: The environment variables the options read their defaults from.",
            "ENVVARS: tuple[str, ...] = (",
            *envvars,
            ")",
            "",
            "#: Each option's value when it is not given (a format by its name).",
            "DEFAULTS: dict[str, object] = {",
            *defaults,
            "}",
            "",
        ]
    )


if __name__ == "__main__":
    TABLE.write_text(render())
    print(f"wrote {TABLE}")  # noqa: T201 - a developer tool's one line of output
