"""A signal from another user is HIGH; one from the job's own user (or root) is MEDIUM.

The job runs as an unprivileged user (it drops root after its imports, so that it needs no access
to the interpreter's files as that user). The "other user" is a process whose real uid differs
from the job's while its effective uid is the job's, which is what the kernel requires for it to
be allowed to signal the job at all; the kernel reports the sender's real uid in ``si_uid``, so
that is the uid the watchdog sees. Needs root to run processes as two users.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
JOB_UID = 61001
OTHER_UID = 61002

JOB = f"""
import json, os, signal, sys, time
from trainwarden.monitor._watchdog import Watchdog
os.setgroups([])
os.setresgid({JOB_UID}, {JOB_UID}, {JOB_UID})
os.setresuid({JOB_UID}, {JOB_UID}, {JOB_UID})      # imports done: from here on, the job's user
signal.signal(signal.SIGUSR1, lambda *_: None)    # the job survives the signal
def emit(a):
    print(json.dumps([a.rule_id, a.severity.name, a.message]), flush=True)
dog = Watchdog(emit, min_timeout_s=600.0)
dog.start()
print("ready", flush=True)
sys.stdin.read()                                   # until the test closes stdin
dog.stop()
"""


def _can_act_as_other_users() -> bool:
    """Root, and the two uids exist here (a container with one mapped uid cannot switch)."""
    if os.geteuid() != 0:
        return False
    code = f"import os; os.setresuid({OTHER_UID}, {JOB_UID}, {JOB_UID})"
    probe = subprocess.run([sys.executable, "-c", code], stderr=subprocess.DEVNULL, timeout=60)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_act_as_other_users(),
    reason="running processes as two users needs root and uids the kernel can map",
)


def _send(pid: int, real_uid: int) -> None:
    code = (
        f"import os, signal; os.setresuid({real_uid}, {JOB_UID}, {JOB_UID}); "
        f"os.kill({pid}, signal.SIGUSR1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _alert(job: subprocess.Popen[str]) -> list[object]:
    assert job.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = job.stdout.readline()
        if line.startswith("["):
            parsed = json.loads(line)
            assert isinstance(parsed, list)
            return parsed
        assert line, "the job ended without an alert"
    raise AssertionError("no alert within 60 s")


def test_signal_from_another_user_is_high_and_from_the_jobs_own_user_medium() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    job = subprocess.Popen(
        [sys.executable, "-c", JOB],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert job.stdout is not None and job.stdout.readline() == "ready\n"
        _send(job.pid, OTHER_UID)
        rule, severity, message = _alert(job)
        assert (rule, severity) == ("TWM-SIGNAL", "HIGH")
        assert f"(uid {OTHER_UID})" in str(message)
        _send(job.pid, JOB_UID)
        rule, severity, message = _alert(job)
        assert (rule, severity) == ("TWM-SIGNAL", "MEDIUM")
        assert f"(uid {JOB_UID})" in str(message)
        os.kill(job.pid, signal.SIGUSR1)  # root
        rule, severity, message = _alert(job)
        assert (rule, severity) == ("TWM-SIGNAL", "MEDIUM")
        assert "(uid 0)" in str(message)
    finally:
        assert job.stdin is not None
        job.stdin.close()
        job.wait(timeout=60)
        assert job.stdout is not None
        job.stdout.close()
    assert job.returncode == 0
