"""Run-time integrity of the callables a training job relies on (optimizer, seeding, collectives).

:class:`CodeGuard` resolves each target once, records what it is bound to and its code objects, and
checks that code against the source file on disk. :meth:`CodeGuard.check` is then a handful of
identity comparisons per target (no disk I/O, no imports) so a monitor can call it every few steps.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwarden.attest import AttestationError
from trainwarden.findings import Finding, Severity

__all__ = [
    "DEFAULT_TARGETS",
    "HOOK_REGISTRIES",
    "CodeGuard",
    "GuardedCallable",
    "code_digest",
    "trust_wrapper_code",
]

# Targets whose owner is a module attribute pattern: ``*`` expands to every class in that module
# that has the attribute (own or inherited), so every optimizer's ``step`` is guarded.
DEFAULT_TARGETS: tuple[str, ...] = (
    "torch.optim.*.step",
    "torch.optim.*.zero_grad",
    "torch.optim.adam.adam",
    "torch.optim.adamw.adamw",
    "torch.optim.sgd.sgd",
    "torch.nn.utils.clip_grad_norm_",
    "torch.nn.utils.clip_grad_value_",
    "torch.nn.utils.clip_grad.clip_grad_norm_",
    "torch.manual_seed",
    "torch.seed",
    "torch.random.manual_seed",
    "torch.cuda.manual_seed",
    "torch.cuda.manual_seed_all",
    "random.seed",
    "random.Random.seed",
    "numpy.random.seed",
    "torch.utils.data.DataLoader.__iter__",
    "torch.utils.data.DistributedSampler.__iter__",
    "torch.utils.data.RandomSampler.__iter__",
    "torch.nn.Module.__call__",
    "torch.nn.Module._call_impl",
    "torch.distributed.all_reduce",
    "torch.distributed.broadcast",
    "torch.distributed.all_gather",
    "torch.distributed.all_gather_into_tensor",
    "torch.distributed.reduce_scatter",
    "torch.distributed.reduce_scatter_tensor",
    "torch.distributed.barrier",
)

# Process-wide hook registries: a hook added here changes every optimizer step or module call
# without replacing any function, so the guard watches them too.
HOOK_REGISTRIES: tuple[tuple[str, str], ...] = (
    ("torch.optim.optimizer", "_global_optimizer_pre_hooks"),
    ("torch.optim.optimizer", "_global_optimizer_post_hooks"),
    ("torch.nn.modules.module", "_global_forward_pre_hooks"),
    ("torch.nn.modules.module", "_global_forward_hooks"),
    ("torch.nn.modules.module", "_global_backward_pre_hooks"),
    ("torch.nn.modules.module", "_global_backward_hooks"),
)

_MAX_CHAIN = 8


@dataclass(frozen=True)
class GuardedCallable:
    """What the guard recorded for one resolved target.

    ``kind`` is ``"python"`` (code verified against ``filename``) or ``"native"`` (a C/Cython
    callable: identity only). ``code_sha256`` is :func:`code_digest` of the outermost function's
    code; ``chain`` lists ``qualname@file`` of each function followed through wrappers.
    """

    target: str
    kind: str
    qualname: str
    filename: str | None
    code_sha256: str | None
    chain: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# code digests
# --------------------------------------------------------------------------------------------


def _feed_const(h: Any, c: object) -> None:
    if isinstance(c, types.CodeType):
        h.update(b"C")
        _feed_code(h, c)
    elif isinstance(c, tuple | frozenset):
        items = list(c)
        if isinstance(c, frozenset):
            # Set iteration order depends on hash seeds; sort by repr for a stable digest.
            items.sort(key=repr)
        h.update(b"T" if isinstance(c, tuple) else b"F")
        h.update(str(len(items)).encode())
        for item in items:
            _feed_const(h, item)
    else:
        h.update(type(c).__name__.encode())
        h.update(b":")
        h.update(repr(c).encode("utf-8", "surrogatepass"))
        h.update(b";")


def _feed_code(h: Any, code: types.CodeType) -> None:
    # Line numbers and the file name are left out on purpose: moving a function or editing a
    # comment elsewhere in the file must not look like a code change.
    for part in (
        code.co_name,
        getattr(code, "co_qualname", code.co_name),
        str(code.co_argcount),
        str(code.co_posonlyargcount),
        str(code.co_kwonlyargcount),
        str(code.co_flags),
        ",".join(code.co_names),
        ",".join(code.co_varnames),
        ",".join(code.co_freevars),
        ",".join(code.co_cellvars),
    ):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    h.update(code.co_code)
    h.update(getattr(code, "co_exceptiontable", b""))
    h.update(str(len(code.co_consts)).encode())
    for c in code.co_consts:
        _feed_const(h, c)


def code_digest(code: types.CodeType) -> str:
    """Return a sha256 over a code object's bytecode, names, constants and nested code objects.

    Two code objects compiled from the same source by the same interpreter have the same digest
    regardless of where the function sits in its file.
    """
    h = hashlib.sha256()
    _feed_code(h, code)
    return h.hexdigest()


def _find_code(root: types.CodeType, qualname: str, firstlineno: int) -> types.CodeType | None:
    matches: list[types.CodeType] = []
    stack = [root]
    while stack:
        code = stack.pop()
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                if getattr(c, "co_qualname", c.co_name) == qualname:
                    matches.append(c)
                stack.append(c)
    if not matches:
        return None
    # Several definitions with one qualname (e.g. under if/else): prefer the same line.
    return min(matches, key=lambda c: abs(c.co_firstlineno - firstlineno))


# --------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------


@dataclass
class _Step:
    """One attribute lookup on the path to a target, and the object it yielded at construction."""

    holder: Any
    name: str
    value: Any
    mro: tuple[type, ...] | None
    # Values this binding may legitimately hold: the original and trusted wrappers around it.
    accepted: list[Any] = field(default_factory=list)


def _lookup(holder: Any, name: str) -> tuple[Any, tuple[type, ...] | None]:
    """Look ``name`` up without running descriptors, so the check sees the stored object."""
    if isinstance(holder, type):
        mro = holder.__mro__
        for klass in mro:
            d = klass.__dict__
            if name in d:
                return d[name], mro
        raise AttributeError(name)
    if isinstance(holder, types.ModuleType):
        md = holder.__dict__
        if name in md:
            return md[name], None
        raise AttributeError(name)
    return getattr(holder, name), None


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    # Attribute access on an instance builds a fresh bound method each time.
    if isinstance(a, types.MethodType) and isinstance(b, types.MethodType):
        return a.__self__ is b.__self__ and a.__func__ is b.__func__
    if isinstance(a, types.BuiltinMethodType) and isinstance(b, types.BuiltinMethodType):
        return bool(a.__self__ is b.__self__ and a == b)
    return False


def _import_path(parts: list[str]) -> tuple[Any, int]:
    """Import the longest module prefix of ``parts``; return it and how many parts it used."""
    obj: Any = importlib.import_module(parts[0])
    used = 1
    while used < len(parts) and isinstance(obj, types.ModuleType):
        name = parts[used]
        if name in obj.__dict__:
            nxt = obj.__dict__[name]
            if isinstance(nxt, types.ModuleType):
                obj = nxt
                used += 1
                continue
            break
        try:
            obj = importlib.import_module(f"{obj.__name__}.{name}")
        except ModuleNotFoundError:
            break
        used += 1
    return obj, used


def _expand(target: str) -> list[str]:
    """Expand ``pkg.mod.*.attr`` into one target per class in ``pkg.mod`` that has ``attr``."""
    if ".*." not in target:
        return [target]
    head, tail = target.split(".*.", 1)
    module = importlib.import_module(head)
    out: list[str] = []
    names = getattr(module, "__all__", None) or sorted(module.__dict__)
    for name in names:
        obj = module.__dict__.get(name)
        if isinstance(obj, type):
            try:
                _lookup(obj, tail.split(".")[0])
            except AttributeError:
                continue
            out.append(f"{head}.{name}.{tail}")
    return out


def _unwrap_chain(value: Any) -> list[types.FunctionType]:
    """The Python functions reachable from ``value`` through methods, decorators and closures."""
    chain: list[types.FunctionType] = []
    seen: set[int] = set()
    todo: list[Any] = [value]
    while todo and len(chain) < _MAX_CHAIN:
        obj = todo.pop(0)
        if isinstance(obj, staticmethod | classmethod | types.MethodType):
            todo.insert(0, obj.__func__)
            continue
        if not isinstance(obj, types.FunctionType) or id(obj) in seen:
            continue
        seen.add(id(obj))
        chain.append(obj)
        wrapped = obj.__dict__.get("__wrapped__")
        if wrapped is not None:
            todo.append(wrapped)
        for cell in obj.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:
                continue
            if isinstance(contents, types.FunctionType):
                todo.append(contents)
    return chain


@dataclass
class _FuncRecord:
    func: types.FunctionType
    code: types.CodeType
    defaults: tuple[Any, ...] | None
    kwdefaults: dict[str, Any] | None
    wrapped: Any
    cells: tuple[tuple[types.CellType, Any], ...]


def _record_func(func: types.FunctionType) -> _FuncRecord:
    cells: list[tuple[types.CellType, Any]] = []
    for cell in func.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:
            continue
        if isinstance(contents, types.FunctionType):
            cells.append((cell, contents))
    kw = func.__kwdefaults__
    return _FuncRecord(
        func=func,
        code=func.__code__,
        defaults=func.__defaults__,
        kwdefaults=dict(kw) if kw is not None else None,
        wrapped=func.__dict__.get("__wrapped__"),
        cells=tuple(cells),
    )


def _describe(obj: Any) -> str:
    qual = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None) or "?"
    code = getattr(obj, "__code__", None)
    if isinstance(code, types.CodeType):
        where = f"{code.co_filename}:{code.co_firstlineno}"
        if code.co_qualname != qual:
            # functools.wraps copies the wrapped function's name: show the code's own too.
            return f"{module}.{qual} (code {code.co_qualname} at {where})"
        return f"{module}.{qual} ({where})"
    return f"{module}.{qual}"


def _package_root(module_name: str) -> Path | None:
    mod = sys.modules.get(module_name)
    file = getattr(mod, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    # A package owns its directory; a single-file module owns only its file.
    return path.parent if path.name == "__init__.py" else path


def _inside(filename: str, root: Path) -> bool:
    try:
        p = Path(filename).resolve()
    except OSError:
        return False
    return p == root or root in p.parents


@dataclass
class _Entry:
    target: str
    steps: list[_Step]
    value: Any
    funcs: list[_FuncRecord]
    static_findings: list[Finding]
    info: GuardedCallable


# --------------------------------------------------------------------------------------------
# the guard
# --------------------------------------------------------------------------------------------


class CodeGuard:
    """Record the critical callables now; :meth:`check` reports any that changed since.

    ``targets`` are dotted paths (``"torch.optim.AdamW.step"``; ``pkg.mod.*.attr`` expands over
    the classes of ``pkg.mod``); ``None`` means :data:`DEFAULT_TARGETS`, whose unresolvable
    entries (numpy or torch.distributed absent) are skipped and listed in :attr:`skipped`.
    An explicit target that cannot be resolved raises :class:`AttestationError`.

    Construction imports the target modules and compiles their source files once (tenths of a
    second for the defaults); :meth:`check` touches no file and imports nothing.
    """

    def __init__(
        self,
        targets: Sequence[str] | None = None,
        *,
        extra: Sequence[str] = (),
        watch_hooks: bool = True,
    ) -> None:
        strict = targets is not None
        wanted = list(DEFAULT_TARGETS if targets is None else targets) + list(extra)
        self._entries: list[_Entry] = []
        self.skipped: list[tuple[str, str]] = []
        compiled: dict[str, types.CodeType | None] = {}
        seen: set[str] = set()
        for pattern in wanted:
            try:
                expanded = _expand(pattern)
            except ImportError as e:
                if strict and pattern not in extra:
                    raise AttestationError(
                        f"code guard target {pattern!r}: cannot import: {e}"
                    ) from e
                self.skipped.append((pattern, f"cannot import: {e}"))
                continue
            for target in expanded:
                if target in seen:
                    continue
                seen.add(target)
                try:
                    self._entries.append(self._resolve(target, compiled))
                except (ImportError, AttributeError) as e:
                    if strict:
                        raise AttestationError(
                            f"code guard target {target!r} cannot be resolved: {e}",
                            hint="use a dotted path to a function, method or class attribute",
                        ) from e
                    self.skipped.append((target, f"{type(e).__name__}: {e}"))
        self._hooks: list[tuple[str, Any, tuple[Any, ...]]] = []
        if watch_hooks:
            for modname, attr in HOOK_REGISTRIES:
                mod = sys.modules.get(modname)
                registry = getattr(mod, attr, None) if mod is not None else None
                if registry is not None and hasattr(registry, "keys"):
                    self._hooks.append((f"{modname}.{attr}", registry, tuple(registry.keys())))

    # ---- construction ------------------------------------------------------------------

    def _resolve(self, target: str, compiled: dict[str, types.CodeType | None]) -> _Entry:
        parts = target.split(".")
        holder, used = _import_path(parts)
        if used == len(parts):
            raise AttributeError(f"{target} is a module, not a callable")
        steps: list[_Step] = []
        value: Any = holder
        for name in parts[used:]:
            value, mro = _lookup(holder, name)
            steps.append(_Step(holder=holder, name=name, value=value, mro=mro, accepted=[value]))
            holder = value
            if isinstance(holder, staticmethod | classmethod):
                holder = holder.__func__
        chain = _unwrap_chain(value)
        funcs = [_record_func(f) for f in chain]
        findings: list[Finding] = []
        root = _package_root(parts[0])
        if chain:
            # Every function in the chain (wrappers included: a functools.wraps wrapper around
            # the real function is the classic patch) must come from the target's own package or
            # be a known wrapper.
            allowed = _benign_wrapper_codes() | _decorator_codes()
            foreign = [
                f
                for f in chain
                if root is not None
                and not _inside(f.__code__.co_filename, root)
                and f.__code__ not in allowed
            ]
            if foreign:
                findings.append(
                    Finding(
                        "TWA-CODE-004",
                        Severity.CRITICAL,
                        f"{target} runs {_describe(foreign[0])}, defined outside {root}: it was "
                        "replaced or wrapped before the guard started",
                        location=target,
                        evidence={
                            "defined_in": [f.__code__.co_filename for f in foreign],
                            "package": str(root),
                        },
                    )
                )
            for f in chain:
                findings.extend(_verify_against_disk(target, f, compiled))
        info = GuardedCallable(
            target=target,
            kind="python" if chain else "native",
            qualname=getattr(value, "__qualname__", type(value).__qualname__),
            filename=chain[0].__code__.co_filename if chain else None,
            code_sha256=code_digest(chain[0].__code__) if chain else None,
            chain=tuple(
                f"{f.__code__.co_qualname}@{f.__code__.co_filename}:{f.__code__.co_firstlineno}"
                for f in chain
            ),
        )
        return _Entry(target, steps, value, funcs, findings, info)

    # ---- public API ----------------------------------------------------------------------

    @property
    def guarded(self) -> tuple[GuardedCallable, ...]:
        """Every target the guard resolved, in order."""
        return tuple(e.info for e in self._entries)

    @property
    def baseline_findings(self) -> tuple[Finding, ...]:
        """Problems already present at construction (code differing from disk, foreign code)."""
        out = [f for e in self._entries for f in e.static_findings]
        out.extend(self._hook_findings(initial=True))
        return tuple(out)

    def check(self) -> list[Finding]:
        """Return one finding per guarded callable that is replaced, patched or differs from disk.

        Problems found at construction are reported on every call (the state is still bad); a
        caller that wants each once can de-duplicate on ``(rule_id, location)``. No disk I/O.
        """
        out: list[Finding] = []
        for e in self._entries:
            found = _check_entry(e)
            if found is not None:
                out.append(found)
            else:
                out.extend(e.static_findings)
        out.extend(self._hook_findings(initial=False))
        return out

    def __iter__(self) -> Iterator[GuardedCallable]:
        return iter(self.guarded)

    def __len__(self) -> int:
        return len(self._entries)

    def _hook_findings(self, *, initial: bool) -> list[Finding]:
        out: list[Finding] = []
        for name, registry, keys_at_start in self._hooks:
            keys = keys_at_start if initial else tuple(registry.keys())
            if not keys:
                continue
            added = [k for k in keys if k not in keys_at_start]
            hooks = [_describe(registry[k]) for k in keys if k in registry]
            sev = Severity.HIGH if added else Severity.MEDIUM
            when = "registered while the job ran" if added else "present when the guard started"
            out.append(
                Finding(
                    "TWA-CODE-006",
                    sev,
                    f"{len(keys)} process-wide hook(s) in {name} ({when}): {', '.join(hooks)}",
                    location=name,
                    evidence={"hooks": hooks, "added_after_start": len(added)},
                )
            )
        return out


def _verify_against_disk(
    target: str, func: types.FunctionType, compiled: dict[str, types.CodeType | None]
) -> list[Finding]:
    code = func.__code__
    filename = code.co_filename
    if filename not in compiled:
        compiled[filename] = _compile_file(filename)
    module_code = compiled[filename]
    if module_code is None:
        return [
            Finding(
                "TWA-CODE-004",
                Severity.HIGH,
                f"{target}: {code.co_qualname} has no readable source file ({filename})",
                location=target,
                evidence={"filename": filename},
            )
        ]
    disk = _find_code(module_code, code.co_qualname, code.co_firstlineno)
    mem_digest = code_digest(code)
    disk_digest = code_digest(disk) if disk is not None else None
    if disk_digest == mem_digest:
        return []
    return [
        Finding(
            "TWA-CODE-003",
            Severity.CRITICAL,
            f"{target}: the code of {code.co_qualname} in memory differs from {filename} on disk "
            + ("(not defined in that file)" if disk is None else "(file edited after import?)"),
            location=target,
            evidence={
                "filename": filename,
                "qualname": code.co_qualname,
                "memory_code_sha256": mem_digest,
                "disk_code_sha256": disk_digest,
            },
        )
    ]


def _compile_file(filename: str) -> types.CodeType | None:
    if not os.path.isfile(filename):
        return None
    try:
        source = Path(filename).read_bytes()
        # optimize=-1 and dont_inherit reproduce what the import system compiled.
        return compile(source, filename, "exec", dont_inherit=True, optimize=-1)
    except (OSError, SyntaxError, ValueError):
        return None


_TRUSTED_WRAPPER_CODES: set[types.CodeType] = set()


def trust_wrapper_code(code: types.CodeType) -> None:
    """Accept re-bindings to a function with exactly this code object that wraps (``__wrapped__``)
    exactly the recorded callable. For instrumentation that wraps guarded functions on purpose."""
    _TRUSTED_WRAPPER_CODES.add(code)


def _nested_code(fn: object, name: str) -> list[types.CodeType]:
    if isinstance(fn, staticmethod | classmethod):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        return []
    return [c for c in fn.__code__.co_consts if isinstance(c, types.CodeType) and c.co_name == name]


def _benign_wrapper_codes() -> frozenset[types.CodeType]:
    """Code of wrappers that rebind guarded functions on purpose.

    - Importing ``torch._dynamo`` (optimizers do on first use) runs
      ``torch.manual_seed = torch._disable_dynamo(torch.manual_seed)``; the wrapper's code is
      nested in ``torch._compile._disable_dynamo``.
    - ``torch.compile`` (``TorchPatcher.patch``) rebinds ``LBFGS.step`` and ``SparseAdam.step``
      to ``torch._dynamo.disable(step)``, whose wrapper is nested in ``DisableContext.__call__``.
    - TrainWarden's own monitor wraps the seeding functions to record who reseeds
      (``trainwarden.monitor._rng``).

    Only these exact code objects (looked up in the loaded modules, never by name or marker
    attribute on the candidate) are accepted, and only around exactly the recorded callable.
    """
    codes = set(_TRUSTED_WRAPPER_CODES)
    compile_mod = sys.modules.get("torch._compile")
    if compile_mod is not None:
        codes.update(_nested_code(getattr(compile_mod, "_disable_dynamo", None), "inner"))
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    disable_ctx = getattr(eval_frame, "DisableContext", None) if eval_frame is not None else None
    if isinstance(disable_ctx, type):
        # torch.compile's TorchPatcher rebinds LBFGS.step and SparseAdam.step to disable(step).
        codes.update(_nested_code(disable_ctx.__dict__.get("__call__"), "_fn"))
    rng = sys.modules.get("trainwarden.monitor._rng")
    seed_watch_cls = getattr(rng, "_SeedWatch", None) if rng is not None else None
    if isinstance(seed_watch_cls, type):
        codes.update(_nested_code(seed_watch_cls.__dict__.get("_make_wrapper"), "wrapper"))
    return frozenset(codes)


def _decorator_codes() -> frozenset[types.CodeType]:
    """Wrappers of well-known decorators that libraries apply to guarded functions at import
    (``typing_extensions.deprecated``, ``warnings.deprecated``): their code may live outside the
    target's package."""
    codes: set[types.CodeType] = set()
    for modname in ("typing_extensions", "warnings"):
        mod = sys.modules.get(modname)
        cls = getattr(mod, "deprecated", None) if mod is not None else None
        if isinstance(cls, type):
            codes.update(_nested_code(cls.__dict__.get("__call__"), "wrapper"))
    return frozenset(codes)


