"""Per-phase step timing: host clocks on CPU, CUDA events on GPU resolved one step later."""

from __future__ import annotations

import time
from collections import deque

import torch

__all__ = ["PHASES", "PhaseClock"]

PHASES = ("step", "forward", "backward", "optimizer")
# Marks recorded within a step, in order: forward start/end (per micro-batch), optimizer
# start/end. "step" is end of previous optimizer step to end of this one (it includes data
# loading and everything the loop does between steps).


class PhaseClock:
    """Records phase marks and yields per-step phase durations in seconds.

    On CUDA, marks are ``torch.cuda.Event``s; a step's durations become available once its
    events have completed (polled with ``Event.query()``, never synchronised), usually at the
    next step. On CPU they are available at once.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda" and torch.cuda.is_available()
        self._pending: deque[tuple[int, dict[str, list[object]]]] = deque()
        self._marks: dict[str, list[object]] = {}
        self._last_end: object | None = None

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

    def end_step(self, step: int) -> None:
        """Close the step (call after ``mark("opt_end")``)."""
        marks = self._marks
        marks["prev_end"] = [self._last_end] if self._last_end is not None else []
        self._last_end = marks["opt_end"][-1] if marks.get("opt_end") else None
        self._pending.append((step, marks))
        self._marks = {}
        while len(self._pending) > 4:  # never let unresolved events pile up
            self._pending.popleft()

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
            d: dict[str, float] = {}
            fs, fe = m.get("fwd_start", []), m.get("fwd_end", [])
            d["forward"] = sum(self._span(a, b) for a, b in zip(fs, fe, strict=False))
            if m.get("opt_start") and m.get("opt_end"):
                d["optimizer"] = self._span(m["opt_start"][-1], m["opt_end"][-1])
                if fs:
                    d["backward"] = max(0.0, self._span(fs[0], m["opt_start"][-1]) - d["forward"])
                if m.get("prev_end"):
                    d["step"] = self._span(m["prev_end"][0], m["opt_end"][-1])
            out.append((step, d))
        return out
