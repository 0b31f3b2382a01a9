"""Hang watchdog, signal recorder and lost-rank report for one training process (rank).

A background thread expects :meth:`Watchdog.beat` once per step; when none arrives within an
adaptive timeout it dumps every thread's stack to the sink and emits ``TWM-HANG``. Catchable
signals are recorded with the sender's pid/uid, and with a ``torch.distributed`` store every rank
publishes a heartbeat so that the survivors of a hang or a kill can say which rank was lost first.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import faulthandler
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from trainwarden._internal.sink import EventSink, NullSink
from trainwarden.findings import Severity
from trainwarden.monitor._types import Alert, MonitorError

__all__ = [
    "DEFAULT_SIGNALS",
    "HeartbeatBoard",
    "LostRankReport",
    "PeerStatus",
    "Watchdog",
    "default_store",
    "record_signals_early",
]

#: Signals recorded by default. SIGKILL and SIGSTOP cannot be caught by any process; the OOM
#: killer uses SIGKILL. Those deaths are reported by the survivors' lost-rank report instead.
DEFAULT_SIGNALS: tuple[str, ...] = (
    "SIGTERM",
    "SIGINT",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGXCPU",
)

_KEY_PREFIX = "trainwarden/hb/"


def default_store() -> object | None:
    """Return the default process group's key-value store, or ``None`` when there is none.

    Under ``torchrun`` this is the rendezvous ``TCPStore`` that every rank can reach.
    """
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    if getter is None:
        return None
    try:
        store: object = getter()
    except (RuntimeError, ValueError):
        return None
    return store


@dataclass(frozen=True)
class PeerStatus:
    """What the heartbeat board says about one rank."""

    rank: int
    published: bool
    step: int | None = None
    beat_age_s: float | None = None
    seen_age_s: float | None = None
    host: str | None = None
    pid: int | None = None
    pid_alive: bool | None = None
    stopped: bool = False
    where: str | None = None
    in_collective: bool | None = None

    @property
    def lost(self) -> bool:
        """The process is gone (its pid no longer exists on this host)."""
        return self.pid_alive is False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "published": self.published,
            "step": self.step,
            "beat_age_s": None if self.beat_age_s is None else round(self.beat_age_s, 3),
            "seen_age_s": None if self.seen_age_s is None else round(self.seen_age_s, 3),
            "host": self.host,
            "pid": self.pid,
            "pid_alive": self.pid_alive,
            "stopped": self.stopped,
            "where": self.where,
            "in_collective": self.in_collective,
        }


@dataclass(frozen=True)
class LostRankReport:
    """The survivors' view of which rank was lost (or stuck) first.

    ``first_lost`` is the rank whose process is gone (or whose publisher went silent) with the
    oldest last sign of life; ``None`` when every peer is still alive. Then ``most_behind``
    names the rank whose last completed step is the oldest, and ``stuck_outside_collective``
    the ranks whose main thread is *not* waiting in a collective while the others are (the
    peers a hung collective is waiting for).
    """

    reporter: int
    peers: tuple[PeerStatus, ...]
    first_lost: int | None
    lost: tuple[int, ...]
    most_behind: int | None
    error: str | None = None
    stuck_outside_collective: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "reporter": self.reporter,
            "first_lost": self.first_lost,
            "lost": list(self.lost),
            "most_behind": self.most_behind,
            "stuck_outside_collective": list(self.stuck_outside_collective),
            "error": self.error,
            "peers": [p.to_dict() for p in self.peers],
        }


class HeartbeatBoard:
    """Per-rank heartbeat keys in a ``torch.distributed`` store (``TCPStore``, ``FileStore``...).

    Each rank writes ``trainwarden/hb/<rank>`` = JSON ``{step, beat, seen, host, pid}`` where
    ``beat`` is the wall time of the last completed step and ``seen`` the wall time of the last
    publication (the publisher is a background thread, so ``seen`` keeps moving while a process
    is alive even when its main thread is stuck in a collective).
    """

    def __init__(self, store: object, rank: int, world_size: int) -> None:
        for name in ("set", "get", "check"):
            if not callable(getattr(store, name, None)):
                raise MonitorError(
                    f"heartbeat store {type(store).__name__} has no {name}() method",
                    hint="pass a torch.distributed Store (TCPStore, FileStore, PrefixStore)",
                )
        self._store: Any = store
        self.rank = rank
        self.world_size = world_size
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def record(self, step: int, beat_wall: float, *, stopped: bool = False) -> dict[str, Any]:
        """This rank's heartbeat record as published (with where its main thread is now)."""
        where, in_collective = main_thread_location()
        return {
            "step": step,
            "beat": beat_wall,
            "seen": time.time(),
            "host": self.host,
            "pid": self.pid,
            "stopped": stopped,
            "where": where,
            "in_collective": in_collective,
        }

    def publish(self, step: int, beat_wall: float, *, stopped: bool = False) -> None:
        """Write this rank's heartbeat (one store round trip)."""
        record = self.record(step, beat_wall, stopped=stopped)
        self._store.set(f"{_KEY_PREFIX}{self.rank}", json.dumps(record))

    def read(self, rank: int) -> dict[str, Any] | None:
        """Return the last heartbeat ``rank`` published, ``None`` if it never published."""
        key = f"{_KEY_PREFIX}{rank}"
        if not self._store.check([key]):
            return None
        raw = self._store.get(key)
        try:
            data = json.loads(bytes(raw).decode("utf-8"))
        except RecursionError as e:  # reported like any other unreadable heartbeat
            raise ValueError(f"rank {rank}'s heartbeat nests too deeply") from e
        return data if isinstance(data, dict) else None

    def report(
        self,
        *,
        stale_after_s: float,
        own: dict[str, Any] | None = None,
        min_idle_s: float = 0.0,
    ) -> LostRankReport:
        """Read every rank's heartbeat and decide which rank was lost first.

        A peer on this host is lost when its pid no longer exists; a peer on another host is
        treated as lost when it has not published for ``stale_after_s``. ``own`` (this rank's
        current :meth:`record`) replaces this rank's possibly older published entry. Ranks are
        only called stuck when every live rank has been idle for ``min_idle_s``.
        """
        now = time.time()
        peers: list[PeerStatus] = []
        try:
            for r in range(self.world_size):
                data = own if (r == self.rank and own is not None) else self.read(r)
                if data is None:
                    peers.append(PeerStatus(rank=r, published=False))
                    continue
                host = str(data.get("host"))
                pid = int(data["pid"])
                alive: bool | None = None
                if host == self.host:
                    alive = _pid_alive(pid)
                seen_age = now - float(data["seen"])
                if alive is None and seen_age > stale_after_s:
                    alive = False
                peers.append(
                    PeerStatus(
                        rank=r,
                        published=True,
                        step=int(data["step"]),
                        beat_age_s=now - float(data["beat"]),
                        seen_age_s=seen_age,
                        host=host,
                        pid=pid,
                        pid_alive=alive,
                        stopped=bool(data.get("stopped", False)),
                        where=data.get("where"),
                        in_collective=data.get("in_collective"),
                    )
                )
        except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
            # A heartbeat of the wrong shape lands here too (TypeError: a field of the wrong
            # type). The store itself may live in the rank that died (rank 0 hosts it without
            # torchrun's agent store); that is evidence too.
            return LostRankReport(
                reporter=self.rank,
                peers=tuple(peers),
                first_lost=None,
                lost=(),
                most_behind=None,
                error=f"heartbeat store unreachable: {type(exc).__name__}: {exc}",
            )
        lost = [p for p in peers if p.lost and not p.stopped]
        # The first lost rank is the one whose last sign of life is the oldest.
        lost.sort(key=lambda p: -(p.seen_age_s or 0.0))
        live = [p for p in peers if p.step is not None and not p.stopped and not p.lost]
        most_behind = None
        if live:
            oldest = min(live, key=lambda p: (p.step or 0, -(p.beat_age_s or 0.0)))
            if any(p.step != oldest.step for p in live):
                most_behind = oldest.rank
        waiting = [p for p in live if p.in_collective]
        outside = [p.rank for p in live if p.in_collective is False]
        all_idle = all((p.beat_age_s or 0.0) >= min_idle_s for p in live)
        stuck = tuple(outside) if waiting and outside and all_idle else ()
        return LostRankReport(
            reporter=self.rank,
            peers=tuple(peers),
            first_lost=lost[0].rank if lost else None,
            lost=tuple(p.rank for p in lost),
            most_behind=most_behind,
            stuck_outside_collective=stuck,
        )


