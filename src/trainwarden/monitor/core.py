"""The training monitor: ``watch(model, optimizer)`` attaches every per-step check with hooks.

The monitor never changes the training loop: it uses the optimizer's step pre/post hooks and the
model's forward pre/post hooks. Anything that goes wrong inside the monitor becomes a
``TWM-INTERNAL`` alert (fail-open); with ``fail_closed=True`` an alert at or above
``fail_severity`` raises :class:`TamperingDetected` at the next step boundary.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import random
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from trainwarden._internal.sink import EventSink, JsonlSink, NullSink
from trainwarden.findings import Severity
from trainwarden.monitor.config import MonitorConfig
from trainwarden.monitor.fingerprint import SMALL, Fingerprinter, state_digest
from trainwarden.monitor.hyperparams import HyperLedger
from trainwarden.monitor.numerics import RobustSeries
from trainwarden.monitor.rng import rng_fingerprints, seed_watch
from trainwarden.monitor.rules import RULES
from trainwarden.monitor.timing import PHASES, PhaseClock
from trainwarden.monitor.types import Alert, MonitorError, TamperingDetected
from trainwarden.monitor.update_check import UpdateChecker, reference_kind

__all__ = ["DEFAULT_DIR_ENV", "Monitor", "watch"]

DEFAULT_DIR_ENV = "TRAINWARDEN_MONITOR_DIR"
_log = logging.getLogger("trainwarden.monitor")
_log.addHandler(logging.NullHandler())  # a library never prints; callers configure logging

Rows = list[list[float]]
# A replaced callable whose location mentions one of these is CRITICAL (T2/T3: optimizer,
# seeding, data order, clipping).
_CRITICAL_CODE = ("optim", "seed", "dataloader", "sampler", "clip_grad")
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


def _resolve_sink(
    sink: EventSink | str | os.PathLike[str] | None, rank: int
) -> tuple[EventSink, bool]:
    from trainwarden.ledger.client import with_ledger

    if sink is None:
        base = Path(os.environ.get(DEFAULT_DIR_ENV) or "trainwarden-monitor")
        return with_ledger(JsonlSink(base / f"rank{rank}.jsonl")) or NullSink(), True
    if isinstance(sink, (str, os.PathLike)):
        return with_ledger(JsonlSink(sink)) or NullSink(), True
    if not isinstance(sink, EventSink):
        raise MonitorError(
            f"sink must be an EventSink, a path or None, got {type(sink).__name__}",
            hint="pass a path to a .jsonl file, or an object with emit(kind, record) and close()",
        )
    return sink, False


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


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
    records, ``step`` the number of optimizer steps completed since ``watch()``.
    """

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
        self.rank, self.world_size, self._distributed = _rank_info()
        self.sink, self._own_sink = _resolve_sink(sink, self.rank)
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
        self._suspect = False
        self._closed = False
        self._notes: set[str] = set()
        key = self.config.seed
        if key is None:
            key = int.from_bytes(os.urandom(8), "little")
        # Not for cryptography: an unpredictable, per-run choice of what is checked.
        self._rng = random.Random(key)  # noqa: S311
        self._fp = Fingerprinter(self._rng.getrandbits(63))

        self._param_names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        self._opt_params: list[tuple[str, torch.nn.Parameter, int]] = []
        for gi, group in enumerate(optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                name = self._param_names.get(id(p), f"param_groups[{gi}][{pi}]")
                self._opt_params.append((name, p, gi))
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        self._device_is_cpu = device.type == "cpu"

        # state of the step cycle
        self._started = False
        self._depth = 0
        self._awaiting_forward = True
        self._step_checked = False
        self._pending: list[tuple[torch.Tensor, Callable[[list[float]], None]]] = []
        self._post_w: tuple[list[str], list[int], Rows] | None = None
        # Filled (possibly later, at the GPU flush) with the first forward's fingerprints.
        self._fwd_w: dict[str, tuple[list[str], list[int], Rows]] | None = None
        self._nested_reported = False
        self._post_s: tuple[list[str], Rows] | None = None
        # Large tensors whose keyed dot product is computed at this boundary (None: all); the
        # same choice serves the post-step fingerprint and every comparison against it.
        self._mix_names: frozenset[str] | None = None
        self._mix_queue: list[str] = []
        self._versions: list[tuple[str, torch.Tensor, int]] = []
        self._snaps: list[Any] = []
        self._losses: list[torch.Tensor] = []
        self._batch: list[torch.Tensor] = []
        self._step_values: dict[str, Any] = {}
        self._rng_seen: dict[str, dict[str, int]] = {}
        self._rng_last: dict[str, str] = {}
        self._spikes: deque[int] = deque(maxlen=64)
        self._spike_runs: deque[int] = deque(maxlen=64)
        self._series = {
            name: RobustSeries(
                window=self.config.spike_window,
                warmup=self.config.spike_warmup,
                k=self.config.spike_k,
                min_ratio=1.5,
                min_abs=self.config.time_min_excess_s if name.startswith("time.") else 0.0,
            )
            for name in ["loss", "grad_norm", *(f"time.{p}" for p in PHASES)]
        }

        self._ledger = HyperLedger(optimizer, self.schedulers)
        self._hp_before: list[dict[str, Any]] = self._ledger.last
        self._clock = PhaseClock(device)
        kind = reference_kind(optimizer)
        self._checker: UpdateChecker | None = None
        if self.config.update_check:
            if kind is None:
                self._note(
                    "update-check",
                    f"update-rule check disabled: no reference implementation for "
                    f"{type(optimizer).__module__}.{type(optimizer).__qualname__} "
                    "(supported: SGD, Adam, AdamW)",
                )
            else:
                self._checker = UpdateChecker(
                    kind,
                    self._opt_params,
                    rng=self._rng,
                    fraction=self.config.update_check_fraction,
                    elems=self.config.update_check_elems,
                    rtol=self.config.update_rtol,
                )
        self._cls_step = type(optimizer).step
        self._inst_step = optimizer.__dict__.get("step")

        self._code_guard: Any = None
        self._code_seen: set[tuple[str, str]] = set()
        self._exchange: Any = None
        self._exchange_fields: list[str] | None = None
        self._watchdog: Any = None
        self._handles: list[Any] = []
        self._emit(
            "monitor_start",
            {
                "rank": self.rank,
                "world_size": self.world_size,
                "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
                "reference": kind,
                "parameters": len(self._param_names),
                "schedulers": [type(s).__name__ for s in self.schedulers],
                "max_grad_norm": max_grad_norm,
                "fail_closed": fail_closed,
                "hyperparameters": self._ledger.last,
                "config": {k: str(v) for k, v in vars(self.config).items() if k != "seed"},
            },
        )
        try:
            if self.config.code_guard:
                self._start_code_guard()
            if self.config.rng_watch:
                seed_watch.add(self._on_seed)
            self._handles = [
                model.register_forward_pre_hook(self._on_forward_pre, with_kwargs=True),
                model.register_forward_hook(self._on_forward_post, with_kwargs=True),
                optimizer.register_step_pre_hook(self._on_step_pre),
                optimizer.register_step_post_hook(self._on_step_post),
            ]
            self._start_watchdog()
        except BaseException:
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
        self._ledger.add_scheduler(scheduler)
        self._emit(
            "hparam_baseline",
            {
                "step": self.step,
                "rank": self.rank,
                "scheduler": type(scheduler).__name__,
                "hyperparameters": self._ledger.last,
            },
        )

    def checkpoint_digest(self) -> str:
        """sha256 of the model's state_dict and the optimizer's state tensors (host copy: slow).

        Also written to the sink as a ``checkpoint`` record, so a checkpoint saved now can be
        tied to this point of the run.
        """
        with torch.no_grad():
            named = list(self.model.state_dict().items()) + list(self._state_tensors())
            digest = state_digest(named)
        self._emit("checkpoint", {"step": self.step, "rank": self.rank, "sha256": digest})
        return digest

    def close(self) -> None:
        """Remove every hook and wrapper, stop the watchdog, close a sink the monitor opened."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for h in self._handles:
            h.remove()
        self._handles = []
        seed_watch.remove(self._on_seed)
        if self._watchdog is not None:
            try:
                self._watchdog.stop()
            except Exception as e:  # fail-open: stopping must not raise into the caller
                self._internal(e, "watchdog.stop")
        self._emit(
            "monitor_stop", {"rank": self.rank, "step": self.step, "alerts": len(self.alerts)}
        )
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
        self.close()

    # ------------------------------------------------------------------ alerts and sink

    def _emit(self, kind: str, record: dict[str, Any]) -> None:
        try:
            self.sink.emit(kind, record)
        except Exception as e:  # a broken sink must not break training; keep the alert in memory
            if kind != "alert":
                self._alert("TWM-INTERNAL", f"sink failed on a {kind!r} record: {e!r}", {})

    def _alert(
        self,
        rule_id: str,
        message: str,
        evidence: dict[str, Any],
        severity: Severity | None = None,
    ) -> Alert:
        sev = severity if severity is not None else RULES[rule_id].severity
        alert = Alert(rule_id, sev, self.step, self.rank, message, evidence)
        with self._lock:
            self.alerts.append(alert)
            if sev >= self.config.fail_severity:
                self._unraised.append(alert)
            if rule_id in _OWN_TAMPERING:
                self._suspect = True
        self._emit("alert", alert.to_dict())
        if sev >= Severity.MEDIUM:
            _log.warning("%s [%s] step %d rank %d: %s", rule_id, sev, self.step, self.rank, message)
        return alert

    def _emit_external(self, alert: Alert) -> None:
        """Entry point for alerts made by the watchdog thread and the rank exchange."""
        with self._lock:
            self.alerts.append(alert)
            if alert.severity >= self.config.fail_severity:
                self._unraised.append(alert)
        self._emit("alert", alert.to_dict())

    def _note(self, key: str, message: str) -> None:
        if key not in self._notes:
            self._notes.add(key)
            self._alert("TWM-UNSUPPORTED", message, {"check": key})

    def _internal(self, error: BaseException, where: str) -> None:
        tb = traceback.format_exception(type(error), error, error.__traceback__)
        self._alert(
            "TWM-INTERNAL",
            f"monitor error in {where}: {error!r}; the check was skipped, training continues",
            {"where": where, "traceback": "".join(tb[-6:])},
        )

    def _boundary(self) -> None:
        if not self.fail_closed:
            return
        with self._lock:
            pending, self._unraised = self._unraised, []
        if pending:
            raise TamperingDetected(pending)

    def _guarded(self, where: str, fn: Callable[[], None]) -> None:
        try:
            with torch.no_grad():
                fn()
        except TamperingDetected:
            raise
        except Exception as e:  # fail-open by design: every bug becomes an alert
            self._internal(e, where)

    # ------------------------------------------------------------------ deferred device values

    def _defer(self, value: torch.Tensor, callback: Callable[[list[float]], None]) -> None:
        """Run ``callback(values)`` now on CPU, or at the step's single host transfer on GPU."""
        if value.device.type == "cpu":
            callback(value.reshape(-1).tolist())
        else:
            self._pending.append((value, callback))

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flat = [v.reshape(-1).to(torch.float64) for v, _ in pending]
        host = torch.cat([f.to(pending[0][0].device) for f in flat]).cpu().tolist()
        pos = 0
        for (_, cb), f in zip(pending, flat, strict=True):
            n = f.numel()
            cb(host[pos : pos + n])
            pos += n

    # ------------------------------------------------------------------ tensors

    def _weights(self, *, buffers: bool) -> list[tuple[str, torch.Tensor]]:
        out: list[tuple[str, torch.Tensor]] = list(self.model.named_parameters())
        if buffers:
            out += [(n, b) for n, b in self.model.named_buffers() if b is not None]
        return out

    def _state_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p, _ in self._opt_params:
            st = self.optimizer.state.get(p)
            if not st:
                continue
            for key in sorted(st):
                val = st[key]
                if isinstance(val, torch.Tensor):
                    yield f"{name}:{key}", val

    def _fingerprint(
        self,
        named: list[tuple[str, torch.Tensor]],
        callback: Callable[[list[str], list[int], Rows], None],
        *,
        mix: bool = True,
    ) -> None:
        names = [n for n, _ in named]
        ids = [id(t) for _, t in named]
        by_device: dict[torch.device, list[int]] = {}
        for i, (_, t) in enumerate(named):
            by_device.setdefault(t.device, []).append(i)
        rows: Rows = [[0.0, 0.0] for _ in named]
        remaining = [len(by_device)]

        def make_cb(indices: list[int]) -> Callable[[list[float]], None]:
            def cb(values: list[float]) -> None:
                for j, i in enumerate(indices):
                    rows[i] = [values[2 * j], values[2 * j + 1]]
                remaining[0] -= 1
                if remaining[0] == 0:
                    callback(names, ids, rows)

            return cb

        if not by_device:
            callback(names, ids, rows)
        chosen = self._mix_names
        for indices in by_device.values():
            only = (
                None
                if chosen is None
                else {j for j, i in enumerate(indices) if named[i][0] in chosen}
            )
            fp = self._fp.compute([named[i][1] for i in indices], mix=mix, mix_only=only)
            self._defer(fp, make_cb(indices))

    def _choose_mix(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        frac = self.config.fingerprint_mix_fraction
        if frac >= 1.0:
            self._mix_names = None
            return
        large = sorted(n for n, t in weights if t.numel() > SMALL)
        k = min(len(large), max(1, math.ceil(frac * len(large))))
        # Rotate through the large tensors in a secret order, a fresh order each round, so
        # that every tensor is covered once per ceil(1/frac) checked boundaries.
        if len(self._mix_queue) < k:
            rest = [n for n in large if n not in self._mix_queue]
            self._rng.shuffle(rest)
            self._mix_queue += rest
        self._mix_names, self._mix_queue = frozenset(self._mix_queue[:k]), self._mix_queue[k:]

    def _compare(
        self,
        rule: str,
        what: str,
        ref: tuple[list[str], list[int], Rows],
        now: tuple[list[str], list[int], Rows],
        *,
        bits_only: bool = False,
    ) -> None:
        ref_names, ref_ids, ref_rows = ref
        names, ids, rows = now
        if ref_names != names or ref_ids != ids:
            before = dict(zip(ref_names, ref_ids, strict=True))
            after = dict(zip(names, ids, strict=True))
            changed = sorted(
                set(before) ^ set(after)
                | {n for n in before if n in after and before[n] != after[n]}
            )
            self._alert(
                "TWM-WEIGHT-REPLACED",
                f"{what}: tensors replaced, added or removed outside the optimizer: "
                + ", ".join(changed[:10]),
                {"tensors": changed[:50]},
            )
            ref_map = dict(zip(ref_names, ref_rows, strict=True))
            pairs = [(n, ref_map[n], r) for n, r in zip(names, rows, strict=True) if n in ref_map]
        else:
            pairs = list(zip(names, ref_rows, rows, strict=True))
        bad = [(n, a, b) for n, a, b in pairs if (a[0] != b[0] if bits_only else a != b)]
        if bad:
            self._alert(
                rule,
                f"{what}: {len(bad)} tensor(s) changed outside the optimizer: "
                + ", ".join(n for n, _, _ in bad[:10]),
                {
                    "tensors": [n for n, _, _ in bad[:50]],
                    "fingerprints": {n: {"expected": a, "actual": b} for n, a, b in bad[:10]},
                },
            )

    # ------------------------------------------------------------------ hooks

    def _on_forward_pre(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if self._depth > 0:
            return None
        self._boundary()
        self._guarded("forward_pre", lambda: self._forward_pre(args, kwargs))
        self._boundary()
        return None

    def _forward_pre(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._check_step_identity()
        first = self._awaiting_forward
        self._awaiting_forward = False
        if first and self._post_w is not None:
            ref = self._post_w
            holder: dict[str, tuple[list[str], list[int], Rows]] = {}
            self._fwd_w = holder

            def got(names: list[str], ids: list[int], rows: Rows) -> None:
                holder["rows"] = (names, ids, rows)
                self._compare(
                    "TWM-WEIGHT-EDIT",
                    "between optimizer step and next forward",
                    ref,
                    (names, ids, rows),
                )

            self._fingerprint(self._weights(buffers=True), got)
        elif (
            not first
            and self._post_w is not None
            and self._fwd_w is not None
            # Later micro-batches: parameters must not have been written since the step.
            and any(t._version != v for _, t, v in self._versions)
        ):
            ref = self._post_w
            params = self._weights(buffers=False)
            names = {n for n, _ in params}
            sub = self._subset(ref, names)
            self._fingerprint(
                params,
                lambda n, i, r: self._compare(
                    "TWM-WEIGHT-EDIT",
                    "between gradient-accumulation micro-batches",
                    sub,
                    (n, i, r),
                ),
            )
            self._versions = [(n, p, p._version) for n, p in params]
        if first and self.config.rng_watch:
            self._check_rng()
        batch = _first_tensor(args, kwargs)
        if batch is not None and batch.numel() > 0:
            self._batch.append(self._fp.compute([batch])[0])
        if self.config.timing:
            self._clock.mark("fwd_start")

    @staticmethod
    def _subset(
        ref: tuple[list[str], list[int], Rows], keep: set[str]
    ) -> tuple[list[str], list[int], Rows]:
        idx = [i for i, n in enumerate(ref[0]) if n in keep]
        return [ref[0][i] for i in idx], [ref[1][i] for i in idx], [ref[2][i] for i in idx]

    def _on_forward_post(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if self._depth > 0:
            return None

        def body() -> None:
            if self.config.timing:
                self._clock.mark("fwd_end")
            loss = _loss_of(output)
            if loss is not None:
                self.observe_loss(loss)

        self._guarded("forward_post", body)
        return None

    def _on_step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._depth += 1
        if self._depth > 1:
            self._guarded("step_pre", self._nested_step)
            return None
        try:
            self._boundary()
            closure = args[1] if len(args) > 1 else (kwargs or {}).get("closure")
            self._guarded("step_pre", lambda: self._step_pre(closure is not None))
            self._boundary()
        except TamperingDetected:
            self._depth -= 1  # the step will not run, so its post-hook will not either
            raise
        return None

    def _nested_step(self) -> None:
        if self._nested_reported:
            return
        self._nested_reported = True
        self._alert(
            "TWM-CODE-STEP",
            "optimizer.step() is wrapped: the hooked step ran inside another step() call; the "
            "wrapper can change gradients or state before the real update",
            {"class": f"{type(self.optimizer).__module__}.{type(self.optimizer).__qualname__}"},
        )

    def _step_pre(self, has_closure: bool = False) -> None:
        self._started = True
        if self._awaiting_forward and self._post_w is not None:
            # No forward of the watched model since the last step (a closure-based step, or a
            # loop that calls a different module): check the weights here instead.
            self._awaiting_forward = False
            ref_w = self._post_w
            self._fingerprint(
                self._weights(buffers=True),
                lambda n, i, r: self._compare(
                    "TWM-WEIGHT-EDIT", "between two optimizer steps", ref_w, (n, i, r)
                ),
            )
        if self.config.timing:
            self._clock.mark("opt_start")
        groups_before = len(self._ledger.last)
        now, changes = self._ledger.diff(allow_scheduler=True)
        if len(now) != groups_before:
            self._alert(
                "TWM-HP-GROUPS",
                f"optimizer param_groups changed from {groups_before} to {len(now)} groups "
                "during training",
                {"groups": [groups_before, len(now)], "hyperparameters": now},
            )
        self._record_hyper(changes, in_step=False)
        self._hp_before = now
        if self._post_s is not None:
            ref_s = self._post_s
            state = list(self._state_tensors())

            def got_state(names: list[str], ids: list[int], rows: Rows) -> None:
                self._compare_state(ref_s, (names, rows))

            self._fingerprint(state, got_state, mix=False)
        holder = self._fwd_w
        self._fwd_w = None
        if self.config.check_weights_prestep and holder is not None:
            params = self._weights(buffers=False)
            keep = {n for n, _ in params}

            def got_pre(names: list[str], ids: list[int], rows: Rows) -> None:
                # On GPU the forward's values arrive at the same flush, just before these.
                if "rows" in holder:
                    sub = self._subset(holder["rows"], keep)
                    self._compare(
                        "TWM-WEIGHT-EDIT-PRESTEP",
                        "between forward and optimizer step",
                        sub,
                        (names, ids, rows),
                        bits_only=True,
                    )

            self._fingerprint(params, got_pre, mix=False)
        if not has_closure:
            self._grad_norm()
        self._snaps = []
        if has_closure:
            # The closure computes the gradients inside step(): they are not known yet here.
            self._note(
                "update-check-closure",
                "update-rule check skipped for optimizer.step(closure): the gradients are "
                "computed inside step()",
            )
        elif self._checker is not None and self.step % self.config.check_every == 0:
            self._snaps = self._checker.snapshot(self.optimizer)

    def _compare_state(self, ref: tuple[list[str], Rows], now: tuple[list[str], Rows]) -> None:
        ref_map = dict(zip(ref[0], ref[1], strict=True))
        now_map = dict(zip(now[0], now[1], strict=True))
        changed = sorted(n for n in ref_map.keys() & now_map.keys() if ref_map[n] != now_map[n])
        missing = sorted(ref_map.keys() - now_map.keys())
        added = sorted(now_map.keys() - ref_map.keys())
        if changed or missing or added:
            parts = []
            if changed:
                parts.append(f"{len(changed)} tensor(s) edited: " + ", ".join(changed[:10]))
            if missing:
                parts.append("removed: " + ", ".join(missing[:10]))
            if added:
                parts.append("added: " + ", ".join(added[:10]))
            self._alert(
                "TWM-OPTSTATE-EDIT",
                "optimizer state changed between two steps: " + "; ".join(parts),
                {
                    "changed": changed[:50],
                    "removed": missing[:50],
                    "added": added[:50],
                    "fingerprints": {
                        n: {"expected": ref_map[n], "actual": now_map[n]} for n in changed[:10]
                    },
                },
            )

    def _grad_norm(self) -> None:
        grads = [
            p.grad for _, p, _ in self._opt_params if p.grad is not None and not p.grad.is_sparse
        ]
        if not grads:
            return
        per_device: dict[torch.device, list[torch.Tensor]] = {}
        for g in grads:
            per_device.setdefault(g.device, []).append(g)
        parts = [
            torch.stack(torch._foreach_norm(gs)).to(torch.float64).square().sum()
            for gs in per_device.values()
        ]
        dev = grads[0].device
        total = torch.stack([p.to(dev) for p in parts]).sum().sqrt()

        def got(values: list[float]) -> None:
            norm = values[0]
            self._step_values["grad_norm"] = norm
            limit = self.max_grad_norm
            if limit is not None and norm > limit * (1.0 + self.config.grad_norm_rtol) + 1e-6:
                self._alert(
                    "TWM-CLIP-MISSING",
                    f"gradient norm {norm:.6g} at optimizer.step() exceeds max_grad_norm={limit}",
                    {"grad_norm": norm, "max_grad_norm": limit},
                )

        self._defer(total, got)

    def _on_step_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth > 0:
            return None
        self._guarded("step_post", self._step_post)
        return None

    def _step_post(self) -> None:
        self.step += 1
        if self.config.timing:
            self._clock.mark("opt_end")
            self._clock.end_step(self.step)
        now, changes = self._ledger.diff(allow_scheduler=False)
        self._record_hyper(changes, in_step=True)
        # Fingerprint this boundary (step N end -> step N+1 start) or forget the last one, so
        # an unchecked boundary is never compared against stale values.
        self._step_checked = self.step % self.config.check_every == 0
        self._post_w = self._post_s = None
        self._versions = []
        if self._step_checked:
            weights = self._weights(buffers=True)
            self._choose_mix(weights)

            def got_w(names: list[str], ids: list[int], rows: Rows) -> None:
                self._post_w = (names, ids, rows)

            self._fingerprint(weights, got_w)
            self._versions = [(n, p, p._version) for n, p in self._weights(buffers=False)]

            def got_s(names: list[str], ids: list[int], rows: Rows) -> None:
                self._post_s = (names, rows)

            self._fingerprint(list(self._state_tensors()), got_s, mix=False)
        losses, self._losses = self._losses, []
        if losses:
            dev = losses[0].device
            self._defer(torch.cat([x.to(dev) for x in losses]).mean(), self._got_loss)
        batch, self._batch = self._batch, []
        if batch:
            dev = batch[0].device
            self._defer(
                torch.stack([b.to(dev) for b in batch]),
                lambda v: self._step_values.__setitem__("batch", v),
            )
        self._flush()
        if self._snaps and self._checker is not None:
            self._verify_update()
        self._snaps = []
        if "grad_norm" in self._step_values:
            self._numerics("grad_norm", self._step_values["grad_norm"])
        if self.config.timing:
            for step, phases in self._clock.resolve():
                self._timing(step, phases)
        every = self.config.code_guard_every
        if self._code_guard is not None and every and self.step % every == 0:
            self._run_code_guard()
        if self.config.rng_watch:
            self._check_seed_wrappers()
        self._cross_rank(now)
        self._finish_record(now)
        if self._watchdog is not None:
            self._watchdog.beat(self.step, float(self._step_values.get("step_s", 0.0)))
        self._step_values = {}
        self._awaiting_forward = True

    # ------------------------------------------------------------------ checks

    def _check_step_identity(self) -> None:
        cls_step = type(self.optimizer).step
        inst_step = self.optimizer.__dict__.get("step")
        if cls_step is not self._cls_step:
            self._cls_step = cls_step
            self._alert(
                "TWM-CODE-STEP",
                f"{type(self.optimizer).__qualname__}.step was replaced after watch(): "
                f"now {_qualname(cls_step)}",
                {"new": repr(cls_step)},
            )
        if inst_step is not self._inst_step:
            self._inst_step = inst_step
            # An LR scheduler created after watch() wraps optimizer.step to count calls; that
            # wrapper (marked by torch) around the class's own step is legitimate.
            if getattr(inst_step, "_wrapped_by_lr_sched", False) and (
                getattr(inst_step, "__wrapped__", None) is cls_step
            ):
                return
            self._alert(
                "TWM-CODE-STEP",
                "optimizer.step was replaced on the optimizer instance after watch(): "
                f"{_qualname(inst_step)}",
                {"new": repr(inst_step)},
            )

    def _record_hyper(self, changes: list[Any], *, in_step: bool) -> None:
        for c in changes:
            self._emit(
                "hparam",
                {
                    "step": self.step,
                    "rank": self.rank,
                    "group": c.group,
                    "key": c.key,
                    "old": c.old,
                    "new": c.new,
                    "explained": c.explained and not in_step,
                    "where": "inside step()" if in_step else "between steps",
                },
            )
            if in_step:
                self._alert(
                    "TWM-HP-INSTEP",
                    f"param_groups[{c.group}][{c.key!r}] changed inside optimizer.step(): "
                    f"{c.old!r} -> {c.new!r}",
                    {"group": c.group, "key": c.key, "old": c.old, "new": c.new},
                )
            elif not c.explained:
                self._alert(
                    "TWM-HP-CHANGE",
                    f"param_groups[{c.group}][{c.key!r}] changed {c.old!r} -> {c.new!r} and no "
                    f"scheduler explains it ({c.reason})",
                    {
                        "group": c.group,
                        "key": c.key,
                        "old": c.old,
                        "new": c.new,
                        "reason": c.reason,
                    },
                )

    def _verify_update(self) -> None:
        checker = self._checker
        if checker is None:
            return
        for mm in checker.verify(self.optimizer, self._snaps):
            if mm.what == "update":
                rule = "TWM-UPDATE-SIGN" if mm.sign_flip else "TWM-UPDATE-MISMATCH"
                msg = (
                    f"update of {mm.name} differs from the reference {checker.kind} update"
                    + (" and points the opposite way (sign flip)" if mm.sign_flip else "")
                    + f": max error {mm.max_error:.3g} for an update of size {mm.scale:.3g}"
                )
            else:
                rule = "TWM-STATE-MISMATCH"
                msg = (
                    f"optimizer state {mm.what!r} of {mm.name} written by step() differs from the "
                    f"reference {checker.kind}: max error {mm.max_error:.3g}"
                )
            self._alert(
                rule,
                msg,
                {
                    "param": mm.name,
                    "what": mm.what,
                    "indices": mm.indices,
                    "before": mm.before,
                    "expected": mm.expected,
                    "actual": mm.actual,
                    "hyperparameters": mm.hyper,
                    "reference": checker.kind,
                },
            )

    def _got_loss(self, values: list[float]) -> None:
        self._step_values["loss"] = values[0]
        self._numerics("loss", values[0])

    def _numerics(self, name: str, value: float) -> None:
        if not self.config.numerics:
            return
        if value != value or value in (float("inf"), float("-inf")):
            self._alert(
                "TWM-NUM-NONFINITE",
                f"{name} is {value} at step {self.step}",
                {"metric": name, "value": str(value)},
            )
            return
        spike = self._series[name].add(value)
        if spike is not None:
            self._alert(
                "TWM-NUM-SPIKE",
                f"{name} {value:.4g} is {spike.score:.1f} MADs above its recent median "
                f"{spike.median:.4g}",
                {
                    "metric": name,
                    "value": value,
                    "median": spike.median,
                    "mad": spike.mad,
                    "recent": list(spike.window),
                },
            )

    def _timing(self, step: int, phases: dict[str, float]) -> None:
        self._step_values.setdefault("timing", {})
        if step == self.step:
            self._step_values["timing"] = phases
            self._step_values["step_s"] = phases.get("step", 0.0)
        else:
            self._emit("timing", {"step": step, "rank": self.rank, **phases})
        for phase, seconds in phases.items():
            spike = self._series[f"time.{phase}"].add(seconds)
            if spike is None:
                continue
            self._alert(
                "TWM-TIME-SPIKE",
                f"{phase} took {seconds:.3f}s at step {step}; recent median {spike.median:.3f}s",
                {
                    "phase": phase,
                    "seconds": seconds,
                    "median": spike.median,
                    "recent": list(spike.window),
                    "step": step,
                },
            )
            if self._spikes and self._spikes[-1] == step:
                continue  # one step, several slow phases: one event
            # A node-wide stall slows a run of consecutive steps: count runs, not steps.
            if not self._spikes or self._spikes[-1] < step - 1:
                self._spike_runs.append(step)
            self._spikes.append(step)
            recent = [s for s in self._spike_runs if s > step - 100]
            if len(recent) >= 4 and step == self._spike_runs[-1] and len(recent) % 4 == 0:
                self._alert(
                    "TWM-TIME-REPEATED",
                    f"{len(recent)} separate timing spikes within the last 100 steps (injected "
                    "sleeps or a straggling node)",
                    {"steps": recent},
                )

    def _check_rng(self) -> None:
        fps = rng_fingerprints()
        self._step_values["rng"] = fps
        for gen, h in fps.items():
            seen = self._rng_seen.setdefault(gen, {})
            last = self._rng_last.get(gen)
            if h != last and h in seen:
                self._alert(
                    "TWM-RNG-REWIND",
                    f"the global {gen} RNG state at step {self.step} equals its state at step "
                    f"{seen[h]}: it was reset or reseeded",
                    {"generator": gen, "state_hash": h, "first_seen_step": seen[h]},
                )
            seen.setdefault(h, self.step)
            if len(seen) > 4096:
                seen.pop(next(iter(seen)))
            self._rng_last[gen] = h

    def _on_seed(self, target: str, args: tuple[Any, ...], stack: list[str]) -> None:
        shown = [repr(a)[:80] for a in args]
        record = {
            "step": self.step,
            "rank": self.rank,
            "function": target,
            "args": shown,
            "stack": stack,
            "training_started": self._started,
        }
        self._emit("seed", record)
        if self._started:
            self._alert(
                "TWM-RNG-RESEED",
                f"{target}({', '.join(shown)}) called after training started "
                f"(step {self.step}); caller: {stack[-1] if stack else '?'}",
                {"function": target, "args": shown, "stack": stack},
            )

    def _check_seed_wrappers(self) -> None:
        for name in seed_watch.tampered():
            self._note(
                f"seed-wrapper:{name}",
                f"{name} was replaced while the monitor watched it; reseeding through it is no "
                "longer seen (the code guard reports who replaced it)",
            )

    # ------------------------------------------------------------------ other capabilities

    def _start_code_guard(self) -> None:
        try:
            mod = importlib.import_module("trainwarden.attest.code_guard")
        except ImportError:
            self._note("code-guard", "code guard unavailable (trainwarden.attest not installed)")
            return
        try:
            self._code_guard = mod.CodeGuard()
        except Exception as e:  # fail-open: the guard is optional
            self._internal(e, "CodeGuard()")
            return
        self._run_code_guard()

    def _run_code_guard(self) -> None:
        try:
            findings = self._code_guard.check()
        except Exception as e:  # fail-open
            self._internal(e, "CodeGuard.check")
            return
        for f in findings:
            # The guard reports a persisting problem on every check: alert once per problem.
            key = (f.rule_id, f.location)
            if key in self._code_seen:
                continue
            self._code_seen.add(key)
            text = f"{f.location} {f.message}".lower()
            replaced = f.rule_id in ("TWA-CODE-001", "TWA-CODE-002", "TWA-CODE-003")
            sensitive = any(w in text for w in _CRITICAL_CODE)
            self._alert(
                "TWM-CODE",
                f"code guard: {f.message}",
                {"finding": f.to_dict()},
                severity=Severity.CRITICAL if replaced and sensitive else f.severity,
            )

    def _start_watchdog(self) -> None:
        if not self.config.watchdog:
            return
        try:
            mod = importlib.import_module("trainwarden.monitor.watchdog")
        except ImportError:
            self._note(
                "watchdog", "hang watchdog unavailable (trainwarden.monitor.watchdog missing)"
            )
            return
        store = None
        if self._distributed:
            c10d = importlib.import_module("torch.distributed.distributed_c10d")
            get_store = getattr(c10d, "_get_default_store", None)
            if get_store is not None:
                try:
                    store = get_store()
                except RuntimeError:
                    store = None
        self._watchdog = mod.Watchdog(
            self._emit_external,
            rank=self.rank,
            world_size=self.world_size,
            min_timeout_s=self.config.watchdog_min_timeout_s,
            sink=self.sink,
            store=store,
        )
        self._watchdog.start()

    def _cross_rank(self, hyper: list[dict[str, Any]]) -> None:
        if not (self.config.cross_rank and self._distributed and self.world_size > 1):
            return
        if not self._step_checked or self._post_w is None or self._post_s is None:
            return
        if self._exchange is None:
            try:
                mod = importlib.import_module("trainwarden.monitor.distributed")
            except ImportError:
                self._note(
                    "cross-rank", "cross-rank check unavailable (monitor.distributed missing)"
                )
                self.config = _replace(self.config, cross_rank=False)
                return
            self._exchange_fields = self._digest_fields(hyper)
            self._exchange = mod.RankExchange(self._exchange_fields, watchdog=self._watchdog)
        if self._suspect:
            self._exchange.mark_suspect()
            self._suspect = False
        digest = torch.tensor(self._digest_values(hyper), dtype=torch.float64)
        t = self._step_values.get("timing", {})
        timings = torch.tensor([t.get(p, 0.0) for p in PHASES], dtype=torch.float64)
        for alert in self._exchange.exchange(self.step, digest, timings):
            self._emit_external(alert)

    def _digest_fields(self, hyper: list[dict[str, Any]]) -> list[str]:
        if self._post_w is None:
            return []
        params = {n for n, _ in self._weights(buffers=False)}
        fields = ["step"] + [f"weight:{n}" for n in self._post_w[0] if n in params]
        fields.append("optimizer_state")
        for gi, g in enumerate(hyper):
            for k, v in g.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    fields.append(f"hparam:{gi}:{k}")
        return fields

    def _digest_values(self, hyper: list[dict[str, Any]]) -> list[float]:
        if self._post_w is None or self._post_s is None or not self._exchange_fields:
            return []
        rows = dict(zip(self._post_w[0], self._post_w[2], strict=True))
        state_bits = sum(int(r[0]) for r in self._post_s[1]) % (1 << 32)
        out: list[float] = []
        for f in self._exchange_fields:
            if f == "step":
                out.append(float(self.step))
            elif f.startswith("weight:"):
                out.append(rows.get(f[7:], [float("nan")])[0])
            elif f == "optimizer_state":
                out.append(float(state_bits))
            else:
                _, gi, k = f.split(":", 2)
                g = hyper[int(gi)] if int(gi) < len(hyper) else {}
                v = g.get(k)
                out.append(float(v) if isinstance(v, (int, float)) else float("nan"))
        return out

    def _finish_record(self, hyper: list[dict[str, Any]]) -> None:
        if not self.config.record_steps:
            return
        v = self._step_values
        rec: dict[str, Any] = {
            "step": self.step,
            "rank": self.rank,
            "lr": [g.get("lr") for g in hyper],
            "loss": v.get("loss"),
            "grad_norm": v.get("grad_norm"),
            "timing": v.get("timing"),
            "rng": v.get("rng"),
            "batch": v.get("batch"),
        }
        if self._step_checked and self._post_w is not None:
            rec["weights_bits"] = sum(int(r[0]) for r in self._post_w[2]) % (1 << 32)
        if self._step_checked and self._post_s is not None:
            rec["state_bits"] = sum(int(r[0]) for r in self._post_s[1]) % (1 << 32)
        self.records.append(rec)
        self._emit("step", rec)


def _replace(config: MonitorConfig, **changes: Any) -> MonitorConfig:
    return dataclasses.replace(config, **changes)


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
    return Monitor(
        model,
        optimizer,
        scheduler=scheduler,
        max_grad_norm=max_grad_norm,
        sink=sink,
        fail_closed=fail_closed,
        config=MonitorConfig.from_kwargs(config),
    )
