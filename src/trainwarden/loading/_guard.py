"""The process-wide load guard: every unpickling entry point scans before it unpickles.

``install()`` replaces ``pickle.Unpickler``/``pickle._Unpickler`` (and ``_pickle.Unpickler``) with
scanning subclasses, wraps ``pickle.load(s)``, ``_pickle.load(s)``, ``torch.load`` (whatever
``weights_only`` or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` say), ``numpy.load`` and
``joblib.load``, rebinds every module-level reference to those functions taken before the
install (``from pickle import loads``), and wraps ``find_class`` of every unpickler subclass that
already existed (joblib's, for example), so no global reaches the import system unchecked.

In block mode every unpickler the guard controls builds objects through the same closed set of
constructors as ``trainwarden.load`` (:mod:`trainwarden.loading._constructors`): each REDUCE,
NEWOBJ(_EX), INST, OBJ, BUILD, APPEND(S), SETITEM(S) and ADDITEMS is checked on the object and its
arguments *before* it is made, as the bytes are read, so what was pre-scanned and what is
unpickled cannot differ (a stream that returns other bytes the second time, a non-seekable
stream, an unpickler subclass). The C unpickler cannot be checked per call, so in block mode its
loads run on the closed pure-Python unpickler with the caller's ``find_class`` and
``persistent_load``.

Known limits (documented in docs/loading.md): warn mode keeps each library's own unpickler (it
exists to let UNKNOWN globals through); an unpickler subclass created *before* install that
defines its own ``__init__`` over the C unpickler (or has no ``__dict__``) is refused in block mode
(the guard cannot see its stream), and one that defines its own ``load`` keeps it (its globals are
checked in ``find_class`` only); a pure-Python unpickler object keeps the objects it trusted
across a reconfiguration of the guard; multiprocessing's ``ForkingPickler`` (inter-process
messages of the job itself, not model files) is left alone.
"""

from __future__ import annotations

import _pickle
import contextlib
import contextvars
import functools
import importlib.util
import io
import pickle
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwarden.findings import Finding, Severity
from trainwarden.loading import _manifest as _manifest
from trainwarden.loading import _telemetry as telemetry
from trainwarden.loading._io import MemReader, read_once, sha256_of
from trainwarden.loading._originals import ORIGINALS
from trainwarden.loading._policy import require_manifest, resolve_policy, trusted_manifest_key
from trainwarden.loading._types import LoadError, UnsafeModelError, UnsafeModelWarning
from trainwarden.loading._unpickler import (
    Enforcer,
    Mode,
    RestrictedPyUnpickler,
    RestrictedUnpickler,
    check_pickle_bytes,
)

if TYPE_CHECKING:
    from trainwarden._internal.sink import EventSink
    from trainwarden.scan._policy import Policy

__all__ = ["Guard", "active", "install", "uninstall"]

_CUnpickler: type[Any] = ORIGINALS["pickle.Unpickler"]
_PyUnpickler: type[Any] = ORIGINALS["pickle._Unpickler"]

# Set while a guarded entry point has already scanned the bytes an inner unpickler will read.
_prescanned: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "trainwarden_prescanned", default=False
)
# The enforcer of the guarded call in progress, so the unpickler it drives reports into the same
# load (one warning per global, not one per layer).
_active_enforcer: contextvars.ContextVar[Enforcer | None] = contextvars.ContextVar(
    "trainwarden_active_enforcer", default=None
)
_lock = threading.RLock()


