"""The restricted unpickler: it materialises only globals the policy classifies SAFE.

Every global a pickle names reaches :meth:`Enforcer.check` *before* it is imported or looked up,
so a refused global is never touched. The same enforcer backs the process-wide guard, where
``warn`` mode lets UNKNOWN globals through with a warning but still refuses DANGEROUS ones.
"""

from __future__ import annotations

import io
import pickle
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from trainwarden.findings import Finding, Severity
from trainwarden.loading import _constructors as constructors
from trainwarden.loading._originals import ORIGINALS
from trainwarden.loading._types import UnsafeModelError, UnsafeModelWarning
from trainwarden.scan._types import Verdict

if TYPE_CHECKING:
    from trainwarden.scan._policy import Policy

__all__ = [
    "Enforcer",
    "Mode",
    "RestrictedUnpickler",
    "check_pickle_bytes",
    "restricted_loads",
    "restricted_pickle_module",
]

Mode = Literal["block", "warn"]

RULE_DANGEROUS = "TWL-GLOBAL-DANGEROUS"
RULE_UNKNOWN = "TWL-GLOBAL-UNKNOWN"

_CUnpickler: type[Any] = ORIGINALS["pickle.Unpickler"]
_PyUnpickler: type[Any] = ORIGINALS["pickle._Unpickler"]


@dataclass
class Enforcer:
    """Decides, for one load, whether a global may be materialised.

    ``findings`` accumulates what was refused or let through with a warning; ``emit`` (optional)
    receives each finding as it is made, so a sink sees it even when the load is aborted.
    """

    policy: Policy
    mode: Mode = "block"
    location: str = "<pickle>"
    findings: list[Finding] = field(default_factory=list)
    emit: Callable[[Finding], None] | None = None
    _warned: set[tuple[str, str]] = field(default_factory=set)

    def finding_for(self, module: str, name: str, verdict: Verdict, reason: str) -> Finding:
        dotted = f"{module}.{name}"
        if verdict is Verdict.DANGEROUS:
            return Finding(
                RULE_DANGEROUS,
                Severity.CRITICAL,
                f"{self.location} needs {dotted}, which can run code: {reason}",
                self.location,
                {"module": module, "name": name, "verdict": verdict.value, "reason": reason},
            )
        return Finding(
            RULE_UNKNOWN,
            Severity.parse(getattr(self.policy, "unknown_severity", Severity.HIGH)),
            f"{self.location} needs {dotted}, which the policy does not list as safe: {reason}",
            self.location,
            {"module": module, "name": name, "verdict": verdict.value, "reason": reason},
        )

    def user_allowed(self, module: str, name: str) -> bool:
        """Whether the user's own policy ``allow`` entries (not the built-in allowlist) name
        ``module.name``: then calling it is the user's decision."""
        verdict, reason = self.policy.classify(module, name)
        return verdict is Verdict.SAFE and reason.startswith("allowed by policy")

    def check(self, module: object, name: object) -> None:
        """Return if ``module.name`` may be materialised; raise :class:`UnsafeModelError` if not."""
        mod, nm = str(module), str(name)
        verdict, reason = self.policy.classify(mod, nm)
        if verdict is Verdict.SAFE:
            return
        finding = self.finding_for(mod, nm, verdict, reason)
        if verdict is Verdict.DANGEROUS or self.mode == "block":
            self._record(finding)
            raise UnsafeModelError(
                f"refused to load {self.location}: it needs {mod}.{nm} ({verdict.value}: {reason})",
                findings=list(self.findings),
                path=self.location,
            )
        if (mod, nm) not in self._warned:
            self._warned.add((mod, nm))
            self._record(finding)
            warnings.warn(
                f"trainwarden guard (warn mode): {finding.message}",
                UnsafeModelWarning,
                stacklevel=3,
            )

    def _record(self, finding: Finding) -> None:
        if finding not in self.findings:
            self.findings.append(finding)
            if self.emit is not None:
                self.emit(finding)


RULE_CONSTRUCT = "TWL-CONSTRUCT-REFUSED"


