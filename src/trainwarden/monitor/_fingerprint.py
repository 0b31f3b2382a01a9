"""Keyed universal hashes of whole tensors for the continuity checks, and a sha256 state digest.

Every tensor is read as its raw bit pattern, cut into words (32-bit words for 4- and 8-byte
elements, 16-bit words for 2-byte elements, bytes otherwise), each word sign-extended to a 64-bit
integer ``x_i``. Its hash is the multilinear form

    H(x) = sum_i w_i * x_i  (mod 2**64)

with secret, independent, uniformly random *odd* 64-bit weights ``w_i`` (the i-th word of every
tensor uses ``w_i``). For any two different bit patterns x != y of the same shape and dtype,
``Pr[H(x) == H(y)] <= 2**-32`` over the choice of the weights, whatever the edit (sign flips,
scaling, permutations, swaps, shifts): the difference d = x - y has a non-zero word d_j with
|d_j| < 2**32, so d_j = 2**k * u with u odd and k <= 31; fixing every other weight leaves one
equation w_j * d_j == c (mod 2**64), and as w_j runs over the 2**63 odd residues, w_j * u runs
over the 2**(63-k) odd residues modulo 2**(64-k) uniformly, at most one of which solves it:
probability <= 2**(k-63) <= 2**-32. docs/monitor.md states the bound and what it assumes (the
weights stay secret: code running inside the process can read them).

The arithmetic is exact integer arithmetic with wrap-around, so the value is bitwise identical
on every device, thread count and summation order. Values are computed with torch ops on the
tensor's own device and gathered into one int64 tensor per call, so a caller moves at most one
small vector to the host per step. Cryptographic hashes are only used by :func:`state_digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch

__all__ = ["SMALL", "Fingerprinter", "combine", "meta_of", "state_digest"]

#: Tensors of at most this many words are hashed together in one group of kernels.
SMALL = 1 << 12
#: Words per chunk on CPU: the int64 products of a chunk stay in cache.
_CPU_CHUNK = 1 << 16
#: Words per chunk on accelerators: bounds the temporary buffers (8 bytes per word).
_DEV_CHUNK = 1 << 24
#: Weights are generated in blocks of this many words, each from its own seed, so a longer
#: weight vector always extends a shorter one.
_BLOCK = 1 << 16


def meta_of(t: torch.Tensor) -> str:
    """The dtype and shape of ``t`` as compared alongside its hash."""
    return f"{t.dtype}{tuple(t.shape)}"


def _words(t: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern of ``t`` as a flat tensor of signed words (no copy when contiguous)."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    flat = t.reshape(-1)  # copies only for non-contiguous tensors
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    size = flat.element_size()
    if size in (4, 8):
        return flat.view(torch.int32)
    if size == 2:
        return flat.view(torch.int16)
    return flat.view(torch.uint8)


class Fingerprinter:
    """Computes the keyed multilinear hash of each tensor in a list (see the module docstring).

    ``key`` seeds the weights; keep it secret so nobody can craft an edit that keeps the hash.
    Results for the same tensor contents are identical call to call and device to device.
    """

    def __init__(self, key: int) -> None:
        self._key = key & 0x7FFF_FFFF_FFFF_FFFF
        self._cpu: torch.Tensor = torch.empty(0, dtype=torch.int64)
        self._on: dict[torch.device, torch.Tensor] = {}

    def weights(self, n: int, device: torch.device) -> torch.Tensor:
        """The first ``n`` weights (int64, odd) on ``device``; grown and cached on demand."""
        if self._cpu.numel() < n:
            have = self._cpu.numel() // _BLOCK
            blocks = [self._cpu]
            for b in range(have, (n + _BLOCK - 1) // _BLOCK):
                gen = torch.Generator(device="cpu")
                gen.manual_seed((self._key * 1_000_003 + b * 7_919 + 1) & 0x7FFF_FFFF_FFFF_FFFF)
                hi = torch.randint(0, 1 << 32, (_BLOCK,), generator=gen, dtype=torch.int64)
                lo = torch.randint(0, 1 << 32, (_BLOCK,), generator=gen, dtype=torch.int64)
                blocks.append((hi << 32) | lo | 1)  # uniform odd 64-bit (int64 wraps)
            self._cpu = torch.cat(blocks)
            self._on.clear()
        if device.type == "cpu":
            return self._cpu[:n]
        w = self._on.get(device)
        if w is None or w.numel() < n:
            w = self._cpu.to(device)
            self._on[device] = w
        return w[:n]

    def compute(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return a ``(len(tensors),)`` int64 tensor of hashes on the first tensor's device.

        Small tensors are hashed together (one handful of kernels for all of them), larger ones
        one by one in chunks. Must be called under ``torch.no_grad()``.
        """
        if not tensors:
            return torch.zeros(0, dtype=torch.int64)
        device = tensors[0].device
        out = torch.zeros(len(tensors), dtype=torch.int64, device=device)
        small: dict[torch.device, list[int]] = {}
        for i, t in enumerate(tensors):
            words = _words(t)
            n = words.numel()
            if n == 0:
                continue
            if n <= SMALL:
                small.setdefault(t.device, []).append(i)
            else:
                out[i] = self._large(words).to(device)
        for dev, idx in small.items():
            out.index_copy_(
                0,
                torch.tensor(idx, dtype=torch.int64, device=device),
                self._small_group([_words(tensors[i]) for i in idx], dev).to(device),
            )
        return out

    def _large(self, words: torch.Tensor) -> torch.Tensor:
        n = words.numel()
        w = self.weights(n, words.device)
        chunk = _CPU_CHUNK if words.device.type == "cpu" else _DEV_CHUNK
        if n <= chunk:
            return (words.to(torch.int64) * w).sum()
        buf = torch.empty(chunk, dtype=torch.int64, device=words.device)
        acc = torch.zeros((), dtype=torch.int64, device=words.device)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            part = buf[: hi - lo]
            torch.mul(words[lo:hi], w[lo:hi], out=part)  # int16/int32 promote to int64
            acc += part.sum()
        return acc

    def _small_group(self, group: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        sizes = [t.numel() for t in group]
        buf = torch.cat([t.to(torch.int64) for t in group])
        # Word i of every tensor uses weight i: the position within its own tensor.
        seg = torch.repeat_interleave(
            torch.arange(len(group), device=device),
            torch.tensor(sizes, device=device),
        )
        starts = torch.tensor([0, *sizes[:-1]], dtype=torch.int64, device=device).cumsum(0)
        pos = torch.arange(buf.numel(), device=device) - starts.index_select(0, seg)
        prod = buf * self.weights(max(sizes), device).index_select(0, pos)
        return torch.zeros(len(group), dtype=torch.int64, device=device).index_add_(0, seg, prod)


def combine(names: Sequence[str], rows: Sequence[tuple[int, str]]) -> str:
    """One 64-bit hex digest of named per-tensor hashes (for step records and cross-rank)."""
    h = hashlib.blake2b(digest_size=8)
    for name, (value, meta) in zip(names, rows, strict=True):
        h.update(f"{name}\0{meta}\0{value & 0xFFFF_FFFF_FFFF_FFFF:016x}\n".encode())
    return h.hexdigest()


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
