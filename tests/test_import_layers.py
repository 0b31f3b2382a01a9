"""The import-layer contract of ``src/trainwarden``, checked on the source (every import statement,
module level or deferred inside a function).

- The bottom layer (errors, findings, report, version) imports nothing else of ours, so every
  capability can depend on it and ``import trainwarden.errors`` stays cheap.
- ``_internal`` (shared low-level helpers) imports only the bottom layer, itself and the public
  event-sink protocol.
- The CLI is the top: no module outside ``trainwarden.cli`` imports it.
- The graph between subpackages has no cycle, a deferred import included (a cycle hidden in a
  function is still a cycle). Only a facade's lazy re-exports (``__getattr__`` of the package root
  and of ``trainwarden.sink``) and imports for type checking are not edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import trainwarden

SRC = Path(trainwarden.__file__).resolve().parent
BOTTOM = {
    "trainwarden.errors",
    "trainwarden.findings",
    "trainwarden.report",
    "trainwarden._version",
}
#: Subpackage cycles that exist on purpose, with the reason. Keep this list short.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module of ours that ``tree`` imports, outside TYPE_CHECKING and lazy re-exports."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{a.name}" for a in node.names)
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (names that are not modules are dropped)."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found = _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.stem == "__init__")
        graph[name] = {t for t in found if t in files and t != name}
    return graph


def _group(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_graph_is_read_from_the_real_tree() -> None:
    graph = _graph()
    assert "trainwarden.cli._app" in graph and "trainwarden.scan._engine" in graph
    assert "trainwarden.findings" in graph["trainwarden.report"]


def test_bottom_layer_imports_only_the_bottom_layer() -> None:
    graph = _graph()
    for module in BOTTOM:
        assert graph[module] <= BOTTOM, (module, graph[module] - BOTTOM)


def test_internal_helpers_import_only_the_bottom_layer() -> None:
    allowed = BOTTOM | {"trainwarden.sink"}
    for module, deps in _graph().items():
        if _group(module) == "trainwarden._internal":
            outside = {d for d in deps if _group(d) != "trainwarden._internal" and d not in allowed}
            assert not outside, (module, outside)


def test_nothing_below_the_cli_imports_it() -> None:
    for module, deps in _graph().items():
        if _group(module) != "trainwarden.cli" and module != "trainwarden.__main__":
            assert not {d for d in deps if _group(d) == "trainwarden.cli"}, module


def _group_cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    edges: dict[str, set[str]] = {}
    for module, deps in graph.items():
        for d in deps:
            a, b = _group(module), _group(d)
            if a != b:
                edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        seen: set[str] = set()
        todo = [start]
        while todo:
            x = todo.pop()
            if x == goal:
                return True
            if x not in seen:
                seen.add(x)
                todo.extend(edges.get(x, ()))
        return False

    return {frozenset({a, b}) for a, bs in edges.items() for b in bs if reaches(b, a)}


def test_no_cycle_between_subpackages() -> None:
    assert _group_cycles(_graph()) == set(KNOWN_CYCLES)


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"trainwarden.a.x": {"trainwarden.b.y"}, "trainwarden.b.y": {"trainwarden.a.z"}}
    assert _group_cycles(graph) == {frozenset({"trainwarden.a", "trainwarden.b"})}
