"""Real ``torchrun`` runs (gloo, CPU) of tiny DDP loops.

``watch_driver.py`` monitors the loop with ``trainwarden.watch`` (which runs RankExchange and the
Watchdog); ``xrank_driver.py`` attaches RankExchange and Watchdog directly, with short watchdog
timeouts for the hang, kill and signal cases. Each rank writes a JSONL sink; the assertions read
those files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from trainwarden.findings import Severity

from ._support import LOAD_DEPENDENT

SCRIPTS = Path(__file__).parent / "scripts"
SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun is not installed",
)


def torchrun(
    out: Path,
    nproc: int,
    steps: int,
    *events: str,
    driver: str = "xrank_driver.py",
    timeout: float = 240,
) -> tuple[int, dict[int, list[dict[str, Any]]]]:
    """Run the driver under torchrun; return its exit code and each rank's sink records."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(SCRIPTS / driver),
        str(out),
        str(steps),
        *events,
    ]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    # Kept for the assertion messages: what torchrun and the ranks said when an exit code is
    # not the one a test expects.
    (out / "torchrun.log").write_text(proc.stdout + proc.stderr)
    records: dict[int, list[dict[str, Any]]] = {}
    for rank in range(nproc):
        path = out / f"rank{rank}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        records[rank] = [json.loads(line) for line in lines]
    if not any(records.values()):
        raise AssertionError(f"no sink written; torchrun said:\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, records


def alerts(records: list[dict[str, Any]], rule: str | None = None) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "alert" and (rule is None or r["rule_id"] == rule)]


def test_watch_clean_ddp_two_ranks_raises_nothing(tmp_path: Path) -> None:
    rc, records = torchrun(tmp_path, 2, 200, driver="watch_driver.py")
    assert rc == 0
    for rank in (0, 1):
        assert [r for r in records[rank] if r["kind"] == "monitor_stop"]
        assert len([r for r in records[rank] if r["kind"] == "step"]) == 200
        loud = [
            a
            for a in alerts(records[rank])
            if Severity[a["severity"]] >= Severity.MEDIUM and a["rule_id"] not in LOAD_DEPENDENT
        ]
        assert loud == []


def test_watch_two_ranks_perturbed_rank_named_then_sigterm_recorded_with_sender(
    tmp_path: Path,
) -> None:
    rc, records = torchrun(tmp_path, 2, 30, "perturb:1@5", "sigterm:1@10", driver="watch_driver.py")
    assert rc != 0  # rank 1 dies of the SIGTERM
    for rank in (0, 1):
        diverged = alerts(records[rank], "TWM-XRANK-DIVERGED")
        assert diverged, records[rank]
        first = diverged[0]
        # Edited before the 6th step; that step's exchange (monitor step 6) names rank 1.
        assert first["step"] == 6
        assert first["evidence"]["likely_culprit"] == 1
        assert first["evidence"]["fields"] == ["weight:module.0.weight"]
        assert "rank 1" in first["message"]
        # Raised once, not again at every later step of the diverged run.
        assert len(diverged) == 1
    sender = next(r for r in records[0] if r["kind"] == "sent_signal")
    signals = [r for r in records[1] if r["kind"] == "signal"]
    assert signals, records[1]
    assert signals[0]["signal"] == "SIGTERM"
    assert signals[0]["sender_pid"] == sender["pid"]
    assert signals[0]["sender_uid"] == os.getuid()
    assert alerts(records[1], "TWM-SIGNAL")
    # The victim died of the signal (default disposition re-raised) instead of finishing...
    assert not [r for r in records[1] if r["kind"] == "monitor_stop"]
    # ...and its peer saw it gone.
    lost = alerts(records[0], "TWM-LOST-RANK")
    assert lost and lost[0]["evidence"]["first_lost"] == 1


def test_watch_four_ranks_names_perturbed_rank_and_straggler(tmp_path: Path) -> None:
    rc, records = torchrun(
        tmp_path, 4, 12, "perturb:1@4", "straggler:2@3", driver="watch_driver.py"
    )
    assert rc == 0
    # The edit lands before the 5th step; that step's exchange (monitor step 5) names rank 1.
    for rank in range(4):
        diverged = alerts(records[rank], "TWM-XRANK-DIVERGED")
        assert diverged and diverged[0]["step"] == 5
        assert diverged[0]["evidence"]["ranks"] == [1]
        assert diverged[0]["evidence"]["majority"] == [0, 2, 3]
        stragglers = alerts(records[rank], "TWM-XRANK-STRAGGLER")
        assert [a["evidence"]["ranks"] for a in stragglers] == [[2]]


