"""Keras (.keras zip, legacy JSON) and HDF5 handlers: clean models pass, code in configs is found.

Keras itself is not installed: archives are assembled the way Keras 3 writes them (config.json,
metadata.json, model.weights.h5 written with h5py), HDF5 models with h5py writing the root
attributes Keras 2 writes (model_config, training_config, keras_version, backend).
"""

from __future__ import annotations

import base64
import io
import json
import marshal
import zipfile
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwarden.findings import Severity
from trainwarden.scan._formats import h5, keras

from .fmt_support import RecordingContext, run_handler


def _layer(class_name: str, config: dict[str, Any], module: str = "keras.layers") -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _dense(name: str = "dense", activation: Any = "relu") -> dict[str, Any]:
    return _layer(
        "Dense",
        {
            "name": name,
            "trainable": True,
            "dtype": {
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": "float32"},
                "registered_name": None,
            },
            "units": 4,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": {
                "module": "keras.initializers",
                "class_name": "GlorotUniform",
                "config": {"seed": None},
                "registered_name": None,
            },
            "bias_initializer": {
                "module": "keras.initializers",
                "class_name": "Zeros",
                "config": {},
                "registered_name": None,
            },
        },
    )


def _v3_config(*layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "trainable": True,
            "layers": [
                _layer("InputLayer", {"batch_shape": [None, 4], "dtype": "float32", "name": "in"}),
                *layers,
            ],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": {
            "optimizer": {
                "module": "keras.optimizers",
                "class_name": "Adam",
                "config": {"name": "adam", "learning_rate": 0.001},
                "registered_name": None,
            },
            "loss": {
                "module": "keras.losses",
                "class_name": "MeanSquaredError",
                "config": {"name": "mean_squared_error", "reduction": "sum_over_batch_size"},
                "registered_name": None,
            },
            "metrics": ["mae"],
        },
    }


def _weights_h5(extra_attrs: dict[str, Any] | None = None) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for k, v in (extra_attrs or {}).items():
            f.attrs[k] = v
        g = f.create_group("layers/dense/vars")
        g.create_dataset("0", data=np.ones((4, 4), dtype=np.float32))
        g.create_dataset("1", data=np.zeros(4, dtype=np.float32))
        f.create_group("optimizer/vars")
    return buf.getvalue()


def _keras_zip(
    config: Any, *, weights: bytes | None = None, raw_config: bytes | None = None
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "metadata.json",
            json.dumps({"keras_version": "3.6.0", "date_saved": "2024-10-01@12:00:00"}),
        )
        zf.writestr("config.json", raw_config if raw_config is not None else json.dumps(config))
        zf.writestr("model.weights.h5", weights if weights is not None else _weights_h5())
    return buf.getvalue()


def _lambda_code(canary: Path) -> str:
    # Bytecode of a function that would create the canary; it is marshalled, never executed.
    src = f"def f(x):\n    open({str(canary)!r}, 'w').close()\n    return x\n"
    fn_code = next(c for c in compile(src, "<payload>", "exec").co_consts if hasattr(c, "co_code"))
    return base64.b64encode(marshal.dumps(fn_code)).decode()


def _v3_lambda(canary: Path) -> dict[str, Any]:
    return _layer(
        "Lambda",
        {
            "name": "lambda",
            "function": {
                "class_name": "__lambda__",
                "config": {"code": _lambda_code(canary), "defaults": None, "closure": None},
            },
            "arguments": {},
        },
    )


def _legacy_config(*layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "Dense",
                    "config": {"name": "dense", "units": 4, "activation": "relu"},
                },
                *layers,
            ],
        },
        "keras_version": "2.15.0",
        "backend": "tensorflow",
    }


def _legacy_h5(config: Any, *, as_bytes: bool = True) -> bytes:
    text = json.dumps(config)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["model_config"] = text.encode("utf-8") if as_bytes else text
        f.attrs["training_config"] = json.dumps(
            {
                "loss": "mse",
                "metrics": ["mae"],
                "optimizer_config": {"class_name": "Adam", "config": {}},
            }
        ).encode()
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        w = f.create_group("model_weights")
        w.attrs["layer_names"] = [b"dense"]
        w.create_group("dense").create_dataset("dense/kernel:0", data=np.ones((4, 4), dtype="f4"))
    return buf.getvalue()


def _ctx() -> RecordingContext:
    return RecordingContext()  # members are dispatched over the scanner's real registry


