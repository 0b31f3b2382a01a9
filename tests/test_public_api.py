"""The public surface is small and the rest is underscore-private.

Users import the package root, the capability packages and a few documented modules; everything
else is an implementation detail whose name starts with ``_`` (pip-audit's layout). The docs'
code only imports public names, and every such import works.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: Every public module. A new public module is a decision: add it here and document it.
PUBLIC = {
    "trainwarden",
    "trainwarden.__main__",
    "trainwarden.errors",
    "trainwarden.findings",
    "trainwarden.guard",
    "trainwarden.report",
    "trainwarden.rules",
    "trainwarden.sink",
    "trainwarden.attest",
    "trainwarden.audit",
    "trainwarden.cli",
    "trainwarden.data",
    "trainwarden.drill",
    "trainwarden.drill.gpt",
    "trainwarden.drill.sandbox_techniques",
    "trainwarden.integrations",
    "trainwarden.integrations.hf",
    "trainwarden.integrations.lightning",
    "trainwarden.ledger",
    "trainwarden.loading",
    "trainwarden.monitor",
    "trainwarden.sandbox",
    "trainwarden.scan",
    "trainwarden.service",
}


def _modules() -> list[str]:
    out = []
    for path in sorted((SRC / "trainwarden").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def test_every_module_outside_the_public_list_is_underscore_private() -> None:
    exposed = [
        m
        for m in _modules()
        if not any(p.startswith("_") and p != "__main__" for p in m.split("."))
    ]
    assert sorted(set(exposed) - PUBLIC) == []
    assert sorted(PUBLIC - set(exposed)) == []


def _doc_imports() -> list[tuple[str, str, list[str]]]:
    found = []
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in paths:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            try:
                tree = ast.parse(block)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "trainwarden"
                ):
                    found.append((path.name, node.module or "", [a.name for a in node.names]))
    for path in sorted((ROOT / "examples").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainwarden"):
                found.append((path.name, node.module or "", [a.name for a in node.names]))
    return found


def test_the_docs_find_imports_to_check() -> None:
    modules = {m for _, m, _ in _doc_imports()}
    assert {"trainwarden", "trainwarden.monitor", "trainwarden.attest"} <= modules


@pytest.mark.parametrize(
    ("doc", "module", "names"), _doc_imports(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_doc_code_imports_public_names_that_exist(doc: str, module: str, names: list[str]) -> None:
    assert module in PUBLIC, f"{doc} imports from the private module {module}"
    mod = importlib.import_module(module)
    for name in names:
        assert not name.startswith("_"), f"{doc} imports the private name {module}.{name}"
        assert hasattr(mod, name), f"{doc}: {module} has no {name}"
