"""Registry order: files that a looser sniff (zlib, protocol-0 pickle) would also accept reach
their own handler through ``scan_bytes``."""

from __future__ import annotations

import io
import json
import struct

import h5py  # type: ignore[import-untyped]
import numpy as np

from trainwarden.scan import scan_bytes
from trainwarden.scan._formats import HANDLERS, pickle

from .fmt_support import GGUF_STRING, gguf_bytes


def test_safetensors_with_a_zlib_looking_length_is_safetensors() -> None:
    header = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (376 - len(header))  # 376 = 0x0178: bytes 78 01, a valid zlib header
    data = struct.pack("<Q", 376) + header + b"\0" * 4
    assert data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0  # a valid zlib header
    report = scan_bytes(data, "x")
    assert "safetensors" in report.formats
    assert report.findings == ()


def test_gguf_and_hdf5_that_look_like_protocol0_pickles() -> None:
    gguf = gguf_bytes(
        [("general.name", GGUF_STRING, "x.")], [("w", (4,), np.full(4, 0.5, dtype=np.float32))]
    )
    gguf += b"."  # a STOP byte in the tail: pickle's protocol-0 sniff now accepts it
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["note"] = "v1."
    h5 = buf.getvalue() + b"."
    for data, fmt in ((gguf, "gguf"), (h5, "hdf5")):
        assert pickle.HANDLER.sniff(data)
        report = scan_bytes(data, fmt)
        assert report.formats == (fmt,)
        assert report.findings == ()


def test_every_format_module_is_registered() -> None:
    names = {h.name for h in HANDLERS}
    assert {"keras", "keras-json", "hdf5", "onnx", "gguf", "safetensors"} <= names