def _found(ctx: RecordingContext) -> set[tuple[str, Severity, str]]:
    """Every finding as (rule, severity, location): tests pin the exact set."""
    return {(f.rule_id, f.severity, f.location) for f in ctx.findings}


# --- .keras archives -------------------------------------------------------------------------


def test_clean_keras_archive() -> None:
    ctx = run_handler(keras.HANDLER, _keras_zip(_v3_config(_dense())), ctx=_ctx())
    assert ctx.findings == [], [f.message for f in ctx.findings]
    assert "<test>:model.weights.h5" in [loc for loc, _ in ctx.members]
    assert {"keras", "hdf5", "keras-json"} <= set(ctx.formats)


def test_keras_lambda_layer_is_critical(canary: Path) -> None:
    ctx = run_handler(
        keras.HANDLER, _keras_zip(_v3_config(_dense(), _v3_lambda(canary))), ctx=_ctx()
    )
    assert _found(ctx) == {("TWS-KERAS-001", Severity.CRITICAL, "<test>:config.json")}


@pytest.mark.parametrize(
    ("activation", "rule", "severity"),
    [
        (
            {"module": "os", "class_name": "function", "config": "system", "registered_name": "fn"},
            "TWS-KERAS-002",
            Severity.CRITICAL,
        ),
        (
            {
                "module": "builtins",
                "class_name": "function",
                "config": "exec",
                "registered_name": None,
            },
            "TWS-KERAS-003",
            Severity.CRITICAL,
        ),
        (
            {
                "module": "evil_pkg.acts",
                "class_name": "function",
                "config": "gelu2",
                "registered_name": None,
            },
            "TWS-KERAS-002",
            Severity.HIGH,
        ),
        (
            {
                "module": "keras.utils",
                "class_name": "function",
                "config": "get_file",
                "registered_name": None,
            },
            "TWS-KERAS-003",
            Severity.CRITICAL,
        ),
        (
            {
                "module": "keras.config",
                "class_name": "function",
                "config": "enable_unsafe_deserialization",
                "registered_name": None,
            },
            "TWS-KERAS-003",
            Severity.CRITICAL,
        ),
    ],
    ids=[
        "os-system-function",
        "builtins-exec",
        "unknown-module",
        "cve-2025-8747-get-file",
        "cve-2025-9906-unsafe",
    ],
)
def test_function_references_in_config(
    activation: dict[str, Any], rule: str, severity: Severity, canary: Path
) -> None:
    ctx = run_handler(
        keras.HANDLER, _keras_zip(_v3_config(_dense(activation=activation))), ctx=_ctx()
    )
    assert _found(ctx) == {(rule, severity, "<test>:config.json")}


def test_custom_layer_class_outside_keras() -> None:
    custom = _layer("Backdoor", {"name": "bd"}, module="evil_pkg.layers")
    custom["registered_name"] = "EvilPkg>Backdoor"
    ctx = run_handler(keras.HANDLER, _keras_zip(_v3_config(custom)), ctx=_ctx())
    assert _found(ctx) == {
        ("TWS-KERAS-002", Severity.HIGH, "<test>:config.json"),
        ("TWS-KERAS-004", Severity.MEDIUM, "<test>:config.json"),
    }


def test_tfsm_layer_and_file_vocabulary() -> None:
    tfsm = _layer("TFSMLayer", {"name": "t", "filepath": "/models/other", "call_endpoint": "serve"})
    lookup = _layer("StringLookup", {"name": "s", "vocabulary": "/etc/passwd"})
    ctx = run_handler(keras.HANDLER, _keras_zip(_v3_config(tfsm, lookup)), ctx=_ctx())
    assert _found(ctx) == {
        ("TWS-KERAS-003", Severity.CRITICAL, "<test>:config.json"),
        ("TWS-KERAS-005", Severity.HIGH, "<test>:config.json"),
    }


def test_lambda_hidden_in_nested_h5_member(canary: Path) -> None:
    weights = _legacy_h5(_legacy_config(_legacy_lambda(canary)))
    ctx = run_handler(keras.HANDLER, _keras_zip(_v3_config(_dense()), weights=weights), ctx=_ctx())
    assert _found(ctx) == {("TWS-KERAS-001", Severity.CRITICAL, "<test>:model.weights.h5")}


