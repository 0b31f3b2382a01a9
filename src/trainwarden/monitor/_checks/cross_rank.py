"""Cross-rank comparison: every check's digest values and the step timings, once per step."""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch

from trainwarden.monitor._check import Check
from trainwarden.monitor._checks.liveness import peer_info
from trainwarden.monitor._config import MonitorConfig
from trainwarden.monitor._timing import PHASES

__all__ = ["CrossRank"]


def _default_store() -> Any:
    from trainwarden.monitor._watchdog import default_store

    return default_store()


def _peer_state(store: Any, rank: int) -> dict[str, Any]:
    """What the watchdog's heartbeat says about ``rank``: host, pid, and its state on this host."""
    key = f"trainwarden/hb/{rank}"
    try:
        if not store.check([key]):
            return {"state": "unknown"}
        data = peer_info(store.get(key))
    except (RuntimeError, ValueError):
        return {"state": "unknown"}
    if not data:  # nothing readable: another rank wrote something else there
        return {"state": "unknown"}
    out: dict[str, Any] = {"host": data.get("host"), "pid": data.get("pid"), "state": "alive"}
    if data.get("host") == socket.gethostname() and isinstance(data.get("pid"), int):
        try:
            stat = Path(f"/proc/{data['pid']}/stat").read_text()
            code = stat.rsplit(")", 1)[-1].split()[0]
            out["state"] = {"T": "stopped", "t": "stopped", "Z": "gone", "X": "gone"}.get(
                code, "alive"
            )
        except OSError:
            out["state"] = "gone"
    else:
        out["state"] = "remote"
        out["seen_age_s"] = round(time.time() - float(data.get("seen", 0.0)), 3)
    return out


def _bits(value: int | float) -> int:
    """A digest value as a signed 64-bit pattern: hashes as themselves, floats by their bits."""
    if isinstance(value, int):
        value &= 0xFFFF_FFFF_FFFF_FFFF
        return value - (1 << 64) if value >= 1 << 63 else value
    return int(struct.unpack("<q", struct.pack("<d", float(value)))[0])


class CrossRank(Check):
    """All-gathers ``[step, digest of every check, timings]`` and names the odd rank out."""

    name = "cross-rank"
    rules = (
        "TWM-XRANK-DIVERGED",
        "TWM-XRANK-STEP",
        "TWM-XRANK-STRAGGLER",
        "TWM-XRANK-COLLECTIVE",
        "TWM-XRANK-FIELDS",
        "TWM-XRANK-DIGEST",
    )
    cost = "one all_gather of a few hundred float64 per step (multi-rank runs only)"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.cross_rank

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self.exchange: Any = None
        self.fields: list[str] | None = None
        self._off = not (monitor.distributed and monitor.world_size > 1)
        self._store: Any = None
        self._step_times: deque[float] = deque(maxlen=200)

    def _window_s(self) -> float:
        """How long to wait for the other ranks: max(peer_timeout_s, 10 x p99 step time)."""
        times = sorted(self._step_times)
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))] if times else 0.0
        return max(self.mon.config.peer_timeout_s, 10.0 * p99)

    def _all_arrived(self, step: int) -> bool:
        """Meet every rank at this step's exchange through the store, before the collective.

        A rank whose monitor stopped (closed, hooks removed) or that is stopped never arrives;
        entering the all_gather without it would hang this rank, so it is named instead.
        """
        store = self._store
        prefix = f"trainwarden/monitor/{self.mon.instance}/"
        store.set(f"{prefix}at/{self.mon.rank}", str(step))
        key = f"{prefix}arrived/{step}"
        count = int(store.add(key, 1))
        deadline = time.monotonic() + self._window_s()
        delay = 0.0005
        while count < self.mon.world_size:
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            count = int(store.add(key, 0))
        if self.mon.rank == 0 and step > 2:
            # Every rank is past step - 1's meeting, so nobody reads step - 2's counter again.
            with contextlib.suppress(RuntimeError):
                store.delete_key(f"{prefix}arrived/{step - 2}")
        return True

    def _name_absent(self, step: int) -> None:
        mon = self.mon
        store = self._store
        prefix = f"trainwarden/monitor/{mon.instance}/"
        last: dict[int, int | None] = {}
        for r in range(mon.world_size):
            k = f"{prefix}at/{r}"
            last[r] = int(bytes(store.get(k)).decode()) if store.check([k]) else None
        absent = [r for r, s in last.items() if s is None or s < step]
        states = {r: _peer_state(store, r) for r in absent}
        window = self._window_s()
        parts = []
        for r in absent:
            state = states[r]
            how = (
                "its process is stopped (SIGSTOP or a debugger)"
                if state.get("state") == "stopped"
                else "its process is gone"
                if state.get("state") == "gone"
                else "its monitor was switched off, or the rank is stuck"
            )
            parts.append(f"rank {r} (last exchange: step {last[r]}; {how})")
        mon.alert(
            "TWM-MONITOR-OFF",
            f"not every rank reached the cross-rank exchange of step {step} within "
            f"{window:.1f}s: " + "; ".join(parts) + ". This rank stops exchanging (a collective "
            "without them would hang).",
            {"ranks": absent, "last_exchange": last, "window_s": window, "peers": states},
        )
        self._off = True

    def step_end(self) -> None:
        mon = self.mon
        step_s = mon.values.get("step_s")
        if isinstance(step_s, float) and step_s > 0:
            self._step_times.append(step_s)
        if self._off or not mon.step_checked:
            return
        named: list[tuple[str, int | float]] = [("step", float(mon.step))]
        for check in mon.checks:
            if check is not self:
                named += check.digest()
        values = dict(named)
        if self.exchange is None:
            if not any(n.startswith("weight:") for n in values):
                return  # nothing fingerprinted at this boundary yet
            try:
                from trainwarden.monitor import _distributed as mod
            except ImportError:
                mon.note("cross-rank", "cross-rank check unavailable (monitor.distributed missing)")
                self._off = True
                return
            self.fields = [n for n, _ in named]
            hang = mon.check_named("watchdog")
            self.exchange = mod.RankExchange(self.fields, watchdog=getattr(hang, "watchdog", None))
        if self._store is None:
            self._store = _default_store()
        if self._store is not None and not self._all_arrived(mon.step):
            self._name_absent(mon.step)
            return
        if mon.suspect:
            self.exchange.mark_suspect()
            mon.suspect = False
        assert self.fields is not None  # noqa: S101 -- set with the exchange; narrows for mypy
        # Bit patterns travel as float64 words: the comparator compares them bit for bit, so a
        # 64-bit hash arrives exactly.
        digest = torch.tensor(
            [_bits(values.get(f, math.nan)) for f in self.fields], dtype=torch.int64
        ).view(torch.float64)
        t = mon.values.get("timing") or {}
        timings = torch.tensor([t.get(p, 0.0) for p in PHASES], dtype=torch.float64)
        local: list[tuple[str, float]] = []
        for check in mon.checks:
            local += check.local()
        local_t = torch.tensor([v for _, v in local], dtype=torch.float64) if local else None
        self.exchange.last_gathered = None  # a failed exchange must not leave an old matrix
        for alert in self.exchange.exchange(mon.step, digest, timings, local_t):
            mon.emit_external(alert)
        gathered = self.exchange.last_gathered
        if local and gathered is not None and int(gathered.shape[0]) == mon.world_size:
            cols = gathered[:, -len(local) :].tolist()
            mon.values["xrank_local"] = {
                name: [float(row[i]) for row in cols] for i, (name, _) in enumerate(local)
            }