def test_hung_rank_named_with_stacks_then_killed_rank_reported_lost(tmp_path: Path) -> None:
    rc, records = torchrun(tmp_path, 2, 30, "hang:1@4", "kill:1@8")
    assert rc != 0
    for rank in (0, 1):
        hangs = alerts(records[rank], "TWM-HANG")
        assert hangs and hangs[0]["step"] == 3
        dumps = [r for r in records[rank] if r["kind"] == "stack_dump"]
        assert dumps and any(t["name"] == "MainThread" for t in dumps[0]["threads"])
        assert Path(dumps[0]["faulthandler_file"]).read_text().count("Thread 0x") >= 2
        stuck = alerts(records[rank], "TWM-LOST-RANK")
        assert stuck and stuck[0]["evidence"]["stuck_outside_collective"] == [1]
    # After the kill, the survivor names rank 1 as lost first.
    assert not [r for r in records[1] if r["kind"] == "step" and r["step"] >= 8]
    lost = [
        a for a in alerts(records[0], "TWM-LOST-RANK") if a["evidence"]["first_lost"] is not None
    ]
    assert lost, records[0]
    assert lost[0]["evidence"]["first_lost"] == 1
    assert lost[0]["severity"] == "CRITICAL"
    start = next(r for r in records[1] if r["kind"] == "start")
    peer = next(p for p in lost[0]["evidence"]["peers"] if p["rank"] == 1)
    assert peer["pid"] == start["pid"] and peer["pid_alive"] is False


def test_rank_whose_monitor_is_switched_off_is_named_by_the_others(tmp_path: Path) -> None:
    rc, records = torchrun(tmp_path, 2, 10, "monitor_off:1@4", driver="watch_driver.py")
    # Training went on: the exchange did not hang on the absent rank.
    log = (tmp_path / "torchrun.log").read_text()
    assert rc == 0, log[:3000] + "\n...\n" + log[-3000:]
    stop = next(r for r in records[1] if r["kind"] == "monitor_stop")
    assert stop["step"] == 4 and any("watch_driver.py" in line for line in stop["caller"])
    off = alerts(records[0], "TWM-MONITOR-OFF")
    assert len(off) == 1, records[0]
    # Rank 1 closed after its 4th step; rank 0 meets nobody at the 5th exchange.
    assert off[0]["step"] == 5 and off[0]["evidence"]["ranks"] == [1]
    assert off[0]["evidence"]["last_exchange"] == {"0": 5, "1": 4}
    assert "rank 1" in off[0]["message"] and off[0]["severity"] == "CRITICAL"
    # Rank 0 carried on checking itself: it recorded every step.
    assert [r["step"] for r in records[0] if r["kind"] == "step"] == list(range(1, 11))


