"""Start-up cost of the CLI: what importing it loads, and that the lazy package root still works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trainwarden

RunCli = Callable[..., subprocess.CompletedProcess[str]]
SRC = Path(trainwarden.__file__).resolve().parents[1]

# Heavy modules no command needs before it starts work: each is imported by the command that
# uses it (the safe loader by `load`, the scanner by `scan`, rich by the first printed table).
_NOT_AT_IMPORT = (
    "trainwarden.loading",
    "trainwarden.scan",
    "trainwarden.attest",
    "trainwarden.monitor",
    "rich",
    "pydantic",
    "torch",
    "numpy",
)


def _modules_after(code: str) -> set[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    r = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return set(json.loads(r.stdout.splitlines()[-1]))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in _NOT_AT_IMPORT))


def test_import_cli_loads_no_heavy_module() -> None:
    mods = _modules_after("import trainwarden.cli")
    assert "trainwarden.cli" in mods
    assert _heavy(mods) == []


def test_import_package_root_loads_no_heavy_module() -> None:
    assert _heavy(_modules_after("import trainwarden")) == []


def test_version_flag_loads_no_heavy_module() -> None:
    code = (
        "import contextlib, io\n"
        "from trainwarden.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--version'])"
    )
    assert _heavy(_modules_after(code)) == []


def test_lazy_root_names_resolve_to_the_real_objects() -> None:
    from trainwarden.loading import UnsafeModelError, load, save
    from trainwarden.monitor._types import Alert, TamperingDetected

    assert trainwarden.load is load
    assert trainwarden.save is save
    assert trainwarden.UnsafeModelError is UnsafeModelError
    assert trainwarden.Alert is Alert
    assert trainwarden.TamperingDetected is TamperingDetected
    for name in trainwarden.__all__:
        assert getattr(trainwarden, name) is not None


def test_unknown_root_attribute_is_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = trainwarden.no_such_name


def test_version_output(run_cli: RunCli) -> None:
    r = run_cli(["--version"])
    assert r.returncode == 0
    assert r.stdout == f"trainwarden {trainwarden.__version__}\n"


def test_version_flag_does_not_build_the_cli() -> None:
    code = (
        "import contextlib, io\n"
        "from trainwarden.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--version'])"
    )
    mods = _modules_after(code)
    assert not {m for m in mods if m == "typer" or m.startswith(("typer.", "trainwarden.scan"))}


def test_a_command_builds_only_its_own_capability() -> None:
    code = (
        "import contextlib, io\n"
        "from trainwarden.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['scan', '--help'])"
    )
    mods = _modules_after(code)
    assert "trainwarden.cli._scan" in mods
    others = {"attest", "loading", "ledger", "sandbox", "audit", "drill", "doctor", "keys"}
    assert not {m for m in mods if m.removeprefix("trainwarden.cli.") in others}


def test_the_whole_app_lists_every_command() -> None:
    from trainwarden.cli import app
    from trainwarden.cli._app import COMMANDS

    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert names == set(COMMANDS)
