"""Load telemetry: a PEP 578 audit hook that records what happens *while* a load runs.

This is telemetry, not a sandbox. An audit hook only sees events that CPython (or a C extension
that chooses to) reports, and only after the action was requested; native code can do anything
without raising an event, and a payload that starts a thread escapes the attribution (the
tracked flag is a per-thread context variable). The safe loader is what stops code from running;
telemetry tells you when something unexpected happened during a load anyway.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.loading._rules import RULES

__all__ = ["LoadTrace", "current", "install_hook", "track"]

# audit event -> (rule id, what the process did); severities come from the rule catalogue.
_EVENTS: dict[str, tuple[str, str]] = {
    "import": ("TWL-TEL-IMPORT", "imported a module"),
    "exec": ("TWL-TEL-EXEC", "executed a code object"),
    "compile": ("TWL-TEL-COMPILE", "compiled source code"),
    "os.system": ("TWL-TEL-SYSTEM", "ran a shell command"),
    "os.exec": ("TWL-TEL-SUBPROCESS", "replaced the process (exec)"),
    "os.posix_spawn": ("TWL-TEL-SUBPROCESS", "spawned a process"),
    "os.spawn": ("TWL-TEL-SUBPROCESS", "spawned a process"),
    "os.fork": ("TWL-TEL-SUBPROCESS", "forked the process"),
    "subprocess.Popen": ("TWL-TEL-SUBPROCESS", "started a subprocess"),
    "socket.connect": ("TWL-TEL-SOCKET", "opened a network connection"),
    "socket.bind": ("TWL-TEL-SOCKET", "bound a network socket"),
    "open": ("TWL-TEL-WRITE", "opened a file for writing"),
    "os.remove": ("TWL-TEL-WRITE", "deleted a file"),
    "os.rename": ("TWL-TEL-WRITE", "renamed a file"),
    "ctypes.dlopen": ("TWL-TEL-DLOPEN", "loaded a native library"),
    "pickle.find_class": ("TWL-TEL-FIND-CLASS", "resolved a pickled global"),
}

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


@dataclass
class LoadTrace:
    """The audit events seen during one load, attributed to ``location``.

    ``events`` holds ``(event, subject, import_related)`` triples, reduced to strings as they
    happen so no audited object is kept alive.
    """

    location: str
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    dropped: int = 0
    busy: bool = False
    frame: FrameType | None = field(default=None, repr=False)

    MAX_EVENTS = 10_000

    def findings(self) -> tuple[Finding, ...]:
        """Findings for what happened: one per distinct (event, subject) with a count.

        Imports are summarised in one LOW finding (code an import runs to define the module,
        its .pyc writes and native libraries it loads are part of it); resolved globals in one
        INFO finding.
        """
        imports: list[str] = []
        resolved: list[str] = []
        grouped: dict[tuple[str, str], int] = {}
        for event, subject, import_related in self.events:
            if event == "import":
                if subject not in imports:
                    imports.append(subject)
            elif event == "pickle.find_class":
                if subject not in resolved:
                    resolved.append(subject)
            elif import_related:
                # importlib.import_module raises no "import" event; its module code still runs.
                if event == "exec" and subject.startswith("<module> from "):
                    source = subject.removeprefix("<module> from ")
                    if source not in imports and not _named_by(source, imports):
                        imports.append(source)
            else:
                grouped[(event, subject)] = grouped.get((event, subject), 0) + 1
        out: list[Finding] = []
        loc = self.location
        if imports:
            out.append(
                Finding(
                    "TWL-TEL-IMPORT",
                    Severity.LOW,
                    f"while loading {loc}, {len(imports)} module(s) were imported: "
                    + ", ".join(imports[:10])
                    + (", ..." if len(imports) > 10 else ""),
                    loc,
                    {"event": "import", "modules": imports},
                )
            )
        if resolved:
            out.append(
                Finding(
                    "TWL-TEL-FIND-CLASS",
                    Severity.INFO,
                    f"while loading {loc}, the unpickler resolved {len(resolved)} global(s)",
                    loc,
                    {"event": "pickle.find_class", "globals": resolved},
                )
            )
        for (event, subject), count in grouped.items():
            rule, what = _EVENTS[event]
            out.append(
                Finding(
                    rule,
                    RULES[rule].severity,
                    f"while loading {loc}, the process {what}: {subject}",
                    loc,
                    {"event": event, "subject": subject, "count": count},
                )
            )
        if self.dropped:
            out.append(
                Finding(
                    "TWL-TEL-OVERFLOW",
                    Severity.MEDIUM,
                    f"while loading {loc}, {self.dropped} audit events were not kept",
                    loc,
                    {"dropped": self.dropped},
                )
            )
        return tuple(out)

    def events_as_records(self) -> tuple[dict[str, Any], ...]:
        return tuple({"event": e, "subject": s, "import": i} for e, s, i in self.events)


def _named_by(source: str, modules: list[str]) -> bool:
    """Whether the module file ``source`` is one of the already reported ``modules``."""
    path = Path(source)
    stem = path.parent.name if path.stem == "__init__" else path.stem
    return any(m.rsplit(".", 1)[-1] == stem for m in modules)


_current: contextvars.ContextVar[LoadTrace | None] = contextvars.ContextVar(
    "trainwarden_load_trace", default=None
)
_hook_lock = threading.Lock()
_hook_installed = False


def _short(value: object, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _subject(event: str, args: tuple[Any, ...]) -> str:
    try:
        if event == "import":
            return _short(args[0])
        if event == "pickle.find_class":
            return f"{args[0]}.{args[1]}"
        if event == "exec":
            code = args[0]
            name = getattr(code, "co_filename", "?")
            return _short(f"{getattr(code, 'co_name', '?')} from {name}")
        if event == "compile":
            return _short(args[1] if len(args) > 1 else "<source>")
        if event == "open":
            return _short(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes)) else args[0])
        if event == "subprocess.Popen":
            return _short(args[1] if len(args) > 1 else args[0])
        return _short(args[0] if len(args) == 1 else args)
    except Exception:  # audit arguments are arbitrary objects: the hook must never fail
        return "<unprintable>"


def _is_write_open(args: tuple[Any, ...]) -> bool:
    if len(args) < 3:
        return False
    mode, flags = args[1], args[2]
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


_IMPORT_FRAMES = ("_load_unlocked", "exec_module", "_find_and_load", "_call_with_frames_removed")


def _inside_import(stop: FrameType | None) -> bool:
    """True when an importlib bootstrap frame sits between the hook and the load's own frame."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame is not stop:
        code = frame.f_code
        if code.co_filename.startswith("<frozen importlib._bootstrap") and (
            code.co_name in _IMPORT_FRAMES
        ):
            return True
        frame = frame.f_back
    return False


