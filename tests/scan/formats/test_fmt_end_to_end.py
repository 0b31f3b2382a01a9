"""End to end through ``trainwarden.scan.scan_path``: real files of every non-pickle format.

Clean files (written by safetensors, onnx, h5py and a spec-following GGUF writer) must come back
clean; malicious variants must be flagged with the handler's rule ids, and nothing may execute.
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py  # type: ignore[import-untyped]
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data
from safetensors.torch import save_file

from trainwarden.findings import Severity
from trainwarden.scan import ScanReport, scan_bytes, scan_path

from .chat_templates import CLEAN, MALICIOUS
from .fmt_support import GGUF_STRING, GGUF_UINT32, gguf_bytes


def _onnx_model(weight: TensorProto) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])],
        initializer=[weight],
    )
    return helper.make_model(graph)


def _gguf(template: str) -> bytes:
    kv: list[tuple[str, int, object]] = [
        ("general.architecture", GGUF_STRING, "llama"),
        ("general.alignment", GGUF_UINT32, 32),
        ("tokenizer.chat_template", GGUF_STRING, template),
    ]
    return gguf_bytes(kv, [("w", (8,), np.ones(8, dtype=np.float32))])


def _h5_model(layers: list[dict[str, object]]) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
        f.attrs["model_config"] = json.dumps(cfg).encode()
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        f.create_group("model_weights")
    return buf.getvalue()


def _keras_archive(layers: list[dict[str, object]]) -> bytes:
    cfg = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": layers},
        "registered_name": None,
    }
    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_group("layers")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        zf.writestr("config.json", json.dumps(cfg))
        zf.writestr("model.weights.h5", weights.getvalue())
    return buf.getvalue()


_DENSE: dict[str, object] = {
    "module": "keras.layers",
    "class_name": "Dense",
    "config": {"units": 2},
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    canary = root / "CANARY_PWNED"
    clean = root / "clean"
    clean.mkdir()
    save_file({"w": torch.randn(2, 3), "b": torch.zeros(3)}, str(clean / "model.safetensors"))
    w = numpy_helper.from_array(np.ones((2, 3), dtype=np.float32), "W")
    onnx.save_model(
        _onnx_model(w),
        str(clean / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    (clean / "model.gguf").write_bytes(_gguf(CLEAN["llama31-tools"]))
    (clean / "model.h5").write_bytes(_h5_model([{"class_name": "Dense", "config": {"units": 2}}]))
    (clean / "model.keras").write_bytes(_keras_archive([_DENSE]))

    bad = root / "bad"
    bad.mkdir()
    ext = numpy_helper.from_array(np.ones((2, 3), dtype=np.float32), "W")
    set_external_data(ext, location="../../../../etc/passwd")
    ext.data_location = TensorProto.EXTERNAL
    ext.ClearField("raw_data")
    (bad / "exfil.onnx").write_bytes(_onnx_model(ext).SerializeToString())
    ssti = MALICIOUS["cve-2024-34359-self-init-globals"][0].replace("CANARY", str(canary))
    # a misleading name on purpose: formats are recognised by content
    (bad / "weights.bin").write_bytes(_gguf(ssti))
    lam: dict[str, object] = {
        "class_name": "Lambda",
        "config": {"function": ["ZGF0YQ==", None, None]},
    }
    (bad / "model.h5").write_bytes(_h5_model([lam]))
    fn = {"module": "os", "class_name": "function", "config": "system", "registered_name": None}
    (bad / "model.keras").write_bytes(
        _keras_archive([{**_DENSE, "config": {"units": 2, "activation": fn}}])
    )
    raw = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (bad / "tampered.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 16)

    # files over the scanner's memory-map threshold (8 MiB): handlers read them through the map
    big = root / "big"
    big.mkdir()
    save_file({"w": torch.zeros(3_000_000)}, str(big / "large.safetensors"))
    wide = numpy_helper.from_array(np.zeros((2, 1_300_000), dtype=np.float32), "W")
    (big / "large.onnx").write_bytes(_onnx_model(wide).SerializeToString())
    big_weights = io.BytesIO()
    with h5py.File(big_weights, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros(2_400_000, dtype=np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # stored, as Keras writes the weights
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        lam_cfg = {"module": "keras.layers", "class_name": "Lambda", "config": {"function": lam}}
        zf.writestr("config.json", json.dumps({"class_name": "Functional", "config": lam_cfg}))
        zf.writestr("model.weights.h5", big_weights.getvalue())
    (big / "large.keras").write_bytes(buf.getvalue())
    kv: list[tuple[str, int, object]] = [("tokenizer.chat_template", GGUF_STRING, ssti)]
    (big / "large.gguf").write_bytes(
        gguf_bytes(kv, [("w", (2_500_000,), np.zeros(2_500_000, dtype=np.float32))])
    )

    hf = root / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(
        json.dumps({"model_type": "evil", "auto_map": {"AutoModel": "modeling_evil.EvilModel"}})
    )
    (hf / "modeling_evil.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    save_file({"w": torch.zeros(2)}, str(hf / "model.safetensors"))
    return root


@pytest.fixture(scope="module")
def report(tree: Path) -> ScanReport:
    result = scan_path(tree, workers=1)
    assert not (tree / "CANARY_PWNED").exists()
    return result


def _by_name(report: ScanReport, tree: Path) -> dict[str, set[str]]:
    return {
        Path(fr.path).relative_to(tree).as_posix(): {f.rule_id for f in fr.findings}
        for fr in report.files
    }


def test_clean_files_of_every_format_are_clean(report: ScanReport, tree: Path) -> None:
    rules = _by_name(report, tree)
    for name in ("model.safetensors", "model.onnx", "model.gguf", "model.h5", "model.keras"):
        assert rules[f"clean/{name}"] == set(), name
    assert rules["hf/model.safetensors"] == set()
    formats = {Path(fr.path).name: fr.formats for fr in report.files if "/clean/" in fr.path}
    assert "safetensors" in formats["model.safetensors"]
    assert "onnx" in formats["model.onnx"]
    assert "gguf" in formats["model.gguf"]
    assert "hdf5" in formats["model.h5"]
    assert "keras" in formats["model.keras"]


def test_malicious_files_are_flagged(report: ScanReport, tree: Path) -> None:
    rules = _by_name(report, tree)
    assert "TWS-ONNX-002" in rules["bad/exfil.onnx"]
    assert "TWS-TPL-001" in rules["bad/weights.bin"]
    assert "TWS-KERAS-001" in rules["bad/model.h5"]
    assert "TWS-KERAS-002" in rules["bad/model.keras"]
    assert "TWS-ST-006" in rules["bad/tampered.safetensors"]
    assert rules["hf/config.json"] == {"TWS-HF-001"}
    assert rules["hf/modeling_evil.py"] == {"TWS-HF-002"}
    for fr in report.files:
        if "/bad/" in fr.path or fr.path.endswith(".py") or fr.path.endswith("config.json"):
            assert fr.verdict(Severity.HIGH) == "unsafe", fr.path
    assert report.failed(Severity.HIGH)


def test_large_files_are_read_through_the_memory_map(report: ScanReport, tree: Path) -> None:
    rules = _by_name(report, tree)
    names = ("large.onnx", "large.keras", "large.gguf", "large.safetensors")
    assert all((tree / "big" / n).stat().st_size > 8 * 1024 * 1024 for n in names)
    assert rules["big/large.safetensors"] == set()
    assert rules["big/large.onnx"] == set()
    assert "TWS-TPL-001" in rules["big/large.gguf"]
    assert "TWS-KERAS-001" in rules["big/large.keras"]
    formats = {Path(fr.path).name: fr.formats for fr in report.files if "/big/" in fr.path}
    assert "safetensors" in formats["large.safetensors"]
    assert "onnx" in formats["large.onnx"]
    assert "gguf" in formats["large.gguf"]
    assert "keras" in formats["large.keras"]


def test_scan_bytes_dispatches_by_content(tree: Path) -> None:
    data = (tree / "bad" / "model.keras").read_bytes()
    fr = scan_bytes(data, "upload")
    assert "keras" in fr.formats
    assert any(
        f.rule_id == "TWS-KERAS-002" and f.severity == Severity.CRITICAL for f in fr.findings
    )


def test_cli_exit_codes_and_json(
    tree: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    clean = run_cli(["scan", str(tree / "clean"), "--format", "json"])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bad = run_cli(["scan", str(tree / "bad" / "weights.bin"), "--format", "json"])
    assert bad.returncode == 1, bad.stderr
    doc = json.loads(bad.stdout)
    rules = {f["rule_id"] for fr in doc["files"] for f in fr["findings"]}
    assert "TWS-TPL-001" in rules
    assert doc["files"][0]["formats"][:1] == ["gguf"]
    sarif = run_cli(["scan", str(tree / "bad" / "exfil.onnx"), "--format", "sarif"])
    assert sarif.returncode == 1
    run = json.loads(sarif.stdout)["runs"][0]
    assert "TWS-ONNX-002" in {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert not (tree / "CANARY_PWNED").exists()


def test_cli_allow_admits_a_custom_keras_layer(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    layer: dict[str, object] = {"module": "mylab.layers", "class_name": "GatedBlock"}
    layer["config"] = {"units": 2}
    path = tmp_path / "model.keras"
    path.write_bytes(_keras_archive([layer]))
    denied = run_cli(["scan", str(path), "--format", "json"])
    assert denied.returncode == 1
    assert "TWS-KERAS-002" in denied.stdout
    allowed = run_cli(["scan", str(path), "--format", "json", "--allow", "mylab.layers.*"])
    assert allowed.returncode == 0, allowed.stdout
