"""What outlives the monitor: training that goes on after it was closed, detached or collected.

A :class:`Lifeline` is created by ``watch()`` and holds no reference to the monitor (only a weak
one), so it survives the monitor being closed or garbage-collected. It has three vantage points
of its own, none of them a hook of the monitor:

* its own optimizer step post-hook counts every optimizer step: a step the monitor did not
  observe (its hooks removed, the monitor closed or collected) is ``TWM-MONITOR-CLOSED``;
* a finalizer on the monitor: the monitor collected while the model or optimizer it watched is
  still alive (it was detached and dropped) is ``TWM-MONITOR-CLOSED`` at once;
* an exit handler: the optimizer's own step counters (Adam's ``state[p]["step"]``) advanced past
  the last step the monitor observed is ``TWM-MONITOR-CLOSED``, even when every hook, the
  lifeline's included, was removed.

Each is reported once, written to the monitor's sink through the sink class's ``emit`` captured
at ``watch()`` (a sink the monitor opened itself is reopened for the record, since ``close()``
closed it), and appended to ``monitor.alerts`` when the monitor still exists.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from trainwarden.findings import Severity
from trainwarden.monitor._types import Alert

if TYPE_CHECKING:
    from trainwarden.monitor._core import Monitor

__all__ = ["Lifeline", "optimizer_counter"]

RULE = "TWM-MONITOR-CLOSED"


def optimizer_counter(optimizer: torch.optim.Optimizer) -> int | None:
    """The optimizer's own step count (largest ``state[p]["step"]``), or None if it keeps none."""
    best: int | None = None
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            value = st.get("step") if isinstance(st, dict) else None
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = float(value.detach().reshape(-1)[0].cpu())
            if isinstance(value, (int, float)) and math.isfinite(value):
                best = int(value) if best is None else max(best, int(value))
    return best


#: Every lifeline whose optimizer is alive: the exit handler checks each (strong references,
#: so a lifeline whose hook was removed still runs at exit).
_LIVE: set[Lifeline] = set()


def _at_exit_all() -> None:
    for lifeline in list(_LIVE):
        lifeline.at_exit()


atexit.register(_at_exit_all)


class Lifeline:
    """Reports training that the monitor did not observe (see the module docstring)."""

    def __init__(self, monitor: Monitor, reopen: Callable[[], Any] | None) -> None:
        self._mon = weakref.ref(monitor)
        self._model = weakref.ref(monitor.model)
        self._opt = weakref.ref(monitor.optimizer, self._optimizer_gone)
        self.rank = monitor.rank
        self._sink: Any = monitor.sink
        # Captured now: a later patch of the sink class cannot silence these records.
        self._emit: Callable[[Any, str, dict[str, Any]], None] = type(monitor.sink).emit
        self._reopen = reopen
        self._sink_closed = False
        self._lock = threading.Lock()
        #: Optimizer steps seen by the lifeline's own hook, and by the monitor.
        self.steps = 0
        self.observed = 0
        self.closed: str | None = None
        #: The optimizer's own step counter at watch() and when the monitor was closed.
        self._start = optimizer_counter(monitor.optimizer)
        self._at_close: int | None = None
        self._reported: set[str] = set()
        self._handle = monitor.optimizer.register_step_post_hook(self._on_step)
        # The finalizer holds the lifeline, never the monitor.
        self._finalizer = weakref.finalize(monitor, self._collected)
        self._finalizer.atexit = False  # exit is at_exit's, which sees more
        _LIVE.add(self)

    @property
    def handle_id(self) -> int:
        """The id of the lifeline's optimizer step post-hook (not a hook to report)."""
        return int(self._handle.id)

    def _handed_over(self) -> bool:
        """A later monitor watches the same optimizer and observes its steps."""
        opt = self._opt()
        return any(
            other is not self and other.closed is None and other._opt() is opt
            for other in list(_LIVE)
        )

    def _optimizer_gone(self, _: Any) -> None:
        _LIVE.discard(self)

    # ---------------------------------------------------------------- called by the monitor

    def observed_step(self) -> None:
        """The monitor finished observing one optimizer step."""
        self.observed += 1

    def on_close(self, how: str, sink_closed: bool) -> None:
        """The monitor was closed (``how``: ``with`` or ``close()``); later steps are reported."""
        self.closed = how
        self._sink_closed = sink_closed
        opt = self._opt()
        if opt is not None:
            self._at_close = optimizer_counter(opt)

    def stop(self) -> None:
        """Tear down for a monitor that failed to start (nothing was watched)."""
        self._handle.remove()
        self._finalizer.detach()
        _LIVE.discard(self)

    # ---------------------------------------------------------------- the three vantage points

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        missed = self.steps - self.observed
        if missed <= 0 or (self.closed is not None and self._handed_over()):
            return
        if self.closed is not None:
            why = f"after the monitor was closed ({self.closed}, at step {self.observed})"
        elif self._mon() is None:
            why = "after the monitor was garbage-collected"
        else:
            why = "without the monitor observing it (its step hook was removed or bypassed)"
        self.report(
            "step",
            f"optimizer.step() ran {why}: training continues unmonitored",
            {"steps": self.steps, "observed": self.observed, "unobserved": missed},
        )

    def _collected(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finalizer
            if self.closed is not None:
                return
            if self._model() is None and self._opt() is None:
                return  # the whole training went away with the monitor
            self.report(
                "collected",
                f"the monitor was garbage-collected at step {self.observed} without close() "
                "while the model or optimizer it watched is still alive: it was detached and "
                "dropped",
                {"observed": self.observed, "steps": self.steps},
            )

    def at_exit(self) -> None:
        """At interpreter exit: did the optimizer's own counter advance past the monitor?"""
        with contextlib.suppress(Exception):  # never raise at interpreter exit
            opt = self._opt()
            if opt is None:
                return
            now = optimizer_counter(opt)
            if self.closed is not None:
                if self._handed_over():
                    return
                before = self._at_close or 0
            else:
                before = (self._start or 0) + self.observed
            if now is None or now <= before:
                return
            self.report(
                "exit",
                f"at exit the optimizer's own step counter is {now}, {now - before} more than "
                "when the monitor last observed a step: those steps ran unmonitored",
                {"counter": now, "counter_at_last_observation": before},
            )

    # ---------------------------------------------------------------- reporting

    def report(self, key: str, message: str, evidence: dict[str, Any]) -> None:
        """Raise ``TWM-MONITOR-CLOSED`` once per ``key``, even without a live monitor or sink."""
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        mon = self._mon()
        step = mon.step if mon is not None else self.observed
        alert = Alert(RULE, Severity.HIGH, step, self.rank, message, {**evidence, "event": key})
        record = alert.to_dict()
        if mon is not None:
            with mon._lock:
                mon.alerts.append(alert)
                if alert.severity >= mon.config.fail_severity:
                    mon._unraised.append(alert)
            record = {**record, "selfcheck": mon.selfcheck_digest}
        with contextlib.suppress(Exception):
            if self._reopen is not None and self._sink_closed:
                sink = self._reopen()
                try:
                    type(sink).emit(sink, "alert", record)
                finally:
                    sink.close()
            else:
                self._emit(self._sink, "alert", record)