@dataclass
class Guard:
    """The installed guard: its mode, policy and sink, and every finding it made so far."""

    mode: Mode
    policy: Policy
    sink: EventSink | None = None
    findings: list[Finding] = field(default_factory=list)
    _patches: list[tuple[Any, str, Any, bool]] = field(default_factory=list, repr=False)

    def uninstall(self) -> None:
        """Undo every patch (same as :func:`uninstall`)."""
        if _state is self:
            uninstall()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def enforcer(self, location: str) -> Enforcer:
        return Enforcer(self.policy, self.mode, location, emit=self._emit_finding)

    def _emit_finding(self, finding: Finding) -> None:
        self.findings.append(finding)
        if self.sink is not None:
            kind = (
                "guard.refused"
                if self.mode == "block" or finding.severity is Severity.CRITICAL
                else "guard.warning"
            )
            self.sink.emit(kind, {"mode": self.mode, **finding.to_dict()})

    def report_telemetry(self, trace: telemetry.LoadTrace) -> None:
        """Emit telemetry findings; in block mode refuse a load that did something alarming."""
        tel = [f for f in trace.findings() if f.severity > Severity.INFO]
        if not tel:
            return
        for f in tel:
            self.findings.append(f)
            if self.sink is not None:
                self.sink.emit("load.telemetry", {"mode": self.mode, **f.to_dict()})
        bad = [f for f in tel if f.severity >= Severity.HIGH]
        if not bad:
            return
        if self.mode == "block":
            raise UnsafeModelError(
                f"{trace.location} did something no load should do: {bad[0].message}",
                findings=tel,
                path=trace.location,
            )
        warnings.warn(
            f"trainwarden guard (warn mode): {bad[0].message}", UnsafeModelWarning, stacklevel=4
        )


_state: Guard | None = None


def active() -> Guard | None:
    """The installed guard, or ``None``."""
    return _state


@contextmanager
def _tracked(guard: Guard, location: str) -> Iterator[None]:
    # Only the outermost guarded call reports: inner unpicklers record into its trace.
    outermost = telemetry.current() is None
    with telemetry.track(location) as trace:
        yield
    if outermost:
        guard.report_telemetry(trace)


def _location_of(file: Any, default: str) -> str:
    name = getattr(file, "name", None)
    return name if isinstance(name, str) and name else default


def _read_rest(file: Any) -> bytes | None:
    """Read what is left in a seekable stream and seek back; ``None`` if it cannot."""
    try:
        if not file.seekable():
            return None
        pos = file.tell()
        data = file.read()
        file.seek(pos)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return bytes(data) if isinstance(data, (bytes, bytearray)) else None


def _prescan_one(guard: Guard, data: bytes | bytearray | memoryview, location: str) -> Enforcer:
    enforcer = guard.enforcer(location)
    check_pickle_bytes(data, enforcer, max_pickles=1)
    return enforcer


@contextmanager
def _scanned(enforcer: Enforcer | None) -> Iterator[None]:
    """Mark the bytes an inner unpickler reads as already scanned by ``enforcer``."""
    t1 = _prescanned.set(True)
    t2 = _active_enforcer.set(enforcer)
    try:
        yield
    finally:
        _active_enforcer.reset(t2)
        _prescanned.reset(t1)


# -- the closed set, in block mode -------------------------------------------------------------

_MISSING = object()
# The unpickler methods that call something; in block mode each goes through the closed set.
_CALL_OPS = (
    "load_reduce",
    "load_newobj",
    "load_newobj_ex",
    "load_build",
    "load_append",
    "load_appends",
    "load_setitem",
    "load_setitems",
    "load_additems",
)
_STOCK: dict[str, Callable[..., Any]] = {n: vars(_PyUnpickler)[n] for n in _CALL_OPS}
_STOCK["_instantiate"] = vars(_PyUnpickler)["_instantiate"]


def _closed_enforcer(obj: Any) -> Enforcer | None:
    """The enforcer whose closed set ``obj`` must build through, or ``None`` (not in block mode)."""
    guard = _state
    if guard is None or guard.mode != "block":
        return None
    enforcer = _active_enforcer.get() or getattr(obj, "_tw_guard_enforcer", None)
    if enforcer is None or enforcer.policy is not guard.policy or enforcer.mode != guard.mode:
        enforcer = guard.enforcer(_location_of(getattr(obj, "_tw_file", None), "<pickle stream>"))
        with contextlib.suppress(AttributeError):
            obj._tw_guard_enforcer = enforcer
    return enforcer


def _trust_if_user_allowed(obj: Any, module: str, name: str, found: Any) -> None:
    """Remember an object the user's own policy ``allow`` named: calling it is their decision."""
    enforcer = _closed_enforcer(obj)
    if enforcer is None or not enforcer.user_allowed(str(module), str(name)):
        return
    trusted = getattr(obj, "_tw_trusted", None)
    if trusted is None:
        trusted = {}
        with contextlib.suppress(AttributeError):
            obj._tw_trusted = trusted
    trusted[id(found)] = found