def _adopt(e: _Entry, step: _Step, now: Any) -> bool:
    """Switch the binding's expected value to ``now`` if it is the original or a trusted
    wrapper around an accepted value (and re-record its code). False: a real replacement."""
    if step is not e.steps[-1]:
        return False
    if not any(now is a for a in step.accepted):
        if not isinstance(now, types.FunctionType):
            return False
        inner = now.__dict__.get("__wrapped__")
        if not any(inner is a for a in step.accepted):
            return False
        if now.__code__ not in _benign_wrapper_codes():
            return False
        step.accepted.append(now)
    step.value = now
    e.value = now
    e.funcs = [_record_func(f) for f in _unwrap_chain(now)]
    return True


def _check_entry(e: _Entry) -> Finding | None:
    for step in e.steps:
        if step.mro is not None and step.holder.__mro__ != step.mro:
            return _replaced(e, step, f"the bases of {step.holder.__qualname__} changed")
        try:
            now, _ = _lookup(step.holder, step.name)
        except AttributeError:
            return _replaced(e, step, f"{step.name} was deleted")
        if not _same(now, step.value) and not _adopt(e, step, now):
            return _replaced(e, step, f"now {_describe(now)}", now=now)
    for rec in e.funcs:
        f = rec.func
        if f.__code__ is not rec.code:
            return _code_changed(e, rec, "its __code__ was replaced", f.__code__)
        if f.__dict__.get("__wrapped__") is not rec.wrapped:
            return _code_changed(e, rec, "its __wrapped__ target was replaced", None)
        for cell, contents in rec.cells:
            try:
                current = cell.cell_contents
            except ValueError:
                current = None
            if current is not contents:
                return _code_changed(e, rec, "a function in its closure was replaced", None)
        if f.__defaults__ is not rec.defaults and f.__defaults__ != rec.defaults:
            return _defaults_changed(e, rec, "__defaults__", rec.defaults, f.__defaults__)
        kw = f.__kwdefaults__
        if kw != rec.kwdefaults:
            return _defaults_changed(e, rec, "__kwdefaults__", rec.kwdefaults, kw)
    return None


