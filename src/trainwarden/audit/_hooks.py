"""Recording from hooks: what ``watch(..., audit_every=K)`` attaches to a loop it does not run.

:class:`HookRecorder` writes the same run directory as :class:`AuditRecorder` (checkpoints with
manifests, hash-chained step records) while the job's own loop, or a framework's, runs the
steps. A step starts at the first training forward after the previous optimizer step; its
micro-batches are counted by backward passes; its gradients are taken after the optimizer step
(what the update used); its resulting state, and every ``audit_every`` steps a checkpoint, are
taken when the next step starts (or at close), so an edit made between steps is part of the step
it follows. Which dataset items each micro-batch held comes from a loader wrapped by
:meth:`HookRecorder.track`.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from trainwarden.audit import _step
from trainwarden.audit._recorder import FORMAT_VERSION, chain_hash, checkpoint_name
from trainwarden.audit._types import AuditError, Job

__all__ = ["HookRecorder", "pretrack"]

Emit = Callable[[str, dict[str, Any]], None]


class _Batches:
    """A batch sampler whose every list of indices is queued, with the collated batch's digest."""

    def __init__(self, inner: Any, queue: collections.deque[list[Any]]) -> None:
        self.inner = inner
        self.queue = queue

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.inner:
            batch = [int(i) for i in indices]
            self.queue.append([batch, None])
            yield batch

    def __len__(self) -> int:
        return len(self.inner)


class _Collate:
    """Digests each collated batch into the queue entry of the indices it was built from."""

    def __init__(self, inner: Callable[[list[Any]], Any], queue: collections.deque[list[Any]]):
        self.inner = inner
        self.queue = queue

    def __call__(self, items: list[Any]) -> Any:
        out = self.inner(items)
        if self.queue and self.queue[-1][1] is None:
            self.queue[-1][1] = _step.batch_digest(out)
        return out


def pretrack(loader: Any) -> Any:
    """Start recording ``loader``'s batches before a recorder exists; returns ``loader``.

    For a framework that creates the loader's iterator (and prefetches from it) before the
    optimizer is watched: the recorder's :meth:`HookRecorder.track` adopts the batches queued
    so far. Same requirements as ``track``.
    """
    base = _base_loader(loader)
    if isinstance(base.batch_sampler, _Batches):
        base.batch_sampler.queue.clear()  # left over from an earlier run over this loader
    else:
        queue: collections.deque[list[Any]] = collections.deque()
        object.__setattr__(base, "batch_sampler", _Batches(base.batch_sampler, queue))
        object.__setattr__(base, "collate_fn", _Collate(base.collate_fn, queue))
    return loader


def _base_loader(loader: Any) -> Any:
    base = getattr(loader, "base_dataloader", loader)
    if not isinstance(base, torch.utils.data.DataLoader):
        raise AuditError(
            f"cannot track a {type(loader).__name__}: not a torch DataLoader",
            hint="train from a torch.utils.data.DataLoader",
        )
    if base.batch_sampler is None or base.num_workers:
        raise AuditError(
            "the replay audit tracks a DataLoader with a batch sampler and num_workers=0",
            hint="the items of each batch are recorded where they are sampled and collated",
        )
    return base


def _loss_unused(_model: Any, _batch: Any) -> Any:
    raise AuditError("a hook recorder's job has no loss function: the job's own loop runs it")


