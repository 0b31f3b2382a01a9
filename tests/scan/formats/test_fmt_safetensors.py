"""Safetensors handler: files written by the safetensors library are clean; defects are found."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file

from trainwarden.findings import Severity
from trainwarden.scan._formats.safetensors import HANDLER

from .fmt_support import RecordingContext, run_handler


def _real_torch_file(tmp_path: Path) -> bytes:
    path = tmp_path / "model.safetensors"
    torch_save_file(
        {
            "w": torch.randn(3, 4),
            "b": torch.zeros(4, dtype=torch.bfloat16),
            "i": torch.arange(5, dtype=torch.int64),
            "flag": torch.tensor([True, False]),
            "empty": torch.empty(0, 3),
            "c": torch.randn(2, dtype=torch.complex64),
        },
        str(path),
        metadata={"format": "pt", "note": "tiny"},
    )
    return path.read_bytes()


def _build(header: dict[str, object] | str, body: bytes) -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_real_torch_safetensors_is_clean(tmp_path: Path) -> None:
    ctx = run_handler(HANDLER, _real_torch_file(tmp_path))
    assert ctx.findings == []
    assert ctx.formats == ["safetensors"]


def test_real_numpy_safetensors_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "np.safetensors"
    np_save_file(
        {"a": np.ones((2, 2), dtype=np.float16), "u": np.arange(7, dtype=np.uint8)}, str(path)
    )
    assert run_handler(HANDLER, path.read_bytes()).findings == []


def test_sniff_rejects_other_content() -> None:
    assert not HANDLER.sniff(b"\x80\x04K\x01.")
    assert not HANDLER.sniff(b"PK\x03\x04" + b"\x00" * 40)
    assert not HANDLER.sniff(struct.pack("<Q", 10**12) + b"{}")
    assert not HANDLER.sniff(b'        {"indented": "json"}')


def test_absurd_header_length_is_reported() -> None:
    data = (
        struct.pack("<Q", 1 << 40)
        + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    )
    ctx = run_handler(HANDLER, data)
    assert ctx.rule_ids == {"TWS-ST-001"}


@pytest.mark.parametrize(
    ("header", "body", "rule"),
    [
        ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}', b"\0" * 4, "TWS-ST-002"),
        ('["not", "an", "object"]', b"", "TWS-ST-002"),
        (
            '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
            ' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
            b"\0" * 8,
            "TWS-ST-003",
        ),
        ({"__metadata__": {"k": 1}}, b"", "TWS-ST-004"),
        ({"a": {"dtype": "PICKLE", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "TWS-ST-005"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "TWS-ST-005"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "TWS-ST-006"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}}, b"\0" * 4, "TWS-ST-007"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
            "TWS-ST-008",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
            },
            b"\0" * 12,
            "TWS-ST-009",
        ),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9, "TWS-ST-010"),
        ('{"a": NaN}', b"", "TWS-ST-002"),
    ],
    ids=[
        "truncated-json",
        "header-not-object",
        "duplicate-key-parser-differential",
        "metadata-not-string",
        "unknown-dtype",
        "negative-dim",
        "shape-size-mismatch",
        "offsets-out-of-range",
        "overlapping-tensors",
        "hidden-gap",
        "trailing-data",
        "nan-constant",
    ],
)
def test_defects_are_reported(header: dict[str, object] | str, body: bytes, rule: str) -> None:
    ctx = RecordingContext()
    HANDLER.scan(_build(header, body), "<test>", ctx)
    assert rule in ctx.rule_ids


def test_header_longer_than_file_is_reported() -> None:
    data = struct.pack("<Q", 5000) + b'{"a": 1}'
    assert HANDLER.sniff(data)
    ctx = run_handler(HANDLER, data)
    assert ctx.rule_ids == {"TWS-ST-001"}
    assert ctx.max_severity() == Severity.HIGH


def test_real_file_tampered_offsets_reported(tmp_path: Path) -> None:
    data = bytearray(_real_torch_file(tmp_path))
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["w"]["data_offsets"][1] += 4  # grow one tensor over its neighbour
    raw = json.dumps(header).encode()
    tampered = struct.pack("<Q", len(raw)) + raw + bytes(data[8 + n :])
    ctx = run_handler(HANDLER, tampered)
    assert "TWS-ST-006" in ctx.rule_ids


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=2000), flips=st.lists(st.integers(0, 10**6), max_size=4)
)
def test_mutated_files_never_raise(cut: int, flips: list[int]) -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]},
    }
    data = bytearray(_build(header, bytes(range(24))))
    for f in flips:
        data[f % len(data)] ^= 0xFF
    mutated = bytes(data[: max(0, len(data) - cut % len(data))])
    ctx = RecordingContext()
    HANDLER.sniff(mutated)
    HANDLER.scan(mutated, "<fuzz>", ctx)
    if not flips and cut % len(data):
        assert ctx.findings, "a truncated file must not pass as clean"
