"""Batches checked against the declared sampler and the manifest, with real DataLoaders patched
the ways a saboteur would: reorder, drop, duplicate, alter labels, patch the dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from trainwarden.data import BatchVerifier, DataError, DataSpec, dataset_manifest


class Labelled(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """40 items: a feature vector and a class label."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(40, 4, generator=g)
        self.y = torch.arange(40) % 3

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i].clone(), self.y[i].clone()


def spec(**kw: Any) -> DataSpec:
    ds = kw.pop("dataset", None) or Labelled()
    return DataSpec(ds, dataset_manifest(ds), batch_size=4, seed=5, **kw)


def run(s: DataSpec, loader: Any, steps: int) -> list[tuple[int, str]]:
    """Verify ``steps`` batches of ``loader`` (epochs follow on); (batch, rule) of each finding."""
    v = BatchVerifier(s)
    found = []
    it = iter(loader)
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        found += [(f.batch, f.rule_id) for f in v.check_batch(batch)]
    return found


def test_declared_loader_verifies_clean_over_several_epochs() -> None:
    s = spec()
    assert s.batches_per_epoch() == 10
    assert run(s, s.loader(), 25) == []


class _Patched:
    """A batch sampler over the declared one, rewritten by ``fn`` from batch ``start`` on."""

    def __init__(self, s: DataSpec, fn: Any, start: int = 3) -> None:
        self.inner, self.fn, self.start, self.n = s.loader().batch_sampler, fn, start, 0

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.inner:  # type: ignore[union-attr]
            self.n += 1
            yield self.fn(list(b)) if self.n > self.start else list(b)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("reorder within the batch", lambda b: b[::-1]),
        ("drop a sample", lambda b: b[:-1]),
        ("duplicate a sample", lambda b: [*b[:-1], b[0]]),
        ("substitute a sample", lambda b: [*b[:-1], (b[-1] + 1) % 40]),
    ],
)
def test_patched_sampler_is_caught_at_its_first_batch(name: str, fn: Any) -> None:
    s = spec()
    loader = torch.utils.data.DataLoader(s.dataset, batch_sampler=_Patched(s, fn))
    found = run(s, loader, 6)
    assert found and found[0] == (3, "TWD-BATCH-MISMATCH"), name


def test_batches_swapped_between_steps_are_caught() -> None:
    s = spec()
    order = list(s.loader().batch_sampler)  # type: ignore[arg-type]
    order[3], order[4] = order[4], order[3]
    loader = torch.utils.data.DataLoader(s.dataset, batch_sampler=order)
    assert run(s, loader, 6)[0] == (3, "TWD-BATCH-MISMATCH")


def test_labels_flipped_by_the_collate_function_are_caught() -> None:
    s = spec()
    n = {"calls": 0}

    def flip(items: list[Any]) -> Any:
        x, y = torch.utils.data.default_collate(items)
        n["calls"] += 1
        return (x, (y + 1) % 3) if n["calls"] > 2 else (x, y)

    loader = torch.utils.data.DataLoader(
        s.dataset, batch_sampler=s.loader().batch_sampler, collate_fn=flip
    )
    assert run(s, loader, 4)[0] == (2, "TWD-BATCH-MISMATCH")


def test_dataset_patched_to_flip_labels_is_caught_by_the_manifest() -> None:
    s = spec()
    original = Labelled.__getitem__

    def patched(self: Labelled, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = original(self, i)
        return x, (y + 1) % 3

    loader = s.loader()
    v = BatchVerifier(s)
    it = iter(loader)
    assert v.check_batch(next(it)) == []
    Labelled.__getitem__ = patched  # type: ignore[method-assign]
    try:
        # The loader and the verifier both read the patched dataset: only the manifest,
        # written before the run, knows the labels changed.
        (f,) = v.check_batch(next(it))
    finally:
        Labelled.__getitem__ = original  # type: ignore[method-assign]
    assert (f.rule_id, f.batch) == ("TWD-ITEM-TAMPERED", 1)


def test_sampled_positions_catch_a_reorder_and_only_cost_k_items() -> None:
    s = spec(items_per_batch=2)
    swap = lambda b: [b[1], b[0], b[3], b[2]]  # noqa: E731 - every position differs
    loader = torch.utils.data.DataLoader(s.dataset, batch_sampler=_Patched(s, swap, start=0))
    assert run(s, loader, 1) == [(0, "TWD-BATCH-MISMATCH")]


def test_ranks_shards_partition_each_epoch() -> None:
    r0, r1 = spec(rank=0, world_size=2), spec(rank=1, world_size=2)
    for epoch in range(3):
        a, b = r0.epoch_indices(epoch), r1.epoch_indices(epoch)
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(40))
    assert r0.epoch_indices(0) != r0.epoch_indices(1)


def test_a_rank_reading_another_ranks_shard_is_caught() -> None:
    r0, r1 = spec(rank=0, world_size=2), spec(rank=1, world_size=2)
    # Rank 1's loader serves rank 0's shard: the two ranks train on the same samples.
    assert run(r1, r0.loader(), 2)[0] == (0, "TWD-BATCH-MISMATCH")


def test_a_non_tensor_batch_is_unverifiable_not_passed() -> None:
    s = spec()
    (f,) = BatchVerifier(s).check_batch([["not", "tensors"]])
    assert f.rule_id == "TWD-BATCH-UNVERIFIABLE"


def test_manifest_of_another_dataset_is_refused() -> None:
    ds = Labelled()
    with pytest.raises(DataError, match="40 items, its manifest 39"):
        DataSpec(ds, dataset_manifest(torch.utils.data.Subset(ds, range(39))), 4, 0)


def test_a_patched_default_collate_does_not_blind_the_verifier(monkeypatch: Any) -> None:
    import torch.utils.data._utils.collate as collate_mod

    s = spec()
    original: Any = collate_mod.default_collate

    def flipping(items: list[Any]) -> Any:
        x, y = original(items)
        return x, (y + 1) % 3

    # The saboteur patches the collate function everything in the process uses.
    monkeypatch.setattr(collate_mod, "default_collate", flipping)
    monkeypatch.setattr(torch.utils.data, "default_collate", flipping)
    loader = torch.utils.data.DataLoader(
        s.dataset, batch_sampler=s.loader().batch_sampler, collate_fn=flipping
    )
    assert run(s, loader, 1) == [(0, "TWD-BATCH-MISMATCH")]


def test_declared_batches_for_a_rank_are_that_ranks_shard() -> None:
    from trainwarden.data._verify import declared_batches, for_rank

    s = spec()
    r1 = for_rank(s, 1, 2)
    assert (r1.rank, r1.world_size, r1.seed, r1.manifest) == (1, 2, s.seed, s.manifest)
    assert r1.observers == [] and for_rank(s, 0, 1) is s
    flat = [i for b in declared_batches(s, 1, 2) for i in b]
    assert flat == r1.epoch_indices(0)[: len(flat)] == spec(rank=1, world_size=2).epoch_indices(0)