class HookRecorder:
    """Records a run whose steps the job's own loop runs; attached by ``watch(audit_every=K)``.

    Call :meth:`track` on the training DataLoader before iterating it (``num_workers=0``), so
    each step's dataset indices are recorded. ``emit`` sends ``audit.*`` events to the monitor's
    sink (the ledger, when configured). Create it before any check that inventories hooks: it
    registers forward pre-hooks on every module and a gradient hook on every parameter.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        run_dir: str | os.PathLike[str],
        *,
        audit_every: int,
        emit: Emit | None,
        scheduler: Any = None,
        max_grad_norm: float | None = None,
        activation_every: int = 10,
        sign_key: Any | None = None,
        run_id: str | None = None,
    ) -> None:
        if audit_every < 1:
            raise AuditError(f"audit_every must be at least 1, not {audit_every}")
        if activation_every < 0:
            raise AuditError(f"activation_every must be 0 (never) or more, not {activation_every}")
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise AuditError(
                "recording from watch() covers single-process runs",
                hint="record a data-parallel job with AuditRecorder(job, run_dir, ddp=...)",
            )
        if isinstance(scheduler, (list, tuple)):
            if len(scheduler) > 1:
                raise AuditError(
                    "the replay audit supports one LR scheduler per optimizer",
                    hint="chain schedulers with torch.optim.lr_scheduler.SequentialLR",
                )
            scheduler = scheduler[0] if scheduler else None
        self.job = Job(
            model=model,
            optimizer=optimizer,
            dataset=None,
            loss_fn=_loss_unused,
            scheduler=scheduler,
            max_grad_norm=max_grad_norm,
        )
        self.run_dir = Path(run_dir)
        self.audit_every = audit_every
        self.activation_every = activation_every
        self.sign_key = sign_key
        self.run_id = run_id or secrets.token_hex(8)
        self._emit_to = emit
        self._held: list[tuple[str, dict[str, Any]]] | None = [] if emit is None else None
        self.step_index = 0
        self._queue: collections.deque[list[Any]] = collections.deque()
        self._prev = "0" * 64
        self._in_step = False
        self._current: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None
        self._checkpointed = -1
        self._tracked = False
        self._closed = False
        self._counts: dict[int, int] = {}
        self._tap = _step.ActivationTap(model) if activation_every else None
        self._handles: list[Any] = [
            m.register_forward_pre_hook(self._on_forward) for _, m in model.named_modules()
        ]
        for p in model.parameters():
            if p.requires_grad:
                self._handles.append(
                    p.register_post_accumulate_grad_hook(self._on_grad)  # type: ignore[no-untyped-call]
                )
        self._handles.append(optimizer.register_step_post_hook(self._on_step_post))
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self._steps = (self.run_dir / "steps.jsonl").open("a", encoding="utf-8")
        meta = {
            "format": FORMAT_VERSION,
            "run_id": self.run_id,
            "audit_every": audit_every,
            "activation_every": activation_every,
            "torch": torch.__version__,
            "max_grad_norm": max_grad_norm,
            "world_size": 1,
            "threads": torch.get_num_threads(),
            "recorded_by": "hooks",
        }
        (self.run_dir / "audit.json").write_text(json.dumps(meta, indent=2) + "\n")
        self._emit("audit.start", {**meta, "rank": 0})

    @property
    def handles(self) -> list[Any]:
        """Every hook handle the recorder registered (on modules, parameters, the optimizer)."""
        tap = list(self._tap._handles) if self._tap is not None else []
        return [*self._handles, *tap]

    @classmethod
    def from_config(
        cls,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        max_grad_norm: float | None,
        config: Any,
        default_dir: Path,
    ) -> HookRecorder:
        """The recorder ``watch()`` attaches for a ``MonitorConfig`` (``config.audit_dir``, else
        ``default_dir``, the monitor's own folder); events wait for ``bind``."""
        from trainwarden.audit._recorder import DEFAULT_AUDIT_EVERY

        run_dir = config.audit_dir if config.audit_dir is not None else default_dir
        every = config.audit_every if config.audit_every is not None else DEFAULT_AUDIT_EVERY
        return cls(
            model,
            optimizer,
            run_dir,
            audit_every=int(every),
            emit=None,
            scheduler=scheduler,
            max_grad_norm=max_grad_norm,
            activation_every=config.audit_activation_every,
            sign_key=config.audit_sign_key,
        )

    def bind(self, emit: Emit) -> None:
        """Send events to ``emit`` from now on, the ones held so far first."""
        held, self._held = self._held or [], None
        self._emit_to = emit
        for kind, rec in held:
            emit(kind, rec)

    def _emit(self, kind: str, record: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append((kind, record))
        elif self._emit_to is not None:
            self._emit_to(kind, record)

    # -- data ---------------------------------------------------------------------------------
    def track(self, loader: Any) -> Any:
        """Record which dataset items every batch of ``loader`` holds; returns ``loader``.

        Works on a ``torch.utils.data.DataLoader`` with a batch sampler (any ``batch_size``)
        and ``num_workers=0``, and on accelerate's wrappers of one (the Hugging Face Trainer's
        loader). Call it before the loader is iterated.
        """
        base = _base_loader(loader)
        if isinstance(base.batch_sampler, _Batches):
            # Wrapped before this recorder existed (pretrack): adopt what it queued so far.
            if base.batch_sampler.queue is not self._queue:
                pending = base.batch_sampler.queue
                pending.extend(self._queue)
                self._queue = pending
            self._tracked = True
            return loader
        # DataLoader refuses to reassign these after construction; its iterators read them
        # when created, so the wrappers are in place for every epoch that follows.
        object.__setattr__(base, "batch_sampler", _Batches(base.batch_sampler, self._queue))
        object.__setattr__(base, "collate_fn", _Collate(base.collate_fn, self._queue))
        self._tracked = True
        return loader

    # -- hooks --------------------------------------------------------------------------------
    def _on_forward(self, module: Any, _args: Any) -> None:
        if self._in_step or self._closed or not module.training or not torch.is_grad_enabled():
            return
        self._begin()

    def _on_grad(self, p: torch.Tensor) -> None:
        if self._in_step:
            self._counts[id(p)] = self._counts.get(id(p), 0) + 1

    def _begin(self) -> None:
        self._finish_previous()
        if self.step_index % self.audit_every == 0 and self._checkpointed != self.step_index:
            self._checkpoint()
        self._in_step = True
        self._counts = {}
        self._current = {
            "step": self.step_index,
            # In the chained record, not only in audit.json: the replay's RNG continuity check
            # is off for hook-recorded steps, and the job can rewrite audit.json.
            "by": "hooks",
            "rng": _step.rng_blob(),
            "hparams": _step.hyperparameters(self.job),
        }
        if self._tap is not None and self.step_index % self.activation_every == 0:
            self._tap.digests = []
            self._tap.armed = True

    def _on_step_post(self, _opt: Any, _args: Any, _kwargs: Any) -> None:
        if self._closed:
            return
        if not self._in_step or self._current is None:
            # An optimizer step without a training forward since the last one: nothing
            # recorded says what it computed, so the interval that holds it cannot be replayed.
            self._begin()
        rec = self._current
        if rec is None:  # _begin() always sets it; this keeps the type checker honest
            return
        if self._tap is not None and self._tap.armed:
            self._tap.armed = False
            rec["acts"] = [list(a) for a in self._tap.digests]
        micro = max(self._counts.values(), default=0)
        if micro and len(self._queue) >= micro:
            taken = [self._queue.popleft() for _ in range(micro)]
            rec["micro"] = [t[0] for t in taken]
            rec["batch"] = [t[1] for t in taken]
        else:
            rec["micro"] = None
            rec["batch"] = None
            rec["unrecorded"] = (
                "no backward pass was seen in this step"
                if not micro
                else "the loader that fed this step was not tracked"
                if not self._tracked
                else "fewer tracked batches than backward passes in this step"
            )
        rec["loss"] = None
        rec["grads"] = _step.grad_digests(self.job)
        self._pending = rec
        self._current = None
        self._in_step = False
        self.step_index += 1

    def _finish_previous(self) -> None:
        rec = self._pending
        if rec is None:
            return
        self._pending = None
        rec["state"] = _step.state_digests(self.job)
        rec["sched"] = _step.schedule_digest(self.job)
        rec["prev"] = self._prev
        rec["hash"] = chain_hash(rec)
        self._prev = rec["hash"]
        self._steps.write(json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
        self._steps.flush()
        os.fsync(self._steps.fileno())
        self._emit(
            "audit.step",
            {"run_id": self.run_id, "step": rec["step"], "rank": 0, "hash": rec["hash"]},
        )

    def _checkpoint(self) -> None:
        from trainwarden.loading import save
        from trainwarden.loading._manifest import hash_file

        job = self.job
        state: dict[str, Any] = {
            "step": self.step_index,
            "model": job.model.state_dict(),
            "optimizer": job.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if job.scheduler is not None:
            state["scheduler"] = job.scheduler.state_dict()
        path = self.run_dir / "checkpoints" / checkpoint_name(self.step_index)
        save(state, path, sign_key=self.sign_key)
        self._checkpointed = self.step_index
        self._emit(
            "audit.checkpoint",
            {
                "run_id": self.run_id,
                "step": self.step_index,
                "path": path.name,
                "sha256": hash_file(path),
                "chain": self._prev,
            },
        )

    def close(self) -> None:
        """Finish the last step's record, checkpoint the final state, remove the hooks."""
        if self._closed:
            return
        self._closed = True
        for h in self._handles:
            h.remove()
        if self._tap is not None:
            self._tap.remove()
        self._finish_previous()
        if self.step_index and self._checkpointed != self.step_index:
            self._checkpoint()
        self._steps.close()
        self._emit("audit.end", {"run_id": self.run_id, "steps": self.step_index})
