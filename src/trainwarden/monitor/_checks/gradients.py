"""Gradients from their source to the step, and every hook that could touch them.

``GradientSource`` takes each parameter's gradient where autograd finishes accumulating it
(a post-accumulate-grad hook) and verifies at ``optimizer.step()`` that what the optimizer is
about to use is that gradient times one uniform factor: 1 without clipping, or
``min(1, max_grad_norm / (total norm + 1e-6))`` with the declared clipping. Per parameter it
compares the norm (every element) and a secret sample of elements (direction, sign). Anything
between the backward and the step that rescales, flips or replaces a gradient, or clips at a
threshold other than the declared one, is named.

``HookInventory`` lists every hook that can change gradients, weights or the step (tensor
hooks on parameters, module and global module hooks, optimizer and global optimizer hooks, and
``forward`` methods replaced on a module instance) at watch(), and alerts on any added later.
A tensor hook runs *before* accumulation, so the source check cannot see what it does: the
inventory is what names it.
"""

from __future__ import annotations

import importlib
import math
import statistics
from collections.abc import Iterator
from typing import Any

import torch

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig

__all__ = ["GradientSource", "HookInventory"]

_SAMPLE = 16


def _pad(sample: torch.Tensor) -> torch.Tensor:
    """A sample of fewer than _SAMPLE elements (a small parameter) padded with zeros."""
    return torch.nn.functional.pad(sample, (0, _SAMPLE - sample.numel()))


