"""Stopped ranks: a heartbeat counter per rank in the process group's store, read by every rank.

A stopped process (SIGSTOP, a debugger, a frozen container) stops every thread, so its peers
are left waiting in their next collective and no per-step check runs on them. A background
thread on each rank increments ``.../live/beat/<rank>`` in the default store and reads every
peer's counter; a peer whose counter has not moved for ``max(liveness_min_s, 10 x p99 step
time)`` of this rank's own clock is named (``TWM-RANK-STOPPED``), with its process state when it
runs on this host. Decisions use only changes of the peer's counter seen by this rank, so a
late or starved watcher thread cannot make a live peer look stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig

__all__ = ["PeerLiveness", "peer_info", "process_state"]


def process_state(pid: int) -> str:
    """``stopped``, ``gone`` or ``running`` for a pid on this host (from /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    code = stat.rsplit(")", 1)[-1].split()[0]
    return {"T": "stopped", "t": "stopped", "Z": "gone", "X": "gone"}.get(code, "running")


def peer_info(raw: Any) -> dict[str, Any]:
    """What a peer published about itself, as a dict; ``{}`` for anything else (every rank
    can write the store, and a rank that writes garbage must not stop this rank's checks)."""
    try:
        data = json.loads(bytes(raw).decode("utf-8"))
    except (ValueError, TypeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


class PeerLiveness(Check):
    """Names a rank whose heartbeat counter in the store stopped moving."""

    name = "liveness"
    rules = ("TWM-RANK-STOPPED",)
    cost = "a background thread: one store increment and one read per peer per poll"
    state_of = staticmethod(process_state)

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.liveness

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._on = monitor.distributed and monitor.world_size > 1
        self._store: Any = None
        self._prefix = f"trainwarden/monitor/{monitor.instance}/live/"
        self._step_times: deque[float] = deque(maxlen=200)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[int, int] = {}
        self._changed: dict[int, float] = {}
        self.stopped: set[int] = set()

    def window_s(self) -> float:
        """max(liveness_min_s, 10 x p99 of this rank's step times)."""
        times = sorted(self._step_times)
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))] if times else 0.0
        return max(self.mon.config.liveness_min_s, 10.0 * p99)

    def start(self) -> None:
        if not self._on:
            return
        from trainwarden.monitor._watchdog import default_store

        self._store = default_store()
        if self._store is None:
            self.mon.note("liveness", "rank liveness unavailable: no process-group store")
            return
        info = {"pid": os.getpid(), "host": socket.gethostname()}
        self._store.set(f"{self._prefix}info/{self.mon.rank}", json.dumps(info))
        self._store.add(f"{self._prefix}beat/{self.mon.rank}", 1)
        self._thread = threading.Thread(target=self._loop, name="trainwarden-liveness", daemon=True)
        self._thread.start()

    def step_end(self) -> None:
        step_s = self.mon.values.get("step_s")
        if isinstance(step_s, float) and step_s > 0:
            self._step_times.append(step_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
        if self._store is not None:
            # A monitor closed on purpose is not a stopped process (the exchange names it).
            with contextlib.suppress(RuntimeError, OSError):
                self._store.set(f"{self._prefix}closed/{self.mon.rank}", "1")

    def _loop(self) -> None:
        store, mon = self._store, self.mon
        peers = [r for r in range(mon.world_size) if r != mon.rank]
        while True:
            window = self.window_s()
            if self._stop.wait(min(1.0, max(0.05, window / 10.0))):
                return
            try:
                store.add(f"{self._prefix}beat/{mon.rank}", 1)
                for r in peers:
                    self._watch(r, window)
            except (RuntimeError, OSError, ValueError) as exc:
                # The store lives with the agent or rank 0; losing it is the watchdog's report.
                mon.note("liveness-store", f"rank liveness stopped: store unreachable ({exc})")
                return
            except Exception as exc:  # fail-open: the thread must not die silently
                mon.internal(exc, "liveness thread")
                return

    def _watch(self, r: int, window: float) -> None:
        store, mon = self._store, self.mon
        count = int(store.add(f"{self._prefix}beat/{r}", 0))
        now = time.monotonic()
        if count != self._last.get(r):
            self._last[r] = count
            self._changed[r] = now
            if r in self.stopped:
                self.stopped.discard(r)
                mon.emit("peer_resumed", {"rank": mon.rank, "peer": r, "step": mon.step})
            return
        silent = now - self._changed[r]
        if count == 0 or silent <= window or r in self.stopped:
            return  # a peer that never started is the exchange's and the watchdog's to report
        if store.check([f"{self._prefix}closed/{r}"]):
            return
        self.stopped.add(r)
        peer: dict[str, Any] = {}
        with contextlib.suppress(RuntimeError, ValueError):
            peer = peer_info(store.get(f"{self._prefix}info/{r}"))
        state = "unknown (another host)"
        if peer.get("host") == socket.gethostname() and isinstance(peer.get("pid"), int):
            state = self.state_of(int(peer["pid"]))
        how = {
            "stopped": "its process is stopped (SIGSTOP or a debugger)",
            "gone": "its process is gone",
            "running": "its process runs but its monitor thread does not (frozen interpreter)",
        }.get(state, "it runs on another host and stopped answering")
        mon.alert(
            "TWM-RANK-STOPPED",
            f"rank {r} stopped: its heartbeat did not move for {silent:.1f}s (window "
            f"{window:.1f}s = max(liveness_min_s, 10 x p99 step time)); {how}",
            {
                "rank": r,
                "ranks": [r],
                "silent_s": round(silent, 3),
                "window_s": round(window, 3),
                "process_state": state,
                "pid": peer.get("pid"),
                "host": peer.get("host"),
                "beats": count,
            },
        )