def _closed_op(name: str) -> Callable[..., Any]:
    stock = _STOCK[name]
    closed = vars(RestrictedUnpickler)[name]

    def op(self: Any, *args: Any) -> Any:
        if _closed_enforcer(self) is None:
            return stock(self, *args)
        return closed(self, *args)

    op.__name__ = name
    return op


def _closed_dispatch(
    dispatch: dict[int, Any], ops: dict[str, Callable[..., Any]]
) -> dict[int, Any]:
    """``dispatch`` with every stock calling opcode replaced by its block-mode closed version."""
    stock_ids = {id(f): n for n, f in _STOCK.items()}
    return {
        code: ops[stock_ids[id(fn)]] if id(fn) in stock_ids else fn for code, fn in dispatch.items()
    }


def _tw_enforcer_property(self: Any) -> Enforcer | None:
    return _closed_enforcer(self)


def _install_closed_set(guard: Guard) -> None:
    """Make every pure-Python unpickler build through the closed set while in block mode.

    The stock class gets closed versions of its calling methods (subclasses like joblib's call
    ``Unpickler.load_build(self)`` by name) and a dispatch table that uses them; a subclass with
    its own copy of the table (joblib's) gets its stock entries replaced in that copy.
    """
    # Built at install, not at import, so each install gets the code as it is now.
    ops = {n: _closed_op(n) for n in (*_CALL_OPS, "_instantiate")}
    for name, op in ops.items():
        _patch(guard, _PyUnpickler, name, op)
    for name in ("_call", "_refused", "_method"):
        _patch(guard, _PyUnpickler, name, vars(RestrictedUnpickler)[name])
    _patch(guard, _PyUnpickler, "tw_enforcer", property(_tw_enforcer_property))
    _patch(guard, _PyUnpickler, "_tw_trusted", None)
    _patch(guard, _PyUnpickler, "dispatch", _closed_dispatch(_PyUnpickler.dispatch, ops))
    # The stock class itself (a reference kept from before the install): check each global
    # before it is imported, as the guard's own classes do.
    _patch(guard, _PyUnpickler, "find_class", _stock_find_class)
    for cls in _all_subclasses(_PyUnpickler):
        if issubclass(cls, RestrictedUnpickler):
            continue
        own = vars(cls).get("dispatch")
        if isinstance(own, dict):
            _patch(guard, cls, "dispatch", _closed_dispatch(own, ops))


_STOCK_FIND_CLASS = vars(_PyUnpickler)["find_class"]


def _stock_find_class(self: Any, module: str, name: str) -> Any:
    if isinstance(self, (RestrictedUnpickler, GuardedPyUnpickler)):
        return _STOCK_FIND_CLASS(self, module, name)  # these check globals themselves
    _guard_find_class(self, module, name)
    found = _STOCK_FIND_CLASS(self, module, name)
    _trust_if_user_allowed(self, module, name, found)
    return found


_stock_find_class.__trainwarden_guarded__ = True  # type: ignore[attr-defined]


class _ClosedRun(RestrictedUnpickler):
    """The closed pure-Python unpickler standing in for a C unpickler's ``load`` in block mode.

    It reads the caller's stream exactly as the C unpickler would (one pickle, the position left
    after STOP) and resolves globals with the caller's own ``find_class`` (so a subclass's
    mapping, and the guard's check, still apply) and ``persistent_load``.
    """

    def __init__(self, file: Any, outer: Any, enforcer: Enforcer, **kw: Any) -> None:
        super().__init__(file, enforcer=enforcer, **kw)
        self._tw_outer = outer
        persistent_load = getattr(outer, "persistent_load", None)
        if persistent_load is not None:
            self.persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        found = self._tw_outer.find_class(module, name)
        enforcer = self.tw_enforcer
        if enforcer is not None and enforcer.user_allowed(str(module), str(name)):
            if self._tw_trusted is None:
                self._tw_trusted = {}
            self._tw_trusted[id(found)] = found
        return found


