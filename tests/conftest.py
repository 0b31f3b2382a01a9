"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    # Make a subprocess import the same source tree as the test process.
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else [])]
    )
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "trainwarden", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Factory: run ``python -m trainwarden ARGS`` in a real subprocess."""
    return _run_cli
