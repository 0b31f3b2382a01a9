"""The CLI shell: --version, doctor, exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trainwarden

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def test_version(run_cli: RunCli) -> None:
    r = run_cli(["--version"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"trainwarden {trainwarden.__version__}"


def test_no_arguments_prints_help_and_exits_2(cli: Callable[..., Any]) -> None:
    r = cli([])
    assert r.returncode == 2
    assert "doctor" in r.stdout + r.stderr


def test_unknown_command_is_usage_error(cli: Callable[..., Any]) -> None:
    r = cli(["no-such-command"])
    assert r.returncode == 2
    assert "no-such-command" in r.stderr


def test_doctor_json_via_env_reports_interpreter_and_torch(cli: Callable[..., Any]) -> None:
    # TRAINWARDEN_FORMAT selects the format, as a CI job would set it.
    r = cli(["doctor"], env={"TRAINWARDEN_FORMAT": "json"})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True
    assert data["trainwarden"] == trainwarden.__version__
    assert data["python"].count(".") == 2
    comps = {c["name"]: c for c in data["components"]}
    assert comps["torch"]["state"] == "ok"
    assert comps["torch"]["version"].startswith("2.")
    features = {f["name"]: f for f in data["features"]}
    assert features["torch loading and training monitor"]["usable"] is True


def test_doctor_text(cli: Callable[..., Any]) -> None:
    r = cli(["doctor"])
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout
    assert "features" in r.stdout


def test_doctor_exits_2_on_broken_package(run_cli: RunCli, tmp_path: Path) -> None:
    # A package that is present but fails on import, shadowing the real one.
    broken = tmp_path / "py7zr"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('simulated broken install')\n")
    src = Path(trainwarden.__file__).parents[1]
    # Quick mode imports nothing: it sees that py7zr would come from outside its install.
    r = run_cli(["doctor"], env={"PYTHONPATH": f"{src}:{tmp_path}"})
    assert r.returncode == 2
    assert "py7zr" in r.stderr
    assert f"shadowed: py7zr is imported from {tmp_path}" in r.stderr
    # --deep imports it and reports the import error itself.
    r = run_cli(["doctor", "--deep"], env={"PYTHONPATH": f"{src}:{tmp_path}"})
    assert r.returncode == 2
    assert "simulated broken install" in r.stderr


def test_doctor_imports_no_framework_and_lists_only_present_features() -> None:
    import os
    import subprocess
    import sys

    src = Path(trainwarden.__file__).parents[1]
    code = (
        "import sys, json\n"
        "from trainwarden._doctor import run_doctor\n"
        "r = run_doctor()\n"
        "heavy = [m for m in ('torch', 'transformers', 'lightning', 'fastapi', 'psycopg')"
        " if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'features': [f.name for f in r.features]}))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(src)),
    )
    data = json.loads(r.stdout)
    assert data["heavy"] == []
    import importlib.util

    for feature, module in (
        ("ledger service", "trainwarden.service"),
        ("PostgreSQL ledger backend", "trainwarden.ledger"),
    ):
        present = importlib.util.find_spec(module) is not None
        assert (feature in data["features"]) is present
