"""Review the code of a TorchScript archive: which operators ``torch.jit.load`` would let it run.

``torch.jit.load`` compiles every ``code/`` member and runs ``__setstate__`` methods at load time;
``forward`` runs later. The serialized code is Python syntax in which every call is an operator
(``torch.add``, ``ops.prim.RaiseException``), a method of a value (``x.view``), a TorchScript
builtin (``len``, ``annotate``) or a function/class defined in the archive itself. Each call is
checked against :data:`trainwarden.scan._torchscript_ops.ALLOWED_OPS`, the ATen and prim
operators that cannot reach outside the process (none takes a file name; see that module); any
other call (``torch.from_file``, ``torch.save``, ``print``, a custom ``ops.<library>.*``) is HIGH.
Nothing in the archive is imported, compiled or run here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from trainwarden.findings import Finding, Severity
from trainwarden.scan._torchscript_ops import ALLOWED_OPS, EXCLUDED_OPS

__all__ = ["code_members", "review"]

# TorchScript builtins the serializer emits as bare names (each maps to a pure aten/prim op or
# is a compiler annotation).
_BUILTINS = frozenset(
    {
        "annotate",
        "uninitialized",
        "unchecked_cast",
        "isinstance",
        "len",
        "int",
        "float",
        "bool",
        "str",
        "complex",
        "range",
        "enumerate",
        "zip",
        "list",
        "dict",
        "tuple",
        "min",
        "max",
        "abs",
        "round",
        "divmod",
        "sum",
        "any",
        "all",
        "sorted",
        "ord",
        "chr",
        "hash",
        "hex",
        "oct",
        "bin",
        "getattr",
        "hasattr",
        "Exception",
        "AssertionError",
        "ValueError",
        "RuntimeError",
        "TypeError",
        "IndexError",
        "KeyError",
        "NotImplementedError",
        "StopIteration",
        "ZeroDivisionError",
    }
)
_MAX_REPORTED = 8


def code_members(names: Iterable[str]) -> list[str]:
    """The archive members ``torch.jit.load`` compiles (``<prefix>/code/**.py``)."""
    return [n for n in names if "/code/" in f"/{n}" and n.endswith(".py")]


def _module_of(member: str) -> str:
    rel = member.split("/code/", 1)[1] if "/code/" in member else member
    return rel[: -len(".py")].replace("/", ".")


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def review(sources: dict[str, bytes], location: str) -> tuple[list[Finding], list[str]]:
    """Findings for the code members ``sources`` (member name -> bytes) of one archive, and the
    qualified names of the classes the archive defines (``__torch__.*``: TorchScript's own
    unpickler resolves them to this code, never to a Python import)."""
    trees: list[tuple[str, str, ast.Module]] = []
    defined: set[str] = set()
    local_names: dict[str, set[str]] = {}
    methods: set[str] = set()
    classes: list[str] = []
    bad: list[str] = []
    for member, raw in sources.items():
        mod = _module_of(member)
        try:
            tree = ast.parse(raw.decode("utf-8"), filename=member)
        except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError) as e:
            return [
                Finding(
                    "TWS-TORCHSCRIPT-OP",
                    Severity.HIGH,
                    f"TorchScript code member {member} could not be analysed ({type(e).__name__}); "
                    "torch.jit.load would still compile it",
                    f"{location}:{member}",
                    {"member": member},
                )
            ], []
        trees.append((member, mod, tree))
        names = local_names.setdefault(mod, set())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(f"{mod}.{node.name}")
                names.add(node.name)
            if isinstance(node, ast.ClassDef):
                classes.append(f"{mod}.{node.name}")
                methods.update(n.name for n in node.body if isinstance(n, ast.FunctionDef))
    for member, mod, tree in trees:
        for scope in _scopes(tree):
            aliases = _aliases(scope)
            for call in ast.walk(scope):
                if not isinstance(call, ast.Call):
                    continue
                targets: list[ast.expr | None] = [call.func]
                if isinstance(call.func, ast.Name) and call.func.id in aliases:
                    # The serializer binds functions to temporaries: _0 = __torch__.f; _0(x)
                    targets = aliases[call.func.id]
                for target in targets:
                    why = (
                        "a computed callee"
                        if target is None
                        else _judge(target, mod, defined, local_names.get(mod, set()), methods)
                    )
                    if why is not None and len(bad) < _MAX_REPORTED and why not in bad:
                        bad.append(f"{why} ({member}:{call.lineno})")
    if bad:
        return [
            Finding(
                "TWS-TORCHSCRIPT-OP",
                Severity.HIGH,
                "TorchScript archive calls what is not on the allowlist of side-effect-free "
                f"operators; torch.jit.load runs __setstate__ at load time: {'; '.join(bad)}",
                location,
                {"calls": bad},
            )
        ], classes
    return [
        Finding(
            "TWS-TORCHSCRIPT",
            Severity.LOW,
            f"TorchScript archive ({len(trees)} code members): every call is an allowlisted "
            "side-effect-free operator or code defined in the archive; torch.jit.load compiles "
            "and runs it",
            location,
            {"code_members": [m for m, _, _ in trees][:50]},
        )
    ], classes


def _scopes(tree: ast.Module) -> list[ast.AST]:
    """Every function (and method) body, each analysed with its own temporaries."""
    out: list[ast.AST] = [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    top = ast.Module(
        body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))],
        type_ignores=[],
    )
    out.append(top)
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        out.append(
            ast.Module(
                body=[n for n in cls.body if not isinstance(n, ast.FunctionDef)], type_ignores=[]
            )
        )
    return out


def _aliases(scope: ast.AST) -> dict[str, list[ast.expr | None]]:
    """Names a scope assigns, with every value assigned to each (``None``: not a plain name)."""
    out: dict[str, list[ast.expr | None]] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for tgt in node.targets:
                if isinstance(tgt, ast.Name):
                    value = node.value
                    plain = isinstance(value, (ast.Name, ast.Attribute)) and _dotted(value)
                    out.setdefault(tgt.id, []).append(value if plain else None)
                elif isinstance(tgt, (ast.Tuple, ast.List)):
                    for elt in tgt.elts:
                        if isinstance(elt, ast.Name):
                            out.setdefault(elt.id, []).append(None)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr, ast.For)):
            target = getattr(node, "target", None)
            if isinstance(target, ast.Name):
                out.setdefault(target.id, []).append(None)
    return out


def _judge(
    func: ast.expr, mod: str, defined: set[str], local: set[str], methods: set[str]
) -> str | None:
    """``None`` if the call target is allowed, else what it calls."""
    if isinstance(func, ast.Name):
        if func.id in _BUILTINS or func.id in local:
            return None
        return f"{func.id}()"
    dotted = _dotted(func)
    if dotted is None:
        # A method of a computed value: (expr).name(...)
        if isinstance(func, ast.Attribute):
            return None if _method_ok(func.attr, methods) else f".{func.attr}()"
        return "a computed callee"
    head, _, rest = dotted.partition(".")
    if head == "__torch__":
        return None if dotted in defined else f"{dotted}()"
    if head == "torch":
        if rest.startswith("ops."):
            return _op(rest[len("ops.") :], dotted)
        return None if rest in ALLOWED_OPS else f"{dotted}()"
    if head == "ops":
        return _op(rest, dotted)
    if head == "math":
        return None if rest in ALLOWED_OPS else f"{dotted}()"
    # A method call on a local value or attribute (self.linear.forward, x.view, CONSTANTS.c0).
    attr = dotted.rsplit(".", 1)[1]
    return None if _method_ok(attr, methods) else f"{dotted}()"


def _method_ok(name: str, methods: set[str]) -> bool:
    # A method the archive defines may not borrow the name of an excluded operator.
    return name not in EXCLUDED_OPS and (name in ALLOWED_OPS or name in methods)


def _op(rest: str, dotted: str) -> str | None:
    ns, _, name = rest.partition(".")
    if ns in ("aten", "prim") and name in ALLOWED_OPS:
        return None
    return f"{dotted}()"
