"""The gradient norm at ``optimizer.step()`` against the declared ``max_grad_norm``."""

from __future__ import annotations

import torch

from trainwarden.monitor._check import Check

__all__ = ["GradClipping"]


class GradClipping(Check):
    """Total gradient norm at step(); above ``max_grad_norm`` means clipping did not happen."""

    name = "grad-clipping"
    rules = ("TWM-CLIP-MISSING",)
    cost = "one foreach norm over the gradients per step"

    def step_pre(self, has_closure: bool) -> None:
        if has_closure:
            return
        mon = self.mon
        grads = [
            p.grad for _, p, _ in mon.opt_params if p.grad is not None and not p.grad.is_sparse
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
            mon.values["grad_norm"] = norm
            limit = mon.max_grad_norm
            if limit is not None and norm > limit * (1.0 + mon.config.grad_norm_rtol) + 1e-6:
                mon.alert(
                    "TWM-CLIP-MISSING",
                    f"gradient norm {norm:.6g} at optimizer.step() exceeds max_grad_norm={limit}",
                    {"grad_norm": norm, "max_grad_norm": limit},
                )

        mon.defer(total, got)
