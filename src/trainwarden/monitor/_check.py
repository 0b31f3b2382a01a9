"""The interface every per-step check of the training monitor implements.

A check is an object the :class:`~trainwarden.monitor._core.Monitor` creates at ``watch()`` and
calls at each hook: before and after the watched model's forward, before and after
``optimizer.step()``, and once more after the step's device values reached the host. The core
only runs the checks in order, times each one, and turns a check's exception into a
``TWM-INTERNAL`` alert; what is checked lives in the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from trainwarden.monitor._config import MonitorConfig
    from trainwarden.monitor._core import Monitor

__all__ = ["Check"]


class Check:
    """Base class of a monitor check; override only the hooks the check needs.

    ``name`` is the check's stable name (the per-check cost table and ``TWM-INTERNAL`` alerts use
    it), ``rules`` the rule ids it can raise, ``cost`` what it costs per step in words (the
    benchmark prints it beside the measured time).
    """

    name: ClassVar[str] = "check"
    rules: ClassVar[tuple[str, ...]] = ()
    cost: ClassVar[str] = ""

    def __init__(self, monitor: Monitor) -> None:
        """Called at ``watch()``; take the baseline of whatever is watched here."""
        self.mon = monitor

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        """Whether the configuration asks for this check (default: always)."""
        return True

    def start(self) -> None:
        """Called once after every check was built and the hooks were registered."""

    def forward_pre(self, first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Before the watched model's forward; ``first``: first forward since the last step."""

    def forward_post(self, output: Any) -> None:
        """After the watched model's forward."""

    def step_pre(self, has_closure: bool) -> None:
        """At ``optimizer.step()``, before the update (``has_closure``: step(closure))."""

    def step_post(self) -> None:
        """After the update: queue device work with ``monitor.defer`` (no host sync here)."""

    def step_end(self) -> None:
        """After the step's single device-to-host transfer: every deferred value is known."""

    def digest(self) -> list[tuple[str, int | float]]:
        """Named values every data-parallel replica must agree on at this step (cross-rank).

        Integers (hashes) are compared exactly as 64-bit patterns, floats bit for bit.
        """
        return []

    def local(self) -> list[tuple[str, float]]:
        """Named per-rank values that differ by design (local loss, local gradient norm).

        The cross-rank check carries them in its per-step exchange and leaves every rank's
        values in ``monitor.values["xrank_local"]`` (``{name: [value of rank 0, ...]}``) for the
        checks that run after it. Every rank must return the same names.
        """
        return []

    def record(self, rec: dict[str, Any]) -> None:
        """Add this check's fields to the step record."""

    def close(self) -> None:
        """Undo whatever :meth:`start` installed."""
