"""Recording, inside the job: what an outside replay needs, and nothing it can recompute.

Every ``audit_every`` steps a checkpoint (model, optimizer, scheduler, RNG) is written with its
manifest; every step appends one hash-chained record (batch indices and digests, RNG state at step
start, hyperparameters, loss, gradient and state digests, optionally per-module activation
digests) to ``steps.jsonl`` and sends its chain hash to the event sink, so a record rewritten
later no longer matches what the sink (the ledger, when configured) holds.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from trainwarden._internal.sink import EventSink, NullSink
from trainwarden.audit import _step
from trainwarden.audit._types import AuditError, Job

__all__ = ["DEFAULT_AUDIT_EVERY", "AuditRecorder", "chain_hash"]

DEFAULT_AUDIT_EVERY = 50
FORMAT_VERSION = 1


def chain_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of a step record's canonical JSON without its own ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(data.encode()).hexdigest()


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def steps_name(rank: int, world_size: int) -> str:
    """The step-record file of ``rank``: ``steps.jsonl`` in a single-process run."""
    return "steps.jsonl" if world_size == 1 else f"steps.rank{rank}.jsonl"


class _TrackedBatches:
    """Wraps a batch sampler; every list of indices it yields is queued for the next step."""

    def __init__(self, inner: Iterable[list[int]], queue: collections.deque[list[int]]) -> None:
        self.inner = inner
        self.queue = queue

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.inner:
            batch = [int(i) for i in indices]
            self.queue.append(batch)
            yield batch

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


class AuditRecorder:
    """Records a training run so that ``trainwarden audit replay`` can re-execute sampled steps.

    Use :meth:`loader` (or wrap your own batch sampler with :meth:`track`) so the recorder knows
    which dataset items each step consumed, and run each optimizer step through :meth:`step`.
    Per-module activation digests (which localise a divergence to a module's forward) are
    recorded every ``activation_every`` steps (0: never); the other digests every step.
    Create the recorder before ``watch()``: it registers its forward hooks once, at creation.

    In a data-parallel job, pass the ``DistributedDataParallel`` wrapper as ``ddp`` (``job.model``
    stays the wrapped module) and create a recorder on every rank with the same ``run_dir``.
    Each rank records its own batches, RNG state and *local* gradient (the contribution it hands
    to the all-reduce, taken by a communication hook the recorder registers) in
    ``steps.rank<r>.jsonl``; rank 0 writes the checkpoints. The replay rebuilds every rank's
    contribution from its batches and names the rank whose contribution was wrong.
    """

    def __init__(
        self,
        job: Job,
        run_dir: str | os.PathLike[str],
        *,
        audit_every: int = DEFAULT_AUDIT_EVERY,
        sink: EventSink | None = None,
        sign_key: Any | None = None,
        activation_every: int = 10,
        run_id: str | None = None,
        ddp: Any | None = None,
    ) -> None:
        if audit_every < 1:
            raise AuditError(f"audit_every must be at least 1, not {audit_every}")
        if activation_every < 0:
            raise AuditError(f"activation_every must be 0 (never) or more, not {activation_every}")
        self.job = job
        self.run_dir = Path(run_dir)
        self.ddp = ddp
        self.rank, self.world_size = 0, 1
        self._local: dict[str, str] = {}
        if ddp is not None:
            self._attach_ddp(ddp)
        self.audit_every = audit_every
        from trainwarden.ledger._client import configured_sink
        from trainwarden.sink import TeeSink

        # With TRAINWARDEN_LEDGER_URL/TOKEN set, every record's chain hash also goes to the
        # ledger, out of the job's reach.
        self._ledger = configured_sink()
        sinks = [s for s in (sink, self._ledger) if s is not None]
        self.sink: EventSink = (
            TeeSink(*sinks) if len(sinks) > 1 else (sinks[0] if sinks else NullSink())
        )
        self.sign_key = sign_key
        self.run_id = run_id or secrets.token_hex(8)
        if ddp is not None and run_id is None:
            import torch.distributed as dist

            shared = [self.run_id]
            dist.broadcast_object_list(shared, src=0)  # every rank's records name one run
            self.run_id = str(shared[0])
        self.step_index = 0
        self._queue: collections.deque[list[int]] = collections.deque()
        self._prev = "0" * 64
        self.activation_every = activation_every
        self._tap = _step.ActivationTap(job.model) if activation_every else None
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self._steps = (self.run_dir / steps_name(self.rank, self.world_size)).open(
            "a", encoding="utf-8"
        )
        meta = {
            "format": FORMAT_VERSION,
            "run_id": self.run_id,
            "audit_every": audit_every,
            "activation_every": activation_every,
            "torch": torch.__version__,
            "max_grad_norm": job.max_grad_norm,
            "world_size": self.world_size,
            "threads": torch.get_num_threads(),
        }
        if self.rank == 0:
            (self.run_dir / "audit.json").write_text(json.dumps(meta, indent=2) + "\n")
        self.sink.emit("audit.start", {**meta, "rank": self.rank})

    def _attach_ddp(self, ddp: Any) -> None:
        import torch.distributed as dist
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        model: Any = self.job.model
        wrapped: Any = getattr(ddp, "module", None)
        if wrapped is not model:
            raise AuditError(
                "ddp must be the DistributedDataParallel wrapper of job.model",
                hint="build Job(model=module, ...) and pass DistributedDataParallel(module)",
            )
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        names = {id(p): n for n, p in model.named_parameters()}
        local = self._local

        def record_contribution(state: Any, bucket: Any) -> Any:
            # The bucket still holds this rank's own accumulated gradients: digest them before
            # the all-reduce averages them with the other ranks'.
            for p, g in zip(bucket.parameters(), bucket.gradients(), strict=True):
                local[names.get(id(p), f"<unnamed {id(p)}>")] = _step.tensor_digest(g)
            return allreduce_hook(state, bucket)

        # DDP inspects the hook's annotations, which this module's postponed evaluation turns
        # into strings: give it the objects it compares with.
        record_contribution.__annotations__ = {
            "state": object,
            "bucket": dist.GradBucket,  # type: ignore[attr-defined]
            "return": torch.futures.Future[torch.Tensor],
        }
        try:
            ddp.register_comm_hook(None, record_contribution)
        except RuntimeError as e:
            raise AuditError(
                f"cannot record this rank's gradient contribution: {e}",
                hint="the recorder registers DDP's communication hook; do not register another",
            ) from e

    # -- data ---------------------------------------------------------------------------------
    def track(self, batch_sampler: Iterable[list[int]]) -> Iterable[list[int]]:
        """Wrap a batch sampler so that each yielded list of indices is recorded in order."""
        return _TrackedBatches(batch_sampler, self._queue)

    def loader(
        self, batch_size: int, *, shuffle: bool = True, seed: int = 0, num_workers: int = 0
    ) -> torch.utils.data.DataLoader[Any]:
        """A DataLoader over the job's dataset whose batches are tracked.

        With ``job.data`` (a ``DataSpec``) it yields that declared sampler's batches for this
        rank, and ``batch_size``, ``shuffle`` and ``seed`` are the spec's, not these arguments.

        It draws its order from its own seeded generator, never from the global RNG, so the
        global RNG moves only inside steps (which the replay checks).
        """
        gen = torch.Generator()
        gen.manual_seed(seed)
        ds = self.job.dataset
        if self.job.data is not None:
            # The job declared its sampler: yield exactly its batches (for this rank).
            from trainwarden.data._verify import declared_batches

            spec = self.job.data
            return torch.utils.data.DataLoader(
                ds,
                batch_sampler=self.track(declared_batches(spec, self.rank, self.world_size)),
                collate_fn=self.job.collate_fn,
                num_workers=num_workers,
            )
        sampler: torch.utils.data.Sampler[int]
        if self.world_size > 1:
            # Each rank reads its own shard of one seeded permutation.
            sampler = torch.utils.data.DistributedSampler(
                ds, self.world_size, self.rank, shuffle=shuffle, seed=seed, drop_last=True
            )
        elif shuffle:
            sampler = torch.utils.data.RandomSampler(ds, generator=gen)
        else:
            sampler = torch.utils.data.SequentialSampler(ds)
        batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=True)
        return torch.utils.data.DataLoader(
            ds,
            batch_sampler=self.track(batches),
            collate_fn=self.job.collate_fn,
            num_workers=num_workers,
            generator=gen,
        )

    # -- steps --------------------------------------------------------------------------------
    def step(self, micro_batches: Sequence[Any]) -> float:
        """Run and record one optimizer step over ``micro_batches`` (from :meth:`loader`)."""
        if not micro_batches:
            raise AuditError("a step needs at least one micro-batch")
        if len(self._queue) < len(micro_batches):
            raise AuditError(
                "the recorder did not see these batches being sampled",
                hint="draw batches from recorder.loader(...) or a sampler wrapped by track()",
            )
        if self.step_index == 0:
            self._checkpoint()
        indices = [self._queue.popleft() for _ in micro_batches]
        self._local.clear()
        record: dict[str, Any] = {
            "step": self.step_index,
            # Chained with the rest of the record: the replay decides from it, not from
            # audit.json (which the job can rewrite), that RNG continuity is checked.
            "by": "recorder",
            "micro": indices,
            "batch": [_step.batch_digest(mb) for mb in micro_batches],
            "rng": _step.rng_blob(),
            "hparams": _step.hyperparameters(self.job),
        }
        grads: dict[str, str] = {}

        def after_backward() -> None:
            grads.update(_step.grad_digests(self.job))

        ddp = self.ddp
        no_sync = ddp.no_sync if ddp is not None else None
        if self._tap is not None and self.step_index % self.activation_every == 0:
            with self._tap.recording() as acts:
                loss = _step.run_step(self.job, micro_batches, after_backward, ddp, no_sync)
            record["acts"] = [list(a) for a in acts]
        else:
            loss = _step.run_step(self.job, micro_batches, after_backward, ddp, no_sync)
        record["loss"] = _step.finite(loss)
        record["grads"] = grads
        if ddp is not None:
            record["rank"] = self.rank
            record["local"] = dict(sorted(self._local.items()))
        record["state"] = _step.state_digests(self.job)
        record["sched"] = _step.schedule_digest(self.job)
        record["prev"] = self._prev
        record["hash"] = chain_hash(record)
        self._prev = record["hash"]
        self._steps.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        self._steps.flush()
        os.fsync(self._steps.fileno())
        self.sink.emit(
            "audit.step",
            {
                "run_id": self.run_id,
                "step": self.step_index,
                "rank": self.rank,
                "hash": record["hash"],
                "loss": loss,
            },
        )
        self.step_index += 1
        if self.step_index % self.audit_every == 0:
            self._checkpoint()
        return loss

    def _checkpoint(self) -> None:
        if self.rank != 0:
            return  # replicas are identical; each rank's own RNG state is in its step records
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
        self.sink.emit(
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
        """Write a checkpoint at the last step (if not on a boundary) and close the record."""
        if self.step_index % self.audit_every and self.step_index:
            self._checkpoint()
        self._steps.close()
        if self._tap is not None:
            self._tap.remove()
        self.sink.emit("audit.end", {"run_id": self.run_id, "steps": self.step_index})
        if self._ledger is not None:
            self._ledger.close()

    def __enter__(self) -> AuditRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