def _replaced(e: _Entry, step: _Step, how: str, now: Any = None) -> Finding:
    return Finding(
        "TWA-CODE-001",
        Severity.CRITICAL,
        f"{e.target} was replaced at run time: {step.name} on "
        f"{getattr(step.holder, '__qualname__', None) or getattr(step.holder, '__name__', '?')} "
        f"was {_describe(step.value)}, {how}",
        location=e.target,
        evidence={
            "attribute": step.name,
            "expected": _describe(step.value),
            "actual": _describe(now) if now is not None else None,
        },
    )


def _code_changed(e: _Entry, rec: _FuncRecord, how: str, code: types.CodeType | None) -> Finding:
    return Finding(
        "TWA-CODE-002",
        Severity.CRITICAL,
        f"{e.target}: {rec.code.co_qualname} is the same function object but {how}",
        location=e.target,
        evidence={
            "function": rec.code.co_qualname,
            "expected_code_sha256": code_digest(rec.code),
            "actual_code_sha256": code_digest(code) if code is not None else None,
            "actual_code_file": code.co_filename if code is not None else None,
        },
    )


def _defaults_changed(e: _Entry, rec: _FuncRecord, attr: str, before: Any, after: Any) -> Finding:
    return Finding(
        "TWA-CODE-005",
        Severity.HIGH,
        f"{e.target}: {attr} of {rec.code.co_qualname} changed from {before!r} to {after!r}",
        location=e.target,
        evidence={"attribute": attr, "before": repr(before), "after": repr(after)},
    )