def _c_load(self: Any) -> Any:
    """``load`` of a C unpickler under the guard: the closed run in block mode."""
    enforcer = _closed_enforcer(self)
    if enforcer is None:
        return _CUnpickler.load(self)
    file = getattr(self, "_tw_file", _MISSING)
    if file is _MISSING:
        raise UnsafeModelError(
            f"refused to load with {type(self).__qualname__}: an unpickler made before the guard "
            "was installed, whose stream the guard cannot see, so it cannot build through the "
            "closed set",
            path=None,
            hint="install the guard before creating the unpickler (or before importing the "
            "library that defines it)",
        )
    kw = getattr(self, "_tw_kw", {})
    return _ClosedRun(file, self, enforcer, **kw).load()


# -- scanning unpicklers ------------------------------------------------------------------------


def _guard_find_class(obj: Any, module: str, name: str) -> None:
    guard = _state
    if guard is None:
        return
    enforcer = _active_enforcer.get() or getattr(obj, "_tw_guard_enforcer", None)
    if enforcer is None or enforcer.policy is not guard.policy or enforcer.mode != guard.mode:
        enforcer = guard.enforcer(_location_of(getattr(obj, "_tw_file", None), "<pickle stream>"))
        with contextlib.suppress(AttributeError):
            obj._tw_guard_enforcer = enforcer
    enforcer.check(module, name)


def _guarded_load_method(self: Any, base_load: Callable[[Any], Any]) -> Any:
    guard = _state
    if guard is None:
        return base_load(self)
    file = getattr(self, "_tw_file", None)
    location = _location_of(file, "<pickle stream>")
    if not _prescanned.get() and file is not None:
        data = _read_rest(file)
        if data is not None:
            with _scanned(_prescan_one(guard, data, location)), _tracked(guard, location):
                return base_load(self)
    with _tracked(guard, location):
        return base_load(self)


class GuardedUnpickler(_CUnpickler):  # type: ignore[misc]
    """``pickle.Unpickler`` while the guard is installed: pre-scans, checks each global, and in
    block mode builds through the closed set (on the closed pure-Python unpickler)."""

    def __init__(self, file: Any, *args: Any, **kw: Any) -> None:
        super().__init__(file, *args, **kw)
        self._tw_file = file
        self._tw_kw = kw

    def find_class(self, module: str, name: str) -> Any:
        _guard_find_class(self, module, name)
        found = super().find_class(module, name)
        _trust_if_user_allowed(self, module, name, found)
        return found

    def load(self) -> Any:
        return _guarded_load_method(self, _c_load)


class GuardedPyUnpickler(_PyUnpickler):  # type: ignore[misc]
    """``pickle._Unpickler`` (pure Python) while the guard is installed."""

    def __init__(self, file: Any, *args: Any, **kw: Any) -> None:
        super().__init__(file, *args, **kw)
        self._tw_file = file

    def find_class(self, module: str, name: str) -> Any:
        _guard_find_class(self, module, name)
        found = super().find_class(module, name)
        _trust_if_user_allowed(self, module, name, found)
        return found

    def load(self) -> Any:
        return _guarded_load_method(self, _PyUnpickler.load)


# GuardedPyUnpickler.dispatch is inherited (install gives the stock class a closed one);
# load_global etc. call self.find_class.


def _make_load(cls: type[Any]) -> Callable[..., Any]:
    def load(
        file: Any,
        *,
        fix_imports: bool = True,
        encoding: str = "ASCII",
        errors: str = "strict",
        buffers: Any = None,
    ) -> Any:
        return cls(
            file, fix_imports=fix_imports, encoding=encoding, errors=errors, buffers=buffers
        ).load()

    return load


def _make_loads(cls: type[Any]) -> Callable[..., Any]:
    def loads(
        data: Any,
        /,
        *,
        fix_imports: bool = True,
        encoding: str = "ASCII",
        errors: str = "strict",
        buffers: Any = None,
    ) -> Any:
        if isinstance(data, str):
            raise TypeError("Can't load pickle from unicode string")
        # One immutable copy: a bytearray changed by another thread after the scan cannot
        # change what is unpickled.
        data = bytes(memoryview(data))
        guard = _state
        enforcer = _prescan_one(guard, data, "<pickle bytes>") if guard else None
        with _scanned(enforcer):
            return cls(
                io.BytesIO(data),
                fix_imports=fix_imports,
                encoding=encoding,
                errors=errors,
                buffers=buffers,
            ).load()

    return loads


