"""Cheap on-device tensor fingerprints for the continuity checks, and a sha256 state digest.

Each tensor gets two numbers computed with torch ops on the tensor's own device:

* ``bits``: the sum of the tensor's raw bit patterns (viewed as integers) with wrap-around. It is
  exact and order-independent, so it is bitwise reproducible on any device and thread count, and
  any single-element edit changes it (the difference of two distinct bit patterns is never 0
  modulo 2**32).
* ``mix``: a dot product with a keyed pseudo-random weight vector, which catches edits that keep
  the plain sum (swapping or permuting elements).

Both are gathered into one small float64 tensor per pass, so a caller moves at most one tiny
vector to the host per step. Cryptographic hashes are only used by :func:`state_digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch

__all__ = ["Fingerprinter", "state_digest"]

_CHUNK = 1 << 20
_MASK32 = 0xFFFFFFFF


class Fingerprinter:
    """Computes ``(n, 2)`` float64 fingerprints ``[bits, mix]`` for a list of tensors.

    ``key`` seeds the weight vector of the ``mix`` column; keep it secret so an editor cannot
    craft a compensating edit. Results for the same tensor contents are identical call to call.
    """

    def __init__(self, key: int, *, chunk: int = _CHUNK) -> None:
        self._key = key
        self._chunk = chunk
        self._weights: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _weight(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        w = self._weights.get((device, dtype))
        if w is None:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(self._key & 0x7FFF_FFFF_FFFF_FFFF)
            # Weights in [0.5, 1.5): no element is (nearly) ignored by the mix.
            base = torch.rand(self._chunk, generator=gen, dtype=torch.float64) + 0.5
            w = base.to(device=device, dtype=dtype)
            self._weights[(device, dtype)] = w
        return w

    def _mix(self, flat: torch.Tensor) -> torch.Tensor:
        if not flat.is_floating_point() or flat.dtype not in (torch.float32, torch.float64):
            flat = flat.to(torch.float32)
        n = flat.numel()
        w = self._weight(flat.device, flat.dtype)
        full = n // self._chunk
        if full == 0:
            return torch.dot(flat, w[:n]).to(torch.float64)
        head = flat[: full * self._chunk].view(full, self._chunk) @ w
        total = head.to(torch.float64).sum()
        rest = n - full * self._chunk
        if rest:
            total = total + torch.dot(flat[full * self._chunk :], w[:rest]).to(torch.float64)
        return total

    def compute(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return a ``(len(tensors), 2)`` float64 tensor on the first tensor's device.

        Must be called under ``torch.no_grad()``. Empty tensors fingerprint as ``[0, 0]``.
        """
        if not tensors:
            return torch.zeros((0, 2), dtype=torch.float64)
        device = tensors[0].device
        rows: list[torch.Tensor] = []
        for t in tensors:
            rows.append(self._one(t).to(device))
        return torch.stack(rows)

    def _one(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if t.numel() == 0:
            return torch.zeros(2, dtype=torch.float64, device=t.device)
        if t.is_complex():
            t = torch.view_as_real(t)
        flat = t.reshape(-1)  # copies only for non-contiguous tensors
        if flat.dtype == torch.bool:
            flat = flat.view(torch.uint8)
        size = flat.element_size()
        if size == 8:
            s = flat.view(torch.int64).sum(dtype=torch.int64)
            # Fold to 32 bits so the value is exact in float64 (for the cross-rank digest).
            bits = ((s >> 32) ^ (s & _MASK32)) & _MASK32
        elif size == 4:
            bits = flat.view(torch.int32).sum(dtype=torch.int32)
        elif size == 2:
            bits = flat.view(torch.int16).sum(dtype=torch.int32)
        else:
            bits = flat.view(torch.uint8).sum(dtype=torch.int32)
        mix = self._mix(flat) if t.is_floating_point() else flat.to(torch.float64).sum()
        return torch.stack([bits.to(torch.float64), mix])


def state_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Return the sha256 (hex) of names, dtypes, shapes and bytes of the given tensors, in order.

    This copies every tensor to the host: use it at checkpoints, not per step.
    """
    h = hashlib.sha256()
    for name, t in named:
        c = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(c.dtype).encode())
        h.update(repr(tuple(c.shape)).encode())
        if c.numel():
            if c.is_complex():
                c = torch.view_as_real(c)
            h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
