"""The Watchdog: hang detection with stack dumps, adaptive timeout, signals with their sender."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from trainwarden._internal.sink import JsonlSink, MemorySink
from trainwarden.monitor._types import Alert, MonitorError
from trainwarden.monitor._watchdog import HeartbeatBoard, Watchdog, lost_rank_alert

SCRIPTS = Path(__file__).parent / "scripts"
SRC = Path(__file__).resolve().parents[2] / "src"


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_hang_dumps_every_thread_stack_and_alerts(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "rank0.jsonl")
    got: list[Alert] = []
    dog = Watchdog(got.append, min_timeout_s=0.3, sink=sink, signals=(), poll_s=0.02)
    dog.start()
    try:
        for step in range(3):
            dog.beat(step, 0.001)
        assert wait_for(lambda: any(a.rule_id == "TWM-HANG" for a in got))
    finally:
        dog.stop()
        sink.close()
    hang = next(a for a in got if a.rule_id == "TWM-HANG")
    assert hang.step == 2
    assert any(
        "test_hang_dumps_every_thread_stack" in line for line in hang.evidence["main_thread_stack"]
    )
    records = [json.loads(line) for line in (tmp_path / "rank0.jsonl").read_text().splitlines()]
    dump = next(r for r in records if r["kind"] == "stack_dump")
    names = {t["name"] for t in dump["threads"]}
    assert {"MainThread", "trainwarden-watchdog"} <= names
    text = Path(dump["faulthandler_file"]).read_text()
    assert "Current thread" in text or "Thread 0x" in text
    # One alert per hang episode, not one per poll.
    assert len([a for a in got if a.rule_id == "TWM-HANG"]) == 1


def test_timeout_adapts_to_the_median_step_time() -> None:
    dog = Watchdog(lambda a: None, min_timeout_s=1.0, factor=20.0, signals=())
    assert dog.timeout_s == 3.0  # before the first step: 3x the minimum
    for step, t in enumerate([0.2, 0.3, 0.25, 5.0, 0.25]):
        dog.beat(step, t)
    assert dog.timeout_s == pytest.approx(20.0 * 0.25)
    fast = Watchdog(lambda a: None, min_timeout_s=1.0, signals=())
    fast.beat(0, 0.001)
    assert fast.timeout_s == 1.0


def test_bad_configuration_is_a_monitor_error() -> None:
    with pytest.raises(MonitorError, match="cannot be caught"):
        Watchdog(lambda a: None, signals=("SIGKILL",))
    with pytest.raises(MonitorError, match="unknown signal"):
        Watchdog(lambda a: None, signals=("SIGNOPE",))
    with pytest.raises(MonitorError, match="must be > 0"):
        Watchdog(lambda a: None, min_timeout_s=0)
    with pytest.raises(MonitorError, match="no set"):
        HeartbeatBoard(object(), 0, 2)


class DictStore:
    """A minimal in-memory store with the torch.distributed Store methods the board uses."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: str) -> None:
        self.data[key] = value.encode()

    def get(self, key: str) -> bytes:
        return self.data[key]

    def check(self, keys: list[str]) -> bool:
        return all(k in self.data for k in keys)


def test_heartbeat_board_names_the_dead_peer_first() -> None:
    store = DictStore()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    boards = [HeartbeatBoard(store, r, 3) for r in range(3)]
    boards[0].publish(7, time.time())
    boards[2].publish(7, time.time())
    # Rank 1 published from a process that no longer exists.
    record = boards[1].record(5, time.time() - 3)
    record["pid"] = dead.pid
    record["seen"] = time.time() - 2
    store.set("trainwarden/hb/1", json.dumps(record))
    report = boards[0].report(stale_after_s=30)
    assert report.first_lost == 1 and report.lost == (1,)
    alert = lost_rank_alert(report, step=7, reason="test")
    assert alert is not None and "rank 1 was lost first" in alert.message
    healthy = HeartbeatBoard(DictStore(), 0, 2)
    healthy.publish(3, time.time())
    report = healthy.report(stale_after_s=30)
    assert report.lost == () and report.peers[1].published is False
    assert lost_rank_alert(report, step=3, reason="test") is None


def test_a_peer_on_another_host_is_lost_only_once_it_stops_publishing() -> None:
    """No pid can be checked on another host: only a stale publication makes it lost."""
    store = DictStore()
    boards = [HeartbeatBoard(store, r, 3) for r in range(3)]
    boards[0].publish(7, time.time())
    for rank, seen_ago in ((1, 60.0), (2, 1.0)):
        record = boards[rank].record(7, time.time() - seen_ago)
        # a pid that exists here must not make a peer on another host look alive, nor dead
        record.update(host="another-node", pid=os.getpid(), seen=time.time() - seen_ago)
        store.set(f"trainwarden/hb/{rank}", json.dumps(record))
    report = boards[0].report(stale_after_s=30)
    assert report.lost == (1,) and report.first_lost == 1
    assert report.peers[1].pid_alive is False and report.peers[2].pid_alive is None
    alert = lost_rank_alert(report, step=7, reason="test")
    assert alert is not None and "rank 1 was lost first" in alert.message
    assert f"pid {os.getpid()} on another-node" in alert.message


def test_an_unreachable_store_is_reported_as_unknown_peer_status() -> None:
    class GoneStore(DictStore):
        """The store lived in the rank that died: every round trip fails, as a TCPStore's does."""

        def check(self, keys: list[str]) -> bool:
            raise RuntimeError("Connection reset by peer")

    report = HeartbeatBoard(GoneStore(), 0, 2).report(stale_after_s=30)
    assert report.first_lost is None and report.lost == ()
    assert report.error == "heartbeat store unreachable: RuntimeError: Connection reset by peer"
    alert = lost_rank_alert(report, step=3, reason="test")
    assert alert is not None and "peer status unknown: heartbeat store unreachable" in alert.message