guarded_load = _make_load(GuardedUnpickler)
guarded_loads = _make_loads(GuardedUnpickler)
guarded_py_load = _make_load(GuardedPyUnpickler)
guarded_py_loads = _make_loads(GuardedPyUnpickler)


# -- whole-file loaders (torch, numpy, joblib) --------------------------------------------------


def _is_path(f: Any) -> bool:
    import os

    return isinstance(f, (str, os.PathLike))


def _read_checked(guard: Guard, f: Any) -> tuple[memoryview, str] | None:
    """Read a path once (and check its manifest) or the rest of a file object.

    ``None`` when the path cannot be read at all: the caller then lets the library raise its own
    error (``FileNotFoundError``, ``IsADirectoryError``, ...), so callers that catch those keep
    working. If the file appears in between, the library's unpickler is still guarded.
    """
    if _is_path(f):
        p = Path(f)
        try:
            data = read_once(p)
        except LoadError:
            return None
        _manifest.verify_file_bytes(
            p,
            lambda: sha256_of(data),
            require=require_manifest(guard.policy),
            public_key=trusted_manifest_key(),
        )
        return data, str(p)
    location = _location_of(f, "<file object>")
    return memoryview(bytearray(f.read())), location


def _prescan_file(
    guard: Guard, data: memoryview, location: str, *, torch_reader: bool = False
) -> Enforcer:
    """Scan every pickle the loaders could unpickle from ``data``; returns the enforcer used.

    With ``torch_reader`` any zip is read through torch's own zip reader (what ``torch.load``
    will use), so a zip that Python's zipfile reads differently cannot hide a ``data.pkl``.
    """
    from trainwarden.loading._loader import detect_format, prescan_format

    enforcer = guard.enforcer(location)
    fmt = detect_format(data)
    if torch_reader and fmt in ("zip", "npz") and bytes(data[:4]) == b"PK\x03\x04":
        fmt = "torch-zip"
    prescan_format(fmt, data, enforcer)
    return enforcer


