"""A watched process blocks the signals it records (its sigwaitinfo thread takes them). Children
it forks have no such thread, so they must get the normal mask back: a DataLoader or
multiprocessing worker stays stoppable by SIGTERM and Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = """
import multiprocessing as mp, os, signal, sys, time
from trainwarden.monitor._watchdog import Watchdog, record_signals_early

if sys.argv[1] == "early":
    record_signals_early()
else:
    dog = Watchdog(lambda a: None, min_timeout_s=60.0)
    dog.start()
assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []), "parent not blocking"

def worker():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(20)
    os._exit(0)

p = mp.get_context("fork").Process(target=worker)
p.start()
p.join(30)
print("worker exit", p.exitcode)

pid = os.fork()
if pid == 0:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    os._exit(3 if signal.SIGTERM in blocked or signal.SIGINT in blocked else 0)
print("fork child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def _run(mode: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_forked_workers_of_an_early_recorder_can_be_terminated() -> None:
    out = _run("early")
    assert "worker exit -15" in out and "fork child 0" in out


def test_forked_workers_of_a_watchdog_can_be_terminated() -> None:
    out = _run("watchdog")
    assert "worker exit -15" in out and "fork child 0" in out
