"""Independent re-computation of optimizer updates on a secret, rotating slice of parameters.

Before ``optimizer.step()`` the monitor copies a few elements (weights, gradients, state) of a
few parameters chosen with a secret key; after the step it recomputes what SGD, Adam or AdamW
should have produced from those values and the hyperparameters seen *before* the step, and
compares with what the step actually wrote. The reference implementations below are written
from the published update rules in float64, not by calling torch.optim.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Mismatch",
    "SliceSnapshot",
    "UpdateChecker",
    "reference_adam",
    "reference_kind",
    "reference_sgd",
]

Hyper = Mapping[str, Any]
State = dict[str, torch.Tensor]


def reference_kind(optimizer: torch.optim.Optimizer) -> str | None:
    """Return ``"sgd"``, ``"adam"`` or ``"adamw"`` for a supported optimizer, else ``None``."""
    if isinstance(optimizer, torch.optim.AdamW):
        return "adamw"
    if isinstance(optimizer, torch.optim.Adam):
        return "adam"
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    return None


def _f(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def reference_sgd(
    p: torch.Tensor, g: torch.Tensor, state: State, hp: Hyper
) -> tuple[torch.Tensor, State]:
    """SGD with momentum, dampening, nesterov, weight decay and maximize (float64 slices)."""
    lr = _f(hp["lr"])
    momentum = _f(hp.get("momentum", 0.0))
    dampening = _f(hp.get("dampening", 0.0))
    wd = _f(hp.get("weight_decay", 0.0))
    d_p = -g if hp.get("maximize", False) else g
    if wd != 0.0:
        d_p = d_p + wd * p
    new_state: State = {}
    if momentum != 0.0:
        buf = state.get("momentum_buffer")
        buf = d_p.clone() if buf is None else momentum * buf + (1.0 - dampening) * d_p
        new_state["momentum_buffer"] = buf
        d_p = d_p + momentum * buf if hp.get("nesterov", False) else buf
    return p - lr * d_p, new_state


def reference_adam(
    p: torch.Tensor, g: torch.Tensor, state: State, hp: Hyper, *, decoupled: bool
) -> tuple[torch.Tensor, State]:
    """Adam / AdamW with bias correction, amsgrad, weight decay and maximize (float64 slices)."""
    lr = _f(hp["lr"])
    beta1, beta2 = (_f(b) for b in hp["betas"])
    eps = _f(hp["eps"])
    wd = _f(hp.get("weight_decay", 0.0))
    grad = -g if hp.get("maximize", False) else g
    step_before = state.get("step")
    t = (_f(step_before.reshape(-1)[0]) if step_before is not None else 0.0) + 1.0
    if wd != 0.0:
        if decoupled:
            p = p * (1.0 - lr * wd)
        else:
            grad = grad + wd * p
    m = state.get("exp_avg")
    v = state.get("exp_avg_sq")
    m = torch.zeros_like(p) if m is None else m
    v = torch.zeros_like(p) if v is None else v
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * grad * grad
    new_state: State = {"exp_avg": m, "exp_avg_sq": v}
    bc1 = 1.0 - beta1**t
    bc2_sqrt = math.sqrt(1.0 - beta2**t)
    if hp.get("amsgrad", False):
        vmax = state.get("max_exp_avg_sq")
        vmax = v if vmax is None else torch.maximum(vmax, v)
        new_state["max_exp_avg_sq"] = vmax
        denom = vmax.sqrt() / bc2_sqrt + eps
    else:
        denom = v.sqrt() / bc2_sqrt + eps
    return p - (lr / bc1) * m / denom, new_state


@dataclass(frozen=True)
class SliceSnapshot:
    """Pre-step copies (float64, on the parameter's device) of a few elements of one parameter."""

    name: str
    param: torch.Tensor
    index: torch.Tensor
    weights: torch.Tensor
    grad: torch.Tensor
    state: State
    hyper: dict[str, Any]
    group: int


@dataclass(frozen=True)
class Mismatch:
    """Evidence of one parameter whose update or state differs from the reference."""

    name: str
    what: str  # "update" or a state key
    sign_flip: bool
    max_error: float
    scale: float
    indices: list[int]
    expected: list[float]
    actual: list[float]
    before: list[float]
    hyper: dict[str, Any] = field(default_factory=dict)


def _sample_index(rng: random.Random, numel: int, k: int, device: torch.device) -> torch.Tensor:
    idx = list(range(numel)) if numel <= k else sorted(rng.sample(range(numel), k))
    return torch.tensor(idx, dtype=torch.int64, device=device)


class UpdateChecker:
    """Chooses the checked slice (keyed, rotating), snapshots it, and verifies the step.

    ``params`` is the optimizer's parameters with their names; ``fraction`` of them (at least
    one) are checked per step, ``elems`` elements each; every parameter is visited once per
    rotation, in an order reshuffled with the secret ``rng`` at each rotation.
    """

    def __init__(
        self,
        kind: str,
        params: Sequence[tuple[str, torch.nn.Parameter, int]],
        *,
        rng: random.Random,
        fraction: float,
        elems: int,
        rtol: float,
    ) -> None:
        self.kind = kind
        self._params = list(params)
        self._rng = rng
        self._per_step = max(1, math.ceil(fraction * len(self._params)))
        self._elems = elems
        self._rtol = rtol
        self._queue: list[int] = []

    def _next_params(self) -> list[int]:
        chosen: list[int] = []
        tries = 0
        while len(chosen) < min(self._per_step, len(self._params)) and tries < 2 * len(
            self._params
        ):
            if not self._queue:
                self._queue = list(range(len(self._params)))
                self._rng.shuffle(self._queue)
            i = self._queue.pop()
            tries += 1
            if i not in chosen:
                chosen.append(i)
        return chosen

    def snapshot(self, optimizer: torch.optim.Optimizer) -> list[SliceSnapshot]:
        """Copy the chosen slices before the step (call under no_grad in the step pre-hook)."""
        out: list[SliceSnapshot] = []
        for i in self._next_params():
            name, p, gi = self._params[i]
            g = p.grad
            if g is None or g.is_sparse or p.numel() == 0:
                continue
            idx = _sample_index(self._rng, p.numel(), self._elems, p.device)
            flat = p.detach().reshape(-1)
            state: State = {}
            for key, val in optimizer.state.get(p, {}).items():
                if isinstance(val, torch.Tensor):
                    if val.shape == p.shape:
                        state[key] = val.detach().reshape(-1)[idx].to(torch.float64)
                    elif val.numel() == 1:
                        state[key] = val.detach().reshape(-1).to(torch.float64).clone()
            group = optimizer.param_groups[gi]
            # Tensors (capturable lr) are cloned: the group's tensor may be changed in place.
            hyper = {
                k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                for k, v in group.items()
                if k != "params"
            }
            out.append(
                SliceSnapshot(
                    name=name,
                    param=p,
                    index=idx,
                    weights=flat[idx].to(torch.float64),
                    grad=g.detach().reshape(-1)[idx].to(torch.float64),
                    state=state,
                    hyper=hyper,
                    group=gi,
                )
            )
        return out

    def verify(
        self, optimizer: torch.optim.Optimizer, snaps: Sequence[SliceSnapshot]
    ) -> list[Mismatch]:
        """Compare the post-step values of every snapshot with the reference update."""
        found: list[Mismatch] = []
        for s in snaps:
            if self.kind == "sgd":
                exp_p, exp_state = reference_sgd(s.weights, s.grad, s.state, s.hyper)
            else:
                decoupled = self.kind == "adamw" or bool(
                    s.hyper.get("decoupled_weight_decay", False)
                )
                exp_p, exp_state = reference_adam(
                    s.weights, s.grad, s.state, s.hyper, decoupled=decoupled
                )
            actual = s.param.detach().reshape(-1)[s.index].to(torch.float64)
            eps = torch.finfo(s.param.dtype).eps if s.param.is_floating_point() else 0.0
            mm = self._compare(s, "update", s.weights, exp_p, actual, eps)
            if mm is not None:
                found.append(mm)
                continue
            post_state = optimizer.state.get(s.param, {})
            for key, exp in exp_state.items():
                val = post_state.get(key)
                if not isinstance(val, torch.Tensor) or val.shape != s.param.shape:
                    continue
                got = val.detach().reshape(-1)[s.index].to(torch.float64)
                st_eps = torch.finfo(val.dtype).eps if val.is_floating_point() else 0.0
                mm = self._compare(
                    s, key, s.state.get(key, torch.zeros_like(exp)), exp, got, st_eps
                )
                if mm is not None:
                    found.append(mm)
                    break
        return found

    def _compare(
        self,
        s: SliceSnapshot,
        what: str,
        before: torch.Tensor,
        expected: torch.Tensor,
        actual: torch.Tensor,
        eps: float,
    ) -> Mismatch | None:
        exp_delta = expected - before
        act_delta = actual - before
        err = (actual - expected).abs()
        # Rounding of the final float32/bf16 write is a few ulps of the values themselves;
        # beyond that the update must agree to rtol of its own magnitude.
        ulp = 4.0 * eps * torch.maximum(expected.abs(), before.abs())
        allowed = self._rtol * exp_delta.abs() + ulp + 1e-30
        bad = err > allowed
        # Non-finite expected values (a NaN gradient) are numerics' business, not tampering.
        bad &= torch.isfinite(expected)
        if not bool(bad.any()):
            return None
        resolvable = exp_delta.abs() > ulp
        dot = float((exp_delta * act_delta)[resolvable].sum()) if bool(resolvable.any()) else 0.0
        sign_flip = what == "update" and dot < 0.0
        where = bad.nonzero().reshape(-1)[:5]
        idx = s.index[where].tolist()
        hyper = {
            k: (_f(v) if isinstance(v, torch.Tensor) else v)
            for k, v in s.hyper.items()
            if isinstance(v, (int, float, bool, tuple, torch.Tensor)) or v is None
        }
        return Mismatch(
            name=s.name,
            what=what,
            sign_flip=sign_flip,
            max_error=float(err.max()),
            scale=float(exp_delta.abs().max()),
            indices=[int(i) for i in idx],
            expected=[float(x) for x in expected[where].tolist()],
            actual=[float(x) for x in actual[where].tolist()],
            before=[float(x) for x in before[where].tolist()],
            hyper=hyper,
        )
