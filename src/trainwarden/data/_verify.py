"""Check that the batches a job trains on are the ones its declared sampler yields.

A :class:`DataSpec` declares the dataset, its manifest and the sampler: a seeded permutation per
epoch (seed + epoch), cut to a multiple of the world size and dealt to ranks round-robin, then
into batches, which is ``DistributedSampler``'s order (a single process is world size 1). Every
rank's shards of one epoch are disjoint and cover the epoch, so a rank whose batches are its
declared shard drops and duplicates nothing. :class:`BatchVerifier` rebuilds the declared batch
for each step from items checked against the manifest and compares it, row by row, with the batch
the job received.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from trainwarden.data._manifest import DataError, DataManifest, FileDataset, item_digest
from trainwarden.findings import Severity

__all__ = ["BatchVerifier", "DataFinding", "DataSpec", "declared_batches", "for_rank"]


@dataclass(frozen=True)
class DataFinding:
    """A batch that is not the declared one. ``rule_id`` is ``TWD-BATCH-MISMATCH`` (an item
    differs from the declared item at that position: reordered, dropped, duplicated or altered),
    ``TWD-ITEM-TAMPERED`` (the dataset serves an item that is not the manifest's) or
    ``TWD-BATCH-UNVERIFIABLE`` (the batch's structure cannot be compared: fail closed)."""

    rule_id: str
    severity: Severity
    batch: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSpec:
    """The declared data of a job: dataset, manifest and sampler (seed, batch size, rank).

    ``input_leaf`` is the position, among the collated batch's tensors, of what the model's
    forward receives (the monitor checks that tensor at the forward); ``items_per_batch`` is how
    many positions of each batch are verified (``None``: all), chosen with a secret random
    generator so a loader cannot know which rows are looked at.
    """

    dataset: Any
    manifest: DataManifest
    batch_size: int
    seed: int
    shuffle: bool = True
    rank: int = 0
    world_size: int = 1
    collate_fn: Callable[[list[Any]], Any] | None = None
    items_per_batch: int | None = None
    input_leaf: int = 0
    observers: list[Callable[[Any], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise DataError(
                f"bad sampler declaration: batch_size {self.batch_size}, rank {self.rank} of "
                f"{self.world_size}"
            )
        if self.items_per_batch is not None and self.items_per_batch < 1:
            raise DataError("items_per_batch must be at least 1 (or None for all)")
        if len(self.manifest) != len(self.dataset):
            raise DataError(
                f"the dataset has {len(self.dataset)} items, its manifest {len(self.manifest)}"
            )
        if self.manifest.kind == "files":
            if not isinstance(self.dataset, FileDataset):
                raise DataError("a manifest of files needs a trainwarden.data.FileDataset")
            rel = tuple(p.relative_to(self.dataset.root).as_posix() for p in self.dataset.paths)
            if rel != self.manifest.paths:
                raise DataError("the dataset's files are not the manifest's files")

    def epoch_indices(self, epoch: int, rank: int | None = None) -> list[int]:
        """The indices ``rank`` (default: this rank) reads in ``epoch``, in order."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        usable = n - n % self.world_size
        r = self.rank if rank is None else rank
        return [int(i) for i in order[:usable][r :: self.world_size]]

    def batches_per_epoch(self) -> int:
        return (len(self.dataset) // self.world_size) // self.batch_size

    def batch_indices(self, k: int) -> list[int]:
        """The indices of this rank's ``k``-th batch since the start (epochs follow on)."""
        per = self.batches_per_epoch()
        if per == 0:
            raise DataError("the dataset is smaller than one batch per rank")
        epoch, b = divmod(k, per)
        return self.epoch_indices(epoch)[b * self.batch_size : (b + 1) * self.batch_size]

    def loader(self, **kwargs: Any) -> torch.utils.data.DataLoader[Any]:
        """A DataLoader that yields exactly the declared batches, epoch after epoch."""
        return _ObservedLoader(
            self,
            self.dataset,
            batch_sampler=_DeclaredBatches(self),
            collate_fn=self.collate_fn,
            **kwargs,
        )


class _ObservedLoader(torch.utils.data.DataLoader[Any]):
    """Hands every batch it yields to the spec's observers (a monitor's data check) first."""

    def __init__(self, spec: DataSpec, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._spec = spec

    def __iter__(self) -> Any:
        for batch in super().__iter__():
            for observe in list(self._spec.observers):
                observe(batch)
            yield batch


def declared_batches(spec: DataSpec, rank: int, world_size: int) -> Iterable[list[int]]:
    """The batch sampler ``spec`` declares, for ``rank`` of ``world_size`` ranks."""
    return _DeclaredBatches(for_rank(spec, rank, world_size))


def for_rank(spec: DataSpec, rank: int, world_size: int) -> DataSpec:
    """``spec`` as rank ``rank`` of ``world_size`` reads it (same dataset, seed and manifest)."""
    if (spec.rank, spec.world_size) == (rank, world_size):
        return spec
    return dataclasses.replace(spec, rank=rank, world_size=world_size, observers=[])


class _DeclaredBatches:
    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        per = self.spec.batches_per_epoch()
        for b in range(per):
            yield self.spec.batch_indices(epoch * per + b)

    def __len__(self) -> int:
        return self.spec.batches_per_epoch()


def _tensors(obj: Any) -> list[torch.Tensor] | None:
    """The collated batch's tensors in order, or ``None`` if a leaf is not a tensor."""
    out: list[torch.Tensor] = []
    stack: list[Any] = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif isinstance(o, dict):
            stack.extend(o[k] for k in sorted(o, key=str, reverse=True))
        elif isinstance(o, (list, tuple)):
            stack.extend(reversed(o))
        else:
            return None
    return out


def _expected(spec: DataSpec, item: Any) -> list[torch.Tensor] | None:
    """The item as a batch of one. With the default collation, built from the item's leaves
    directly, so a patched ``default_collate`` changes the loader's batches but not this."""
    if spec.collate_fn is not None:
        return _tensors(spec.collate_fn([item]))
    leaves = _tensors_or_scalars(item)
    if leaves is None:
        return None
    return [leaf.unsqueeze(0) for leaf in leaves]


def _tensors_or_scalars(obj: Any) -> list[torch.Tensor] | None:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, bool | int | float):
        return [torch.as_tensor(obj)]
    if isinstance(obj, dict):
        out: list[torch.Tensor] = []
        for k in sorted(obj, key=str):
            sub = _tensors_or_scalars(obj[k])
            if sub is None:
                return None
            out += sub
        return out
    if isinstance(obj, (list, tuple)):
        out = []
        for v in obj:
            sub = _tensors_or_scalars(v)
            if sub is None:
                return None
            out += sub
        return out
    return None


class BatchVerifier:
    """Compares the batches a job receives with the declared ones, in order.

    Call :meth:`check_batch` with each collated batch as the loader yields it, or
    :meth:`check_input` with the tensor the model's forward received; both advance to the next
    declared batch. Each returns the findings for that batch (empty when it is the declared one).
    """

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self.next_batch = 0
        self._rng = secrets.SystemRandom()

    def _trusted(self, i: int) -> tuple[Any, DataFinding | None]:
        spec = self.spec
        ds = spec.dataset
        if isinstance(ds, FileDataset):
            try:
                return ds.trusted_item(i, spec.manifest), None
            except (DataError, OSError) as e:
                return None, self._tampered(i, str(getattr(e, "message", e)))
        item = ds[i]
        try:
            ok = item_digest(item) == spec.manifest.digests[i]
        except DataError as e:
            return None, self._tampered(i, e.message)
        if not ok:
            return None, self._tampered(i, f"dataset item {i} is not the one in the manifest")
        return item, None

    def _tampered(self, i: int, why: str) -> DataFinding:
        return DataFinding(
            "TWD-ITEM-TAMPERED",
            Severity.CRITICAL,
            self.next_batch,
            f"batch {self.next_batch}: {why} (the dataset or its files were altered)",
            {"index": i},
        )

    def _positions(self, n: int) -> list[int]:
        k = self.spec.items_per_batch
        if k is None or k >= n:
            return list(range(n))
        return sorted(self._rng.sample(range(n), k))

    def check_batch(self, batch: Any) -> list[DataFinding]:
        """Verify a whole collated batch (every tensor leaf: inputs and labels)."""
        return self._check(batch, None)

    def check_input(self, tensor: torch.Tensor) -> list[DataFinding]:
        """Verify the tensor the model's forward received (the batch's ``input_leaf``)."""
        return self._check(tensor, self.spec.input_leaf)

    def _check(self, observed: Any, leaf: int | None) -> list[DataFinding]:
        k = self.next_batch
        try:
            return self._compare(k, observed, leaf)
        finally:
            self.next_batch = k + 1

    def _unverifiable(self, k: int, why: str) -> list[DataFinding]:
        return [
            DataFinding(
                "TWD-BATCH-UNVERIFIABLE",
                Severity.HIGH,
                k,
                f"batch {k} cannot be compared with the declared batch: {why}",
            )
        ]

    def _compare(self, k: int, observed: Any, leaf: int | None) -> list[DataFinding]:
        spec = self.spec
        indices = spec.batch_indices(k)
        got = _tensors(observed)
        if got is None:
            return self._unverifiable(k, "a batch element is not a tensor")
        n_got = {int(t.shape[0]) for t in got if t.dim() > 0}
        if n_got != {len(indices)}:
            return [
                DataFinding(
                    "TWD-BATCH-MISMATCH",
                    Severity.CRITICAL,
                    k,
                    f"batch {k} has {sorted(n_got)} items, the declared sampler gives "
                    f"{len(indices)} (samples dropped or added)",
                    {"declared": indices},
                )
            ]
        for pos in self._positions(len(indices)):
            i = indices[pos]
            item, bad = self._trusted(i)
            if bad is not None:
                return [bad]
            expected = _expected(spec, item)
            if expected is None:
                return self._unverifiable(k, "the collated item has a non-tensor element")
            if leaf is not None:
                if leaf >= len(expected):
                    return self._unverifiable(k, f"the batch has no tensor {leaf}")
                expected = [expected[leaf]]
            if len(expected) != len(got):
                return self._unverifiable(k, "its structure is not the collated items'")
            for t_exp, t_got in zip(expected, got, strict=True):
                row = t_got[pos].detach().cpu()
                if (
                    row.dtype != t_exp.dtype
                    or row.shape != t_exp.shape[1:]
                    or not torch.equal(row, t_exp[0])
                ):
                    return [
                        DataFinding(
                            "TWD-BATCH-MISMATCH",
                            Severity.CRITICAL,
                            k,
                            f"batch {k}, position {pos}: not dataset item {i} as the declared "
                            "sampler and the manifest give it (reordered, dropped, duplicated "
                            "or altered samples)",
                            {"position": pos, "declared_index": i},
                        )
                    ]
        return []