def test_malformed_config_json_fails_closed() -> None:
    ctx = run_handler(
        keras.HANDLER, _keras_zip(None, raw_config=b'{"class_name": "Seq'), ctx=_ctx()
    )
    assert ctx.rule_ids == {"TWS-KERAS-006"}
    assert ctx.max_severity() == Severity.HIGH


def test_torch_zip_is_not_taken_for_keras() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("config.json", "{}")
        zf.writestr("metadata.json", "{}")
    assert not keras.HANDLER.sniff(buf.getvalue())
    assert not keras.HANDLER.sniff(b"PK\x03\x04garbage")


def test_corrupt_member_fails_closed() -> None:
    data = bytearray(_keras_zip(_v3_config(_dense())))
    at = data.index(b"model.weights.h5") + len(b"model.weights.h5") + 10
    data[at : at + 8] = b"\xff" * 8  # damage the deflated weights stream
    ctx = _ctx()
    keras.HANDLER.scan(bytes(data), "<test>", ctx)
    assert _found(ctx) == {("TWS-ZIP-UNREADABLE", Severity.HIGH, "<test>:model.weights.h5")}


# --- legacy JSON configs ------------------------------------------------------------------


def _legacy_lambda(canary: Path) -> dict[str, Any]:
    return {
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "function": [_lambda_code(canary), None, None],
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "arguments": {},
        },
    }


def test_legacy_json_clean_and_sniff() -> None:
    data = json.dumps(_legacy_config()).encode()
    assert run_handler(keras.JSON_HANDLER, data).findings == []
    assert not keras.JSON_HANDLER.sniff(
        b'{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}'
    )


def test_legacy_json_lambda_and_raw_function(canary: Path) -> None:
    raw = {
        "class_name": "Lambda",
        "config": {"name": "l2", "function": "system", "function_type": "raw", "module": "os"},
    }
    data = json.dumps(_legacy_config(_legacy_lambda(canary), raw)).encode()
    ctx = run_handler(keras.JSON_HANDLER, data)
    # each Lambda layer once, and the raw function reference by the function it imports
    assert sorted(
        (f.rule_id, f.severity, " ".join(f.message.split()[:3])) for f in ctx.findings
    ) == [
        ("TWS-KERAS-001", Severity.CRITICAL, "config at $.config.layers[1]"),
        ("TWS-KERAS-001", Severity.CRITICAL, "config at $.config.layers[2]"),
        ("TWS-KERAS-002", Severity.CRITICAL, "config at $.config.layers[2].config.function"),
    ]
    assert "os.system" in next(f.message for f in ctx.findings if f.rule_id == "TWS-KERAS-002")


# --- HDF5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes-attr", "str-attr"])
def test_clean_legacy_h5_model(as_bytes: bool) -> None:
    ctx = run_handler(h5.HANDLER, _legacy_h5(_legacy_config(), as_bytes=as_bytes))
    assert ctx.findings == []
    assert ctx.formats == ["hdf5"]


def test_clean_weights_only_h5() -> None:
    assert run_handler(h5.HANDLER, _weights_h5()).findings == []


def test_h5_lambda_is_critical(canary: Path) -> None:
    ctx = run_handler(h5.HANDLER, _legacy_h5(_legacy_config(_legacy_lambda(canary))))
    assert _found(ctx) == {("TWS-KERAS-001", Severity.CRITICAL, "<test>")}


@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes-attr", "str-attr"])
def test_h5_byte_scan_fallback_finds_lambda(as_bytes: bool, canary: Path) -> None:
    data = _legacy_h5(_legacy_config(_legacy_lambda(canary)), as_bytes=as_bytes)
    ctx = RecordingContext()
    h5.HANDLER.scan_fallback(data, "<test>", ctx, h5py_failed=False)
    assert _found(ctx) == {("TWS-KERAS-001", Severity.CRITICAL, "<test>")}


def test_h5_fallback_clean_weights_need_no_finding() -> None:
    ctx = RecordingContext()
    h5.HANDLER.scan_fallback(_weights_h5(), "<test>", ctx, h5py_failed=False)
    assert ctx.findings == []


def test_h5_uninspectable_config_fails_closed() -> None:
    data = _weights_h5({"model_config": np.bytes_(b"{not json at all")})
    ctx = run_handler(h5.HANDLER, data)
    assert ctx.rule_ids == {"TWS-H5-002"}
    fallback = RecordingContext()
    h5.HANDLER.scan_fallback(data, "<test>", fallback, h5py_failed=False)
    assert fallback.rule_ids == {"TWS-H5-002"}