def test_stopped_rank_is_named_by_its_heartbeat_within_the_window(tmp_path: Path) -> None:
    """SIGSTOP freezes every thread of rank 1; rank 0 waits in DDP's all-reduce, yet names it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPTS / "watch_driver.py"),
        str(tmp_path),
        "12",
        "sigstop:1@6",
    ]
    log = tmp_path / "torchrun.log"
    with log.open("w") as out:
        # A process group of its own, led by torchrun whose parent (this test) is in another
        # group of the same session: never orphaned, so the kernel does not SIGHUP the stopped
        # rank when some process of the group exits (as it would in an orphaned group, e.g.
        # when pytest itself was started in the background).
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0)
    sink0 = tmp_path / "rank0.jsonl"
    pidfile = tmp_path / "stopped.pid"
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 180
        while not found and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if sink0.exists():
                lines = sink0.read_text().splitlines()
                recs = [json.loads(line) for line in lines if line.endswith("}")]
                found = alerts(recs, "TWM-RANK-STOPPED")
        stopped_pid = int(pidfile.read_text()) if pidfile.exists() else None
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGCONT)  # let rank 1 finish
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert found, log.read_text()
    alert = found[0]
    assert alert["severity"] == "CRITICAL" and alert["evidence"]["ranks"] == [1]
    assert alert["evidence"]["process_state"] == "stopped"
    assert alert["evidence"]["pid"] == stopped_pid
    assert "rank 1" in alert["message"] and "SIGSTOP" in alert["message"]
    # Named once the heartbeat stood still for the window (2 s floor here; 30 s by default).
    assert alert["evidence"]["silent_s"] > alert["evidence"]["window_s"] >= 2.0
    # Resumed with SIGCONT, the run finished and rank 0 recorded the resumption.
    assert proc.returncode == 0, log.read_text()[-3000:]
    records = [json.loads(line) for line in sink0.read_text().splitlines()]
    assert any(r["kind"] == "peer_resumed" and r["peer"] == 1 for r in records)
    # Rank 1 itself raised nothing about rank 0 (its clock stood still with it).
    rank1 = [json.loads(line) for line in (tmp_path / "rank1.jsonl").read_text().splitlines()]
    assert alerts(rank1, "TWM-RANK-STOPPED") == []


def test_rank_with_garbage_forward_is_named_at_its_first_step(tmp_path: Path) -> None:
    """Replicas stay identical (DDP averages); only the local loss and gradient norm differ."""
    rc, records = torchrun(tmp_path, 2, 30, "garbage:1@20", driver="watch_driver.py")
    assert rc == 0
    for rank in (0, 1):
        out = alerts(records[rank], "TWM-XRANK-OUTLIER")
        assert out, records[rank]
        # Loop step 20 is the 21st optimizer step; both metrics disagree, so HIGH.
        assert out[0]["step"] == 21 and out[0]["evidence"]["ranks"] == [1]
        assert out[0]["severity"] == "HIGH"
        assert set(out[0]["evidence"]["metrics"]) == {"loss", "grad_norm"}
        # Nothing named the healthy rank, and the replicas never diverged.
        assert all(a["evidence"]["ranks"] == [1] for a in out)
        assert alerts(records[rank], "TWM-XRANK-DIVERGED") == []


def _slowdowns(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return alerts(records, "TWM-XRANK-SLOWDOWN")


def test_rank_slow_from_the_first_step_is_named_by_every_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 sleeps half a step before every forward: below every absolute threshold (the
    sleep is ~20-40 ms against time_min_excess_s 0.1 s and the straggler margin 0.05 s) and,
    present from the start, invisible against its own baseline. Against the other rank it is
    persistently slower: named within 32 exchanged steps after the warm-up."""
    monkeypatch.setenv("TRAINWARDEN_TEST_SLOW", "0.5")
    rc, records = torchrun(tmp_path, 2, 70, "slow:1@0", driver="watch_driver.py")
    assert rc == 0
    sleep = next(r for r in records[1] if r["kind"] == "slow_sleep")
    assert sleep["seconds"] < 0.05
    for rank in (0, 1):
        found = _slowdowns(records[rank])
        assert len(found) == 1, records[rank]
        alert = found[0]
        assert alert["evidence"]["ranks"] == [1] and "rank 1" in alert["message"]
        assert alert["severity"] == "MEDIUM" and alert["evidence"]["test"] == "persistent"
        # Sleeping from the driver's 9th step (monitor step 9); warm-up 16 steps, window 32.
        assert alert["step"] <= 16 + 32 + 2
        # Nothing else saw it (the timing rules, load-dependent, are left out of the claim).
        loud = {
            a["rule_id"]
            for a in alerts(records[rank])
            if Severity[a["severity"]] >= Severity.MEDIUM
        }
        assert loud - (LOAD_DEPENDENT - {"TWM-XRANK-SLOWDOWN"}) == {"TWM-XRANK-SLOWDOWN"}, loud


def test_rank_sharing_its_cpu_with_a_busy_process_is_not_named(tmp_path: Path) -> None:
    """Each rank pinned to a CPU of its own, rank 0's shared with a busy process: rank 0 is
    slower at every step, yet by the machine's load, not by its own work or sleeps (its training
    thread is runnable and waits for the CPU). That wait is left out of a rank's own time, so
    nobody is named, as on a loaded node where one rank's core is busier than another's."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to give each rank its own")
    rc, records = torchrun(tmp_path, 2, 80, "contend:0@0", driver="watch_driver.py")
    assert rc == 0
    queued = {r: next(x for x in records[r] if x["kind"] == "runqueue") for r in (0, 1)}
    assert queued[0]["cpu"] != queued[1]["cpu"]
    # The contention was real: rank 0's training thread waited for its CPU longer than rank 1's.
    assert queued[0]["seconds"] > queued[1]["seconds"]
    for rank in (0, 1):
        assert len([r for r in records[rank] if r["kind"] == "step"]) == 80
        assert _slowdowns(records[rank]) == [], records[rank]


def test_rank_slowing_down_mid_run_is_a_change_point_within_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the baseline (16 warm-up + 64 steps), rank 1 starts sleeping half a step: a
    change point of its own time against the other rank's. With clean separation it is named
    within time_shift_window (16) exchanged steps of the onset; noise from a loaded machine
    delays the rank-sum test, so the test allows the 24 steps the run has left, which is
    before the persistence test could see it (30 slow steps of 32)."""
    monkeypatch.setenv("TRAINWARDEN_TEST_SLOW", "0.5")
    rc, records = torchrun(tmp_path, 2, 125, "slow:1@100", driver="watch_driver.py")
    assert rc == 0
    for rank in (0, 1):
        found = _slowdowns(records[rank])
        assert len(found) == 1, records[rank]
        alert = found[0]
        assert alert["evidence"]["ranks"] == [1] and alert["evidence"]["test"] == "change point"
        # The driver's step 100 is the monitor's step 101: the first slow step.
        assert 101 <= alert["step"] <= 125
        assert alert["evidence"]["z"] >= 4.0 and alert["evidence"]["shift"] >= 0.25
