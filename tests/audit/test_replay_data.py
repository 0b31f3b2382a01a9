"""Replay audit with declared data: recorded batches must be the declared sampler's, and their
items the manifest's, even when the loader that fed the job lied consistently."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from trainwarden.audit import Job, replay
from trainwarden.data import DataManifest, DataSpec, dataset_manifest
from trainwarden.data import _verify as data_verify
from trainwarden.drill._replay_attacks import train
from trainwarden.drill.gpt import make_tiny_job


@functools.cache
def _manifest() -> DataManifest:
    return dataset_manifest(make_tiny_job().dataset)


def job_with_data() -> Job:
    """The drill job declaring its data: seed 7, batches of 8, the dataset's manifest."""
    job = make_tiny_job()
    job.data = DataSpec(job.dataset, _manifest(), batch_size=8, seed=7)
    return job


def test_declared_data_replays_clean(tmp_path: Path) -> None:
    train(job_with_data(), tmp_path / "run", steps=8, audit_every=4)
    report = replay(tmp_path / "run", job_with_data, seed=1)
    assert [r.status for r in report.intervals] == ["reproduced", "reproduced"]


def test_a_loader_that_reorders_batches_is_caught_though_its_record_is_consistent(
    tmp_path: Path,
) -> None:
    original = data_verify._DeclaredBatches.__iter__

    def swapped(self: Any) -> Any:
        # The saboteur swaps batches 5 and 6; the recorder faithfully records what was served,
        # so indices, batch digests and gradients all agree with each other.
        batches = list(original(self))
        batches[5], batches[6] = batches[6], batches[5]
        yield from batches

    data_verify._DeclaredBatches.__iter__ = swapped  # type: ignore[method-assign]
    try:
        train(job_with_data(), tmp_path / "run", steps=8, audit_every=4)
    finally:
        data_verify._DeclaredBatches.__iter__ = original  # type: ignore[method-assign]
    # Without the declaration the swap is invisible to the replay...
    plain = replay(tmp_path / "run", make_tiny_job, seed=1)
    assert [r.status for r in plain.intervals] == ["reproduced", "reproduced"]
    # ...with it, step 5 is named.
    second = replay(tmp_path / "run", job_with_data, seed=1).intervals[1]
    assert (second.status, second.step, second.where) == ("diverged", 5, "data")
    assert "declared sampler's batch 5" in second.detail


def test_a_dataset_relabelled_before_the_run_fails_the_manifest(tmp_path: Path) -> None:
    def tampered() -> Job:
        job = job_with_data()
        job.dataset.data[::50] = (job.dataset.data[::50] + 1) % job.dataset.vocab_size
        return job

    # The job trained on altered text from the start; its records are self-consistent.
    train(tampered(), tmp_path / "run", steps=8, audit_every=4)
    report = replay(tmp_path / "run", tampered, seed=1)
    bad = [r for r in report.intervals if r.status == "diverged"]
    assert bad and bad[0].where == "data" and "data manifest" in bad[0].detail