_COLLECTIVE_MARKERS = (
    "torch/distributed/",
    "torch/nn/parallel/distributed.py",
    "torch/autograd/",
    "torch/_tensor.py",
    "trainwarden/monitor/_distributed.py",
)


def main_thread_location() -> tuple[str | None, bool | None]:
    """Where the main thread is now (innermost frame) and whether it is inside a collective.

    "Inside a collective" means a torch.distributed call, DDP, or autograd's backward (where
    DDP's all-reduce waits) is on the stack; it is what a healthy rank shows while it waits
    for a stuck peer.
    """
    ident = threading.main_thread().ident
    frame = sys._current_frames().get(ident) if ident is not None else None
    if frame is None:
        return None, None
    innermost = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    in_collective = False
    f: FrameType | None = frame
    while f is not None:
        name = f.f_code.co_filename.replace(os.sep, "/")
        if any(marker in name for marker in _COLLECTIVE_MARKERS):
            in_collective = True
            break
        f = f.f_back
    return innermost, in_collective


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists" for kill(0); its state in /proc says it is dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0:1]
    return state != ["Z"]


def _describe_pid(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:300] or None


def lost_rank_alert(report: LostRankReport, *, step: int, reason: str) -> Alert | None:
    """Turn a :class:`LostRankReport` into a ``TWM-LOST-RANK`` alert (``None``: nobody lost)."""
    if report.first_lost is not None:
        first = next(p for p in report.peers if p.rank == report.first_lost)
        where = f"pid {first.pid} on {first.host}" if first.pid is not None else "its process"
        msg = (
            f"rank {report.first_lost} was lost first ({where} is gone; last completed step "
            f"{first.step}, last heartbeat {first.seen_age_s or 0.0:.1f}s ago)"
        )
        others = [r for r in report.lost if r != report.first_lost]
        if others:
            msg += f"; also lost: ranks {others}"
        severity = Severity.CRITICAL
    elif report.error is not None:
        msg = f"peer status unknown: {report.error}"
        severity = Severity.HIGH
    elif report.most_behind is not None:
        msg = (
            f"no rank is gone, but rank {report.most_behind} is behind the others "
            "(its last completed step is the oldest): the collective is likely waiting on it"
        )
        severity = Severity.HIGH
    elif report.stuck_outside_collective:
        stuck = report.stuck_outside_collective
        locations = {p.rank: p.where for p in report.peers if p.rank in stuck}
        msg = (
            f"no rank is gone, but rank(s) {list(stuck)} are stuck "
            f"outside any collective while the others wait in one: {locations}"
        )
        severity = Severity.HIGH
    else:
        return None
    return Alert(
        rule_id="TWM-LOST-RANK",
        severity=severity,
        step=step,
        rank=report.reporter,
        message=f"{reason}: {msg}",
        evidence=report.to_dict(),
    )


