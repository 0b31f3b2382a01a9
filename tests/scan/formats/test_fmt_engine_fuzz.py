"""Mutated files of every non-pickle format through the real engine: no handler may crash.

The engine turns an exception escaping a handler into TWS-INTERNAL (fail closed); for these
handlers that would be a bug, so mutated inputs must produce only their own rule ids.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

import h5py  # type: ignore[import-untyped]
import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from trainwarden.scan import scan_bytes

from .chat_templates import CLEAN
from .fmt_support import GGUF_ARRAY, GGUF_STRING, GGUF_UINT32, gguf_bytes


def _samples() -> list[bytes]:
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
            "b": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]},
        }
    ).encode()
    safetensors = struct.pack("<Q", len(header)) + header + bytes(16)
    gguf = gguf_bytes(
        [
            ("general.alignment", GGUF_UINT32, 32),
            ("tokenizer.ggml.tokens", GGUF_ARRAY, (GGUF_STRING, ["<s>", "a", "b"])),
            ("tokenizer.chat_template", GGUF_STRING, CLEAN["gemma"]),
        ],
        [("w", (4,), np.ones(4, dtype=np.float32))],
    )
    w = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
        initializer=[w],
    )
    model = helper.make_model(graph)
    onnx.checker.check_model(model)
    keras_cfg = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"layers": [{"module": "keras.layers", "class_name": "Dense", "config": {}}]},
    }
    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.ones((2, 2), dtype=np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        zf.writestr("config.json", json.dumps(keras_cfg))
        zf.writestr("model.weights.h5", weights.getvalue())
    return [
        safetensors,
        gguf,
        model.SerializeToString(),
        buf.getvalue(),
        json.dumps(keras_cfg).encode(),
    ]


_SAMPLES = _samples()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(_SAMPLES) - 1),
    cut=st.integers(0, 10**6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4),
)
def test_mutated_files_never_crash_a_handler(
    which: int, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(_SAMPLES[which])
    for at, x in flips:
        data[at % len(data)] ^= x
    mutated = bytes(data[: len(data) - cut % len(data)])
    report = scan_bytes(mutated, "fuzz")
    internal = [f for f in report.findings if f.rule_id == "TWS-INTERNAL"]
    assert internal == [], internal


def test_unmutated_samples_are_clean() -> None:
    for data in _SAMPLES:
        assert scan_bytes(data, "sample").findings == ()
