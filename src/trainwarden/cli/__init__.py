"""The ``trainwarden`` command line: the only package that prints, reads argv or exits.

Exit codes everywhere: 0 clean, 1 findings at or above ``--fail-on``, 2 usage, input or internal
error (:attr:`TrainWardenError.exit_code` decides, so one error always gives one code).

Where things go:

- A command lives in the module of its capability: ``scan.py``, ``loading.py`` (load, convert,
  manifest), ``attest.py``, ``ledger.py`` (serve, ledger), ``sandbox.py`` (sandbox, run),
  ``audit.py``, ``drill.py``, ``doctor.py``, ``keys.py`` (keygen). Each module has one
  ``register(app)`` that adds its commands; the command body parses options, calls the library
  and renders the result (no business logic here).
- A new top-level command name is added to ``COMMANDS`` in ``_app.py`` (the one place that maps
  names to modules): ``main`` builds only the invoked capability's commands, so start-up does not
  grow with the number of commands. A new capability module also goes into ``_REGISTER`` there.
- Options several commands share (``--format``, ``--fail-on``, ``--policy``, ``--output``) and
  the renderers are in ``_common.py``; results implement :class:`trainwarden.report.Report`.
- ``trainwarden scan`` is the command run most often on small inputs, so its plain invocations
  skip Typer: ``_scan_argv`` parses them with the option table ``_scan_options`` (generated from
  the Typer command by ``tests/catalogue/_scan_argv_gen.py``, and tested to agree with it) and
  calls ``_scan_run.run``, the same function the Typer command calls. Anything else (help, an
  unknown option, an environment default) goes to Typer. ``_output`` holds the printing helpers
  that import neither Typer nor rich until used.
"""

from __future__ import annotations

from trainwarden.cli._app import main

# typing.TYPE_CHECKING without importing typing, so `trainwarden --version` stays cheap.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    import typer

    #: The whole application (every command), for ``typer.testing.CliRunner`` and docs tools.
    app: typer.Typer

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from trainwarden.cli._app import build_app

        value = build_app(None)
        globals()["app"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
