"""Derive, from torch's operator registry, the TorchScript operators allowed in a reviewed archive
(``trainwarden.scan._torchscript_ops``).

Run ``python tests/scan/_torchscript_ops_gen.py`` to rewrite that module after a torch upgrade;
``tests/scan/test_torchscript.py`` fails while they disagree.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

#: Operators that reach outside the process: they open, map or write a file, print, call
#: remote procedures (distributed RPC) or call back into Python.
EXCLUDED = frozenset(
    {
        "from_file",
        "save",
        "_print",
        "Print",
        "rpc_async",
        "rpc_remote",
        "rpc_sync",
        "to_here",
        "PythonOp",
        "IgnoredPythonOp",
    }
)
#: str-typed arguments of aten/prim operators, each reviewed: none names an outside resource
#: (file, socket, library); they are modes, enum-like choices or string-method operands.
REVIEWED_STR_ARGS = frozenset(
    {
        "self",
        "norm",
        "reduce",
        "a",
        "b",
        "rounding_mode",
        "key",
        "mode",
        "interpolation",
        "driver",
        "substr",
        "UPLO",
        "approximate",
        "assert_msg",
        "separator",
        "ord",
        "side",
        "padding",
        "string",
        "el",
        "s",
        "fillchar",
        "chars",
        "l",
        "activation",
        "p",
        "ind",
        "input",
        "message",
        "type",
        "inputs",
        "item",
        "dict",
        "device_type",
        "idx",
        "msg",
        "cls",
        "t",
        "to_add",
        "algorithm",
        "padding_side",
        "values",
        "old",
        "new",
        "pad_mode",
        "equation",
        "indexing",
        "api_name",
    }
)


def derive() -> tuple[list[str], list[str]]:
    """(allowed operator names, operators with an unreviewed str argument)."""
    import torch

    allowed: set[str] = set()
    excluded_names: set[str] = set()
    unreviewed: set[str] = set()
    for schema in torch._C._jit_get_all_schemas():
        ns, _, name = schema.name.partition("::")
        if ns not in ("aten", "prim"):
            continue
        str_args = [a.name for a in schema.arguments if "str" in str(a.type)]
        if name in EXCLUDED or "filename" in str_args:
            excluded_names.add(name)
            continue
        if any(a not in REVIEWED_STR_ARGS for a in str_args):
            unreviewed.add(f"{schema.name}({', '.join(str_args)})")
            continue
        allowed.add(name)
    return sorted(allowed - excluded_names), sorted(unreviewed)


def render(allowed: list[str]) -> str:
    body = textwrap.fill(" ".join(allowed), width=92, break_on_hyphens=False)
    lines = [
        '"""ATen and prim operators a TorchScript archive may call (generated from torch\'s',
        "registry).",
        "",
        "Every operator of the ``aten`` and ``prim`` namespaces except those that reach outside",
        "the process (EXCLUDED_OPS: files, printing, distributed RPC, Python callbacks). Every",
        "str argument of the rest was reviewed (tests/scan/_torchscript_ops_gen.py); no other",
        "namespace (custom operator libraries, c10d, profiler) is allowed. Regenerate with",
        "``python tests/scan/_torchscript_ops_gen.py``; tests/scan/test_torchscript.py keeps it",
        "true.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        '__all__ = ["ALLOWED_OPS", "EXCLUDED_OPS"]',
        "",
        f"EXCLUDED_OPS: frozenset[str] = frozenset({sorted(EXCLUDED)!r})",
        "",
        "ALLOWED_OPS: frozenset[str] = frozenset(",
        '    """',
        textwrap.indent(body, "    "),
        '    """.split()  # noqa: SIM905 - a generated word list',
        ")",
        "",
    ]
    return "\n".join(lines)


TARGET = Path(__file__).resolve().parents[2] / "src/trainwarden/scan/_torchscript_ops.py"

if __name__ == "__main__":
    ops, unreviewed = derive()
    if unreviewed:
        raise SystemExit("review these str arguments first:\n" + "\n".join(unreviewed))
    TARGET.write_text(render(ops), encoding="utf-8")
