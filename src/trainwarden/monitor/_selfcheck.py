"""The monitor watching itself: its hooks still registered, its code and its sink not replaced.

Switching a monitor off is the cheapest attack on it: remove its hooks, patch ``Monitor.alert``
or the sink's ``emit``, shadow a method on the instance, or swap a function's ``__code__``. At
watch() the self-check records the hook registrations and a digest of the bytecode of every
function the monitor runs (the Monitor class, every check class, the sink's class, the hash);
at every step and from a background thread once a second it compares. What changed is a
``TWM-MONITOR-TAMPERED`` alert raised through the functions captured at watch(), and every sink
record carries the current digest, so a consumer sees the change even if alerts are suppressed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import marshal
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from trainwarden.findings import Severity
from trainwarden.monitor._types import Alert

if TYPE_CHECKING:
    from trainwarden.monitor._core import Monitor

__all__ = ["SelfCheck"]


# Modules whose functions and classes the checks call: replacing one of them (say,
# UpdateChecker.verify returning nothing) would switch a check off as surely as removing a hook.
_HELPER_MODULES = (
    "trainwarden.monitor._core",
    "trainwarden.monitor._fingerprint",
    "trainwarden.monitor._update_check",
    "trainwarden.monitor._hyperparams",
    "trainwarden.monitor._numerics",
    "trainwarden.monitor._rng",
    "trainwarden.monitor._timing",
    "trainwarden.monitor._distributed",
    "trainwarden.monitor._watchdog",
    "trainwarden.monitor._selfcheck",
    "trainwarden.monitor._lifeline",
)


# The monitor's collaborators, each the same object for the whole run: rebinding one (an empty
# list of checks, another config, clock or hash) switches checks off without touching any code.
_PINNED = (
    "config",
    "model",
    "optimizer",
    "max_grad_norm",
    "fail_closed",
    "rng",
    "_fp",
    "clock",
    "checks",
    "schedulers",
    "opt_params",
    "_param_names",
    "_lifeline",
    "_selfcheck",
)

_MISSING = object()


def _helper_classes() -> list[type]:
    out: list[type] = []
    for module in _HELPER_MODULES:
        # Imported now, so that a helper first imported after watch() (the watchdog, say) is
        # part of the baseline, not a function "added" at the next step.
        importlib.import_module(module)
        mod = sys.modules.get(module)
        if mod is None:
            continue
        for value in vars(mod).values():
            if isinstance(value, type) and value.__module__ == module:
                out.append(value)
    return out


def _functions(cls: type) -> dict[str, Any]:
    """Every function defined on ``cls`` and its bases (below object), by qualified name."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__ == "typing":
            continue
        for name, value in vars(klass).items():
            fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if isinstance(fn, types.FunctionType):
                out[f"{klass.__module__}.{klass.__qualname__}.{name}"] = fn
    return out


