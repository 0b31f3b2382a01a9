"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@pytest.fixture(autouse=True)
def _signal_mask_is_restored() -> Iterator[None]:
    """Every test leaves the main thread's signal mask as it found it: a mask left blocked by a
    watchdog closed from another thread would be inherited by every process a later test starts
    (which then could not be stopped by SIGTERM), an order dependence between tests."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _run_cli(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
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
        preexec_fn=preexec_fn,
        check=False,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Factory: run ``python -m trainwarden ARGS`` in a real subprocess."""
    return _run_cli


class CliResult:
    """What an in-process run of the CLI printed and its exit code (as a subprocess would)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Factory: run ``trainwarden ARGS`` in-process through the real entry point (``main``),
    with ``env`` added to the environment and ``cwd`` as the working directory for that run.
    Use ``run_cli`` where the process itself matters (signals, sandboxing, ``run``)."""
    from trainwarden.cli import main

    def run(
        args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> CliResult:
        capsys.readouterr()
        saved = dict(os.environ)  # a command may export variables (--ledger does)
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            if cwd is not None:
                m.chdir(cwd)
            try:
                main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            finally:
                os.environ.clear()
                os.environ.update(saved)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A DSN of a real PostgreSQL server, one for the whole test session (ledger and service).

    It comes from ``TRAINWARDEN_TEST_PG_DSN`` (``.ci/run`` starts a server and sets it); when
    unset, the suite starts its own with ``.ci/start-postgres.sh``. Only an explicit
    ``TRAINWARDEN_TEST_PG_UNAVAILABLE=1`` (which CI never sets) skips; any other failure to get
    a server fails the tests loudly.
    """
    if os.environ.get("TRAINWARDEN_TEST_PG_UNAVAILABLE") == "1":
        pytest.skip("TRAINWARDEN_TEST_PG_UNAVAILABLE=1: PostgreSQL tests explicitly disabled")
    dsn = os.environ.get("TRAINWARDEN_TEST_PG_DSN")
    if dsn:
        yield dsn
        return
    proc = subprocess.run(
        [str(ROOT / ".ci" / "start-postgres.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"could not start PostgreSQL for the tests:\n{proc.stderr}")
    dsn, stop = proc.stdout.strip().splitlines()[:2]
    try:
        yield dsn
    finally:
        subprocess.run(stop.split(), capture_output=True, timeout=60, check=False)
