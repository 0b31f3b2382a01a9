"""``python -m trainwarden run``: a real subprocess running a script under the guard."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

RunCli = Callable[..., subprocess.CompletedProcess[str]]

SCRIPT = """
import os
import pickle
import sys

print("argv:", sys.argv)
print("name:", __name__)
assert pickle.loads(pickle.dumps({"ok": [1, 2]})) == {"ok": [1, 2]}
if "--attack" in sys.argv:
    # a payload pickle, as it would arrive in a shared checkpoint
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[-1],))
    pickle.loads(pickle.dumps(Payload()))
    print("payload was not stopped")
"""


def test_run_blocks_payload_in_script(run_cli: RunCli, tmp_path: Path, canary: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    r = run_cli(["run", str(script), "--lr", "0.1", "--attack", str(canary)])
    assert r.returncode == 1, r.stdout + r.stderr
    # the script ran as __main__ with its own argv, clean pickles worked, the payload did not
    assert f"argv: ['{script}', '--lr', '0.1', '--attack', '{canary}']" in r.stdout
    assert "name: __main__" in r.stdout
    assert "blocked an unsafe load" in r.stderr and "system" in r.stderr
    assert "payload was not stopped" not in r.stdout
    assert not canary.exists()


def test_run_writes_events_and_reads_env(run_cli: RunCli, tmp_path: Path, canary: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    events = tmp_path / "events.jsonl"
    r = run_cli(
        ["run", str(script), "--attack", str(canary)],
        env={"TRAINWARDEN_GUARD": "warn", "TRAINWARDEN_EVENTS": str(events)},
    )
    # warn mode still refuses a DANGEROUS global
    assert r.returncode == 1, r.stdout + r.stderr
    assert "guard.refused" in events.read_text()
    assert not canary.exists()


def test_run_missing_script_is_a_usage_error(run_cli: RunCli, tmp_path: Path) -> None:
    r = run_cli(["run", str(tmp_path / "nope.py")])
    assert r.returncode == 2 and "does not exist" in r.stderr