_SIG_DFL_IGNORED = {"SIGCHLD", "SIGURG", "SIGWINCH", "SIGCONT"}


def _default_action(sig: signal.Signals) -> None:
    """Terminate the process the way the default disposition would (killed by ``sig``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.signal(int(sig), 0)  # SIG_DFL, from a thread where signal.signal() is not allowed
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    signal.pthread_kill(threading.get_ident(), sig)
    time.sleep(1.0)
    os._exit(128 + int(sig))


class _EarlySignals:
    """Process-wide sigwaitinfo thread started by :func:`record_signals_early`.

    Until a :class:`Watchdog` attaches, it keeps each signal's record and gives the signal its
    normal behaviour itself; an attached watchdog records and dispatches instead.
    """

    def __init__(self, sigs: set[signal.Signals]) -> None:
        self.sigs = sigs
        self.lock = threading.Lock()
        self.consumer: Watchdog | None = None
        self.pending: list[dict[str, Any]] = []
        _block(sigs)
        self.thread = threading.Thread(target=self._loop, name="trainwarden-signals", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            info = signal.sigtimedwait(self.sigs, 0.5)
            if info is None:
                continue
            sig = signal.Signals(info.si_signo)
            with self.lock:
                consumer = self.consumer
            if consumer is not None:
                consumer._on_siginfo(sig, info.si_pid, info.si_uid, info.si_code)
                continue
            self.pending.append(
                {
                    "signal": sig.name,
                    "signo": int(sig),
                    "sender_pid": info.si_pid,
                    "sender_uid": info.si_uid,
                    "si_code": info.si_code,
                    "sender_cmdline": _describe_pid(info.si_pid),
                    "receiver_pid": os.getpid(),
                    "time": time.time(),
                }
            )
            handler = signal.getsignal(sig)
            if callable(handler):
                _thread.interrupt_main(sig)
            elif handler != signal.SIG_IGN and sig.name not in _SIG_DFL_IGNORED:
                _default_action(sig)


_EARLY: _EarlySignals | None = None

#: Signals this module blocked in some thread, for the fork handler below.
_BLOCKED: set[signal.Signals] = set()
#: Watchdogs whose signal handlers are installed in this process.
_ACTIVE: list[Watchdog] = []
_FORK_HANDLER = False


def _unblock_in_forked_child() -> None:
    """A forked child (multiprocessing, DataLoader workers) has no sigwaitinfo thread: signals
    left blocked there would never be delivered, so the child could not be stopped by SIGTERM or
    Ctrl-C. Give it back the normal mask (and no early recorder)."""
    global _EARLY
    _EARLY = None
    for dog in list(_ACTIVE):
        # The parent's watchdog is not running here: its handlers and wake-up socket (shared
        # with the parent) must not make the parent act on the child's signals.
        with contextlib.suppress(ValueError, OSError):
            for sig, prev in dog._prev_handlers.items():
                if signal.getsignal(sig) == dog._py_handler:
                    signal.signal(sig, prev)
            if dog._wakeup_w is not None:
                old = signal.set_wakeup_fd(-1)
                if old != dog._wakeup_w.fileno():
                    signal.set_wakeup_fd(old)
    _ACTIVE.clear()
    if _BLOCKED:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)


def _block(sigs: set[signal.Signals]) -> None:
    """Block ``sigs`` in the calling thread, making sure forked children get them back."""
    global _FORK_HANDLER
    if not _FORK_HANDLER:
        os.register_at_fork(after_in_child=_unblock_in_forked_child)
        _FORK_HANDLER = True
    _BLOCKED.update(sigs)
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)


def record_signals_early(signals: Sequence[str] = DEFAULT_SIGNALS) -> None:
    """Start receiving ``signals`` with their sender now, before other threads exist.

    Call it first thing in the training script (before ``import torch`` creates thread pools
    and before ``init_process_group`` starts gloo's threads): every thread created afterwards
    inherits the blocked mask, so the sender's pid/uid is known for every delivery. A
    :class:`Watchdog` started later (e.g. by ``trainwarden.watch``) takes over the recording;
    signals received before that are written to its sink when it starts. Must be called from
    the main thread; calling it again is a no-op.
    """
    global _EARLY
    if _EARLY is not None:
        return
    if threading.current_thread() is not threading.main_thread():
        raise MonitorError("record_signals_early() must be called from the main thread")
    sigs: set[signal.Signals] = set()
    for name in signals:
        sig = getattr(signal.Signals, name, None)
        if sig is None or name in {"SIGKILL", "SIGSTOP"}:
            raise MonitorError(f"cannot record signal {name!r}")
        sigs.add(sig)
    _EARLY = _EarlySignals(sigs)


class Watchdog:
    """Heartbeat watchdog for one rank; see the module docstring.

    ``emit`` receives every alert (it may be called from the watchdog's own threads, so it must
    be thread-safe; appending to a list is). ``sink`` receives the raw events: ``stack_dump``,
    ``signal`` and ``heartbeat_report``. With a :class:`~trainwarden._internal.sink.JsonlSink`,
    faulthandler's C-level dump goes to ``<sink path>.rank<N>.stacks.txt`` next to it (raw text
    would corrupt the JSONL file).

    :meth:`start` must be called from the main thread for signal recording (CPython only lets
    the main thread install handlers); signals are blocked in the calling thread and received by
    a dedicated thread with ``sigwaitinfo``, which gives the sender's pid and uid. Threads that
    existed before :meth:`start` and do not block these signals may still receive one: it is then
    recorded without a sender, so start the watchdog early (before ``init_process_group`` and
    before DataLoader workers) for complete sender information.
    """

    def __init__(
        self,
        emit: Callable[[Alert], None],
        *,
        rank: int = 0,
        world_size: int = 1,
        min_timeout_s: float = 300.0,
        factor: float = 20.0,
        sink: EventSink | None = None,
        store: object | None = None,
        signals: Sequence[str] | None = DEFAULT_SIGNALS,
        poll_s: float | None = None,
        publish_every_s: float | None = None,
        history: int = 50,
        first_step_timeout_s: float | None = None,
    ) -> None:
        if min_timeout_s <= 0 or factor <= 0:
            raise MonitorError(
                f"watchdog min_timeout_s ({min_timeout_s}) and factor ({factor}) must be > 0"
            )
        if not 0 <= rank < max(world_size, 1):
            raise MonitorError(f"watchdog rank {rank} is outside world_size {world_size}")
        self._emit_alert = emit
        self.rank = rank
        self.world_size = world_size
        self.min_timeout_s = float(min_timeout_s)
        self.factor = float(factor)
        self.sink: EventSink = sink if sink is not None else NullSink()
        self._board = HeartbeatBoard(store, rank, world_size) if store is not None else None
        self._signal_names = tuple(signals or ())
        self._sigs: set[signal.Signals] = set()
        for name in self._signal_names:
            sig = getattr(signal.Signals, name, None)
            if sig is None:
                raise MonitorError(f"unknown signal name {name!r} for the watchdog")
            if name in {"SIGKILL", "SIGSTOP"}:
                raise MonitorError(f"{name} cannot be caught by any process")
            self._sigs.add(sig)
        self._poll_s = poll_s if poll_s is not None else min(1.0, self.min_timeout_s / 10)
        self._publish_every_s = (
            publish_every_s if publish_every_s is not None else min(2.0, self.min_timeout_s / 5)
        )
        # The first step also pays for start-up (rendezvous, data loader workers, lazy init).
        self.first_step_timeout_s = (
            float(first_step_timeout_s)
            if first_step_timeout_s is not None
            else 3 * self.min_timeout_s
        )
        self._times: deque[float] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._last_beat_mono = time.monotonic()
        self._last_beat_wall = time.time()
        self._step = -1
        self._hang_reported = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._prev_handlers: dict[signal.Signals, Any] = {}
        self._blocked_in: int | None = None
        self._early: _EarlySignals | None = None
        self._pending_redispatch: set[signal.Signals] = set()
        self._expect_wakeup: dict[signal.Signals, int] = {}
        self._wakeup_r: socket.socket | None = None
        self._wakeup_w: socket.socket | None = None
        self._stacks_path: Path | None = None
        sink_path = getattr(self.sink, "path", None)
        if isinstance(sink_path, Path):
            self._stacks_path = sink_path.with_name(f"{sink_path.name}.rank{rank}.stacks.txt")
        self.hangs = 0
        self._crash_reported = False
        self._prev_excepthook = sys.excepthook
        self.signals_seen: list[dict[str, Any]] = []
        #: Failures of the watchdog itself (also emitted as TWM-INTERNAL alerts when possible).
        self.internal_errors: list[Alert] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def timeout_s(self) -> float:
        """The current adaptive timeout: ``max(min_timeout_s, factor * median step time)``.

        Before the first :meth:`beat` it is ``first_step_timeout_s`` (default 3x the minimum).
        """
        with self._lock:
            times = list(self._times)
            started = self._step >= 0
        if not started:
            return max(self.min_timeout_s, self.first_step_timeout_s)
        if not times:
            return self.min_timeout_s
        return max(self.min_timeout_s, self.factor * statistics.median(times))

    def start(self) -> None:
        """Start the heartbeat thread, the store publisher and (from the main thread) signals."""
        if self._started:
            return
        self._started = True
        self._stop = threading.Event()
        self._crash_reported = False
        self._last_beat_mono = time.monotonic()
        self._last_beat_wall = time.time()
        if self._sigs and threading.current_thread() is threading.main_thread():
            self._install_signals()
        elif self._sigs:
            self.sink.emit(
                "watchdog_note",
                {
                    "rank": self.rank,
                    "message": "signals not recorded: Watchdog.start() was not called from the "
                    "main thread",
                },
            )
        self._prev_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        t = threading.Thread(target=self._watch_loop, name="trainwarden-watchdog", daemon=True)
        t.start()
        self._threads.append(t)
        if self._board is not None:
            try:
                self._publish(stopped=False)
            except (RuntimeError, OSError) as exc:
                # Not fatal: the watchdog thread retries, and training must not fail for it.
                self.sink.emit(
                    "watchdog_note",
                    {"rank": self.rank, "message": f"heartbeat publish failed: {exc}"},
                )

    def beat(self, step: int, step_time_s: float) -> None:
        """Record that ``step`` completed in ``step_time_s`` seconds (cheap: no I/O)."""
        with self._lock:
            self._step = step
            if step_time_s > 0:
                self._times.append(float(step_time_s))
            self._last_beat_mono = time.monotonic()
            self._last_beat_wall = time.time()
            self._hang_reported = False

    def stop(self) -> None:
        """Stop the threads, restore signal handlers and mask, publish a final 'stopped' beat."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        self._threads.clear()
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_excepthook
        self._restore_signals()
        if self._board is not None:
            with contextlib.suppress(RuntimeError, OSError):
                self._publish(stopped=True)

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            self.on_crash(exc)
        self.stop()

    def on_crash(self, exc: BaseException) -> None:
        """Record an exception that is ending training; in a multi-rank job, report lost peers.

        Installed as ``sys.excepthook`` while running: with gloo a dead peer makes the next
        collective raise (connection closed/reset) instead of hanging.
        """
        if self._crash_reported:
            return
        self._crash_reported = True
        text = f"{type(exc).__name__}: {exc}"
        self.sink.emit(
            "uncaught_exception",
            {
                "rank": self.rank,
                "step": self._step,
                "error": text[:2000],
                "traceback": traceback.format_exception(exc)[-12:],
            },
        )
        if self.world_size > 1:
            first_line = text.splitlines()[0][:200] if text else type(exc).__name__
            # A crash in a multi-rank job is most often a collective failing because a peer
            # died: give the dying peer's pid time to disappear before naming who is lost.
            self.report_lost_ranks(f"rank {self.rank} crashed ({first_line})", settle_s=10.0)

    def _excepthook(
        self,
        exc_type: type[BaseException],
        exc: BaseException,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, KeyboardInterrupt):
            try:
                self.on_crash(exc)
            except (RuntimeError, OSError, ValueError, KeyError, TypeError) as err:
                # Shown with the original traceback rather than hiding it.
                exc.add_note(f"trainwarden watchdog could not write its crash report: {err!r}")
        self._prev_excepthook(exc_type, exc, tb)

    # ------------------------------------------------------------------ lost ranks
    def attach_store(self, store: object) -> None:
        """Start publishing heartbeats to ``store`` (e.g. once ``init_process_group`` ran)."""
        self._board = HeartbeatBoard(store, self.rank, self.world_size)

    def lost_rank_report(self) -> LostRankReport | None:
        """Read every peer's heartbeat now; ``None`` without a store."""
        if self._board is None:
            return None
        with self._lock:
            step, wall = self._step, self._last_beat_wall
        return self._board.report(
            stale_after_s=max(5.0, 4 * self._publish_every_s),
            own=self._board.record(step, wall),
            min_idle_s=0.5 * self.min_timeout_s,
        )

    def report_lost_ranks(self, reason: str, *, settle_s: float = 0.0) -> Alert | None:
        """Emit (and return) a ``TWM-LOST-RANK`` alert from the heartbeat board, if any.

        ``settle_s``: when a collective has just failed because a peer's connection closed,
        the peer may still be exiting (the kernel closes its sockets before its pid is gone),
        so the board is re-read for up to this long until some peer is seen lost. Without a
        lost peer after that, the report says what the board shows (who is behind or stuck).
        """
        report = self.lost_rank_report()
        if report is None or self.world_size <= 1:
            return None
        # A peer on another host only counts as lost once its publisher is stale: wait at
        # least that long too, so both cases get the same answer.
        stale = max(5.0, 4 * self._publish_every_s)
        deadline = time.monotonic() + (max(settle_s, stale + 1.0) if settle_s > 0 else 0.0)
        while report.first_lost is None and report.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
            again = self.lost_rank_report()
            if again is None:
                break
            report = again
        self.sink.emit("heartbeat_report", {"rank": self.rank, **report.to_dict()})
        alert = lost_rank_alert(report, step=self._step, reason=reason)
        if alert is not None:
            self._emit_alert(alert)
        return alert

    def _publish(self, *, stopped: bool) -> None:
        assert self._board is not None  # noqa: S101 -- callers check; narrows the type for mypy
        with self._lock:
            step, wall = self._step, self._last_beat_wall
        self._board.publish(step, wall, stopped=stopped)

    # ------------------------------------------------------------------ hang detection
    def _watch_loop(self) -> None:
        next_publish = 0.0
        while not self._stop.wait(self._poll_s):
            now = time.monotonic()
            if self._board is not None and now >= next_publish:
                next_publish = now + self._publish_every_s
                try:
                    self._publish(stopped=False)
                except (RuntimeError, OSError) as exc:
                    # The store may be gone with the rank that hosted it; keep watching.
                    self.sink.emit(
                        "watchdog_note",
                        {"rank": self.rank, "message": f"heartbeat publish failed: {exc}"},
                    )
            with self._lock:
                idle = now - self._last_beat_mono
                reported = self._hang_reported
                step = self._step
            timeout = self.timeout_s
            if idle > timeout and not reported:
                with self._lock:
                    self._hang_reported = True
                self.hangs += 1
                try:
                    self._on_hang(step, idle, timeout)
                except Exception as exc:  # fail-open: keep watching after a failed report
                    self._internal(exc, "hang report")

    def _internal(self, exc: BaseException, where: str) -> None:
        """Report a failure of the watchdog itself as a ``TWM-INTERNAL`` alert (never raises)."""
        alert = Alert(
            rule_id="TWM-INTERNAL",
            severity=Severity.MEDIUM,
            step=self._step,
            rank=self.rank,
            message=f"watchdog failed during {where}: {type(exc).__name__}: {exc}",
            evidence={"traceback": traceback.format_exception(exc)[-6:]},
        )
        self.internal_errors.append(alert)
        try:
            self._emit_alert(alert)
        except Exception as err:  # the alert path itself failed: kept in internal_errors
            alert.evidence["emit_error"] = repr(err)

    def dump_stacks(self, reason: str) -> dict[str, Any]:
        """Write every thread's Python stack to the sink (and faulthandler's dump beside it)."""
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        threads = []
        for ident, frame in frames.items():
            threads.append(
                {
                    "thread_id": ident,
                    "name": names.get(ident, "?"),
                    "stack": traceback.format_stack(frame),
                }
            )
        record: dict[str, Any] = {"rank": self.rank, "reason": reason, "threads": threads}
        if self._stacks_path is not None:
            try:
                with self._stacks_path.open("a", encoding="utf-8") as fh:
                    fh.write(f"--- rank {self.rank} pid {os.getpid()} {time.ctime()}: {reason}\n")
                    fh.flush()
                    faulthandler.dump_traceback(file=fh, all_threads=True)
                record["faulthandler_file"] = str(self._stacks_path)
            except OSError as exc:
                record["faulthandler_error"] = str(exc)
        self.sink.emit("stack_dump", record)
        return record

    def _on_hang(self, step: int, idle: float, timeout: float) -> None:
        dump = self.dump_stacks(f"no step completed for {idle:.1f}s")
        main_stack: list[str] = next(
            (
                t["stack"]
                for t in dump["threads"]
                if t["thread_id"] == threading.main_thread().ident
            ),
            [],
        )
        self._emit_alert(
            Alert(
                rule_id="TWM-HANG",
                severity=Severity.HIGH,
                step=step,
                rank=self.rank,
                message=(
                    f"rank {self.rank}: no step completed for {idle:.1f}s "
                    f"(timeout {timeout:.1f}s) after step {step}; all thread stacks dumped"
                ),
                evidence={
                    "idle_s": round(idle, 3),
                    "timeout_s": round(timeout, 3),
                    "main_thread_stack": main_stack[-8:],
                    "faulthandler_file": dump.get("faulthandler_file"),
                },
            )
        )
        if self.world_size > 1:
            self.report_lost_ranks(f"rank {self.rank} hung after step {step}")

    # ------------------------------------------------------------------ signals
    def _install_signals(self) -> None:
        early = _EARLY
        if early is not None and self._sigs <= early.sigs:
            self._early = early
        else:
            # Block first: the watchdog's own threads, created below, inherit the mask, so
            # only the sigwaitinfo thread can take these signals from the queue.
            _block(self._sigs)
            self._blocked_in = threading.get_ident()
        for sig in sorted(self._sigs):
            self._prev_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._py_handler)
        _ACTIVE.append(self)
        # Wake-up fd: CPython's C handler writes the signal number there from whatever thread
        # received it, so a signal that bypassed sigwaitinfo is still seen while the main
        # thread is blocked in a collective. Only taken when nobody else (asyncio) holds it.
        r, w = socket.socketpair()
        r.setblocking(True)
        w.setblocking(False)
        old = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        if old != -1:
            signal.set_wakeup_fd(old)
            r.close()
            w.close()
        else:
            self._wakeup_r, self._wakeup_w = r, w
            t = threading.Thread(target=self._wakeup_loop, name="trainwarden-sigwake", daemon=True)
            t.start()
            self._threads.append(t)
        if self._early is not None:
            with self._early.lock:
                self._early.consumer = self
                earlier, self._early.pending = self._early.pending, []
            for record in earlier:
                self.sink.emit("signal", {"rank": self.rank, "before_watchdog": True, **record})
            return
        t = threading.Thread(target=self._sigwait_loop, name="trainwarden-signals", daemon=True)
        t.start()
        self._threads.append(t)

    def _restore_signals(self) -> None:
        with contextlib.suppress(ValueError):
            _ACTIVE.remove(self)
        if self._early is not None:
            with self._early.lock:
                if self._early.consumer is self:
                    self._early.consumer = None
            self._early = None
        if self._blocked_in is not None and self._blocked_in == threading.get_ident():
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self._sigs)
            self._blocked_in = None
        if threading.current_thread() is threading.main_thread():
            for sig, prev in self._prev_handlers.items():
                if signal.getsignal(sig) == self._py_handler:
                    signal.signal(sig, prev)
            self._prev_handlers.clear()
            if self._wakeup_w is not None:
                signal.set_wakeup_fd(-1)
        if self._wakeup_w is not None:
            self._wakeup_w.close()
            self._wakeup_w = None
        if self._wakeup_r is not None:
            self._wakeup_r.close()
            self._wakeup_r = None

    def _sigwait_loop(self) -> None:
        while not self._stop.is_set():
            info = signal.sigtimedwait(self._sigs, 0.25)
            if info is None:
                continue
            self._on_siginfo(signal.Signals(info.si_signo), info.si_pid, info.si_uid, info.si_code)

    def _on_siginfo(self, sig: signal.Signals, pid: int, uid: int, code: int) -> None:
        try:
            self._record_signal(sig, sender_pid=pid, sender_uid=uid, code=code)
        except Exception as exc:  # fail-open: the signal must still take effect below
            self._internal(exc, f"recording {sig.name}")
        finally:
            self._dispatch(sig, from_sigwait=True)

    def _wakeup_loop(self) -> None:
        sock = self._wakeup_r
        if sock is None:
            return
        sock.settimeout(0.25)
        while not self._stop.is_set():
            try:
                data = sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for signo in data:
                try:
                    sig = signal.Signals(signo)
                except ValueError:
                    continue
                with self._lock:
                    if self._expect_wakeup.get(sig, 0) > 0:
                        # Our own interrupt_main() re-dispatch; already recorded.
                        self._expect_wakeup[sig] -= 1
                        continue
                if sig not in self._sigs:
                    continue
                try:
                    self._record_signal(sig, sender_pid=None, sender_uid=None, code=None)
                except Exception as exc:  # fail-open: the signal must still take effect below
                    self._internal(exc, f"recording {sig.name}")
                finally:
                    self._dispatch(sig, from_sigwait=False)

    def _record_signal(
        self,
        sig: signal.Signals,
        *,
        sender_pid: int | None,
        sender_uid: int | None,
        code: int | None,
    ) -> None:
        record: dict[str, Any] = {
            "rank": self.rank,
            "signal": sig.name,
            "signo": int(sig),
            "sender_pid": sender_pid,
            "sender_uid": sender_uid,
            "si_code": code,
            "sender_cmdline": _describe_pid(sender_pid) if sender_pid else None,
            "receiver_pid": os.getpid(),
            "step": self._step,
        }
        if sender_pid is None:
            record["note"] = (
                "delivered to a thread that existed before the watchdog started; sender unknown"
            )
        self.signals_seen.append(record)
        self.sink.emit("signal", record)
        foreign = sender_uid is not None and sender_uid not in (0, os.getuid())
        who = (
            f"pid {sender_pid} (uid {sender_uid})"
            + (f" [{record['sender_cmdline']}]" if record["sender_cmdline"] else "")
            if sender_pid is not None
            else "an unknown sender"
        )
        self._emit_alert(
            Alert(
                rule_id="TWM-SIGNAL",
                severity=Severity.HIGH if foreign else Severity.MEDIUM,
                step=self._step,
                rank=self.rank,
                message=f"rank {self.rank} received {sig.name} from {who}"
                + (" -- a different user signalled this job" if foreign else ""),
                evidence=record,
            )
        )
        if self.world_size > 1 and sig in {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}:
            # torchrun's agent terminates the survivors when a peer dies: the last chance to say
            # which peer was lost first.
            self.report_lost_ranks(f"rank {self.rank} received {sig.name}")

    def _dispatch(self, sig: signal.Signals, *, from_sigwait: bool) -> None:
        """Give the signal the behaviour it would have had without the watchdog."""
        current = signal.getsignal(sig)
        target = (
            self._prev_handlers.get(sig, signal.SIG_DFL) if current == self._py_handler else current
        )
        if callable(target):
            if from_sigwait:
                with self._lock:
                    self._pending_redispatch.add(sig)
                    if self._wakeup_w is not None:
                        self._expect_wakeup[sig] = self._expect_wakeup.get(sig, 0) + 1
                _thread.interrupt_main(sig)
            # Otherwise the OS signal already queued the Python handler in the main thread.
            return
        if target == signal.SIG_IGN or sig.name in _SIG_DFL_IGNORED:
            return
        self._default_action(sig)

    def _default_action(self, sig: signal.Signals) -> None:
        """Terminate the process the way the default disposition would (killed by ``sig``)."""
        # The process is about to die either way; a failing sink must not keep it alive.
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            self.sink.emit("watchdog_note", {"rank": self.rank, "message": f"{sig.name}: exiting"})
        _default_action(sig)

    def _py_handler(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        with self._lock:
            redispatch = sig in self._pending_redispatch
            self._pending_redispatch.discard(sig)
        prev = self._prev_handlers.get(sig, signal.SIG_DFL)
        # Without re-dispatch, the OS delivered the signal to a thread that does not block it;
        # the wake-up thread (when present) has already recorded it and done any default action.
        seen_by_wakeup = not redispatch and self._wakeup_w is not None
        if not redispatch and not seen_by_wakeup:
            self._record_signal(sig, sender_pid=None, sender_uid=None, code=None)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL and sig.name not in _SIG_DFL_IGNORED and not seen_by_wakeup:
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            signal.raise_signal(sig)
