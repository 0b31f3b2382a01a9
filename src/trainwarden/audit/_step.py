"""The audited optimizer step and the digests both sides compare: one implementation for both.

The job and the auditor must run the same step; keeping it in one function is what makes a clean
replay bitwise on the same build. Digests are BLAKE2b-128 over dtype, shape and the raw bytes, so
two tensors share a digest only if they are bit-identical (or with probability about 2^-128).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import default_collate

from trainwarden.audit._types import Job

_PERSON = b"tw-audit-v1"


def tensor_digest(t: torch.Tensor) -> str:
    """Digest of a tensor's exact bits (dtype and shape included)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    h = hashlib.blake2b(digest_size=16, person=_PERSON)
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def value_digest(v: Any) -> str:
    """Digest of a tensor, or of the ``repr`` of a plain value (optimizer step counts)."""
    if isinstance(v, torch.Tensor):
        return tensor_digest(v)
    return hashlib.blake2b(repr(v).encode(), digest_size=16, person=_PERSON).hexdigest()


def batch_digest(batch: Any) -> str:
    """Digest of every tensor in a collated batch, in order (other leaves by ``repr``)."""
    h = hashlib.blake2b(digest_size=16, person=_PERSON)
    for leaf in _leaves(batch):
        h.update(value_digest(leaf).encode())
    return h.hexdigest()


