"""State the other checks do not see: scheduler internals, module configuration, RNG progress.

* ``SchedulerState``: a scheduler's configuration (``base_lrs``, the lr lambdas' code, closures,
  defaults and the scalar globals they read, every other setting) must not change; its
  ``last_epoch`` moves only through ``step()`` (together with ``_step_count``) and by at most
  one per optimizer step; each lr lambda must keep returning, at secret probe epochs, what it
  returned at ``watch()``. An lr that equals ``get_last_lr()`` is not proof on its own: the
  scheduler that computed it is what is checked here.
* ``ModuleConfig``: every module's non-tensor settings that change what the forward computes
  (dropout ``p``, normalisation ``eps``/``momentum``, activation functions...) stay as they were
  at ``watch()``; every forward that feeds a gradient runs with the training flags of the first
  one (a dropout or batch-norm layer switched to evaluation mode mid-training is named).
* ``RngProgress``: reseeding through the generator objects rather than the wrapped seeding
  functions (``torch.default_generator.manual_seed``: its ``initial_seed()`` changes), and a
  generator whose state stops advancing (reseeded to the same seed, or restored, every step).
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import math
import types
from typing import Any

import torch

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig

__all__ = ["ModuleConfig", "RngProgress", "SchedulerState", "fingerprint_value"]

# Scheduler fields that step() moves by design (by class name; "*" applies to every class).
_MOVING: dict[str, frozenset[str]] = {
    "*": frozenset(
        {
            "last_epoch",
            "_step_count",
            "_last_lr",
            "_get_lr_called_within_step",
            "_is_initial",
            "optimizer",
            "_initial_step",
        }
    ),
    "ReduceLROnPlateau": frozenset(
        {"best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr"}
    ),
    "CosineAnnealingWarmRestarts": frozenset({"T_cur", "T_i"}),
    "SequentialLR": frozenset({"_milestones_passed"}),
}
_PROBES = 1024  # epochs ahead of watch() at which each lr lambda is recorded
_PROBES_PER_STEP = 3
_MAX_DEPTH = 4
_SCALARS = (bool, int, float, str, bytes, type(None))


def _is_scheduler(value: Any) -> bool:
    sched = torch.optim.lr_scheduler
    bases = tuple(
        b
        for b in (getattr(sched, "LRScheduler", None), getattr(sched, "ReduceLROnPlateau", None))
        if isinstance(b, type)
    )
    return bool(bases) and isinstance(value, bases)


def fingerprint_value(value: Any, depth: int = 0) -> str:
    """A stable description of a configuration value: scalars, containers, functions by code.

    A function is described by its bytecode, defaults, closure contents and the scalar globals
    its code reads; an object by its type and its ``__dict__`` (depth-limited); a tensor by its
    metadata and a hash of its bytes (small tensors only).
    """
    if isinstance(value, _SCALARS):
        return repr(value)
    if depth >= _MAX_DEPTH:
        return f"<{type(value).__qualname__}>"
    if isinstance(value, torch.optim.Optimizer | torch.nn.Module):
        return f"<{type(value).__qualname__} {id(value):#x}>"  # its own checks watch it
    if _is_scheduler(value):
        skip = _MOVING["*"] | _MOVING.get(type(value).__name__, frozenset())
        settings = {k: v for k, v in vars(value).items() if k not in skip}
        return f"{type(value).__qualname__}{fingerprint_value(settings, depth + 1)}"
    if isinstance(value, torch.Tensor):
        if value.numel() <= 4096 and value.device.type == "cpu":
            digest = hashlib.blake2b(
                value.detach().contiguous().view(torch.uint8).numpy().tobytes(), digest_size=8
            ).hexdigest()
            return f"tensor({value.dtype},{tuple(value.shape)},{digest})"
        return f"tensor({value.dtype},{tuple(value.shape)})"
    if isinstance(value, (list, tuple)):
        inner = ",".join(fingerprint_value(v, depth + 1) for v in value)
        return f"{type(value).__name__}[{inner}]"
    if isinstance(value, dict):
        items = sorted((repr(k), fingerprint_value(v, depth + 1)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        return "set{" + ",".join(sorted(fingerprint_value(v, depth + 1) for v in value)) + "}"
    if isinstance(value, types.MethodType):
        return f"method({fingerprint_value(value.__func__, depth + 1)},self=<bound>)"
    if isinstance(value, types.FunctionType):
        return _function_fingerprint(value, depth)
    if isinstance(value, (types.BuiltinFunctionType, type)):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict):
        described = fingerprint_value(dict(attrs), depth + 1)
        return f"{type(value).__module__}.{type(value).__qualname__}{described}"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _function_fingerprint(fn: types.FunctionType, depth: int) -> str:
    code = fn.__code__
    h = hashlib.blake2b(marshal.dumps(code), digest_size=8)
    parts = [f"fn({fn.__qualname__},{h.hexdigest()}"]
    parts.append(fingerprint_value(fn.__defaults__, depth + 1))
    parts.append(fingerprint_value(fn.__kwdefaults__, depth + 1))
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(fingerprint_value(cell.cell_contents, depth + 1))
        except ValueError:  # an empty cell
            cells.append("<empty>")
    parts.append("cells[" + ",".join(cells) + "]")
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested lambdas read globals too
            names |= set(const.co_names)
    glob = {n: fn.__globals__[n] for n in sorted(names) if n in fn.__globals__}
    parts.append(
        "globals{"
        + ",".join(f"{n}={v!r}" for n, v in glob.items() if isinstance(v, _SCALARS))
        + "})"
    )
    return ",".join(parts)


class SchedulerState(Check):
    """A declared LR scheduler's configuration, epoch accounting and lambdas stay honest."""

    name = "scheduler-state"
    rules = ("TWM-SCHED-STATE",)
    cost = "a description of each scheduler's settings and three lambda calls per step"
    #: Captured on the class, so the self-check's digest covers it (a module global is not).
    describe = staticmethod(fingerprint_value)

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.scheduler_state

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._base: dict[int, dict[str, Any]] = {}
        for s in monitor.schedulers:
            self._adopt(s)

    def _moving(self, sched: Any) -> frozenset[str]:
        return _MOVING["*"] | _MOVING.get(type(sched).__name__, frozenset())

    def _config(self, sched: Any) -> dict[str, str]:
        skip = self._moving(sched)
        return {
            k: self.describe(v)
            for k, v in sorted(vars(sched).items())
            if k not in skip and not k.startswith("__")
        }

    def _lambdas(self, sched: Any) -> list[Any]:
        fns = getattr(sched, "lr_lambdas", None)
        return list(fns) if isinstance(fns, list) and all(callable(f) for f in fns) else []

    def _adopt(self, sched: Any) -> None:
        epoch = getattr(sched, "last_epoch", None)
        table: list[list[float]] = []
        start = int(epoch) if isinstance(epoch, int) else 0
        for fn in self._lambdas(sched):
            try:
                table.append([float(fn(e)) for e in range(start, start + _PROBES)])
            except Exception:  # a lambda that cannot be probed is checked by its description
                table.append([])
        self._base[id(sched)] = {
            "sched": sched,
            "config": self._config(sched),
            "epoch": epoch,
            "count": getattr(sched, "_step_count", None),
            "start": start,
            "table": table,
        }

    def step_pre(self, has_closure: bool) -> None:
        mon = self.mon
        for s in mon.schedulers:
            base = self._base.get(id(s))
            if base is None or base["sched"] is not s:
                self._adopt(s)  # declared after watch() (add_scheduler): its baseline is now
                continue
            self._compare(s, base)

    def _alert(self, sched: Any, message: str, evidence: dict[str, Any]) -> None:
        self.mon.alert(
            "TWM-SCHED-STATE",
            f"{type(sched).__name__}: {message}",
            {"scheduler": type(sched).__name__, **evidence},
        )

    def _compare(self, sched: Any, base: dict[str, Any]) -> None:
        now = self._config(sched)
        if now != base["config"]:
            keys = sorted(
                k for k in set(now) | set(base["config"]) if now.get(k) != base["config"].get(k)
            )
            self._alert(
                sched,
                f"its settings changed after watch(): {', '.join(keys)} (the lr it computes is "
                "no longer the declared schedule)",
                {
                    "keys": keys,
                    "old": {k: base["config"].get(k) for k in keys},
                    "new": {k: now.get(k) for k in keys},
                },
            )
            base["config"] = now
        epoch, count = getattr(sched, "last_epoch", None), getattr(sched, "_step_count", None)
        if isinstance(epoch, int) and isinstance(base["epoch"], int):
            moved = epoch - base["epoch"]
            counted = (
                count - base["count"]
                if isinstance(count, int) and isinstance(base["count"], int)
                else moved
            )
            if moved != counted or moved < 0 or moved > 1:
                self._alert(
                    sched,
                    f"last_epoch moved from {base['epoch']} to {epoch} between two optimizer "
                    f"steps while step() ran {counted} time(s) (at most once per optimizer step "
                    "moves it by one)",
                    {"old_epoch": base["epoch"], "new_epoch": epoch, "step_calls": counted},
                )
        base["epoch"], base["count"] = epoch, count
        self._probe(sched, base, epoch)

    def _probe(self, sched: Any, base: dict[str, Any], epoch: Any) -> None:
        fns = self._lambdas(sched)
        if len(fns) != len(base["table"]):
            return  # the list itself changed: the settings comparison reported it
        rng = self.mon.rng
        for gi, (fn, table) in enumerate(zip(fns, base["table"], strict=True)):
            if not table:
                continue
            probes = [rng.randrange(len(table)) for _ in range(_PROBES_PER_STEP)]
            if isinstance(epoch, int) and 0 <= epoch - base["start"] < len(table):
                probes.append(epoch - base["start"])
            for i in probes:
                e = base["start"] + i
                try:
                    got = float(fn(e))
                except Exception as exc:  # the lambda now fails where it worked
                    got = math.nan
                    self.mon.internal(exc, f"{type(sched).__name__}.lr_lambdas[{gi}]({e})")
                if not (got == table[i] or (math.isnan(got) and math.isnan(table[i]))):
                    self._alert(
                        sched,
                        f"lr_lambdas[{gi}]({e}) returns {got!r}, {table[i]!r} at watch(): the "
                        "schedule function's behaviour changed",
                        {"group": gi, "epoch": e, "old": table[i], "new": got},
                    )
                    table[i] = got
                    return