def _code_digest(functions: dict[str, Any]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(functions):
        h.update(name.encode())
        h.update(marshal.dumps(functions[name].__code__))
    return h.hexdigest()


class SelfCheck:
    """Baseline of the monitor's hooks and code at watch(); :meth:`run` reports any change."""

    def __init__(self, monitor: Monitor, handles: Iterable[tuple[str, dict[int, Any], int, Any]]):
        self.mon = monitor
        # The very objects the registries hold, compared by identity from now on: a bound
        # method is a new object at each attribute access, and comparing with ``==`` would let
        # a replacement whose ``__eq__`` says "equal" pass for the monitor's hook.
        self._handles = [
            (what, registry, hid, registry.get(hid, fn)) for what, registry, hid, fn in handles
        ]
        self._objects: list[Any] = [monitor, monitor.sink, *monitor.checks]
        self._classes = list(dict.fromkeys(type(o) for o in self._objects))
        self._extra = [type(monitor._fp), type(monitor.clock), *_helper_classes()]
        # Objects whose class decides what runs: a check whose ``__class__`` is swapped for a
        # subclass with a silent method runs that method, with every function above untouched.
        self._typed = [(o, type(o)) for o in (*self._objects, monitor._fp, monitor.clock)]
        self._checks = tuple(monitor.checks)
        # SelfCheck is built inside watch(), before ``monitor._selfcheck`` is bound to it.
        self._pinned = [
            (name, self if name == "_selfcheck" else getattr(monitor, name, _MISSING))
            for name in _PINNED
        ]
        self._baseline = self._snapshot()
        self._codes = {name: fn.__code__ for name, fn in self._baseline.items()}
        # The fast path: every namespace the snapshot reads, as it was, and the code objects.
        self._spaces = [(ns, tuple(ns.items())) for ns in self._namespaces()]
        self._code_pairs = [(fn, fn.__code__) for fn in self._baseline.values()]
        self._methods = {
            id(obj): {n.rsplit(".", 1)[1] for n in _functions(type(obj))} for obj in self._objects
        }
        self.digest = _code_digest(self._baseline)
        # The reporting path is captured now: a later patch of Monitor.alert or of the sink's
        # emit cannot silence the report of that very patch.
        self._emit: Callable[[Any, str, dict[str, Any]], None] = type(monitor.sink).emit
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cls in [*self._classes, *self._extra]:
            out.update(_functions(cls))
        for module in _HELPER_MODULES:
            mod = sys.modules.get(module)
            for name, value in vars(mod).items() if mod is not None else ():
                if isinstance(value, types.FunctionType) and value.__module__ == module:
                    out[f"{module}.{name}"] = value
        return out

    def _namespaces(self) -> list[Any]:
        spaces: list[Any] = []
        for cls in [*self._classes, *self._extra]:
            for klass in cls.__mro__:
                if klass is not object and klass.__module__ != "typing":
                    spaces.append(vars(klass))
        for module in _HELPER_MODULES:
            mod = sys.modules.get(module)
            if mod is not None:
                spaces.append(vars(mod))
        unique = {id(ns): ns for ns in spaces}
        return list(unique.values())

    def _unchanged(self) -> bool:
        """True when nothing the full comparison reads changed (identity checks only)."""
        if self.mon.sink is not self._objects[1]:
            return False
        for _, registry, hid, fn in self._handles:
            if registry.get(hid) is not fn:
                return False
        missing = object()
        for ns, items in self._spaces:
            if len(ns) != len(items):
                return False
            for key, value in items:
                if ns.get(key, missing) is not value:
                    return False
        for fn, code in self._code_pairs:
            if fn.__code__ is not code:
                return False
        for obj in self._objects:
            methods = self._methods[id(obj)]
            if not methods.isdisjoint(vars(obj)):
                return False
        mon = self.mon
        for name, value in self._pinned:
            if getattr(mon, name, _MISSING) is not value:
                return False
        if not self._same_checks():
            return False
        return all(type(obj) is cls for obj, cls in self._typed)

    def _same_checks(self) -> bool:
        checks = self.mon.checks
        return (
            type(checks) is list
            and len(checks) == len(self._checks)
            and all(a is b for a, b in zip(checks, self._checks, strict=False))
        )

    def problems(self) -> list[str]:
        """What differs from watch(): hooks gone or replaced, functions replaced or patched."""
        if self._unchanged():
            return []
        found: list[str] = []
        if self.mon.sink is not self._objects[1]:
            found.append(f"the monitor's sink was replaced by {type(self.mon.sink).__qualname__}")
        for what, registry, hid, fn in self._handles:
            current = registry.get(hid)
            if current is None:
                found.append(f"the monitor's {what} hook was removed")
            elif current is not fn:
                found.append(
                    f"the monitor's {what} hook was replaced by {type(current).__qualname__}"
                )
        now = self._snapshot()
        for name, fn in self._baseline.items():
            cur = now.get(name)
            if cur is None:
                found.append(f"{name} was deleted")
            elif cur is not fn:
                found.append(f"{name} was replaced by {getattr(cur, '__module__', '?')}")
            elif cur.__code__ is not self._codes[name]:
                found.append(f"{name}.__code__ was patched")
        for name in now.keys() - self._baseline.keys():
            found.append(f"{name} was added")
        for obj in self._objects:
            methods = {n.rsplit(".", 1)[1] for n in _functions(type(obj))}
            for attr, value in vars(obj).items():
                if attr in methods and callable(value):
                    found.append(f"{type(obj).__qualname__}.{attr} was shadowed on the instance")
        for obj, cls in self._typed:
            if type(obj) is not cls:
                found.append(
                    f"the class of the monitor's {cls.__qualname__} was changed to "
                    f"{type(obj).__qualname__}"
                )
        for name, value in self._pinned:
            if getattr(self.mon, name, _MISSING) is not value:
                found.append(f"Monitor.{name} was replaced on the instance")
        if not self._same_checks():
            held: Any = self.mon.checks
            kept: list[Any] = list(held) if isinstance(held, list) else []
            gone = [type(c).__qualname__ for c in self._checks if not any(c is x for x in kept)]
            found.append(
                "the monitor's list of checks was changed"
                + (f" (removed: {', '.join(gone)})" if gone else "")
            )
        return found

    def run(self, where: str) -> str:
        """Compare with watch(); alert once per new problem; return the current code digest."""
        with self._lock:
            found = self.problems()
            digest = _code_digest(self._snapshot()) if found else self.digest
            new = [p for p in found if p not in self._reported]
            self._reported.update(new)
        if new:
            mon = self.mon
            alert = Alert(
                "TWM-MONITOR-TAMPERED",
                Severity.CRITICAL,
                mon.step,
                mon.rank,
                "the monitor was tampered with (" + where + "): " + "; ".join(new[:5]),
                {"problems": new, "selfcheck": digest, "baseline": self.digest},
            )
            mon.alerts.append(alert)
            if alert.severity >= mon.config.fail_severity:
                mon._unraised.append(alert)
            # The alert is kept in memory even when the sink itself is what was broken.
            with contextlib.suppress(Exception):
                self._emit(self._objects[1], "alert", {**alert.to_dict(), "selfcheck": digest})
        return digest

    def report(self, alert: Alert) -> None:
        """Write ``alert`` to the sink given at watch() through the emit captured then."""
        self._emit(self._objects[1], "alert", {**alert.to_dict(), "selfcheck": self.digest})

    def start(self, interval_s: float) -> None:
        """Also run from a background thread (hooks removed entirely never call the monitor)."""
        self._thread = threading.Thread(
            target=self._loop, args=(interval_s,), name="trainwarden-selfcheck", daemon=True
        )
        self._thread.start()

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.mon.selfcheck_digest = self.run("background self-check")
            except Exception as e:  # fail-open: never kill the thread on a bug
                self.mon.internal(e, "selfcheck")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
