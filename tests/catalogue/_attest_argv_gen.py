"""Render ``src/trainwarden/cli/_attest_options.py``, the option table of ``trainwarden attest
verify``'s start-up fast path, from the Typer command itself.

Run ``python tests/catalogue/_attest_argv_gen.py`` after changing an option of ``trainwarden attest
verify``; ``tests/catalogue/test_attest_fast_path.py`` fails while the table and the command
disagree, and this generator refuses an option kind the fast path does not know.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

if __package__:
    from ._scan_argv_gen import _lit, option_kind, table_module
else:  # run as a script
    from _scan_argv_gen import _lit, option_kind, table_module  # type: ignore[import-not-found,no-redef]

TABLE = Path(__file__).resolve().parents[2] / "src" / "trainwarden" / "cli" / "_attest_options.py"


def verify_command() -> Any:
    """The click command Typer builds for ``trainwarden attest verify``, as ``trainwarden`` runs
    it."""
    import typer.main

    from trainwarden.cli._app import _plain_help, build_app

    group = typer.main.get_command(build_app(["attest"]))
    _plain_help(group)
    return group.commands["attest"].commands["verify"]  # type: ignore[attr-defined]


def _kind(param: Any) -> str:
    from trainwarden.cli._output import OutputFormat

    return option_kind(param, OutputFormat)


def render() -> str:
    command = verify_command()
    options: list[str] = []
    envvars: list[str] = []
    defaults: list[str] = []
    for param in command.params:
        if param.param_type_name == "argument":
            raise ValueError(f"{param.name}: attest verify takes no argument")
        kind = _kind(param)
        for opt in param.opts:
            options.append(f"    {_lit(opt)}: {_lit((param.name, kind, param.multiple))},")
        env = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
        envvars.extend(f"    {_lit(e)}," for e in env if e)
        default = () if param.multiple else getattr(param.default, "value", param.default)
        defaults.append(f"    {_lit(param.name)}: {_lit(default)},")
    return table_module(
        "trainwarden attest verify", "_attest_argv_gen.py", options, envvars, defaults
    )


if __name__ == "__main__":
    TABLE.write_text(render())
    print(f"wrote {TABLE}")  # noqa: T201 - a developer tool's one line of output