def _leaves(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _leaves(obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def param_names(job: Job) -> dict[int, str]:
    return {id(p): n for n, p in job.model.named_parameters()}


def state_digests(job: Job) -> dict[str, str]:
    """Digests of the model state dict and of every optimizer state entry, by name."""
    out = {f"model.{k}": value_digest(v) for k, v in job.model.state_dict().items()}
    names = param_names(job)
    for p, st in job.optimizer.state.items():
        name = names.get(id(p), f"<unnamed {id(p)}>")
        for k, v in st.items():
            out[f"optim.{name}.{k}"] = value_digest(v)
    return out


def grad_digests(job: Job) -> dict[str, str]:
    return {n: tensor_digest(p.grad) for n, p in job.model.named_parameters() if p.grad is not None}


def hyperparameters(job: Job) -> list[dict[str, Any]]:
    """The scalar settings of every parameter group (what this step's update will use)."""
    groups = []
    for g in job.optimizer.param_groups:
        groups.append(
            {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in sorted(g.items())
                if k != "params" and (v is None or isinstance(v, (bool, int, float, str, tuple)))
            }
        )
    return groups


def _canonical(v: Any, h: Any) -> None:
    # An exact, typed encoding: floats by their repr (exact), tensors by their bits.
    if isinstance(v, torch.Tensor):
        h.update(b"T" + tensor_digest(v).encode())
    elif isinstance(v, dict):
        h.update(b"{%d" % len(v))
        for k in sorted(v, key=repr):
            h.update(repr(k).encode() + b":")
            _canonical(v[k], h)
        h.update(b"}")
    elif isinstance(v, (list, tuple)):
        h.update(b"[%d" % len(v))
        for x in v:
            _canonical(x, h)
        h.update(b"]")
    elif v is None or isinstance(v, (bool, int, float, str, bytes)):
        h.update(type(v).__name__.encode() + b"=" + repr(v).encode() + b";")
    else:
        h.update(b"?" + type(v).__qualname__.encode() + b";")


def schedule_digest(job: Job) -> str:
    """Digest of what decides the next steps' hyperparameters: every parameter group's scalar
    settings and the scheduler's whole state (``base_lrs``, ``last_epoch``, ...).

    The weights' and optimizer state's digests do not cover them, and a checkpoint written
    after a schedule was edited in memory would otherwise replay as its own consistent run.
    """
    h = hashlib.blake2b(digest_size=16, person=_PERSON)
    _canonical(hyperparameters(job), h)
    if job.scheduler is not None:
        _canonical(job.scheduler.state_dict(), h)
    return h.hexdigest()


def rng_blob() -> str:
    """The CPU generator's full state, compressed and base64-encoded."""
    state = torch.get_rng_state().numpy().tobytes()
    return base64.b64encode(zlib.compress(state, 6)).decode("ascii")


# The CPU generator's state is 5,056 bytes; a recorded blob that inflates past this is no
# state the recorder wrote (a step record line of 1 MiB can hold a zlib stream of ~1 GB).
MAX_RNG_STATE = 1 << 16


def rng_state_bytes(blob: str) -> bytes:
    """The raw generator state of a recorded blob; ``ValueError`` when it is not one (not
    text, not base64, not zlib, or inflating past :data:`MAX_RNG_STATE`), decided without
    inflating more than that."""
    if not isinstance(blob, str):
        raise ValueError(f"the RNG state is a {type(blob).__name__}, not a string")
    d = zlib.decompressobj()
    try:
        raw = d.decompress(base64.b64decode(blob.encode("ascii"), validate=True), MAX_RNG_STATE)
    except (zlib.error, UnicodeEncodeError, binascii.Error) as e:
        raise ValueError(f"the RNG state is not a recorded one ({e})") from e
    if d.unconsumed_tail or not d.eof:
        raise ValueError(f"the RNG state inflates past {MAX_RNG_STATE} bytes")
    return raw


def set_rng_blob(blob: str) -> None:
    raw = rng_state_bytes(blob)
    torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


def collate(job: Job, items: list[Any]) -> Any:
    fn = job.collate_fn or default_collate
    return fn(items)


def accumulate(
    job: Job,
    micro_batches: Sequence[Any],
    forward_model: Any | None = None,
    no_sync: Callable[[], Any] | None = None,
) -> float:
    """Zero the gradients and back-propagate every micro-batch's loss divided by their number.

    ``forward_model`` (a ``DistributedDataParallel`` wrapper of ``job.model``) runs the forward
    when given; ``no_sync`` is its ``no_sync`` context, entered for all but the last micro-batch
    so gradients are all-reduced once, after the last. Returns the summed (scaled) loss.
    """
    model, opt = job.model, job.optimizer
    fwd = forward_model if forward_model is not None else model
    model.train()
    opt.zero_grad(set_to_none=True)
    n = len(micro_batches)
    total = 0.0
    if job.micro_step is not None:
        for i in range(n):
            total += float(job.micro_step(fwd, micro_batches, i))
        return total
    for i, mb in enumerate(micro_batches):
        if no_sync is not None and i < n - 1:
            with no_sync():
                loss = job.loss_fn(fwd, mb) / n
                loss.backward()
        else:
            loss = job.loss_fn(fwd, mb) / n
            loss.backward()
        total += float(loss.detach())
    return total


def finish(job: Job, after_backward: Callable[[], None] | None = None) -> None:
    """Clip (when the job clips), call ``after_backward``, step the optimizer and scheduler."""
    if job.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.max_grad_norm)
    if after_backward is not None:
        after_backward()
    job.optimizer.step()
    if job.scheduler is not None:
        job.scheduler.step()


def run_step(
    job: Job,
    micro_batches: Sequence[Any],
    after_backward: Callable[[], None] | None = None,
    forward_model: Any | None = None,
    no_sync: Callable[[], Any] | None = None,
) -> float:
    """One optimizer step over ``micro_batches``; returns the summed (scaled) loss."""
    total = accumulate(job, micro_batches, forward_model, no_sync)
    finish(job, after_backward)
    return total


class ActivationTap:
    """Forward hooks on every named submodule that digest its output while ``armed``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.armed = False
        self.digests: list[tuple[str, str]] = []
        self._handles = [
            m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if name
        ]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_m: Any, _inp: Any, out: Any) -> None:
            if self.armed:
                self.digests.append((name, batch_digest(out)))

        return hook

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, str]]]:
        self.digests = []
        self.armed = True
        try:
            yield self.digests
        finally:
            self.armed = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