def test_lost_rank_report_waits_for_a_peer_that_is_still_exiting() -> None:
    """A collective fails as soon as the peer's socket closes, before its pid is gone.

    Reproduces the race: the peer process still exists when the report is first taken and
    disappears a moment later. The settled report names it lost; an unsettled one cannot.
    """
    store = DictStore()
    dying = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    try:
        got: list[Alert] = []
        dog = Watchdog(got.append, rank=0, world_size=2, store=store, signals=())
        HeartbeatBoard(store, 0, 2).publish(4, time.time())
        record = HeartbeatBoard(store, 1, 2).record(4, time.time())
        record["pid"] = dying.pid
        store.set("trainwarden/hb/1", json.dumps(record))
        unsettled = dog.lost_rank_report()
        assert unsettled is not None and unsettled.first_lost is None
        reaper = threading.Thread(target=dying.wait)
        reaper.start()
        alert = dog.report_lost_ranks("collective failed", settle_s=10.0)
        reaper.join()
        assert alert is not None and alert.evidence["first_lost"] == 1, alert
        assert "rank 1 was lost first" in alert.message
    finally:
        dying.kill()
        dying.wait()


def run_probe(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    sink = tmp_path / f"{mode}.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "signal_probe.py"), str(sink), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc, sink


def finish(proc: subprocess.Popen[str]) -> int:
    code = proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()
    return code


def read(sink: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.read_text().splitlines()]


def test_sigterm_while_main_thread_blocked_is_recorded_with_sender_then_kills(
    tmp_path: Path,
) -> None:
    proc, sink = run_probe(tmp_path, "block")
    os.kill(proc.pid, signal.SIGUSR2)  # default action: terminate, after recording
    assert finish(proc) == -signal.SIGUSR2
    records = read(sink)
    sig = next(r for r in records if r["kind"] == "signal")
    assert sig["signal"] == "SIGUSR2"
    assert sig["sender_pid"] == os.getpid()
    assert sig["sender_uid"] == os.getuid()
    alert = next(r for r in records if r["kind"] == "alert")
    assert alert["rule_id"] == "TWM-SIGNAL" and str(os.getpid()) in alert["message"]


def test_signal_taken_by_an_older_thread_is_still_recorded_and_still_kills(
    tmp_path: Path,
) -> None:
    proc, sink = run_probe(tmp_path, "prethread")
    os.kill(proc.pid, signal.SIGTERM)
    assert finish(proc) == -signal.SIGTERM
    sig = next(r for r in read(sink) if r["kind"] == "signal")
    assert sig["signal"] == "SIGTERM"
    # Either the sigwaitinfo thread got it (sender known) or the older thread did (unknown).
    assert sig["sender_pid"] in (os.getpid(), None)


def test_recording_started_early_knows_the_sender_despite_later_threads(tmp_path: Path) -> None:
    proc, sink = run_probe(tmp_path, "early")
    os.kill(proc.pid, signal.SIGTERM)
    assert finish(proc) == -signal.SIGTERM
    sig = next(r for r in read(sink) if r["kind"] == "signal")
    assert sig["signal"] == "SIGTERM"
    assert sig["sender_pid"] == os.getpid()
    assert sig["sender_uid"] == os.getuid()


def test_previous_python_handler_still_runs_after_recording(tmp_path: Path) -> None:
    proc, sink = run_probe(tmp_path, "handler")
    os.kill(proc.pid, signal.SIGUSR1)
    assert finish(proc) == 0
    records = read(sink)
    sig = next(r for r in records if r["kind"] == "signal")
    assert sig["sender_pid"] == os.getpid()
    handled = next(r for r in records if r["kind"] == "handled")
    assert handled["signals"] == [int(signal.SIGUSR1)]


def test_memory_sink_and_stop_restore_signal_state() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    dog = Watchdog(lambda a: None, sink=MemorySink(), signals=("SIGUSR1",))
    dog.start()
    assert signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    dog.stop()
    assert signal.getsignal(signal.SIGUSR1) == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask_before


def test_a_failing_alert_callback_never_stops_the_watchdog() -> None:
    calls: list[Alert] = []

    def broken_emit(alert: Alert) -> None:
        calls.append(alert)
        raise RuntimeError("alert sink is down")

    dog = Watchdog(broken_emit, min_timeout_s=0.2, signals=(), poll_s=0.02)
    dog.start()
    try:
        dog.beat(0, 0.001)
        assert wait_for(lambda: dog.internal_errors)
        dog.beat(1, 0.001)  # re-arms: the thread survived the failure and detects the next hang
        assert wait_for(lambda: dog.hangs >= 2)
    finally:
        dog.stop()
    assert dog.internal_errors[0].rule_id == "TWM-INTERNAL"
    assert "alert sink is down" in dog.internal_errors[0].message
    assert any(a.rule_id == "TWM-HANG" for a in calls)


def test_restart_after_stop_watches_again() -> None:
    got: list[Alert] = []
    dog = Watchdog(got.append, min_timeout_s=0.2, signals=(), poll_s=0.02)
    dog.start()
    dog.stop()
    dog.start()
    try:
        dog.beat(0, 0.001)
        assert wait_for(lambda: any(a.rule_id == "TWM-HANG" for a in got))
    finally:
        dog.stop()
