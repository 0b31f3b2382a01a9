"""One command-line vocabulary: help without Python type placeholders, choices in any case, the
same flag and variable names for the same thing, and one exit code per kind of error."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import typer.main

from trainwarden.cli import app, main


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0
            else:
                code = 0
    return code, out.getvalue(), err.getvalue()


def _commands(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(command, "commands", None)
    if not subs:
        return [prefix]
    found: list[tuple[str, ...]] = []
    for name, sub in subs.items():
        found += _commands(sub, (*prefix, name))
    return found


ALL_COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_help_has_no_python_type_placeholders(command: tuple[str, ...]) -> None:
    code, out, _ = cli(*command, "--help")
    assert code == 0
    bad = re.findall(r"<(?:list\[|str>|int>|path>|Path>|float>)[^>]*>?", out)
    assert bad == [], out


def test_choices_are_case_insensitive(tmp_path: Path) -> None:
    p = tmp_path / "a.pkl"
    p.write_bytes(b"\x80\x04K\x01.")
    code, out, _ = cli("scan", "--format", "JSON", str(p))
    assert code == 0
    assert json.loads(out)["summary"]["files"] == 1
    code, out, _ = cli("doctor", "--format", "Json")
    assert code in (0, 2) and json.loads(out)["trainwarden"]


def test_scan_reads_the_shared_format_variable(tmp_path: Path) -> None:
    p = tmp_path / "a.pkl"
    p.write_bytes(b"\x80\x04K\x01.")
    code, out, _ = cli("scan", str(p), env={"TRAINWARDEN_FORMAT": "json"})
    assert code == 0 and json.loads(out)["files"][0]["verdict"] == "clean"
    # The command-specific variable wins where both are set.
    code, out, _ = cli(
        "scan",
        str(p),
        env={"TRAINWARDEN_FORMAT": "json", "TRAINWARDEN_SCAN_FORMAT": "sarif"},
    )
    assert json.loads(out)["version"] == "2.1.0"


@pytest.mark.parametrize(
    "command",
    [("attest", "verify"), ("attest", "diff"), ("manifest", "verify"), ("load",)],
)
def test_public_keys_are_pub_everywhere(command: tuple[str, ...]) -> None:
    _, out, _ = cli(*command, "--help")
    assert "--pub" in out
    assert "--key" not in out  # a hidden, deprecated alias only


def test_private_keys_are_sign_everywhere() -> None:
    for command in (("manifest", "create"), ("attest", "snapshot")):
        _, out, _ = cli(*command, "--help")
        assert "--sign" in out and "--key" not in out


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "--no-such-flag", "."],
        ["scan", "--format", "xml", "."],
        ["no-such-command"],
        ["scan"],
        [],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, _, err = cli(*args)
    assert code == 2
    assert "Traceback" not in err
