"""Training data integrity: a per-item content-hash manifest of a dataset, and a check that the
batches a job trains on are the ones its declared sampler yields, item for item.

:func:`directory_manifest` / :func:`dataset_manifest` write the manifest once, before training,
where the job cannot reach; :class:`DataSpec` declares the dataset, its manifest and the sampler
(seed, batch size, rank); :class:`BatchVerifier` compares each batch with the declared one.
"""

from __future__ import annotations

from trainwarden.data._manifest import (
    DataError,
    DataLimits,
    DataManifest,
    FileDataset,
    dataset_manifest,
    directory_manifest,
    item_digest,
    write_directory_manifest,
)
from trainwarden.data._verify import BatchVerifier, DataFinding, DataSpec

__all__ = [
    "BatchVerifier",
    "DataError",
    "DataFinding",
    "DataLimits",
    "DataManifest",
    "DataSpec",
    "FileDataset",
    "dataset_manifest",
    "directory_manifest",
    "item_digest",
    "write_directory_manifest",
]
