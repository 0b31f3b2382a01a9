"""Per-phase step timing: host clocks on CPU, CUDA events on GPU resolved one step later.

On CPU the clock can also read, at the same marks, how long the training thread waited for a
CPU while runnable (Linux ``schedstat``): the part of a phase that is the machine's load, not
the work or the sleeps of the loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import torch

__all__ = ["PHASES", "PhaseClock", "runqueue_seconds"]

PHASES = ("step", "forward", "backward", "optimizer")
# Marks recorded within a step, in order: forward start/end (per micro-batch), optimizer
# start/end. "step" is end of previous optimizer step to end of this one (it includes data
# loading and everything the loop does between steps).


def runqueue_seconds() -> float | None:
    """Seconds the calling thread has spent runnable but waiting for a CPU, or None if unknown."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class PhaseClock:
    """Records phase marks and yields per-step phase durations in seconds.

    On CUDA, marks are ``torch.cuda.Event``s; a step's durations become available once its
    events have completed (polled with ``Event.query()``, never synchronised), usually at the
    next step. On CPU they are available at once.

    With ``runqueue=True`` (CPU only) every mark also reads the thread's run-queue wait, and
    ``runqueue[step]`` holds each resolved phase's share of it (seconds; the last few steps).
    """

    def __init__(self, device: torch.device, *, runqueue: bool = False) -> None:
        self._cuda = device.type == "cuda" and torch.cuda.is_available()
        self._pending: deque[tuple[int, dict[str, list[object]]]] = deque()
        self._marks: dict[str, list[object]] = {}
        self._last_end: object | None = None
        self._rq_on = runqueue and not self._cuda and runqueue_seconds() is not None
        self._rq_pending: dict[int, dict[str, list[object]]] = {}
        self._rq_marks: dict[str, list[object]] = {}
        self._rq_last_end: object | None = None
        self.runqueue: dict[int, dict[str, float]] = {}

    @property
    def runqueue_on(self) -> bool:
        """Whether the marks also read the run-queue wait (``runqueue`` is filled)."""
        return self._rq_on

    def _now(self) -> object:
        if self._cuda:
            ev = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            ev.record()
            return ev
        return time.perf_counter()

    def _span(self, a: object, b: object) -> float:
        if isinstance(a, torch.cuda.Event) and isinstance(b, torch.cuda.Event):
            return float(a.elapsed_time(b)) / 1000.0
        if isinstance(a, float) and isinstance(b, float):
            return b - a
        raise TypeError(f"mixed timing marks {a!r}, {b!r}")

    def mark(self, name: str) -> None:
        """Record a mark (``fwd_start``, ``fwd_end``, ``opt_start``, ``opt_end``)."""
        self._marks.setdefault(name, []).append(self._now())
        if self._rq_on:
            self._rq_marks.setdefault(name, []).append(runqueue_seconds())

    def end_step(self, step: int) -> None:
        """Close the step (call after ``mark("opt_end")``)."""
        marks = self._marks
        marks["prev_end"] = [self._last_end] if self._last_end is not None else []
        self._last_end = marks["opt_end"][-1] if marks.get("opt_end") else None
        self._pending.append((step, marks))
        self._marks = {}
        while len(self._pending) > 4:  # never let unresolved events pile up
            self._pending.popleft()
        if self._rq_on:
            rq = self._rq_marks
            rq["prev_end"] = [self._rq_last_end] if self._rq_last_end is not None else []
            self._rq_last_end = rq["opt_end"][-1] if rq.get("opt_end") else None
            self._rq_pending[step] = rq
            self._rq_marks = {}
            while len(self._rq_pending) > 4:
                del self._rq_pending[min(self._rq_pending)]

    def _ready(self, marks: dict[str, list[object]]) -> bool:
        if not self._cuda:
            return True
        for evs in marks.values():
            for ev in evs:
                if isinstance(ev, torch.cuda.Event) and not ev.query():  # type: ignore[no-untyped-call]
                    return False
        return True

    def resolve(self) -> list[tuple[int, dict[str, float]]]:
        """Return ``(step, {phase: seconds})`` for every closed step whose marks completed."""
        out: list[tuple[int, dict[str, float]]] = []
        while self._pending and self._ready(self._pending[0][1]):
            step, m = self._pending.popleft()
            out.append((step, self._phases(m, self._span)))
            rq = self._rq_pending.pop(step, None)
            if rq is not None and all(isinstance(v, float) for vs in rq.values() for v in vs):
                self.runqueue[step] = self._phases(rq, _diff)
        for old in [s for s in self.runqueue if out and s < out[-1][0] - 4]:
            del self.runqueue[old]
        for old in [s for s in self._rq_pending if out and s <= out[-1][0]]:
            del self._rq_pending[old]
        return out

    @staticmethod
    def _phases(
        m: dict[str, list[object]], span: Callable[[object, object], float]
    ) -> dict[str, float]:
        d: dict[str, float] = {}
        fs, fe = m.get("fwd_start", []), m.get("fwd_end", [])
        d["forward"] = sum(span(a, b) for a, b in zip(fs, fe, strict=False))
        if m.get("opt_start") and m.get("opt_end"):
            d["optimizer"] = span(m["opt_start"][-1], m["opt_end"][-1])
            if fs:
                d["backward"] = max(0.0, span(fs[0], m["opt_start"][-1]) - d["forward"])
            if m.get("prev_end"):
                d["step"] = span(m["prev_end"][0], m["opt_end"][-1])
        return d


def _diff(a: object, b: object) -> float:
    if isinstance(a, float) and isinstance(b, float):
        return b - a
    raise TypeError(f"run-queue marks {a!r}, {b!r}")
