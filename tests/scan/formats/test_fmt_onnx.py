"""ONNX handler: models written by onnx are clean; escaping data paths and custom ops are found.

``onnx`` builds the test models only; the handler itself never imports it.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from trainwarden.findings import Severity
from trainwarden.scan._formats.onnx import HANDLER

from .fmt_support import RecordingContext, run_handler


def _graph(name: str = "g", *, weight: TensorProto | None = None) -> onnx.GraphProto:
    w = (
        weight
        if weight is not None
        else numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "W")
    )
    return helper.make_graph(
        [helper.make_node("MatMul", ["X", w.name], ["Y"], name="mm")],
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])],
        initializer=[w],
    )


def _model(graph: onnx.GraphProto, **kw: object) -> onnx.ModelProto:
    model = helper.make_model(graph, producer_name="trainwarden-tests", **kw)
    return model


def _external(name: str, location: str) -> TensorProto:
    t = numpy_helper.from_array(np.zeros((2, 3), dtype=np.float32), name)
    set_external_data(t, location=location, offset=0, length=24)
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")
    return t


def test_onnx_saved_model_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    model = _model(_graph())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    ctx = run_handler(HANDLER, path.read_bytes())
    assert ctx.findings == []
    assert ctx.formats == ["onnx"]


def test_onnx_external_data_written_by_onnx_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    big = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "W")
    model = _model(
        helper.make_graph(
            [helper.make_node("MatMul", ["X", "W"], ["Y"])],
            "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 64])],
            initializer=[big],
        )
    )
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    assert (tmp_path / "ext.onnx.data").exists()
    data = path.read_bytes()
    assert b"ext.onnx.data" in data
    assert run_handler(HANDLER, data).findings == []


def test_control_flow_and_ml_domain_and_local_function_are_clean(tmp_path: Path) -> None:
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["A"], ["T"])],
        "then",
        [],
        [helper.make_tensor_value_info("T", TensorProto.FLOAT, [1])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["A"], ["E"])],
        "else",
        [],
        [helper.make_tensor_value_info("E", TensorProto.FLOAT, [1])],
    )
    fn = helper.make_function(
        "local.fns",
        "Double",
        ["x"],
        ["y"],
        [helper.make_node("Add", ["x", "x"], ["y"])],
        [helper.make_opsetid("", 18)],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Double", ["A"], ["B"], domain="local.fns"),
            helper.make_node("If", ["C"], ["Z"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Normalizer", ["B"], ["N"], domain="ai.onnx.ml", norm="L2"),
        ],
        "main",
        [
            helper.make_tensor_value_info("A", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("C", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("N", TensorProto.FLOAT, [1]),
        ],
    )
    model = helper.make_model(
        graph,
        functions=[fn],
        opset_imports=[
            helper.make_opsetid("", 18),
            helper.make_opsetid("ai.onnx.ml", 3),
            helper.make_opsetid("local.fns", 1),
        ],
    )
    onnx.checker.check_model(model)
    path = tmp_path / "cf.onnx"
    onnx.save(model, str(path))
    ctx = run_handler(HANDLER, path.read_bytes())
    assert ctx.findings == [], [f.message for f in ctx.findings]


@pytest.mark.parametrize(
    "location",
    [
        "../../../../etc/passwd",
        "/etc/passwd",
        "weights/../../secret.bin",
        "..\\..\\Windows\\win.ini",
        "C:\\Windows\\win.ini",
        "file:///etc/passwd",
        "~/.ssh/id_rsa",
    ],
    ids=["traversal", "absolute", "nested-traversal", "windows-traversal", "drive", "url", "home"],
)
def test_escaping_external_data_is_critical(location: str, tmp_path: Path, canary: Path) -> None:
    model = _model(_graph(weight=_external("W", location)))
    path = tmp_path / "evil.onnx"
    onnx.save(model, str(path))
    ctx = run_handler(HANDLER, path.read_bytes())
    assert ctx.rule_ids == {"TWS-ONNX-002"}
    assert ctx.max_severity() == Severity.CRITICAL
    assert ctx.findings[0].evidence["external_location"] == location


def test_escaping_external_data_in_subgraph_and_attribute(tmp_path: Path, canary: Path) -> None:
    const = helper.make_node("Constant", [], ["K"], value=_external("K", "../../k.bin"))
    then_g = helper.make_graph(
        [const],
        "then",
        [],
        [helper.make_tensor_value_info("K", TensorProto.FLOAT, [2, 3])],
    )
    sub = helper.make_graph(
        [helper.make_node("Identity", ["S"], ["O"])],
        "else",
        [],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT, [2, 3])],
        initializer=[_external("S", "/proc/self/environ")],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["C"], ["Z"], then_branch=then_g, else_branch=sub)],
        "main",
        [helper.make_tensor_value_info("C", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [2, 3])],
    )
    ctx = run_handler(HANDLER, _model(graph).SerializeToString())
    locations = {f.evidence["external_location"] for f in ctx.findings}
    assert locations == {"../../k.bin", "/proc/self/environ"}


def test_escaping_external_data_in_sparse_initializer() -> None:
    values = _external("sv", "../../v.bin")
    indices = numpy_helper.from_array(np.array([0], dtype=np.int64), "si")
    graph = _graph()
    graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [6]))
    ctx = run_handler(HANDLER, _model(graph).SerializeToString())
    assert "TWS-ONNX-002" in ctx.rule_ids


def test_custom_operator_domain_is_reported() -> None:
    graph = helper.make_graph(
        [helper.make_node("MyFastGelu", ["X"], ["Y"], domain="com.evil.ops")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.evil.ops", 1)],
    )
    ctx = run_handler(HANDLER, model.SerializeToString())
    assert ctx.rule_ids == {"TWS-ONNX-003"}
    assert [f.evidence["domain"] for f in ctx.findings] == ["com.evil.ops"]


def test_custom_domain_declared_in_opset_only_is_reported() -> None:
    model = helper.make_model(
        _graph(),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.contrib", 1)],
    )
    ctx = run_handler(HANDLER, model.SerializeToString())
    assert ctx.rule_ids == {"TWS-ONNX-003"}


def test_microsoft_contrib_op_is_standard() -> None:
    graph = helper.make_graph(
        [helper.make_node("FastGelu", ["X"], ["Y"], domain="com.microsoft")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    assert run_handler(HANDLER, model.SerializeToString()).findings == []


def test_python_op_is_reported(canary: Path) -> None:
    node = helper.make_node(
        "PyOp",
        ["X"],
        ["Y"],
        domain="com.microsoft",
        module="os",
        class_name="system",
        compute=f"touch {canary}",
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    ctx = run_handler(HANDLER, _model(graph).SerializeToString())
    assert ctx.rule_ids == {"TWS-ONNX-004"}
    assert ctx.findings[0].evidence["python"]["module"] == "os"


def test_external_marker_without_location_is_reported() -> None:
    t = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "W")
    t.data_location = TensorProto.EXTERNAL
    ctx = run_handler(HANDLER, _model(_graph(weight=t)).SerializeToString())
    assert ctx.rule_ids == {"TWS-ONNX-005"}


def _ld(field: int, payload: bytes) -> bytes:
    """Protobuf length-delimited field (the protobuf library refuses to build this much nesting)."""
    out = bytearray([field << 3 | 2])
    n = len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def test_deeply_nested_subgraphs_fail_closed() -> None:
    graph = _graph("leaf").SerializeToString()
    for _ in range(150):
        graph = _ld(1, _ld(5, _ld(6, graph)))  # graph.node.attribute.g
    ctx = run_handler(HANDLER, b"\x08\x08" + _ld(7, graph))
    assert "TWS-ONNX-001" in ctx.rule_ids


def test_truncated_model_is_sniffed_and_fails_closed(tmp_path: Path) -> None:
    data = _model(_graph()).SerializeToString()
    cut = data[: len(data) - 7]
    ctx = run_handler(HANDLER, cut)
    assert "TWS-ONNX-001" in ctx.rule_ids


def test_sniff_rejects_random_and_other_formats() -> None:
    rng = random.Random(1234)  # noqa: S311  (reproducible test data, not crypto)
    hits = sum(HANDLER.sniff(rng.randbytes(rng.randint(1, 512))) for _ in range(20000))
    assert hits == 0
    assert not HANDLER.sniff(b"\x80\x04\x95")
    assert not HANDLER.sniff(b"GGUF\x03\x00\x00\x00")
    assert not HANDLER.sniff(b"\x08\x07")
    # a TensorFlow SavedModel: saved_model_schema_version=1, two meta_graphs (field 2)
    assert not HANDLER.sniff(b"\x08\x01" + _ld(2, b"\x0a\x00") + _ld(2, b"\x0a\x00"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=10**6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=5),
)
def test_mutated_models_never_raise(cut: int, flips: list[tuple[int, int]]) -> None:
    model = _model(_graph(weight=_external("W", "w.bin")))
    base = bytearray(model.SerializeToString())
    for at, x in flips:
        base[at % len(base)] ^= x
    data = bytes(base[: len(base) - cut % len(base)])
    ctx = RecordingContext()
    if HANDLER.sniff(data):
        HANDLER.scan(data, "<fuzz>", ctx)
    for f in ctx.findings:
        assert f.rule_id.startswith("TWS-ONNX-")


def test_torch_onnx_export_is_clean(tmp_path: Path) -> None:
    import warnings

    import torch

    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2)
    )
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        # torch warns that the TorchScript exporter is legacy; the dynamo exporter needs
        # onnxscript, which is not installed. The legacy exporter still writes real ONNX.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.randn(1, 4),), str(path), dynamo=False)
    ctx = run_handler(HANDLER, path.read_bytes())
    assert ctx.findings == []


def test_every_duplicate_location_entry_is_checked() -> None:
    t = _external("W", "weights.bin")
    entry = t.external_data.add()
    entry.key, entry.value = "location", "/etc/shadow"
    ctx = run_handler(HANDLER, _model(_graph(weight=t)).SerializeToString())
    assert [f.evidence["external_location"] for f in ctx.findings] == ["/etc/shadow"]