def test_h5_with_userblock_is_sniffed() -> None:
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=512) as f:
        f.attrs["model_config"] = json.dumps(_legacy_config())
    assert run_handler(h5.HANDLER, buf.getvalue()).findings == []


def test_truncated_h5_with_config_name_fails_closed(canary: Path) -> None:
    data = _legacy_h5(_legacy_config(_legacy_lambda(canary)))
    ctx = run_handler(h5.HANDLER, data[: len(data) // 2])
    # the damaged file is a finding, and the Lambda still visible in the bytes is CRITICAL
    assert ctx.rule_ids == {"TWS-H5-001", "TWS-KERAS-001"}
    assert ctx.max_severity() is Severity.CRITICAL


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=10**6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=6),
)
def test_mutated_h5_never_crashes_the_scanner(cut: int, flips: list[tuple[int, int]]) -> None:
    base = bytearray(_legacy_h5(_legacy_config()))
    for at, x in flips:
        base[at % len(base)] ^= x
    data = bytes(base[: len(base) - cut % len(base)])
    ctx = RecordingContext()
    if h5.HANDLER.sniff(data):
        h5.HANDLER.scan(data, "<fuzz>", ctx)
    for f in ctx.findings:
        assert f.rule_id.startswith(("TWS-H5-", "TWS-KERAS-"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=10**6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=6),
)
def test_mutated_keras_archives_never_raise(cut: int, flips: list[tuple[int, int]]) -> None:
    base = bytearray(_keras_zip(_v3_config(_dense()), weights=b"not-hdf5"))
    for at, x in flips:
        base[at % len(base)] ^= x
    data = bytes(base[: len(base) - cut % len(base)])
    ctx = RecordingContext()
    for handler in (keras.HANDLER, keras.JSON_HANDLER):
        if handler.sniff(data):
            handler.scan(data, "<fuzz>", ctx)


def test_hdf5_library_crash_is_contained() -> None:
    # These three byte flips make HDF5 2.0.0 (h5py 3.16) segfault while opening the file (found
    # by fuzzing); a fixed HDF5 must still report the damage (TWS-H5-001).
    data = bytearray(_legacy_h5(_legacy_config()))
    for at, x in [(5057, 211), (7085, 23), (807, 181)]:
        data[at] ^= x
    ctx = run_handler(h5.HANDLER, bytes(data))
    assert ctx.rule_ids & {"TWS-H5-003", "TWS-H5-001"}
    # the reader is replaced after a crash: the next file is read normally
    assert run_handler(h5.HANDLER, _legacy_h5(_legacy_config())).findings == []


def test_forked_worker_processes_get_their_own_reader(tmp_path: Path, canary: Path) -> None:
    # The parent starts a reader first; a process pool forked afterwards must not share it.
    from trainwarden.scan import scan_path

    assert run_handler(h5.HANDLER, _legacy_h5(_legacy_config())).findings == []
    for i in range(6):
        layers = [_legacy_lambda(canary)] if i % 2 else []
        (tmp_path / f"m{i}.h5").write_bytes(_legacy_h5(_legacy_config(*layers)))
    report = scan_path(tmp_path, workers=2)
    lam = {
        Path(fr.path).name: "TWS-KERAS-001" in {f.rule_id for f in fr.findings}
        for fr in report.files
    }
    assert lam == {f"m{i}.h5": bool(i % 2) for i in range(6)}


def test_config_only_archive_still_reaches_the_keras_analysis(canary: Path) -> None:
    # No metadata.json or weights: not sniffed as .keras, but the zip handler hands config.json
    # to the Keras JSON handler by content.
    from trainwarden.scan import scan_bytes

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", json.dumps(_v3_config(_v3_lambda(canary))))
    assert not keras.HANDLER.sniff(buf.getvalue())
    report = scan_bytes(buf.getvalue(), "only-config.zip")
    assert "TWS-KERAS-001" in {f.rule_id for f in report.findings}


def test_keras_archive_config_that_does_not_look_like_keras_is_still_analysed() -> None:
    # Keras deserialises whatever config.json holds; the archive handler analyses it even when
    # the content sniff would not call it a Keras config (no "config" key here).
    config = {"class_name": "function", "module": "os", "registered_name": None}
    ctx = run_handler(keras.HANDLER, _keras_zip(config), ctx=_ctx())
    assert not keras.JSON_HANDLER.sniff(json.dumps(config).encode())
    assert "TWS-KERAS-002" in ctx.rule_ids