def _import_related(event: str, args: tuple[Any, ...], stop: FrameType | None) -> bool:
    # Importing a module compiles and execs its source, builds dataclasses and namedtuples with
    # exec, and writes its .pyc cache: that is the import (reported as one), not a payload.
    if event in ("exec", "compile", "ctypes.dlopen"):
        return _inside_import(stop)
    if event == "open":
        name = args[0]
        return isinstance(name, str) and name.endswith(".pyc") and _inside_import(stop)
    return False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS:
        return
    trace = _current.get()
    if trace is None or trace.busy:
        return
    if event == "open" and not _is_write_open(args):
        return
    if len(trace.events) >= trace.MAX_EVENTS:
        trace.dropped += 1
        return
    trace.busy = True
    try:
        trace.events.append(
            (event, _subject(event, args), _import_related(event, args, trace.frame))
        )
    finally:
        trace.busy = False


def current() -> LoadTrace | None:
    """The trace of the load running in this thread, if any."""
    return _current.get()


def install_hook() -> None:
    """Install the audit hook once per process (audit hooks cannot be removed)."""
    global _hook_installed
    if _hook_installed:
        return
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_hook)
            _hook_installed = True


@contextlib.contextmanager
def track(location: str) -> Iterator[LoadTrace]:
    """Attribute audit events raised by this thread to a load of ``location`` until exit.

    Nested tracking (a guarded loader called inside another) records into the outer trace.
    """
    install_hook()
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    trace = LoadTrace(location, frame=sys._getframe(2))
    token = _current.set(trace)
    try:
        yield trace
    finally:
        _current.reset(token)