def _guarded_torch_load(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        guard = _state
        if guard is None:
            return orig(f, *args, **kwargs)
        if _is_path(f) and str(f).endswith(".safetensors"):
            return orig(f, *args, **kwargs)  # torch hands these to safetensors: no pickle
        read = _read_checked(guard, f)
        if read is None:
            return orig(f, *args, **kwargs)
        data, location = read
        enforcer = _prescan_file(guard, data, location, torch_reader=True)
        with _scanned(enforcer), _tracked(guard, location):
            if kwargs.get("mmap") and _is_path(f):
                return orig(f, *args, **kwargs)
            return orig(MemReader(data, location), *args, **kwargs)

    load.__trainwarden_guarded__ = True  # type: ignore[attr-defined]
    return load


def _guarded_jit_load(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        guard = _state
        if guard is None:
            return orig(f, *args, **kwargs)
        read = _read_checked(guard, f)
        if read is None:
            return orig(f, *args, **kwargs)
        data, location = read
        from trainwarden.loading._loader import _review_torchscript

        # Whatever the bytes look like to Python's zipfile, torch.jit.load compiles them: the
        # whole file is reviewed as a TorchScript archive.
        enforcer = guard.enforcer(location)
        _review_torchscript(data, enforcer)
        with _scanned(enforcer), _tracked(guard, location):
            # Exactly the bytes reviewed: the archive is not read a second time from disk.
            return orig(io.BytesIO(bytes(data)), *args, **kwargs)

    load.__trainwarden_guarded__ = True  # type: ignore[attr-defined]
    return load


def _guarded_numpy_load(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def load(file: Any, *args: Any, **kwargs: Any) -> Any:
        guard = _state
        allow_pickle = kwargs.get("allow_pickle", args[1] if len(args) > 1 else False)
        mmap_mode = kwargs.get("mmap_mode", args[0] if args else None)
        if guard is None or not allow_pickle or mmap_mode is not None:
            return orig(file, *args, **kwargs)
        read = _read_checked(guard, file)
        if read is None:
            return orig(file, *args, **kwargs)
        data, location = read
        with _scanned(_prescan_file(guard, data, location)), _tracked(guard, location):
            return orig(MemReader(data, location), *args, **kwargs)

    load.__trainwarden_guarded__ = True  # type: ignore[attr-defined]
    return load


def _guarded_joblib_load(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def load(filename: Any, *args: Any, **kwargs: Any) -> Any:
        guard = _state
        mmap_mode = kwargs.get("mmap_mode", args[0] if args else None)
        if guard is None or mmap_mode is not None:
            return orig(filename, *args, **kwargs)
        read = _read_checked(guard, filename)
        if read is None:
            return orig(filename, *args, **kwargs)
        data, location = read
        with _scanned(_prescan_file(guard, data, location)), _tracked(guard, location):
            return orig(MemReader(data, location), *args, **kwargs)

    load.__trainwarden_guarded__ = True  # type: ignore[attr-defined]
    return load


# -- installation -------------------------------------------------------------------------------


def _patch(guard: Guard, obj: Any, attr: str, value: Any) -> None:
    had = attr in vars(obj)
    old = vars(obj).get(attr)
    setattr(obj, attr, value)
    guard._patches.append((obj, attr, old, had))


def _wrap_find_class(fn: Callable[..., Any]) -> Callable[..., Any]:
    def find_class(self: Any, module: str, name: str) -> Any:
        _guard_find_class(self, module, name)
        found = fn(self, module, name)
        _trust_if_user_allowed(self, module, name, found)
        return found

    find_class.__trainwarden_guarded__ = True  # type: ignore[attr-defined]
    return find_class


def _all_subclasses(base: type[Any]) -> list[type[Any]]:
    seen: list[type[Any]] = []
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def _patch_existing_subclasses(guard: Guard) -> None:
    ours = (RestrictedUnpickler, RestrictedPyUnpickler, GuardedUnpickler, GuardedPyUnpickler)
    for base in (_CUnpickler, _PyUnpickler):
        for cls in _all_subclasses(base):
            if any(issubclass(cls, o) for o in ours):
                continue
            own = vars(cls).get("find_class")
            if own is not None and not getattr(own, "__trainwarden_guarded__", False):
                _patch(guard, cls, "find_class", _wrap_find_class(own))
            elif own is None and base in cls.__bases__:
                _patch(guard, cls, "find_class", _wrap_find_class(base.find_class))
            if base is _CUnpickler:
                _patch_c_subclass(guard, cls)


def _capturing_init(self: Any, file: Any, *args: Any, **kw: Any) -> None:
    _CUnpickler.__init__(self, file, *args, **kw)
    # A subclass with __slots__ keeps nothing: its stream stays unseen (block mode refuses it).
    with contextlib.suppress(AttributeError):
        self._tw_file = file
        self._tw_kw = kw


def _subclass_c_load(self: Any) -> Any:
    return _guarded_load_method(self, _c_load)


def _patch_c_subclass(guard: Guard, cls: type[Any]) -> None:
    """A C-unpickler subclass made before install: see its stream, and load through the closed
    set in block mode. Where it defines its own ``__init__`` the stream stays unseen and block
    mode refuses its loads (``_c_load``); its own ``load``, if any, is left as written."""
    between = cls.__mro__[: cls.__mro__.index(_CUnpickler)]
    if not any("__init__" in vars(k) for k in between):
        _patch(guard, cls, "__init__", _capturing_init)
    if not any("load" in vars(k) for k in between):
        _patch(guard, cls, "load", _subclass_c_load)


# Our own modules hold the originals on purpose; multiprocessing is job-internal IPC; pickle and
# _pickle are patched explicitly.
_SKIP_REBIND_PREFIXES = ("trainwarden.loading.", "multiprocessing.")
_SKIP_REBIND = {"trainwarden.loading", "multiprocessing", "pickle", "_pickle"}


def _rebind_references(guard: Guard, replacements: dict[int, Any]) -> None:
    """Point module-level names bound to an original entry point at its guarded version."""
    for modname, module in list(sys.modules.items()):
        if module is None or modname in _SKIP_REBIND or modname.startswith(_SKIP_REBIND_PREFIXES):
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for attr, value in list(namespace.items()):
            new = replacements.get(id(value))
            if new is not None and new is not value:
                _patch(guard, module, attr, new)


def install(
    mode: str = "block",
    policy: Policy | None = None,
    sink: EventSink | None = None,
) -> Guard:
    """Install (or reconfigure) the process-wide guard and return it.

    ``mode="block"`` refuses any load that needs a global the policy does not list as safe;
    ``mode="warn"`` lets UNKNOWN globals through with an :class:`UnsafeModelWarning` (and a sink
    event) but still refuses DANGEROUS ones. torch, numpy and joblib are imported (if installed)
    so their loaders can be wrapped.
    """
    global _state
    if mode not in ("block", "warn"):
        raise LoadError(f"unknown guard mode {mode!r}", hint="use 'block' or 'warn'")
    resolved = resolve_policy(policy)
    with _lock:
        from trainwarden.loading import _loader as loader

        if _state is not None:
            _state.mode = mode  # type: ignore[assignment]
            _state.policy = resolved
            _state.sink = sink
            loader.set_default_sink(sink)
            return _state
        telemetry.install_hook()
        guard = Guard(mode=mode, policy=resolved, sink=sink)  # type: ignore[arg-type]
        # Make sure multiprocessing's pickler (job-internal IPC) keeps the original functions.
        import multiprocessing.reduction  # noqa: F401

        # Only functions are rebound: a module-level alias of an unpickler *class* is how
        # existing subclasses call their base (joblib's ``Unpickler.__init__(self, ...)``).
        replacements: dict[int, Any] = {
            id(ORIGINALS["pickle.load"]): guarded_load,
            id(ORIGINALS["pickle.loads"]): guarded_loads,
            id(ORIGINALS["pickle._load"]): guarded_py_load,
            id(ORIGINALS["pickle._loads"]): guarded_py_loads,
        }
        for name, value in (
            ("Unpickler", GuardedUnpickler),
            ("_Unpickler", GuardedPyUnpickler),
            ("load", guarded_load),
            ("loads", guarded_loads),
            ("_load", guarded_py_load),
            ("_loads", guarded_py_loads),
        ):
            _patch(guard, pickle, name, value)
        for name, value in (
            ("Unpickler", GuardedUnpickler),
            ("load", guarded_load),
            ("loads", guarded_loads),
        ):
            _patch(guard, _pickle, name, value)

        if importlib.util.find_spec("torch") is not None:
            import torch
            import torch.serialization

            orig = torch.serialization.load
            if not getattr(orig, "__trainwarden_guarded__", False):
                wrapped = _guarded_torch_load(orig)
                replacements[id(orig)] = wrapped
                _patch(guard, torch.serialization, "load", wrapped)
                _patch(guard, torch, "load", wrapped)
            import torch.jit
            import torch.jit._serialization

            orig_jit = torch.jit._serialization.load
            if not getattr(orig_jit, "__trainwarden_guarded__", False):
                wrapped_jit = _guarded_jit_load(orig_jit)
                replacements[id(orig_jit)] = wrapped_jit
                _patch(guard, torch.jit._serialization, "load", wrapped_jit)
                _patch(guard, torch.jit, "load", wrapped_jit)
        if importlib.util.find_spec("numpy") is not None:
            import numpy

            orig_np = numpy.load
            if not getattr(orig_np, "__trainwarden_guarded__", False):
                wrapped_np = _guarded_numpy_load(orig_np)
                replacements[id(orig_np)] = wrapped_np
                _patch(guard, numpy, "load", wrapped_np)
        if importlib.util.find_spec("joblib") is not None:
            import joblib
            import joblib.numpy_pickle

            orig_jl = joblib.load
            if not getattr(orig_jl, "__trainwarden_guarded__", False):
                wrapped_jl = _guarded_joblib_load(orig_jl)
                replacements[id(orig_jl)] = wrapped_jl
                _patch(guard, joblib, "load", wrapped_jl)
                _patch(guard, joblib.numpy_pickle, "load", wrapped_jl)

        _patch_existing_subclasses(guard)
        _install_closed_set(guard)
        _rebind_references(guard, replacements)
        loader.set_default_sink(sink)
        _state = guard
        return guard


def uninstall() -> None:
    """Restore every entry point the guard replaced. Safe to call when no guard is installed."""
    global _state
    with _lock:
        guard = _state
        if guard is None:
            return
        for obj, attr, old, had in reversed(guard._patches):
            if had:
                setattr(obj, attr, old)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(obj, attr)
        guard._patches.clear()
        from trainwarden.loading import _loader as loader

        loader.set_default_sink(None)
        _state = None