class GradientSource(Check):
    """Gradient at step() == uniform factor (declared clipping) x gradient at accumulation."""

    name = "gradient-source"
    rules = ("TWM-GRAD-EDIT", "TWM-GRAD-CLIP")
    cost = (
        "per parameter and micro-batch: one norm and 16 elements at accumulation; again at step()"
    )

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.grad_source_check

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._src: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._index: dict[int, torch.Tensor] = {}
        self._names: dict[int, str] = {}
        self._eps: dict[str, float] = {}
        self.handles: list[Any] = []
        self._off = False
        ddp = getattr(torch.nn.parallel, "DistributedDataParallel", None)
        if ddp is not None and isinstance(monitor.model, ddp):
            # DDP writes the averaged gradient after accumulation: the local gradient at the
            # source is not the one the step uses. The local norm is still compared across ranks.
            self._off = True
            monitor.note(
                "gradient-source-ddp",
                "gradient source check not applied under DistributedDataParallel (the averaged "
                "gradient is written after accumulation); hook inventory and update check remain",
            )
            return
        for name, p, _ in monitor.opt_params:
            if not p.requires_grad or p.numel() == 0:
                continue
            k = min(_SAMPLE, p.numel())
            idx = sorted(monitor.rng.sample(range(p.numel()), k))
            self._index[id(p)] = torch.tensor(idx, dtype=torch.int64, device=p.device)
            self._names[id(p)] = name
            self._eps[name] = torch.finfo(p.dtype).eps if p.is_floating_point() else 0.0

    def start(self) -> None:
        if self._off:
            return
        for _, p, _ in self.mon.opt_params:
            if id(p) in self._index:
                hook = p.register_post_accumulate_grad_hook(self._on_accumulated)  # type: ignore[no-untyped-call]
                self.handles.append(hook)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def _on_accumulated(self, p: torch.Tensor) -> None:
        g = p.grad
        if g is None or g.is_sparse:
            return
        with torch.no_grad():
            flat = g.detach().reshape(-1)
            sample = flat.index_select(0, self._index[id(p)]).to(torch.float64)
            self._src[id(p)] = (sample, torch.linalg.vector_norm(flat, dtype=torch.float64))

    def step_pre(self, has_closure: bool) -> None:
        src, self._src = self._src, {}
        if self._off:
            return
        mon = self.mon
        if has_closure:
            mon.note(
                "gradient-source-closure",
                "gradient source check skipped for optimizer.step(closure): the backward runs "
                "inside step()",
            )
            return
        names: list[str] = []
        rows: list[torch.Tensor] = []
        for _, p, _ in mon.opt_params:
            g = p.grad
            if id(p) not in self._index or g is None or g.is_sparse:
                continue
            names.append(self._names[id(p)])
            flat = g.detach().reshape(-1)
            now = flat.index_select(0, self._index[id(p)]).to(torch.float64)
            norm = torch.linalg.vector_norm(flat, dtype=torch.float64)
            had = src.get(id(p))
            if had is None:
                src_part = torch.full((_SAMPLE + 1,), math.nan, dtype=torch.float64)
            else:
                src_part = torch.cat([_pad(had[0]), had[1].reshape(1)])
            now_part = torch.cat([_pad(now), norm.reshape(1)])
            rows.append(torch.cat([src_part.to(now_part.device), now_part]))
        if not rows:
            return
        dev = rows[0].device
        mon.defer(torch.stack([r.to(dev) for r in rows]), lambda v: self._verify(names, v))

    def _verify(self, names: list[str], values: list[float]) -> None:
        mon = self.mon
        width = 2 * (_SAMPLE + 1)
        per: list[tuple[str, list[float], float, list[float], float]] = []
        for i, name in enumerate(names):
            row = values[i * width : (i + 1) * width]
            src, src_norm = row[:_SAMPLE], row[_SAMPLE]
            now, now_norm = row[_SAMPLE + 1 : 2 * _SAMPLE + 1], row[2 * _SAMPLE + 1]
            per.append((name, src, src_norm, now, now_norm))
        # A parameter the forward did not use keeps a zeroed gradient (zero_grad without
        # set_to_none): no accumulation, and nothing to verify.
        missing = [n for n, _, sn, _, nn in per if math.isnan(sn) and nn != 0.0]
        if missing:
            mon.alert(
                "TWM-GRAD-EDIT",
                "gradient present at optimizer.step() that no backward accumulated (set "
                "directly): " + ", ".join(missing[:10]),
                {"params": missing[:50]},
            )
        per = [x for x in per if not math.isnan(x[2])]
        if not per or not all(math.isfinite(x[2]) and math.isfinite(x[4]) for x in per):
            return  # non-finite gradients are numerics' business
        total_src = math.sqrt(sum(sn * sn for _, _, sn, _, _ in per))
        if total_src == 0.0:
            return
        # The one factor the whole step must show: what most gradients show (the median of
        # the per-parameter norm ratios), so that one edited gradient cannot move it.
        factor = statistics.median_low(nn / sn for _, _, sn, _, nn in per if sn > 0)
        rtol = mon.config.grad_norm_rtol
        bad: dict[str, dict[str, Any]] = {}
        for name, src, sn, now, nn in per:
            # Scaling a gradient rounds each element once: a few ulps of the gradient's dtype.
            tol = 8.0 * self._eps.get(name, 0.0) + 1e-12
            ratio = nn / sn if sn > 0 else (0.0 if nn == 0 else math.inf)
            flipped = sum(a * b for a, b in zip(src, now, strict=True)) < 0
            elem_bad = any(
                abs(b - factor * a) > tol * (abs(factor * a) + abs(b)) + 1e-30
                for a, b in zip(src, now, strict=True)
            )
            if abs(ratio - factor) > tol * factor or flipped or elem_bad:
                bad[name] = {
                    "factor": ratio,
                    "uniform_factor": factor,
                    "sign_flip": flipped,
                    "source_sample": src[:4],
                    "step_sample": now[:4],
                }
        if bad:
            flips = [n for n, e in bad.items() if e["sign_flip"]]
            mon.alert(
                "TWM-GRAD-EDIT",
                f"{len(bad)} gradient(s) changed between accumulation and optimizer.step() by "
                "more than the step's one uniform factor"
                + (f" (sign flipped: {', '.join(flips[:5])})" if flips else "")
                + ": "
                + ", ".join(list(bad)[:10]),
                {"params": bad, "uniform_factor": factor},
            )
            return
        limit = mon.max_grad_norm
        expected = 1.0 if limit is None else min(1.0, limit / (total_src + 1e-6))
        if abs(factor - expected) > rtol * expected + 1e-9:
            declared = (
                f"max_grad_norm={limit} gives {expected:.6g} for a total norm of {total_src:.6g}"
                if limit is not None
                else "no clipping was declared to watch(), so it must be 1"
            )
            mon.alert(
                "TWM-GRAD-CLIP",
                f"every gradient was scaled by {factor:.6g} between accumulation and step(); "
                + declared,
                {
                    "factor": factor,
                    "expected": expected,
                    "source_norm": total_src,
                    "max_grad_norm": limit,
                },
            )