class RestrictedUnpickler(_PyUnpickler):  # type: ignore[misc]
    """An unpickler that imports only globals the :class:`Enforcer` allows and calls only the
    closed set of constructors in :mod:`trainwarden.loading._constructors`.

    Every call an unpickler makes (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ, BUILD's
    ``__setstate__``, and the ``append``/``extend``/``__setitem__``/``add`` methods of
    APPEND(S)/SETITEM(S)/ADDITEMS) is checked on the object and its arguments *before* it is made;
    anything else raises :class:`UnsafeModelError` with nothing called. Pass ``enforcer=`` or set
    the class attribute ``tw_enforcer`` on a subclass (torch builds its own subclass of
    ``pickle_module.Unpickler`` and cannot pass extra arguments).
    """

    tw_enforcer: Enforcer | None = None

    def __init__(self, file: Any, *args: Any, enforcer: Enforcer | None = None, **kw: Any) -> None:
        super().__init__(file, *args, **kw)
        if enforcer is not None:
            self.tw_enforcer = enforcer

    def find_class(self, module: str, name: str) -> Any:
        enforcer = self.tw_enforcer
        if enforcer is None:
            raise UnsafeModelError("restricted unpickler used without a policy", path=None)
        enforcer.check(module, name)
        obj = super().find_class(module, name)
        if enforcer.user_allowed(module, name):
            if self._tw_trusted is None:
                self._tw_trusted = {}
            self._tw_trusted[id(obj)] = obj
        return obj

    _tw_trusted: dict[int, object] | None = None

    # -- the calls an unpickler makes, each through the closed set ------------------------------

    def _refused(self, op: str, e: constructors.Refused) -> UnsafeModelError:
        enforcer = self.tw_enforcer
        location = enforcer.location if enforcer is not None else "<pickle>"
        finding = Finding(
            RULE_CONSTRUCT,
            Severity.CRITICAL,
            f"{location}: {op} refused before it ran: {e}",
            location,
            {"opcode": op, "reason": str(e)},
        )
        if enforcer is not None:
            enforcer._record(finding)
        return UnsafeModelError(
            f"refused to load {location}: {op} {e}",
            findings=list(enforcer.findings) if enforcer is not None else [finding],
            path=location,
            hint="the file asks the unpickler to call something that does more than build "
            "an in-memory value; do not load it",
        )

    def _call(self, op: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            value = fn(*args, trusted=self._tw_trusted)
        except constructors.Refused as e:
            raise self._refused(op, e) from None
        if isinstance(value, tuple):
            self._check_tuple(op, value)
        return value

    # -- tuples: hashing one visits its whole tree -------------------------------------------

    _tw_tuples: dict[int, tuple[int, tuple[Any, ...]]] | None = None

    def _expansion(self, t: tuple[Any, ...]) -> int:
        """How many values hashing ``t`` visits: its tree, shared tuples counted each time."""
        known = self._tw_tuples
        if known is None:
            known = self._tw_tuples = {}
        entry = known.get(id(t))
        if entry is not None:
            return entry[0]
        size = len(t)
        for c in t:
            if isinstance(c, tuple) and c:
                size += self._expansion(c)
        if size > len(t) or len(t) > 16:
            # Held, so that the id is not reused while it is recorded.
            known[id(t)] = (size, t)
        return size

    _tw_limits: Any = None

    def _check_tuple(self, op: str, t: tuple[Any, ...]) -> None:
        """Refuse a tuple whose tree is too large to hash: tuples shared through the memo make it
        exponentially larger than the pickle, and a dict key or set member made of it would
        keep the unpickler hashing for ever."""
        limits = self._tw_limits
        if limits is None:
            from trainwarden.scan._types import Limits

            enforcer = self.tw_enforcer
            limits = getattr(enforcer.policy, "limits", None) if enforcer is not None else None
            limits = self._tw_limits = limits if isinstance(limits, Limits) else Limits()
        if len(t) <= min(16, limits.max_tuple_expansion) and not any(
            isinstance(c, tuple) for c in t
        ):
            return  # a few values and no tuple inside: its tree is itself, under the limit
        if self._expansion(t) > limits.max_tuple_expansion:
            raise self._refused(
                op,
                constructors.Refused(
                    "builds a tuple of shared tuples that expands to more than "
                    f"{limits.max_tuple_expansion} values (limit max_tuple_expansion): hashing "
                    "it as a dict key or set member would not finish"
                ),
            )
        if self._tw_tuples is not None and len(self._tw_tuples) > limits.max_memo:
            raise self._refused(
                op, constructors.Refused(f"more than {limits.max_memo} tuples with tuples inside")
            )

    def load_tuple(self) -> None:
        super().load_tuple()
        self._check_tuple("TUPLE", self.stack[-1])

    def load_tuple1(self) -> None:
        super().load_tuple1()
        self._check_tuple("TUPLE1", self.stack[-1])

    def load_tuple2(self) -> None:
        super().load_tuple2()
        self._check_tuple("TUPLE2", self.stack[-1])

    def load_tuple3(self) -> None:
        super().load_tuple3()
        self._check_tuple("TUPLE3", self.stack[-1])

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call("REDUCE", constructors.call, stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if type(args) is not tuple:
            raise self._refused("NEWOBJ", constructors.Refused("arguments are not a tuple"))
        self.append(self._call("NEWOBJ", constructors.allocate, cls, args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if type(args) is not tuple or type(kwargs) is not dict:
            raise self._refused("NEWOBJ_EX", constructors.Refused("bad argument types"))
        self.append(self._call("NEWOBJ_EX", constructors.allocate, cls, args, kwargs or None))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        if args or not isinstance(klass, type):
            value = self._call("INST/OBJ", constructors.call, klass, tuple(args))
        else:
            value = self._call("INST/OBJ", constructors.allocate, klass, ())
        self.append(value)

    def load_build(self) -> None:
        state = self.stack.pop()
        self._call("BUILD", constructors.apply_state, self.stack[-1], state)

    def _method(self, op: str, obj: Any, name: str) -> Any:
        return self._call(op, constructors.check_mutator, obj, name)

    def load_append(self) -> None:
        value = self.stack.pop()
        self._method("APPEND", self.stack[-1], "append")(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if hasattr(type(target), "extend"):
            self._method("APPENDS", target, "extend")(items)
            return
        append = self._method("APPENDS", target, "append")
        for item in items:
            append(item)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._method("SETITEM", self.stack[-1], "__setitem__")(key, value)

    def load_setitems(self) -> None:
        items = self.pop_mark()
        setitem = self._method("SETITEMS", self.stack[-1], "__setitem__")
        for i in range(0, len(items), 2):
            setitem(items[i], items[i + 1])

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is set:
            target.update(items)
            return
        add = self._method("ADDITEMS", target, "add")
        for item in items:
            add(item)

    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(_PyUnpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.TUPLE[0]] = load_tuple
    dispatch[pickle.TUPLE1[0]] = load_tuple1
    dispatch[pickle.TUPLE2[0]] = load_tuple2
    dispatch[pickle.TUPLE3[0]] = load_tuple3


# One class serves both names: the loader's unpickler is always the closed one.
RestrictedPyUnpickler = RestrictedUnpickler


def restricted_pickle_module(enforcer: Enforcer) -> types.SimpleNamespace:
    """A stand-in ``pickle`` module (``Unpickler``, ``load``, ``loads``) bound to ``enforcer``.

    Suitable as ``pickle_module=`` for ``torch.load`` and torch's internal loaders.
    """
    cls = type("TrainWardenUnpickler", (RestrictedUnpickler,), {"tw_enforcer": enforcer})

    def load(file: Any, **kw: Any) -> Any:
        return cls(file, **kw).load()

    def loads(data: bytes, /, **kw: Any) -> Any:
        return cls(io.BytesIO(data), **kw).load()

    return types.SimpleNamespace(
        Unpickler=cls,
        load=load,
        loads=loads,
        UnpicklingError=pickle.UnpicklingError,
        __name__="trainwarden.loading._unpickler",
    )


def restricted_loads(data: bytes | bytearray | memoryview, enforcer: Enforcer, **kw: Any) -> Any:
    """Unpickle exactly ``data`` with ``enforcer`` deciding every global."""
    return RestrictedUnpickler(io.BytesIO(data), enforcer=enforcer, **kw).load()


def check_pickle_bytes(
    data: bytes | bytearray | memoryview,
    enforcer: Enforcer,
    *,
    max_pickles: int | None = 1,
    globals_only: bool = False,
) -> tuple[Finding, ...]:
    """Statically analyse one pickle before it is loaded; raise if the enforcer's mode refuses it.

    Block mode refuses any finding at or above the policy's ``fail_on``; warn mode refuses only
    a DANGEROUS global and otherwise warns. ``max_pickles`` is how many consecutive pickles the
    loader will read (``None``: all). With ``globals_only`` only the globals are judged (for
    streams, like joblib's, that interleave raw bytes the static pass cannot parse). Returns the
    analysis findings.
    """
    from trainwarden.scan._pickle_vm import analyze_pickle

    analysis = analyze_pickle(
        data, policy=enforcer.policy, location=enforcer.location, max_pickles=max_pickles
    )
    if globals_only:
        for g in analysis.globals:
            if g.verdict is not Verdict.SAFE:
                enforcer.check(g.module, g.name)
        return tuple(analysis.findings)
    fail_on = Severity.parse(getattr(enforcer.policy, "fail_on", Severity.HIGH))
    bad = [f for f in analysis.findings if f.severity >= fail_on]
    dangerous = [g for g in analysis.globals if g.verdict is Verdict.DANGEROUS]
    if not bad and not dangerous:
        return tuple(analysis.findings)
    if enforcer.mode == "block" or dangerous:
        for f in bad:
            enforcer._record(f)
        names = sorted(
            {f"{g.module}.{g.name}" for g in analysis.globals if g.verdict is not Verdict.SAFE}
        )
        what = f": it needs {', '.join(names)}" if names else ""
        raise UnsafeModelError(
            f"refused to load {enforcer.location}{what}",
            findings=[*bad, *[f for f in enforcer.findings if f not in bad]],
            path=enforcer.location,
        )
    unknown = sorted(
        {f"{g.module}.{g.name}" for g in analysis.globals if g.verdict is not Verdict.SAFE}
    )
    for g in analysis.globals:
        enforcer._warned.add((g.module, g.name))
    for f in bad:
        enforcer._record(f)
    what = (
        f"needs {', '.join(unknown)}, which the policy does not list as safe"
        if unknown
        else ("has findings: " + "; ".join(f.message for f in bad[:3]))
    )
    warnings.warn(
        f"trainwarden guard (warn mode): {enforcer.location} {what}; loading it anyway",
        UnsafeModelWarning,
        stacklevel=3,
    )
    return tuple(analysis.findings)
