"""Building the Typer application and running it under the one exit policy.

``main`` looks at argv before it builds anything: ``--version`` is answered without importing
Typer, and a command builds only its own capability's commands (Typer builds a parser, with
pydantic validators, for every parameter of every command it is given).
"""

from __future__ import annotations

import os
import sys

from trainwarden._version import __version__

# typing.TYPE_CHECKING without importing typing, so `trainwarden --version` stays cheap.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import typer

__all__ = ["COMMANDS", "build_app", "main"]

EXIT_CLEAN = 0
EXIT_ERROR = 2
_EXIT_SIGINT = 130

#: Every top-level command name -> the capability module (``trainwarden.cli.<module>``) that
#: registers it. Hidden aliases are listed too, so they build their capability alone.
COMMANDS: dict[str, str] = {
    "doctor": "doctor",
    "scan": "scan",
    "load": "loading",
    "manifest": "loading",
    "convert": "loading",
    "run": "sandbox",
    "sandbox": "sandbox",
    "attest": "attest",
    "serve": "ledger",
    "ledger": "ledger",
    "audit": "audit",
    "drill": "drill",
    "keygen": "keys",
    "data": "data",
}


def _doctor(app: typer.Typer) -> None:
    from trainwarden.cli import _doctor as doctor

    doctor.register(app)


def _scan(app: typer.Typer) -> None:
    from trainwarden.cli import _scan as scan

    scan.register(app)


def _loading(app: typer.Typer) -> None:
    from trainwarden.cli import _loading as loading

    loading.register(app)


def _sandbox(app: typer.Typer) -> None:
    from trainwarden.cli import _sandbox as sandbox

    sandbox.register(app)


def _attest(app: typer.Typer) -> None:
    from trainwarden.cli import _attest as attest

    attest.register(app)


def _ledger(app: typer.Typer) -> None:
    from trainwarden.cli import _ledger as ledger

    ledger.register(app)


def _audit(app: typer.Typer) -> None:
    from trainwarden.cli import _audit as audit

    audit.register(app)


def _drill(app: typer.Typer) -> None:
    from trainwarden.cli import _drill as drill

    drill.register(app)


def _data(app: typer.Typer) -> None:
    from trainwarden.cli import _data as data

    data.register(app)


def _keys(app: typer.Typer) -> None:
    from trainwarden.cli import _keys as keys

    keys.register(app)


#: Capability module -> its registration, in the order ``trainwarden --help`` lists them.
_REGISTER: dict[str, Callable[[typer.Typer], None]] = {
    "doctor": _doctor,
    "scan": _scan,
    "loading": _loading,
    "sandbox": _sandbox,
    "attest": _attest,
    "ledger": _ledger,
    "audit": _audit,
    "data": _data,
    "drill": _drill,
    "keys": _keys,
}


def build_app(capabilities: Sequence[str] | None) -> typer.Typer:
    """The Typer app with the root options and the commands of ``capabilities`` (None: all)."""
    import typer

    from trainwarden.cli._common import root

    app = typer.Typer(
        name="trainwarden",
        help="Integrity for ML training on shared clusters.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(root)
    for name in capabilities if capabilities is not None else _REGISTER:
        _REGISTER[name](app)
    return app


def _invoked(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The root options given before the command, and the command's name (None: none)."""
    root: list[str] = []
    for arg in argv:
        if arg.startswith("-"):
            root.append(arg)
            continue
        return root, arg
    return root, None


def _plain_help(command: Any) -> None:
    """Name every value in help as ``PATH``-style words, and accept choices in any case.

    Typer otherwise prints Python types (``<str>``, ``<list[str]>``) as placeholders and
    matches ``--format JSON`` case-sensitively.
    """
    import contextlib

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


def _error(text: str) -> None:
    from trainwarden.cli._output import err

    err.print(text, markup=False)


def _run(args: list[str], root_opts: list[str], command_name: str | None) -> Any:
    """Parse ``args`` and run the command; returns its exit code."""
    if command_name == "scan" and not root_opts:
        from trainwarden.cli import _scan_argv

        params = _scan_argv.parse(args[1:], os.environ)
        if params is not None:
            # A plain scan: the same function the Typer command calls, without building Typer.
            from trainwarden.cli._scan_run import run

            return run(**params)
    if command_name == "attest" and not root_opts and args[1:2] == ["verify"]:
        from trainwarden.cli import _attest_argv

        params = _attest_argv.parse(args[2:], os.environ)
        if params is not None:
            # A plain verify: the same function the Typer command calls, without building Typer.
            from trainwarden.cli._attest_run import verify

            return verify(**params)
    import typer.main

    capability = COMMANDS.get(command_name) if command_name is not None else None
    app = build_app([capability] if capability is not None else None)
    command = typer.main.get_command(app)
    _plain_help(command)
    return command.main(args=args, prog_name="trainwarden", standalone_mode=False)


def _typer_errors() -> tuple[type[Exception], type[Exception]]:
    """click's base error and Typer's Abort; nothing matches when Typer was never imported
    (the command ran without it)."""
    if "typer" not in sys.modules:
        return (_NeverRaised, _NeverRaised)
    import typer

    # click's base error, found from a public class (typer vendors click in some versions).
    click_error: type[Exception] = next(
        c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
    )
    return click_error, typer.Abort


class _NeverRaised(Exception):
    pass


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit: 0 clean, 1 findings at or above ``--fail-on``, 2 any error.

    A :class:`~trainwarden.errors.TrainWardenError` is printed with its diagnostics and exits
    with its ``exit_code``; no traceback reaches the user.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    root_opts, command_name = _invoked(args)
    if "--version" in root_opts and not ({"--help", "-h"} & set(root_opts)):
        sys.stdout.write(f"trainwarden {__version__}\n")
        raise SystemExit(EXIT_CLEAN)

    from trainwarden.errors import TrainWardenError

    try:
        rv = _run(args, root_opts, command_name)
    except KeyboardInterrupt:
        _error("interrupted")
        raise SystemExit(EXIT_ERROR) from None
    except RecursionError:
        _error("error: the input is nested too deeply to analyse")
        raise SystemExit(EXIT_ERROR) from None
    except Exception as e:
        click_error, abort = _typer_errors()
        if isinstance(e, click_error):
            # Usage errors (unknown option, bad value): always 2, whatever click's own code.
            e.show()  # type: ignore[attr-defined]
            raise SystemExit(EXIT_ERROR) from None
        if isinstance(e, abort):
            _error("interrupted")
            raise SystemExit(EXIT_ERROR) from None
        if isinstance(e, TrainWardenError):
            from trainwarden.cli._output import err

            err.print(f"[bold red]error:[/] {e.diagnostics()}")
            raise SystemExit(e.exit_code) from e
        # No traceback reaches a user; exit 2 (an error), never 1 (which CI reads as findings).
        detail = str(e).splitlines()[0][:300] if str(e) else ""
        _error(
            f"error: internal error: {type(e).__name__}{': ' + detail if detail else ''} "
            "(set TRAINWARDEN_DEBUG=1 for the traceback, and please report it)"
        )
        if os.environ.get("TRAINWARDEN_DEBUG"):
            import traceback

            traceback.print_exc()
        raise SystemExit(EXIT_ERROR) from None
    if rv == _EXIT_SIGINT:  # typer turns Ctrl-C inside a command into exit code 130
        _error("interrupted")
        raise SystemExit(EXIT_ERROR)
    raise SystemExit(rv if isinstance(rv, int) else EXIT_CLEAN)