# Registries of hooks that can change what a step computes, by where they live.
_MODULE_HOOKS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
)
_GLOBAL_MODULE_HOOKS = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)
_OPT_HOOKS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
)
_GLOBAL_OPT_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")


def _describe(fn: Any) -> str:
    target = getattr(fn, "__func__", fn)
    owner = getattr(fn, "__self__", None)
    qual = getattr(target, "__qualname__", type(target).__qualname__)
    mod = getattr(target, "__module__", None) or type(target).__module__
    code = getattr(target, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    bound = f" bound to {type(owner).__qualname__}" if owner is not None else ""
    return f"{mod}.{qual}{bound}{where}"


class HookInventory(Check):
    """Every gradient/weight/step hook at watch() (reported) and each step (added: alert)."""

    name = "hook-inventory"
    rules = ("TWM-HOOK-ADDED", "TWM-HOOK-PRESENT")
    cost = "a walk over the model's modules, parameters and the hook registries per step"

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self._known: dict[tuple[str, int], str] = {}

    def _ours(self) -> set[int]:
        mon = self.mon
        own: set[int] = set()
        for h in mon._handles:
            own.add(h.id)
        lifeline = getattr(mon, "_lifeline", None)
        if lifeline is not None:
            own.add(lifeline.handle_id)
        # Every check that registers tensor hooks keeps their handles in ``handles``.
        for check in mon.checks:
            for h in getattr(check, "handles", None) or []:
                own.add(h.id)
        return own

    def _walk(self) -> Iterator[tuple[str, int, Any]]:
        mon = self.mon
        module_mod = importlib.import_module("torch.nn.modules.module")
        for attr in _GLOBAL_MODULE_HOOKS:
            for hid, fn in dict(getattr(module_mod, attr, {}) or {}).items():
                yield f"torch.nn.modules.module.{attr}", hid, fn
        opt_mod = importlib.import_module("torch.optim.optimizer")
        for attr in _GLOBAL_OPT_HOOKS:
            for hid, fn in dict(getattr(opt_mod, attr, {}) or {}).items():
                yield f"torch.optim.optimizer.{attr}", hid, fn
        for attr in _OPT_HOOKS:
            for hid, fn in dict(getattr(mon.optimizer, attr, {}) or {}).items():
                yield f"optimizer.{attr}", hid, fn
        for mname, module in mon.model.named_modules():
            label = mname or "<model>"
            for attr in _MODULE_HOOKS:
                for hid, fn in dict(getattr(module, attr, {}) or {}).items():
                    yield f"{label}.{attr}", hid, fn
            fwd = vars(module).get("forward")
            if fwd is not None:
                yield f"{label}.forward (replaced on the instance)", id(fwd), fwd
        for pname, p in mon.model.named_parameters():
            for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"):
                for hid, fn in dict(getattr(p, attr, None) or {}).items():
                    yield f"{pname}.{attr}", hid, fn

    def _scan(self) -> dict[tuple[str, int], str]:
        own = self._ours()
        return {
            (where, hid): f"{where}: {_describe(fn)}"
            for where, hid, fn in self._walk()
            if hid not in own or where.endswith("(replaced on the instance)")
        }

    def start(self) -> None:
        mon = self.mon
        self._known = self._scan()
        found = sorted(self._known.values())
        mon.emit("hooks", {"rank": mon.rank, "step": mon.step, "present": found})
        if found:
            mon.alert(
                "TWM-HOOK-PRESENT",
                f"{len(found)} hook(s) that can change gradients, weights or the step were "
                "present at watch(): " + "; ".join(found[:5]),
                {"hooks": found},
            )

    def step_pre(self, has_closure: bool) -> None:
        self._compare()

    def forward_pre(self, first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if first:
            self._compare()

    def _compare(self) -> None:
        now = self._scan()
        added = sorted(v for k, v in now.items() if k not in self._known)
        self._known = now
        if added:
            self.mon.alert(
                "TWM-HOOK-ADDED",
                f"{len(added)} hook(s) that can change gradients, weights or the step were "
                "added after watch(): " + "; ".join(added[:5]),
                {"hooks": added},
            )
