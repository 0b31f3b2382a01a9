"""safetensors files."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

from trainwarden.drill._scan_corpus._base import _bytes_sample, _Clean, _evil, _Mal
from trainwarden.drill._scan_corpus._common import _sd_float


def _safetensors_overlap(c: Path) -> bytes:
    header = json.dumps(
        {
            "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(24)


def _safetensors_oversized(c: Path) -> bytes:
    return (
        struct.pack("<Q", 1 << 40)
        + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    )


def _safetensors_out_of_range(c: Path) -> bytes:
    header = json.dumps(
        {"a": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(16)


def _safetensors_torch(path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in _sd_float().items()}, str(path), metadata={"format": "pt"}
    )


def _safetensors_numpy(path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 2), dtype=np.int64)}, str(path)
    )


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    b = _bytes_sample
    return [
        _Mal(
            "safetensors_overlapping_offsets",
            ".safetensors",
            "two tensors share bytes",
            "safetensors spec: offsets must not overlap (tampering)",
            b(_safetensors_overlap),
            trigger=None,
            canary=False,
        ),
        _Mal(
            "safetensors_oversized_header",
            ".safetensors",
            "header length of 1 TiB",
            "safetensors header size limit (DoS)",
            b(_safetensors_oversized),
            trigger=None,
            canary=False,
        ),
        _Mal(
            "disguise_pickle_as_safetensors",
            ".safetensors",
            "pickle named model.safetensors",
            "CVE-2025-1889 (Sonatype: extension-based discovery)",
            b(lambda c: pickle.dumps(_evil(c), protocol=2)),
        ),
        _Mal(
            "safetensors_offsets_out_of_range",
            ".safetensors",
            "data_offsets beyond the file end",
            "safetensors spec (bounds check)",
            b(_safetensors_out_of_range),
            trigger=None,
            canary=False,
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean(
            "safetensors_torch", ".safetensors", "safetensors.torch.save_file", _safetensors_torch
        ),
        _Clean(
            "safetensors_numpy", ".safetensors", "safetensors.numpy.save_file", _safetensors_numpy
        ),
    ]
