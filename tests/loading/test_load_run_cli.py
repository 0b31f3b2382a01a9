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


DIST_SCRIPT = """
import sys

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.ones(1)
dist.all_reduce(t)
print(f"rank {rank} all_reduce {t.item()}", flush=True)
try:
    state = torch.load(sys.argv[1 + rank], weights_only=False)
    print(f"rank {rank} loaded {sorted(state)}", flush=True)
finally:
    dist.destroy_process_group()
"""


def test_torchrun_runs_every_rank_under_the_guard(tmp_path: Path, canary: Path) -> None:
    import os
    import sys

    import torch

    from ._payloads import SystemPayload

    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT)
    torch.save({"w": torch.ones(1)}, tmp_path / "clean.pt")
    torch.save({"w": SystemPayload(canary)}, tmp_path / "poisoned.pt")
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "trainwarden",
            "run",
            str(script),
            str(tmp_path / "clean.pt"),
            str(tmp_path / "poisoned.pt"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "rank 0 all_reduce 2.0" in out and "rank 1 all_reduce 2.0" in out
    assert "rank 0 loaded ['w']" in out  # the clean checkpoint loads on rank 0
    assert "blocked an unsafe load" in out and "poisoned.pt" in out  # rank 1 is stopped
    assert "rank 1 loaded" not in out
    assert not canary.exists()
