"""Builders shared by more than one container family."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from trainwarden.drill._scan_corpus._base import _evil


def _zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _torch_save_bytes(obj: Any, **kw: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def _torch_evil_zip(c: Path) -> bytes:
    import torch

    return _torch_save_bytes({"weight": torch.zeros(2), "hook": _evil(c)})


def _npy_object_bytes(c: Path) -> bytes:
    import numpy as np

    arr = np.empty(2, dtype=object)
    arr[0] = 1
    arr[1] = _evil(c)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _tiny_net() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8),
        torch.nn.LayerNorm(8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 2),
    )


def _sd_float() -> Any:
    return _tiny_net().state_dict()


def _np_random() -> Any:
    import numpy as np

    return {"legacy": np.random.RandomState(0), "state": np.random.get_state()}


def _py_random() -> Any:
    import random

    r = random.Random(1234)  # noqa: S311 -- a model's data-order RNG, not cryptography
    return {"python": r.getstate()}


def _onnx_graph() -> Any:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "W")
    b = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["H"]),
            helper.make_node("Add", ["H", "B"], ["Y"]),
            helper.make_node("Relu", ["Y"], ["Z"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 4])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
