"""The training monitor: ``watch(model, optimizer)`` attaches every per-step check with hooks.

The monitor never changes the training loop: it uses the optimizer's step pre/post hooks and the
model's forward pre/post hooks. Anything that goes wrong inside the monitor becomes a
``TWM-INTERNAL`` alert (fail-open); with ``fail_closed=True`` an alert at or above
``fail_severity`` raises :class:`TamperingDetected` at the next step boundary.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from trainwarden._internal.sink import EventSink, JsonlSink, NullSink
from trainwarden.findings import Severity
from trainwarden.monitor._check import Check
from trainwarden.monitor._checks import CHECKS
from trainwarden.monitor._checks.code import StepIdentity
from trainwarden.monitor._checks.hyper import Hyperparameters
from trainwarden.monitor._config import MonitorConfig
from trainwarden.monitor._fingerprint import Fingerprinter, meta_of, state_digest
from trainwarden.monitor._hyperparams import group_values
from trainwarden.monitor._lifeline import Lifeline
from trainwarden.monitor._rules import RULES
from trainwarden.monitor._selfcheck import SelfCheck
from trainwarden.monitor._timing import PhaseClock
from trainwarden.monitor._types import Alert, MonitorError, TamperingDetected
from trainwarden.monitor._update_check import reference_kind

__all__ = ["DEFAULT_DIR_ENV", "Monitor", "watch"]

DEFAULT_DIR_ENV = "TRAINWARDEN_MONITOR_DIR"
_log = logging.getLogger("trainwarden.monitor")
_log.addHandler(logging.NullHandler())  # a library never prints; callers configure logging

Rows = list[tuple[int, str]]
# This rank's own checks saw its values change: tells the cross-rank vote who the culprit is.
_OWN_TAMPERING = frozenset(
    {
        "TWM-WEIGHT-EDIT",
        "TWM-WEIGHT-EDIT-PRESTEP",
        "TWM-WEIGHT-REPLACED",
        "TWM-OPTSTATE-EDIT",
        "TWM-UPDATE-MISMATCH",
        "TWM-UPDATE-SIGN",
        "TWM-STATE-MISMATCH",
    }
)


def _rank_info() -> tuple[int, int, bool]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), True
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), False


def _sink_path(sink: EventSink | str | os.PathLike[str] | None, rank: int) -> Path | None:
    """The JSONL file of a sink the monitor opens itself (None: the caller's sink object)."""
    if sink is None:
        return Path(os.environ.get(DEFAULT_DIR_ENV) or "trainwarden-monitor") / f"rank{rank}.jsonl"
    if isinstance(sink, (str, os.PathLike)):
        return Path(sink)
    return None


def _resolve_sink(
    sink: EventSink | str | os.PathLike[str] | None, rank: int
) -> tuple[EventSink, bool]:
    from trainwarden.ledger._client import with_ledger

    path = _sink_path(sink, rank)
    if path is not None:
        return with_ledger(JsonlSink(path)) or NullSink(), True
    if not isinstance(sink, EventSink):
        raise MonitorError(
            f"sink must be an EventSink, a path or None, got {type(sink).__name__}",
            hint="pass a path to a .jsonl file, or an object with emit(kind, record) and close()",
        )
    return sink, False


_KEYS_TAKEN = [0]


def _shared_key(distributed: bool, rank: int, world_size: int) -> int:
    """The secret key: 8 bytes of os.urandom, the same on every rank of a multi-rank job.

    Replicas compare keyed hashes, so they need one key: rank 0 draws it and shares it through
    the default process group's store (the n-th ``watch()`` of each rank uses the n-th key).
    """
    own = int.from_bytes(os.urandom(8), "little")
    index = _KEYS_TAKEN[0]
    _KEYS_TAKEN[0] += 1
    if not (distributed and world_size > 1):
        return own
    c10d = importlib.import_module("torch.distributed.distributed_c10d")
    store = c10d._get_default_store()
    name = f"trainwarden/monitor/key/{index}"
    if rank == 0:
        store.set(name, str(own))
        return own
    return int(bytes(store.get(name)).decode("ascii"))


def _first_tensor(args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor | None:
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor):
            return v
    return None


def _loss_of(output: Any) -> torch.Tensor | None:
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return loss
    return None


class Monitor:
    """Per-step integrity checks on one model/optimizer pair; create it with :func:`watch`.

    ``alerts`` lists every :class:`Alert` raised so far, ``records`` the most recent per-step
    records, ``step`` the number of optimizer steps completed since ``watch()``, ``checks`` the
    running checks in order and ``check_seconds`` the host time spent in each (by check name;
    ``"core"`` is the monitor's own bookkeeping and the device-to-host transfer).
    """

    #: The replay-audit recorder ``watch(..., audit_every=K)`` attached (``None`` when off).
    audit: Any = None

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        max_grad_norm: float | None = None,
        sink: EventSink | str | os.PathLike[str] | None = None,
        fail_closed: bool = False,
        config: MonitorConfig | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise MonitorError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise MonitorError(
                f"watch() needs a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise MonitorError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        self.config = config or MonitorConfig()
        self.model = model
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.fail_closed = fail_closed
        self.rank, self.world_size, self.distributed = _rank_info()
        path = _sink_path(sink, self.rank)
        self.sink, self._own_sink = _resolve_sink(sink, self.rank)
        rank = self.rank
        # A sink the monitor opened is closed by close(); the lifeline reopens it to report.
        self._reopen = (lambda: _resolve_sink(path, rank)[0]) if path is not None else None
        self._lifeline: Lifeline | None = None
        #: How the run ended: set by ``__exit__`` before it calls close().
        self._ending = "close()"
        self.alerts: list[Alert] = []
        self.records: deque[dict[str, Any]] = deque(maxlen=self.config.keep_records)
        self.step = 0
        if scheduler is None:
            self.schedulers: list[Any] = []
        elif isinstance(scheduler, (list, tuple)):
            self.schedulers = list(scheduler)
        else:
            self.schedulers = [scheduler]

        self._lock = threading.RLock()
        self._unraised: list[Alert] = []
        self._closed = False
        self._notes: set[str] = set()
        key = self.config.seed
        #: The n-th monitor of this process (names its keys in the process group's store).
        self.instance = _KEYS_TAKEN[0]
        if key is None:
            key = _shared_key(self.distributed, self.rank, self.world_size)
        # Not for cryptography: an unpredictable, per-run choice of what is checked.
        self.rng = random.Random(key)  # noqa: S311
        self._fp = Fingerprinter(self.rng.getrandbits(63))

        self._param_names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        self.opt_params: list[tuple[str, torch.nn.Parameter, int]] = []
        for gi, group in enumerate(optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                name = self._param_names.get(id(p), f"param_groups[{gi}][{pi}]")
                self.opt_params.append((name, p, gi))
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        cfg = self.config
        # The run-queue wait is read only where a check uses it: the cross-rank slowdown check.
        runqueue = self.world_size > 1 and cfg.cross_rank and cfg.timing and cfg.rank_slowdown
        self.clock = PhaseClock(device, runqueue=runqueue)

        # State of the step cycle, shared with the checks.
        #: Set by the first optimizer step: reseeding from then on is an alert.
        self.started = False
        #: True from the end of a step until the next forward of the watched model.
        self.awaiting_forward = True
        #: Whether this step boundary is checked (``check_every``).
        self.step_checked = False
        #: This rank's own checks saw tampering since the last cross-rank exchange.
        self.suspect = False
        #: Values of the current step (loss, grad_norm, timing, rng, batch) for the checks.
        self.values: dict[str, Any] = {}
        #: Whether the current forward of the watched model runs with autograd enabled.
        self.forward_grad = True
        self._depth = 0
        self._pending: list[tuple[torch.Tensor, Callable[[list[Any]], None]]] = []
        self._losses: list[torch.Tensor] = []
        self._batch: list[torch.Tensor] = []
        self.check_seconds: dict[str, float] = {"core": 0.0}
        self.checks: list[Check] = []
        self._started: tuple[Check, ...] = ()
        self._handles: list[Any] = []
        self._seq = 0
        #: The self-check's digest of the monitor's code, carried by every sink record.
        self.selfcheck_digest = ""
        self._selfcheck: SelfCheck | None = None
        #: Set by close(): the step, the caller and the keyed hash of every parameter then.
        self._closed_state: tuple[int, list[str], torch.Tensor] | None = None
        try:
            for cls in CHECKS:
                if cls.enabled(self.config):
                    self.checks.append(cls(self))
                    self.check_seconds[cls.name] = 0.0
        except BaseException:
            self.close()
            raise
        self.emit(
            "monitor_start",
            {
                "rank": self.rank,
                "world_size": self.world_size,
                "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
                "reference": reference_kind(optimizer),
                "parameters": len(self._param_names),
                "schedulers": [type(s).__name__ for s in self.schedulers],
                "max_grad_norm": max_grad_norm,
                "fail_closed": fail_closed,
                "hyperparameters": group_values(optimizer),
                "checks": {c.name: list(c.rules) for c in self.checks},
                "config": {k: str(v) for k, v in vars(self.config).items() if k != "seed"},
            },
        )
        try:
            self._handles = [
                model.register_forward_pre_hook(self._on_forward_pre, with_kwargs=True),
                model.register_forward_hook(self._on_forward_post, with_kwargs=True),
                optimizer.register_step_pre_hook(self._on_step_pre),
                optimizer.register_step_post_hook(self._on_step_post),
            ]
            # After the monitor's own step hook, so that it counts a step once it was observed.
            self._lifeline = Lifeline(self, self._reopen)
            self._selfcheck = SelfCheck(
                self,
                [
                    (
                        "forward pre",
                        model._forward_pre_hooks,
                        self._handles[0].id,
                        self._on_forward_pre,
                    ),
                    ("forward", model._forward_hooks, self._handles[1].id, self._on_forward_post),
                    (
                        "step pre",
                        optimizer._optimizer_step_pre_hooks,
                        self._handles[2].id,
                        self._on_step_pre,
                    ),
                    (
                        "step post",
                        optimizer._optimizer_step_post_hooks,
                        self._handles[3].id,
                        self._on_step_post,
                    ),
                ],
            )
            self.selfcheck_digest = self._selfcheck.digest
            self.emit("selfcheck", {"rank": self.rank, "step": 0, "digest": self.selfcheck_digest})
            for check in self.checks:
                check.start()
                # What close() undoes, whatever the list holds by then: a list cleared or
                # rebound by the job must not leave the checks' wrappers installed.
                self._started += (check,)
            if self.config.selfcheck_interval_s > 0:
                self._selfcheck.start(self.config.selfcheck_interval_s)
        except BaseException:
            if self._lifeline is not None:
                self._lifeline.stop()  # watch() failed: nothing is watched, nothing to report
            self.close()
            raise

    # ------------------------------------------------------------------ public API

    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Report this micro-batch's loss (for NaN/Inf and spike checks). Never syncs a GPU."""
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach().reshape(-1)[:1].to(torch.float64))
        else:
            self._losses.append(torch.tensor([float(loss)], dtype=torch.float64))

    def add_scheduler(self, scheduler: Any) -> None:
        """Declare an LR scheduler created after ``watch()`` (e.g. by a trainer framework).

        The values the scheduler set at construction (``initial_lr``, the first lr) are accepted
        as the new baseline and recorded in the sink.
        """
        self.schedulers.append(scheduler)
        hyper = self._hyper()
        if hyper is not None:
            hyper.ledger.add_scheduler(scheduler)
        self.emit(
            "hparam_baseline",
            {
                "step": self.step,
                "rank": self.rank,
                "scheduler": type(scheduler).__name__,
                "hyperparameters": hyper.ledger.last if hyper is not None else [],
            },
        )

    def checkpoint_digest(self) -> str:
        """sha256 of the model's state_dict and the optimizer's state tensors (host copy: slow).

        Also written to the sink as a ``checkpoint`` record, so a checkpoint saved now can be
        tied to this point of the run.
        """
        with torch.no_grad():
            named = list(self.model.state_dict().items()) + list(self.state_tensors())
            digest = state_digest(named)
        self.emit("checkpoint", {"step": self.step, "rank": self.rank, "sha256": digest})
        return digest

    def check_named(self, name: str) -> Check | None:
        """The running check called ``name``, or ``None`` when it is disabled."""
        return next((c for c in self.checks if c.name == name), None)

    def close(self) -> None:
        """Remove every hook and wrapper, stop the watchdog, close a sink the monitor opened."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._selfcheck is not None:
            # A last comparison while the hooks are still ours: hooks removed or code patched
            # since the last check are reported however quickly the run ended (the background
            # thread may not have woken since).
            try:
                self.selfcheck_digest = self._selfcheck.run("self-check at close")
            except Exception as e:  # fail-open: closing must not raise into the caller
                self.internal(e, "selfcheck.close")
            self._selfcheck.stop()
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._lifeline is not None:
            self._lifeline.on_close(self._ending, self._own_sink)
        started = self._started
        for check in reversed([*started, *(c for c in self.checks if c not in started)]):
            try:
                check.close()
            except Exception as e:  # fail-open: closing must not raise into the caller
                self.internal(e, f"{check.name}.close")
        # Who closed the monitor: a close() from somewhere other than the end of training is
        # itself evidence (the sink's consumer sees the stack).
        caller = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_stack()[-6:-1]]
        try:
            with torch.no_grad():
                hashes = self._fp.compute([p.detach() for _, p, _ in self.opt_params])
            self._closed_state = (self.step, caller, hashes)
        except Exception as e:  # fail-open: closing must not raise into the caller
            self.internal(e, "close.fingerprint")
        self.emit(
            "monitor_stop",
            {"rank": self.rank, "step": self.step, "alerts": len(self.alerts), "caller": caller},
        )
        if self.audit is not None:
            self.audit.close()
        if self._own_sink:
            self.sink.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            # Someone closed the monitor inside the block that owns it: fine if training had
            # ended, tampering if the weights moved on without the monitor.
            self._closed_while_training()
            return
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            # Training ended with an exception (with gloo, a dead peer makes the next collective
            # raise): let the checks record it before close() stops the watchdog.
            for check in self.checks:
                on_crash = getattr(check, "on_crash", None)
                if callable(on_crash):
                    try:
                        on_crash(exc)
                    except Exception as e:  # fail-open: the caller's exception must propagate
                        self.internal(e, f"{check.name}.on_crash")
        self._ending = "with"
        self.close()

    def _closed_while_training(self) -> None:
        state = self._closed_state
        if state is None or self._selfcheck is None:
            return
        step, caller, before = state
        try:
            with torch.no_grad():
                now = self._fp.compute([p.detach() for _, p, _ in self.opt_params])
            changed = int((now != before.to(now.device)).sum())
        except Exception as e:  # fail-open: the end of the block must not raise
            self.internal(e, "exit.fingerprint")
            return
        if changed == 0:
            return
        alert = Alert(
            "TWM-MONITOR-TAMPERED",
            Severity.CRITICAL,
            step,
            self.rank,
            f"the monitor was closed at step {step} while training went on: {changed} "
            f"parameter tensor(s) changed after close() (called from {caller[-1]})",
            {"closed_at_step": step, "changed_tensors": changed, "caller": caller},
        )
        with self._lock:
            self.alerts.append(alert)
        # Through the emit captured at watch() (the monitor's own alert path may be patched).
        with contextlib.suppress(Exception):
            self._selfcheck.report(alert)

    # ------------------------------------------------------------------ services for checks

    def emit(self, kind: str, record: dict[str, Any]) -> None:
        """Write a record to the sink (a failing sink becomes a TWM-INTERNAL alert)."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        record = {**record, "seq": seq, "selfcheck": self.selfcheck_digest}
        try:
            self.sink.emit(kind, record)
        except Exception as e:  # a broken sink must not break training; keep the alert in memory
            if kind != "alert":
                self.alert("TWM-INTERNAL", f"sink failed on a {kind!r} record: {e!r}", {})

    def alert(
        self,
        rule_id: str,
        message: str,
        evidence: dict[str, Any],
        severity: Severity | None = None,
    ) -> Alert:
        """Raise an alert of ``rule_id`` at the current step (default severity from RULES)."""
        sev = severity if severity is not None else RULES[rule_id].severity
        alert = Alert(rule_id, sev, self.step, self.rank, message, evidence)
        with self._lock:
            self.alerts.append(alert)
            if sev >= self.config.fail_severity:
                self._unraised.append(alert)
            if rule_id in _OWN_TAMPERING:
                self.suspect = True
        self.emit("alert", alert.to_dict())
        if sev >= Severity.MEDIUM:
            _log.warning("%s [%s] step %d rank %d: %s", rule_id, sev, self.step, self.rank, message)
        return alert

    def emit_external(self, alert: Alert) -> None:
        """Entry point for alerts made by the watchdog thread and the rank exchange."""
        with self._lock:
            self.alerts.append(alert)
            if alert.severity >= self.config.fail_severity:
                self._unraised.append(alert)
        self.emit("alert", alert.to_dict())

    def note(self, key: str, message: str) -> None:
        """A TWM-UNSUPPORTED alert, once per ``key``."""
        if key not in self._notes:
            self._notes.add(key)
            self.alert("TWM-UNSUPPORTED", message, {"check": key})

    def internal(self, error: BaseException, where: str) -> None:
        """Turn a monitor failure into a TWM-INTERNAL alert (fail-open)."""
        tb = traceback.format_exception(type(error), error, error.__traceback__)
        self.alert(
            "TWM-INTERNAL",
            f"monitor error in {where}: {error!r}; the check was skipped, training continues",
            {"where": where, "traceback": "".join(tb[-6:])},
        )

    def defer(self, value: torch.Tensor, callback: Callable[[list[Any]], None]) -> None:
        """Run ``callback(values)`` now on CPU, or at the step's single host transfer on GPU.

        Floating values arrive as Python floats, integer values (hashes) as exact Python ints.
        """
        if value.device.type == "cpu":
            callback(value.reshape(-1).tolist())
        else:
            self._pending.append((value, callback))

    def weights(self, *, buffers: bool) -> list[tuple[str, torch.Tensor]]:
        """The watched model's parameters (and buffers) by name, as they are now."""
        out: list[tuple[str, torch.Tensor]] = list(self.model.named_parameters())
        if buffers:
            out += [(n, b) for n, b in self.model.named_buffers() if b is not None]
        return out

    def state_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The optimizer's state tensors, named ``<param>:<key>``."""
        for name, p, _ in self.opt_params:
            st = self.optimizer.state.get(p)
            if not st:
                continue
            for key in sorted(st):
                val = st[key]
                if isinstance(val, torch.Tensor):
                    yield f"{name}:{key}", val

    def fingerprint(
        self,
        named: list[tuple[str, torch.Tensor]],
        callback: Callable[[list[str], list[int], Rows], None],
    ) -> None:
        """Hash ``named`` tensors; ``callback(names, ids, rows)`` once the values arrive.

        ``rows[i]`` is ``(hash, "dtype(shape)")`` of the i-th tensor: the keyed universal hash
        of its full bit pattern (see :mod:`trainwarden.monitor._fingerprint`) and its metadata.
        """
        names = [n for n, _ in named]
        ids = [id(t) for _, t in named]
        metas = [meta_of(t) for _, t in named]
        by_device: dict[torch.device, list[int]] = {}
        for i, (_, t) in enumerate(named):
            by_device.setdefault(t.device, []).append(i)
        hashes: list[int] = [0] * len(named)
        remaining = [len(by_device)]

        def make_cb(indices: list[int]) -> Callable[[list[Any]], None]:
            def cb(values: list[Any]) -> None:
                for j, i in enumerate(indices):
                    hashes[i] = int(values[j])
                remaining[0] -= 1
                if remaining[0] == 0:
                    callback(names, ids, list(zip(hashes, metas, strict=True)))

            return cb

        if not by_device:
            callback(names, ids, [])
        for indices in by_device.values():
            fp = self._fp.compute([named[i][1] for i in indices])
            self.defer(fp, make_cb(indices))

    # ------------------------------------------------------------------ running the checks

    def _hyper(self) -> Hyperparameters | None:
        check = self.check_named(Hyperparameters.name)
        return check if isinstance(check, Hyperparameters) else None

    def _boundary(self) -> None:
        if not self.fail_closed:
            return
        with self._lock:
            pending, self._unraised = self._unraised, []
        if pending:
            raise TamperingDetected(pending)

    def _run(self, hook: str, call: Callable[[Check], None]) -> None:
        """Run one hook of every check, each timed and fail-open on its own."""
        seconds = self.check_seconds
        for check in self.checks:
            t0 = time.perf_counter()
            try:
                with torch.no_grad():
                    call(check)
            except TamperingDetected:
                raise
            except Exception as e:  # fail-open by design: every bug becomes an alert
                self.internal(e, f"{check.name}.{hook}")
            seconds[check.name] = seconds.get(check.name, 0.0) + time.perf_counter() - t0

    def _core(self, where: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                fn()
        except TamperingDetected:
            raise
        except Exception as e:  # fail-open by design: every bug becomes an alert
            self.internal(e, where)
        self.check_seconds["core"] += time.perf_counter() - t0

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        # One transfer for everything: float values travel as float64 bits, integer values as
        # int64, both viewed as int64 so that no value is rounded on the way.
        device = pending[0][0].device
        exact = [v.is_floating_point() is False for v, _ in pending]
        flat = [
            (v.reshape(-1).to(torch.float64) if not ex else v.reshape(-1).to(torch.int64))
            .to(device)
            .view(torch.int64)
            for (v, _), ex in zip(pending, exact, strict=True)
        ]
        host = torch.cat(flat).cpu()
        pos = 0
        for (_, cb), f, ex in zip(pending, flat, exact, strict=True):
            n = f.numel()
            part = host[pos : pos + n]
            cb(part.tolist() if ex else part.view(torch.float64).tolist())
            pos += n

    # ------------------------------------------------------------------ hooks

    def _on_forward_pre(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if self._depth > 0:
            return None
        self._boundary()
        first = self.awaiting_forward
        self.awaiting_forward = False
        # The checks run under no_grad: tell them whether this forward builds a graph.
        self.forward_grad = torch.is_grad_enabled()
        self._run("forward_pre", lambda c: c.forward_pre(first, args, kwargs))

        def batch_and_clock() -> None:
            batch = _first_tensor(args, kwargs)
            if batch is not None and batch.numel() > 0:
                self._batch.append(self._fp.compute([batch])[0])
            if self.config.timing:
                self.clock.mark("fwd_start")

        self._core("forward_pre", batch_and_clock)
        self._boundary()
        return None

    def _on_forward_post(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if self._depth > 0:
            return None

        def loss_and_clock() -> None:
            if self.config.timing:
                self.clock.mark("fwd_end")
            loss = _loss_of(output)
            if loss is not None:
                self.observe_loss(loss)

        self._core("forward_post", loss_and_clock)
        self._run("forward_post", lambda c: c.forward_post(output))
        return None

    def _on_step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._depth += 1
        if self._depth > 1:
            step_identity = self.check_named(StepIdentity.name)
            if isinstance(step_identity, StepIdentity):
                self._core("step_pre", step_identity.nested_step)
            return None
        try:
            self._boundary()
            closure = args[1] if len(args) > 1 else (kwargs or {}).get("closure")
            self.started = True
            if self.config.timing:
                self._core("step_pre", lambda: self.clock.mark("opt_start"))
            self._run("step_pre", lambda c: c.step_pre(closure is not None))
            self.awaiting_forward = False
            self._boundary()
        except TamperingDetected:
            self._depth -= 1  # the step will not run, so its post-hook will not either
            raise
        return None

    def _on_step_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth > 0:
            return None
        self.step += 1
        if self._lifeline is not None:
            self._lifeline.observed_step()
        self.step_checked = self.step % self.config.check_every == 0
        self._core("step_post", self._step_post_core)
        self._run("step_post", lambda c: c.step_post())
        self._core("flush", self._step_flush)
        self._core("selfcheck", self._step_selfcheck)
        self._run("step_end", lambda c: c.step_end())
        self._core("record", self._finish_record)
        self.values = {}
        self.awaiting_forward = True

    def _step_post_core(self) -> None:
        if self.config.timing:
            self.clock.mark("opt_end")
            self.clock.end_step(self.step)

    def _step_selfcheck(self) -> None:
        if self._selfcheck is not None:
            self.selfcheck_digest = self._selfcheck.run(f"self-check at step {self.step}")

    def _step_flush(self) -> None:
        losses, self._losses = self._losses, []
        if losses:
            dev = losses[0].device
            self.defer(
                torch.cat([x.to(dev) for x in losses]).mean(),
                lambda v: self.values.__setitem__("loss", v[0]),
            )
        batch, self._batch = self._batch, []
        if batch:
            dev = batch[0].device
            self.defer(
                torch.stack([b.to(dev) for b in batch]),
                lambda v: self.values.__setitem__("batch", v),
            )
        self._flush()

    def _finish_record(self) -> None:
        if not self.config.record_steps:
            return
        v = self.values
        rec: dict[str, Any] = {
            "step": self.step,
            "rank": self.rank,
            "lr": None,
            "loss": v.get("loss"),
            "grad_norm": v.get("grad_norm"),
            "timing": v.get("timing"),
            "rng": v.get("rng"),
            "batch": v.get("batch"),
        }
        for check in self.checks:
            check.record(rec)
        self.records.append(rec)
        self.emit("step", rec)


def watch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    max_grad_norm: float | None = None,
    sink: EventSink | str | os.PathLike[str] | None = None,
    fail_closed: bool = False,
    **config: Any,
) -> Monitor:
    """Attach the training monitor to a plain PyTorch loop and return the :class:`Monitor`.

    ``scheduler`` is the LR scheduler (or a list of them) driving ``optimizer``: without it any
    lr change is an alert. ``max_grad_norm`` is the clipping threshold the loop applies (checked
    at every step). ``sink`` is an EventSink, a path to a JSONL file, or None for
    ``$TRAINWARDEN_MONITOR_DIR/rank<N>.jsonl`` (default directory ``./trainwarden-monitor``).
    ``fail_closed=True`` raises :class:`TamperingDetected` at the next step boundary after an
    alert at or above ``fail_severity``. Other settings: see :class:`MonitorConfig`.
    Call it after loading weights and creating the scheduler, before the first step.
    """
    cfg = MonitorConfig.from_kwargs(config)
    monitor = Monitor(
        model,
        optimizer,
        scheduler=scheduler,
        max_grad_norm=max_grad_norm,
        sink=sink,
        fail_closed=fail_closed,
        config=cfg,
    )
    if cfg.audit_every is not None or cfg.audit_dir is not None:
        from trainwarden.audit._hooks import HookRecorder

        try:
            default_dir = Path(os.environ.get(DEFAULT_DIR_ENV) or "trainwarden-monitor") / "audit"
            audit = HookRecorder.from_config(
                model, optimizer, scheduler, max_grad_norm, cfg, default_dir
            )
        except BaseException:
            monitor.close()
            raise
        # The recorder's hooks are the monitor's own: the hook inventory does not report them.
        monitor._handles.extend(audit.handles)
        monitor.audit = audit
        audit.bind(monitor.emit)
    return monitor
