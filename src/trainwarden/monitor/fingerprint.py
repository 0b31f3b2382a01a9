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
import itertools
from collections.abc import Container, Iterable, Sequence

import torch

__all__ = ["SMALL", "Fingerprinter", "state_digest"]

_CHUNK = 1 << 20
SMALL = 1 << 12
_MASK32 = 0xFFFFFFFF
_BLOCK = 1 << 14


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

    def _int_weight(self, device: torch.device, n: int) -> torch.Tensor:
        key = (device, torch.int64)
        w = self._weights.get(key)
        if w is None or w.numel() < n:
            # Built block by block from per-block seeds, so a longer vector always extends a
            # shorter one: a tensor's weights never depend on the group it was hashed with.
            blocks = []
            for b in range((max(n, 1) + _BLOCK - 1) // _BLOCK):
                gen = torch.Generator(device="cpu")
                gen.manual_seed((self._key * 1_000_003 + b) & 0x7FFF_FFFF_FFFF_FFFF)
                # Odd weights below 2**31: every position contributes.
                blocks.append(torch.randint(0, 1 << 30, (_BLOCK,), generator=gen) * 2 + 1)
            w = torch.cat(blocks).to(device)
            self._weights[key] = w
        return w[:n]

    def compute(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        mix: bool = True,
        mix_only: Container[int] | None = None,
    ) -> torch.Tensor:
        """Return a ``(len(tensors), 2)`` float64 tensor on the first tensor's device.

        Tensors of at most ``SMALL`` elements are fingerprinted together (a handful of kernels
        for all of them, exact and position-sensitive); larger ones one by one. ``mix=False``
        skips the dot product of large tensors (column 1 is then 0 for them), halving the
        memory traffic. ``mix_only`` (indices into ``tensors``) limits the dot product of large
        tensors to those positions; small tensors always get both columns. Must be called under
        ``torch.no_grad()``.
        """
        if not tensors:
            return torch.zeros((0, 2), dtype=torch.float64)
        device = tensors[0].device
        small: dict[tuple[torch.device, int], list[int]] = {}
        large: list[int] = []
        empty: list[int] = []
        for i, t in enumerate(tensors):
            if t.numel() == 0:
                empty.append(i)
            elif t.numel() <= SMALL:
                small.setdefault((t.device, t.element_size()), []).append(i)
            else:
                large.append(i)
        parts: list[torch.Tensor] = []
        order: list[int] = []
        if empty:
            parts.append(torch.zeros((len(empty), 2), dtype=torch.float64, device=device))
            order += empty
        for (dev, _), idx in small.items():
            parts.append(self._small_group([tensors[i] for i in idx], dev).to(device))
            order += idx
        if large:
            bits: list[torch.Tensor] = []
            mixes: list[torch.Tensor] = []
            for i in large:
                b, m = self._large(tensors[i], mix and (mix_only is None or i in mix_only))
                bits.append(b.to(device=device, dtype=torch.int64))
                mixes.append(m.to(device))
            parts.append(
                torch.stack([torch.stack(bits).to(torch.float64), torch.stack(mixes)], dim=1)
            )
            order += large
        rows = torch.cat(parts) if len(parts) > 1 else parts[0]
        if order == sorted(order):
            return rows
        inverse = torch.empty(len(order), dtype=torch.int64)
        inverse[torch.tensor(order, dtype=torch.int64)] = torch.arange(len(order))
        return rows.index_select(0, inverse.to(device))

    @staticmethod
    def _int_view(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if t.is_complex():
            t = torch.view_as_real(t)
        flat = t.reshape(-1)  # copies only for non-contiguous tensors
        if flat.dtype == torch.bool:
            flat = flat.view(torch.uint8)
        size = flat.element_size()
        if size == 8:
            return flat.view(torch.int64)
        if size == 4:
            return flat.view(torch.int32)
        if size == 2:
            return flat.view(torch.int16)
        return flat.view(torch.uint8)

    def _small_group(self, group: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        sizes = [t.numel() for t in group]
        buf = torch.cat([self._int_view(t) for t in group]).to(torch.int64)
        n = buf.numel()
        ends = torch.tensor([s - 1 for s in itertools.accumulate(sizes)], dtype=torch.int64)
        cols = []
        for values in (buf, buf * self._int_weight(device, n)):
            cs = values.cumsum(0)  # int64 wraps: exact modulo 2**64
            at_end = cs.index_select(0, ends.to(device))
            before = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), at_end[:-1]])
            seg = at_end - before
            # Fold to 32 bits so the value is exact in float64 (for the cross-rank digest).
            cols.append(((seg >> 32) ^ seg) & _MASK32)
        return torch.stack(cols, dim=1).to(torch.float64)

    def _large(self, t: torch.Tensor, mix: bool) -> tuple[torch.Tensor, torch.Tensor]:
        flat = self._int_view(t)
        if flat.dtype == torch.int64:
            s = flat.sum(dtype=torch.int64)
            bits = ((s >> 32) ^ s) & _MASK32
        else:
            bits = flat.sum(dtype=torch.int32)
        if not mix:
            return bits, torch.zeros((), dtype=torch.float64, device=t.device)
        data = t.detach().reshape(-1)
        if data.is_complex():
            data = torch.view_as_real(data).reshape(-1)
        m = self._mix(data) if data.is_floating_point() else data.to(torch.float64).sum()
        return bits, m


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
