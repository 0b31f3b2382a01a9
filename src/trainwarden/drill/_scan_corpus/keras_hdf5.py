"""Keras archives and HDF5 files."""

from __future__ import annotations

import base64
import json
import marshal
import types
from pathlib import Path

from trainwarden.drill._scan_corpus._base import _bytes_sample, _Clean, _Mal, code_of
from trainwarden.drill._scan_corpus._common import _zip_bytes


def _lambda_code(c: Path) -> types.CodeType:
    module = compile(f"lambda x: ({code_of(c)}, x)[1]", "<lambda>", "eval")
    return next(k for k in module.co_consts if isinstance(k, types.CodeType))


def _keras_lambda(c: Path) -> bytes:
    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input"},
                },
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "registered_name": None,
                    "config": {
                        "name": "lambda",
                        "trainable": True,
                        "dtype": "float32",
                        "function": {
                            "module": "builtins",
                            "class_name": "function",
                            "config": code_b64,
                            "registered_name": "function",
                        },
                        "arguments": {},
                    },
                },
            ],
        },
        "registered_name": None,
    }
    meta = {"keras_version": "3.3.3", "date_saved": "2024-05-01@12:00:00"}
    return _zip_bytes(
        {
            "metadata.json": json.dumps(meta).encode(),
            "config.json": json.dumps(config).encode(),
            "model.weights.h5": b"",
        }
    )


def _keras_module_ref(c: Path) -> bytes:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "module": "os",
                    "class_name": "system",
                    "registered_name": None,
                    "config": {"command": f"touch {c}"},
                }
            ],
        },
    }
    meta = {"keras_version": "3.8.0", "date_saved": "2025-01-01@12:00:00"}
    return _zip_bytes(
        {"metadata.json": json.dumps(meta).encode(), "config.json": json.dumps(config).encode()}
    )


def _h5_lambda(path: Path, c: Path) -> None:
    import h5py  # type: ignore[import-untyped]

    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "Lambda",
                    "config": {
                        "name": "lambda",
                        "trainable": True,
                        "function": [code_b64, None, None],
                        "function_type": "lambda",
                        "output_shape": None,
                        "arguments": {},
                    },
                }
            ],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.create_group("model_weights")


def _keras_activation_ref(c: Path) -> bytes:
    dense = {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": "dense",
            "units": 2,
            "activation": {
                "module": "subprocess",
                "class_name": "function",
                "config": "getoutput",
                "registered_name": "function",
            },
        },
    }
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": [dense]},
    }
    meta = {"keras_version": "3.8.0", "date_saved": "2025-01-01@12:00:00"}
    return _zip_bytes(
        {"metadata.json": json.dumps(meta).encode(), "config.json": json.dumps(config).encode()}
    )


def _keras_nested_lambda(c: Path) -> bytes:
    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    lam = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {
            "name": "inner_lambda",
            "function": {
                "module": "builtins",
                "class_name": "function",
                "config": code_b64,
                "registered_name": "function",
            },
            "arguments": {},
        },
    }
    inner = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "block", "layers": [lam]},
    }
    outer = {
        "module": "keras",
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 4], "name": "in"},
                },
                inner,
            ],
        },
    }
    meta = {"keras_version": "3.3.3", "date_saved": "2024-05-01@12:00:00"}
    return _zip_bytes(
        {"metadata.json": json.dumps(meta).encode(), "config.json": json.dumps(outer).encode()}
    )


def _h5_lambda_bytes_attr(path: Path, c: Path) -> None:
    import h5py
    import numpy as np

    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {
                    "class_name": "Lambda",
                    "name": "lambda",
                    "config": {
                        "name": "lambda",
                        "function": [code_b64, None, None],
                        "function_type": "lambda",
                        "arguments": {},
                    },
                }
            ],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        f.attrs["keras_version"] = np.bytes_(b"2.15.0")
        f.attrs["backend"] = np.bytes_(b"tensorflow")
        f.create_group("model_weights")


def _h5py_file(path: Path) -> None:
    import h5py
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("weights/dense", data=np.arange(12, dtype=np.float32).reshape(3, 4))
        f.attrs["description"] = "embedding table"


def _h5_keras_dense(path: Path) -> None:
    import h5py
    import numpy as np

    cfg = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {"batch_input_shape": [None, 4], "name": "input_1"},
                },
                {
                    "class_name": "Dense",
                    "config": {"name": "dense", "units": 2, "activation": "relu", "use_bias": True},
                },
            ],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.create_dataset("model_weights/dense/dense/kernel:0", data=np.zeros((4, 2), np.float32))


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    b = _bytes_sample
    return [
        _Mal(
            "keras_lambda_layer",
            ".keras",
            "Keras 3 .keras with a Lambda layer (marshal code)",
            "CVE-2024-3660 (Keras Lambda arbitrary code)",
            b(_keras_lambda),
            trigger=None,
        ),
        _Mal(
            "keras_config_module_function_reference",
            ".keras",
            "Keras config naming module 'os' class 'system'",
            "CVE-2025-1550 (Keras safe_mode bypass via config module refs)",
            b(_keras_module_ref),
            trigger=None,
        ),
        _Mal(
            "h5_lambda_config",
            ".h5",
            "Keras 2 HDF5 with a Lambda layer in model_config",
            "CVE-2024-3660; modelscan H5LambdaDetectScan",
            _h5_lambda,
            trigger=None,
        ),
        _Mal(
            "keras_activation_function_reference",
            ".keras",
            "Dense activation deserialised from module subprocess, function getoutput",
            "CVE-2025-1550 / CVE-2025-9906 (Keras config function references)",
            b(_keras_activation_ref),
            trigger=None,
        ),
        _Mal(
            "keras_lambda_nested_in_functional",
            ".keras",
            "Lambda inside a Sequential inside a Functional",
            "CVE-2024-3660 (nested configs)",
            b(_keras_nested_lambda),
            trigger=None,
        ),
        _Mal(
            "h5_lambda_config_bytes_attr",
            ".h5",
            "Keras 2 HDF5, model_config stored as bytes",
            "CVE-2024-3660; h5py bytes attributes",
            _h5_lambda_bytes_attr,
            trigger=None,
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean("h5py_datasets", ".h5", "h5py.File datasets", _h5py_file),
        _Clean(
            "h5_keras_dense_config",
            ".h5",
            "h5py file with a Keras 2 Dense-only model_config",
            _h5_keras_dense,
        ),
    ]