def _is_setting(value: Any) -> bool:
    """A value that configures a forward: scalars, tuples/lists of them, functions."""
    if isinstance(value, (*_SCALARS, torch.Size)):
        return True
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _SCALARS) for v in value)
    return isinstance(
        value, types.FunctionType | types.BuiltinFunctionType | types.MethodType | functools.partial
    )


_MODULE_SKIP = frozenset(
    {"training", "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}
)


class ModuleConfig(Check):
    """Module settings that change the forward, and training flags of gradient forwards."""

    name = "module-config"
    rules = ("TWM-MODULE-CONFIG", "TWM-MODULE-MODE")
    cost = "the modules' scalar settings compared per step; training flags read per forward"
    describe = staticmethod(fingerprint_value)

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.module_config

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._config = self._describe()
        self._flags: tuple[bool, ...] | None = None
        self._names = [n or "<model>" for n, _ in monitor.model.named_modules()]
        self._mode_reported: set[tuple[bool, ...]] = set()

    def _describe(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for mname, module in self.mon.model.named_modules():
            for k, v in vars(module).items():
                if k in _MODULE_SKIP or k.endswith("_hooks") or k.startswith("_forward"):
                    continue
                if (
                    k.startswith("_backward")
                    or k.startswith("_state_dict")
                    or k.startswith("_load")
                ):
                    continue
                if k.startswith("_") or not _is_setting(v):
                    # Private fields belong to frameworks (a LightningModule's current hook, a
                    # trainer reference) and move by design; objects (an HF config) likewise.
                    continue
                out[f"{mname or '<model>'}.{k}"] = self.describe(v, 1)
        return out

    def forward_pre(self, first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mon = self.mon
        if first:
            self._compare()
        if not mon.forward_grad:
            return  # an evaluation forward under no_grad feeds no gradient
        flags = tuple(m.training for m in mon.model.modules())
        if self._flags is None:
            self._flags = flags
            return
        if flags == self._flags or flags in self._mode_reported:
            return
        self._mode_reported.add(flags)
        changed = [
            f"{self._names[i]} {'train' if a else 'eval'} -> {'train' if b else 'eval'}"
            for i, (a, b) in enumerate(zip(self._flags, flags, strict=False))
            if a != b
        ]
        mon.alert(
            "TWM-MODULE-MODE",
            f"a forward that feeds the gradient ran with other training flags than the first "
            f"one: {'; '.join(changed[:5])} (dropout or batch norm switched mid-training)",
            {"changed": changed},
        )

    def step_pre(self, has_closure: bool) -> None:
        self._compare()

    def _compare(self) -> None:
        now = self._describe()
        if now == self._config:
            return
        keys = sorted(k for k in set(now) | set(self._config) if now.get(k) != self._config.get(k))
        self.mon.alert(
            "TWM-MODULE-CONFIG",
            "module settings that change the forward changed after watch(): "
            + "; ".join(f"{k}: {self._config.get(k)} -> {now.get(k)}" for k in keys[:5]),
            {
                "keys": keys,
                "old": {k: self._config.get(k) for k in keys},
                "new": {k: now.get(k) for k in keys},
            },
        )
        self._config = now


def initial_seeds() -> dict[str, int]:
    out = {"torch": int(torch.initial_seed())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for i, gen in enumerate(torch.cuda.default_generators):
            out[f"cuda:{i}"] = int(gen.initial_seed())
    return out


class RngProgress(Check):
    """Reseeding through generator objects; generators that stop advancing."""

    name = "rng-progress"
    rules = ("TWM-RNG-RESEED", "TWM-RNG-STUCK")
    cost = "initial_seed() of each torch generator and a comparison of the RNG hashes per step"
    seeds = staticmethod(initial_seeds)

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.rng_watch

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._seeds = self.seeds()
        self._prev: dict[str, str] = {}
        self._advanced: dict[str, int] = {}
        self._stuck_reported: set[str] = set()
        first = next(iter(monitor.model.parameters()), None)
        on_cuda = first is not None and first.device.type == "cuda"
        #: The generator dropout draws from on the model's device.
        self._dropout_gen = "cuda" if on_cuda else "torch"

    def _dropout_active(self) -> bool:
        for m in self.mon.model.modules():
            if m.training and isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
                return True
            if m.training and isinstance(m, torch.nn.MultiheadAttention) and m.dropout > 0:
                return True
        return False

    def step_pre(self, has_closure: bool) -> None:
        mon = self.mon
        seeds = self.seeds()
        for gen, seed in seeds.items():
            old = self._seeds.get(gen)
            if (
                old is not None
                and old != seed
                and mon.step > 0
                and "reseeded_via" not in mon.values
            ):
                mon.alert(
                    "TWM-RNG-RESEED",
                    f"the {gen} generator was reseeded after training started (initial_seed "
                    f"{old} -> {seed}) without the seeding functions: through the generator "
                    "object",
                    {"generator": gen, "old_seed": old, "new_seed": seed},
                )
        self._seeds = seeds
        fps = mon.values.get("rng")
        if not isinstance(fps, dict):
            return
        dropout = self._dropout_active()
        for gen, h in fps.items():
            prev = self._prev.get(gen)
            self._prev[gen] = h
            if prev is None:
                continue
            if h != prev:
                self._advanced[gen] = self._advanced.get(gen, 0) + 1
                self._stuck_reported.discard(gen)
                continue
            # The model device's generator feeds every dropout mask: with dropout active it must
            # move at every step. Others must have moved at every one of the last 8 steps.
            must = (gen == self._dropout_gen and dropout) or self._advanced.get(gen, 0) >= 8
            self._advanced[gen] = 0
            if must and gen not in self._stuck_reported:
                self._stuck_reported.add(gen)
                mon.alert(
                    "TWM-RNG-STUCK",
                    f"the global {gen} RNG state at step {mon.step} is the one of the previous "
                    "step: it did not advance although training draws from it (reseeded to the "
                    "same seed, or its state restored, every step)",
                    {"generator": gen, "state_hash": h, "dropout_active": dropout},
                )
