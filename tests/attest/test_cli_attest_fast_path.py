"""``trainwarden attest verify`` on its start-up fast path and through Typer, against a real venv:
the same output and exit code on both paths, errors included, and a plain verify that imports
neither Typer, click nor pydantic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trainwarden
from trainwarden.cli import _attest_argv
from trainwarden.cli._attest_options import ENVVARS

from .venvs import Venv

Cli = Callable[..., Any]  # the in-process `cli` fixture (tests/conftest.py)
SRC = Path(trainwarden.__file__).resolve().parents[1]


def _both(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> tuple[Any, Any]:
    """The result of ``args`` on the fast path, then through Typer."""
    taken: list[bool] = []
    real = _attest_argv.parse

    def spy(argv: Any, environ: Any) -> Any:
        got = real(argv, environ)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(_attest_argv, "parse", spy)
    fast = cli(args, env=env)
    assert taken == [True], args
    monkeypatch.setattr(_attest_argv, "parse", lambda argv, environ: None)
    slow = cli(args, env=env)
    return fast, slow


@pytest.fixture
def setup(
    make_venv: Callable[[], Venv], tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    venv = make_venv()
    (venv.site / "planted.py").write_text("X = 1\n")  # an orphan: a finding to report
    env = {"TRAINWARDEN_CACHE_DIR": str(tmp_path / "cache"), "LD_PRELOAD": ""}
    for name in (*ENVVARS, "_TRAINWARDEN_COMPLETE"):  # an environment default goes to Typer
        monkeypatch.delenv(name, raising=False)
    key = tmp_path / "k.key"
    assert cli(["attest", "keygen", str(key)], env=env).returncode == 0
    baseline = tmp_path / "baseline.json"
    r = cli(
        [
            "attest",
            "snapshot",
            "--python",
            str(venv.python),
            "-o",
            str(baseline),
            "--sign",
            str(key),
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return {"venv": venv, "env": env, "baseline": baseline, "pub": f"{key}.pub", "key": key}


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--format", "json"],
        ["--format=json", "--fail-on", "info"],
        ["--no-cache", "--fail-on=critical"],
        ["BASELINE", "--format", "json"],
        ["BASELINE", "PUB"],
        ["BASELINE", "PUB", "--format", "json", "--fail-on", "low"],
    ],
)
def test_the_fast_path_and_typer_give_the_same_report_and_exit_code(
    extra: list[str],
    setup: dict[str, Any],
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subst = {"BASELINE": ["--baseline", str(setup["baseline"])], "PUB": ["--pub", setup["pub"]]}
    args = ["attest", "verify", "--python", str(setup["venv"].python)]
    for token in extra:
        args += subst.get(token, [token])
    fast, slow = _both(cli, monkeypatch, args, setup["env"])
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        slow.returncode,
        slow.stdout,
        slow.stderr,
    )
    assert fast.returncode in (0, 1)
    if "json" in " ".join(extra):
        doc = json.loads(fast.stdout)
        assert "TWA-ORPH-001" in {f["rule_id"] for f in doc["findings"]}


@pytest.mark.parametrize(
    "extra",
    [
        ["--baseline", "missing.json"],
        ["--baseline", "BASELINE", "--pub", "missing.pub"],
        ["--report-to", "http://127.0.0.1:9"],
        ["--sign", "KEY"],
        ["--python", "no-such-python"],
    ],
)
def test_errors_are_the_same_on_both_paths(
    extra: list[str],
    setup: dict[str, Any],
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    subst = {"BASELINE": str(setup["baseline"]), "KEY": str(setup["key"])}
    args = ["attest", "verify", *[subst.get(t, t) for t in extra]]
    if "--python" not in extra:
        args += ["--python", str(setup["venv"].python)]
    monkeypatch.chdir(tmp_path)
    fast, slow = _both(cli, monkeypatch, args, setup["env"])
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        slow.returncode,
        slow.stdout,
        slow.stderr,
    )
    assert fast.returncode == 2
    assert fast.stderr.startswith("error:") and "Traceback" not in fast.stderr


def test_a_plain_verify_imports_neither_typer_click_nor_pydantic(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    env = {**os.environ, **setup["env"]}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    for name in (*ENVVARS, "TRAINWARDEN_LEDGER_URL", "TRAINWARDEN_LEDGER"):
        env.pop(name, None)
    code = (
        "import contextlib, io, json, sys\n"
        "from trainwarden.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        f"        main(['attest', 'verify', '--python', {str(setup['venv'].python)!r}, "
        "'--format', 'json'])\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('typer', 'click', 'pydantic', 'rich'))\n"
        "print(json.dumps([code, heavy, json.loads(out.getvalue())['summary']['interpreter']]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    rc, heavy, interpreter = json.loads(r.stdout.splitlines()[-1])
    assert rc in (0, 1) and interpreter
    assert heavy == []
