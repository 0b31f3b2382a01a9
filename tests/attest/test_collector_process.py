"""The ``--python`` interpreter is untrusted: a hang is killed with everything it started, and a
reply of the wrong shape is a one-line error."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.attest import AttestationError
from trainwarden.attest import _snapshot as snapshot_mod
from trainwarden.attest._snapshot import job_sys_path

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _script(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "fakepython"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return p


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_hanging_interpreter_is_killed_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "child.pid"
    fake = _script(tmp_path, f"sleep 600 &\necho $! > {pidfile}\nsleep 600\n")
    monkeypatch.setattr(snapshot_mod, "_COLLECTOR_TIMEOUT", 3.0)
    with pytest.raises(AttestationError, match="cannot run interpreter"):
        job_sys_path(str(fake))
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the interpreter's child outlived the timeout"


@pytest.mark.parametrize("reply", ["{}", '{"executable": "/x"}', '{"version": []}'])
def test_unexpected_reply_names_what_is_missing(tmp_path: Path, reply: str) -> None:
    fake = _script(tmp_path, f"echo '{reply}'\n")
    with pytest.raises(AttestationError, match="printed unexpected output: missing"):
        job_sys_path(str(fake))


def test_cli_reports_unexpected_reply_in_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    fake = _script(tmp_path, "echo '{}'\n")
    for cmd in (["attest", "snapshot"], ["attest", "verify"], ["attest", "perms"]):
        r = run_cli([*cmd, "--python", str(fake)])
        assert r.returncode == 2, (cmd, r.stderr)
        assert "Traceback" not in r.stderr
        assert "printed unexpected output" in r.stderr
    assert os.path.exists(fake)
