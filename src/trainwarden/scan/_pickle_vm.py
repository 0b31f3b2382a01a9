"""Symbolic execution of the pickle virtual machine, following CPython's ``_pickle.c``.

Nothing from the input is ever imported or called: every value is a symbolic stand-in that
remembers where it came from, so the analysis knows which global each REDUCE/NEWOBJ/BUILD would
call and reports every global the real unpickler would import.
"""

from __future__ import annotations

import codecs
import contextlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.scan._callables import ALLOCATABLE, BUILDABLE, CALLABLE, CLASSES
from trainwarden.scan._policy import Policy
from trainwarden.scan._types import Limits, Verdict

__all__ = [
    "GlobalRef",
    "PickleAnalysis",
    "analyze_pickle",
    "looks_like_pickle",
]


# Stable rule ids of the pickle analysis with their meaning (docs/scan.md lists them too).
@dataclass(frozen=True)
class GlobalRef:
    """One global the unpickler would import (GLOBAL, STACK_GLOBAL, INST or EXT)."""

    module: str
    name: str
    offset: int
    opcode: str
    verdict: Verdict
    reason: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class PickleAnalysis:
    """What the symbolic execution of one stream found."""

    globals: tuple[GlobalRef, ...]
    findings: tuple[Finding, ...]
    end_offset: int
    pickles: int
    persistent_ids: tuple[Any, ...] = field(default=(), hash=False)
    opcodes: int = 0
    protocol: int = 0
    complete: bool = True
    joblib_arrays: int = 0
    result: object = field(default=None, hash=False, compare=False)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)


class _Global:
    """Symbolic value of an imported global."""

    __slots__ = ("module", "name", "qual", "user", "verdict")

    def __init__(self, module: str, name: str, verdict: Verdict, user: bool = False) -> None:
        self.module = module
        self.name = name
        self.verdict = verdict
        self.qual = f"{module}.{name}"
        # Allowed by the user's own policy entry: how it is used is the user's decision.
        self.user = user

    def __repr__(self) -> str:
        return self.qual


class _Obj:
    """Symbolic result of a call (REDUCE, NEWOBJ, OBJ, INST) or of persistent_load."""

    __slots__ = ("args", "dunder", "origin", "state")

    def __init__(self, origin: object, args: object = None) -> None:
        self.origin = origin
        self.args = args
        self.state: object = None
        # the first special key written into it with SETITEM(S) (a mapping made by a call)
        self.dunder: str | None = None

    def __repr__(self) -> str:
        return f"<result of {_brief(self.origin)}>"


class _Container:
    __slots__ = ("dunder", "items", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[Any, Any] | None = None
        self.dunder: str | None = None

    def __repr__(self) -> str:
        return f"<{self.kind}>"


class _Token:
    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind}>"


_BYTES = _Token("bytes")
_PERSISTENT = _Token("persistent_load")
_INT = _Token("int")
_FLOAT = _Token("float")
_BUFFER = _Token("buffer")
_MAX_PROTOCOL = 5
_OPNAMES: dict[int, str] = {}


BuildHook = Callable[["_VM", "_Obj", int], int]


class _Stop(Exception):
    """Internal: analysis of this stream has ended (finding already recorded)."""


def _build_opnames() -> None:
    import pickletools

    for op in pickletools.opcodes:
        _OPNAMES[op.code.encode("latin-1")[0]] = op.name


_build_opnames()

_U1 = struct.Struct("<B").unpack_from
_U2 = struct.Struct("<H").unpack_from
_I4 = struct.Struct("<i").unpack_from
_U4 = struct.Struct("<I").unpack_from
_U8 = struct.Struct("<Q").unpack_from


def looks_like_pickle(data: bytes | memoryview) -> bool:
    """Cheap content sniff: a protocol-2+ header, or a protocol-0/1 stream opening plausibly."""
    if len(data) < 2:
        return False
    b0 = data[0]
    if b0 == 0x80:
        # PROTO n, then a real opcode (a FRAME for protocol 4+ dumps).
        return data[1] <= _MAX_PROTOCOL and (len(data) == 2 or data[2] in _OPNAMES)
    # Protocol 0/1 have no header: accept the opcodes a real dump starts with when the data
    # ends with STOP, as pickle.dump leaves it. (Anything else unclaimed is still probed by
    # the engine, see formats.pickle.probe_unclaimed.)
    if b0 in b"(cd}]l)NKJIMVXSTUFGiPp\x88\x89\x8a":
        return bytes(data[-1:]) == b"."
    return False


class _VM:
    __slots__ = (
        "build_hook",
        "calls_on",
        "data",
        "deadline",
        "findings",
        "globals",
        "joblib_arrays",
        "limits",
        "location",
        "n",
        "opcount",
        "persids",
        "policy",
        "proto",
        "reported",
        "result",
        "tuple_sizes",
    )

    def __init__(
        self, data: memoryview, policy: Policy, limits: Limits, location: str, deadline: float
    ) -> None:
        self.data = data
        self.n = len(data)
        self.policy = policy
        self.limits = limits
        self.location = location
        self.findings: list[Finding] = []
        self.globals: list[GlobalRef] = []
        self.persids: list[Any] = []
        self.reported: set[tuple[str, str]] = set()
        self.opcount = 0
        self.proto = 0
        self.deadline = deadline
        self.calls_on: set[str] = set()
        self.build_hook: BuildHook | None = None
        self.joblib_arrays = 0
        self.result: object = None
        # id -> (values the tuple holds counted as a tree, the tuple): tuples with tuples inside,
        # held so that an id is not reused while it is recorded.
        self.tuple_sizes: dict[int, tuple[int, tuple[Any, ...]]] = {}

    def nested_tuple(self, t: tuple[Any, ...], offset: int, opname: str) -> None:
        """Record a tuple built with tuples inside; report one whose tree is too large.

        Hashing a tuple (as a dict key, a set member, in ``frozenset``) visits every value of
        its tree, and tuples shared through the memo make that tree exponentially larger than
        the pickle: the unpickler would hash for ever. The limit counts the tree, not the bytes.
        """
        sizes = self.tuple_sizes
        size = len(t)
        for c in t:
            if type(c) is tuple:
                entry = sizes.get(id(c))
                size += len(c) if entry is None else entry[0]
        sizes[id(t)] = (size, t)
        limits = self.limits
        if size > limits.max_tuple_expansion:
            self.add(
                "TWS-PKL-LIMIT",
                Severity.HIGH,
                f"{opname} builds a tuple of shared tuples that expands to more than "
                f"{limits.max_tuple_expansion} values: hashing it (as a dict key or set member) "
                "would not finish",
                offset,
                limit="max_tuple_expansion",
            )
            raise _Stop
        if len(sizes) > limits.max_memo:
            self.add(
                "TWS-PKL-LIMIT",
                Severity.HIGH,
                f"more than {limits.max_memo} tuples with tuples inside",
                offset,
                limit="max_memo",
            )
            raise _Stop

    # -- findings --------------------------------------------------------------------------

    def add(self, rule: str, sev: Severity, msg: str, offset: int, **evidence: Any) -> None:
        evidence["offset"] = offset
        self.findings.append(Finding(rule, sev, msg, f"{self.location}@{offset}", evidence))

    def fail(self, rule: str, msg: str, offset: int, **evidence: Any) -> None:
        self.add(rule, Severity.HIGH, msg, offset, **evidence)
        raise _Stop

    def import_global(self, module: str, name: str, offset: int, opname: str) -> _Global:
        policy = self.policy
        verdict, reason = policy.classify(module, name, fix_imports=self.proto < 3)
        mod, nm = policy.normalize(module, name) if self.proto < 3 else (module, name)
        self.globals.append(GlobalRef(mod, nm, offset, opname, verdict, reason))
        if verdict is not Verdict.SAFE:
            key = (mod, nm)
            if key not in self.reported:
                self.reported.add(key)
                if verdict is Verdict.DANGEROUS:
                    self.add(
                        "TWS-PKL-DANGEROUS",
                        Severity.CRITICAL,
                        f"imports dangerous global {mod}.{nm}: {reason}",
                        offset,
                        global_=f"{mod}.{nm}",
                        opcode=opname,
                    )
                else:
                    self.add(
                        "TWS-PKL-UNKNOWN",
                        policy.unknown_severity,
                        f"imports {mod}.{nm}, which is not on the allowlist",
                        offset,
                        global_=f"{mod}.{nm}",
                        opcode=opname,
                    )
        return _Global(mod, nm, verdict, reason.startswith("allowed by policy"))

    def check_call(self, func: object, offset: int, opname: str) -> None:
        if isinstance(func, _Global):
            return
        self.add(
            "TWS-PKL-CALL-COMPUTED",
            Severity.HIGH,
            f"{opname} calls {_brief(func)}, a value computed inside the pickle, "
            "not an imported global",
            offset,
            callee=_brief(func),
            opcode=opname,
        )

    def check_use(self, g: _Global, use: str, offset: int, opname: str, args: object = ()) -> None:
        """An allowlisted global called (``call``), allocated (``new``) or given BUILD state
        (``build``): the closed constructor set of the safe loader decides, with the argument
        checks it makes that a static pass can make too."""
        if g.verdict is not Verdict.SAFE or g.user:
            return
        allowed = {"call": CALLABLE, "new": ALLOCATABLE, "build": BUILDABLE}[use]
        if g.qual not in allowed:
            what = {
                "call": "calls",
                "new": "allocates (cls.__new__)",
                "build": "applies BUILD state (__setstate__) to",
            }[use]
            self.unsafe_use(
                f"{opname} {what} {g.qual}, which is allowlisted as a value but not as "
                f"something a pickle may {'call' if use == 'call' else use}",
                offset,
                g.qual,
                use,
            )
            return
        if use != "call":
            return
        if type(args) is not tuple:
            self.unsafe_use(
                f"{opname} calls {g.qual} with arguments computed inside the pickle",
                offset,
                g.qual,
                use,
            )
            return
        self.check_call_args(g, args, offset, opname)

    def unsafe_use(self, msg: str, offset: int, qual: str, use: str) -> None:
        key = f"{use}:{qual}:{msg}"
        if key in self.calls_on:
            return
        self.calls_on.add(key)
        self.add("TWS-PKL-CALL-UNSAFE", Severity.HIGH, msg, offset, global_=qual, use=use)

    def check_call_args(self, g: _Global, args: tuple[Any, ...], offset: int, opname: str) -> None:
        """Arguments that are themselves classes or callables, handed to an allowlisted
        constructor that would allocate or call them."""
        qual = g.qual
        a0 = args[0] if args else None
        if qual in _ALLOCATORS:
            if type(a0) is _Global:
                self.check_use(a0, "new", offset, f"{opname} {qual}")
            else:
                self.unsafe_use(f"{qual} allocates a computed class", offset, qual, "new")
        elif qual in _NEWOBJ_TARGETS:
            if type(a0) is not _Global or a0.qual != _NEWOBJ_TARGETS[qual]:
                self.unsafe_use(
                    f"{qual} allocates {_brief(a0)} (only {_NEWOBJ_TARGETS[qual]})",
                    offset,
                    qual,
                    "new",
                )
        elif qual in _REBUILD_FROM_TYPE:
            func = a0
            new_type = args[1] if len(args) > 1 else None
            fargs = args[2] if len(args) > 2 else ()
            if (
                type(func) is not _Global
                or func.qual in _REBUILD_FROM_TYPE
                or (func.verdict is Verdict.SAFE and not func.user and func.qual not in CALLABLE)
            ):
                self.unsafe_use(
                    f"{qual} would call {_brief(func)}, which is not a tensor constructor",
                    offset,
                    qual,
                    "call",
                )
            elif func.verdict is Verdict.SAFE:
                self.check_use(func, "call", offset, f"{opname} {qual}", fargs)
            if type(new_type) is not _Global or new_type.qual not in _TENSOR_TYPES:
                self.unsafe_use(
                    f"{qual} converts to {_brief(new_type)}, which is not a tensor class",
                    offset,
                    qual,
                    "call",
                )
        elif qual in _NUMPY_GEN_CTORS:
            ctor = args[1] if len(args) > 1 else None
            if ctor is not None and (type(ctor) is not _Global or ctor.qual not in _BITGEN_CTOR):
                self.unsafe_use(
                    f"{qual} would call {_brief(ctor)} "
                    "(only numpy's own bit generator constructor)",
                    offset,
                    qual,
                    "call",
                )
            if type(a0) is _Global and a0.qual not in _BITGEN_CLASSES:
                self.unsafe_use(f"{qual} is handed {_brief(a0)}", offset, qual, "call")
        elif qual in _BITGEN_CTOR:
            if (
                a0 is not None
                and type(a0) is not str
                and (type(a0) is not _Global or a0.qual not in _BITGEN_CLASSES)
            ):
                self.unsafe_use(
                    f"{qual} would call {_brief(a0)} (only numpy's own bit generators)",
                    offset,
                    qual,
                    "call",
                )
        elif qual in _NP_RECONSTRUCT:
            if type(a0) is not _Global or a0.qual not in _ARRAY_TYPES:
                self.unsafe_use(
                    f"{qual} builds {_brief(a0)}, which is not an ndarray class it may build",
                    offset,
                    qual,
                    "call",
                )
        elif qual == "collections.defaultdict" and (
            a0 is not None and (type(a0) is not _Global or a0.qual not in _FACTORIES)
        ):
            self.unsafe_use(
                f"defaultdict with factory {_brief(a0)}, called on every missing key",
                offset,
                qual,
                "call",
            )

    def check_target(self, target: object, offset: int, opname: str) -> None:
        """BUILD/SETITEM/APPEND on ``target``."""
        if type(target) is _Obj and (
            target.origin is _PERSISTENT
            or (
                opname != "BUILD"
                and type(target.origin) is _Global
                and f"{target.origin.module}.{target.origin.name}" in _ARRAY_MAKERS
            )
        ):
            self.add(
                "TWS-PKL-TENSOR-MUTATION",
                Severity.HIGH,
                f"{opname} writes into a tensor/array made by {_brief(target.origin)} "
                "during loading "
                "(the weights_only bypass pattern of CVE-2026-24747)",
                offset,
                global_=_brief(target.origin),
                opcode=opname,
            )
            return
        if isinstance(target, _Global):
            self.add(
                "TWS-PKL-MUTATE-GLOBAL",
                Severity.HIGH,
                f"{opname} modifies the imported global {_brief(target)} itself (monkeypatching)",
                offset,
                global_=_brief(target),
                opcode=opname,
            )
        elif (
            opname == "BUILD"
            and isinstance(target, _Obj)
            and isinstance(target.origin, _Global)
            and target.origin.verdict is not Verdict.SAFE
        ):
            g = target.origin
            key = f"{g.module}.{g.name}"
            if key not in self.calls_on:
                self.calls_on.add(key)
                sev = (
                    Severity.CRITICAL
                    if g.verdict is Verdict.DANGEROUS
                    else self.policy.unknown_severity
                )
                self.add(
                    "TWS-PKL-BUILD-UNSAFE",
                    sev,
                    f"BUILD on an object made by non-allowlisted {key}: its __setstate__ would run",
                    offset,
                    global_=key,
                )

    def check_build(self, target: _Obj, offset: int) -> None:
        """BUILD on an instance of an allowlisted class whose ``__setstate__`` is not one the
        safe loader calls."""
        origin = target.origin
        if type(origin) is not _Global:
            return
        cls: object = origin
        if (
            origin.qual in _ALLOCATORS
            or origin.qual in _NP_RECONSTRUCT
            or origin.qual in _NEWOBJ_TARGETS
        ):
            args = target.args
            cls = args[0] if type(args) is tuple and args else None
        if type(cls) is _Global and cls.qual in CLASSES:
            self.check_use(cls, "build", offset, "BUILD")

    def check_state(self, state: object, offset: int) -> None:
        """BUILD state (or ``(state, slotstate)``) whose keys name special attributes."""
        parts = state if type(state) is tuple else (state,)
        for part in parts[:2]:
            dunder = None
            if type(part) is _Container:
                dunder = part.dunder
            elif type(part) is _Obj:
                # a mapping made by a call: keys written into it, or a dict it copies
                dunder = part.dunder
                if dunder is None and type(part.args) is tuple:
                    # dict(d), OrderedDict(list of pairs), dict(tuple of pairs)
                    dunder = next((d for d in map(_arg_dunder, part.args) if d), None)
            if dunder is not None:
                self.add(
                    "TWS-PKL-DUNDER-STATE",
                    Severity.HIGH,
                    f"BUILD sets the special attribute {_brief(dunder)} on an object "
                    "(e.g. replacing __setstate__ or __class__ redirects later calls)",
                    offset,
                    attribute=dunder,
                )
                return

    def check_rebuild(self, func: _Global, args: tuple[Any, ...], offset: int) -> None:
        """A torch tensor rebuild whose view reaches outside its storage."""
        if func.qual not in _REBUILD_FUNCS or len(args) < 4:
            return
        storage, storage_offset, size, stride = args[:4]
        if type(storage) is not _Obj or storage.origin is not _PERSISTENT:
            return
        pid = storage.args
        if type(pid) is not tuple or len(pid) < 5:
            return
        numel = pid[4]
        if type(size) is tuple and type(stride) is tuple and len(size) != len(stride):
            return  # torch refuses a view whose size and stride differ in length
        if (
            type(numel) is not int
            or type(storage_offset) is not int
            or type(size) is not tuple
            or type(stride) is not tuple
            or not all(type(v) is int for v in (*size, *stride))
        ):
            # torch.save writes plain integers here; anything else (a text INT, a bool, a
            # torch.Size or other call result) hides the numbers the bounds depend on
            self.add(
                "TWS-PKL-TENSOR-BOUNDS",
                Severity.HIGH,
                f"{_brief(func)} builds a tensor view whose offset, size, stride or storage "
                "size is not a plain integer in the pickle: its bounds cannot be checked",
                offset,
                global_=_brief(func),
            )
            return
        end = storage_offset
        bad = storage_offset < 0
        for d, st in zip(size, stride, strict=True):
            if d == 0:
                return  # an empty tensor touches no memory
            if d < 0 or st < 0:
                bad = True
            end += (d - 1) * st
        if bad or end >= numel:
            self.add(
                "TWS-PKL-TENSOR-BOUNDS",
                Severity.HIGH,
                f"{func!r} builds a tensor view (offset {storage_offset}, size {list(size)}, "
                f"stride {list(stride)}) that reaches element {end} of a storage holding "
                f"{numel}: out-of-bounds memory access on load",
                offset,
                global_=_brief(func),
                storage_numel=numel,
            )

    # -- the machine -----------------------------------------------------------------------

    def run_one(self, pos: int) -> tuple[int, bool]:
        """Execute one pickle from ``pos``; return (offset after STOP, clean)."""
        data = self.data
        n = self.n
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}
        fence = 0
        limits = self.limits
        max_stack = limits.max_stack_depth
        max_nesting = limits.max_nesting
        max_memo = limits.max_memo
        budget = limits.max_opcodes - self.opcount
        frame_end = -1
        frame_start = -1
        opcount = 0
        check_every = 1 << 12
        next_check = check_every
        append = stack.append
        pop = stack.pop
        start = pos
        build_hook = self.build_hook

        def underflow(op_off: int, opname: str) -> None:
            self.fail(
                "TWS-PKL-MALFORMED",
                f"{opname} pops below the stack mark: the unpickler raises here",
                op_off,
                opcode=opname,
            )

        def truncated(op_off: int, opname: str) -> None:
            self.fail(
                "TWS-PKL-TRUNCATED",
                f"pickle data truncated inside {opname}: everything before this offset "
                "would already have run",
                op_off,
                opcode=opname,
            )

        def readline(p: int, op_off: int, opname: str) -> tuple[bytes, int]:
            end = _find_newline(data, p, n)
            if end < 0:
                # Reading from a file (pickle.load, torch.load), _pickle.c accepts a last
                # line without its newline and drops its final byte as if it were one: a
                # GLOBAL there still imports its module before the stream ends.
                if n - p >= 2:
                    return bytes(data[p : n - 1]), n
                truncated(op_off, opname)
            return bytes(data[p:end]), end + 1

        def pop_mark(op_off: int, opname: str) -> int:
            nonlocal fence
            if not marks:
                self.fail(
                    "TWS-PKL-MALFORMED",
                    f"{opname} without a MARK: the unpickler raises here",
                    op_off,
                    opcode=opname,
                )
            k = marks.pop()
            fence = marks[-1] if marks else 0
            return k

        try:
            while True:
                try:
                    op = data[pos]
                except IndexError:
                    truncated(pos, "end of data")
                op_off = pos
                pos += 1
                opcount += 1
                if opcount >= next_check:
                    next_check += check_every
                    # The stack can outgrow the limit by at most check_every items between
                    # checks; checking here keeps the per-opcode path short.
                    if len(stack) > max_stack:
                        self.add(
                            "TWS-PKL-LIMIT",
                            Severity.HIGH,
                            f"stack deeper than {max_stack}",
                            op_off,
                            limit="max_stack_depth",
                        )
                        raise _Stop
                    if opcount > budget:
                        self.add(
                            "TWS-PKL-LIMIT",
                            Severity.HIGH,
                            f"more than {limits.max_opcodes} opcodes",
                            op_off,
                            limit="max_opcodes",
                        )
                        raise _Stop
                    if time.monotonic() > self.deadline:
                        self.add(
                            "TWS-PKL-LIMIT",
                            Severity.HIGH,
                            f"analysis exceeded {limits.max_seconds_per_file}s",
                            op_off,
                            limit="max_seconds_per_file",
                        )
                        raise _Stop
                if frame_end >= 0 and pos > frame_end:
                    # The previous opcode crossed the declared frame end: _pickle.c reads on,
                    # pickle.py and pickletools disagree. Report once.
                    if op_off > frame_end:
                        self.add(
                            "TWS-PKL-FRAME",
                            Severity.MEDIUM,
                            "an opcode straddles the end of its FRAME: CPython's C unpickler "
                            "reads on while pure-Python parsers stop",
                            op_off,
                            frame_start=frame_start,
                            frame_end=frame_end,
                        )
                    frame_end = -1
                # ---- most frequent opcodes first ---------------------------------------
                if op == 0x72:  # LONG_BINPUT
                    if pos + 4 > n:
                        truncated(op_off, "LONG_BINPUT")
                    if len(stack) <= fence:
                        underflow(op_off, "LONG_BINPUT")
                    key = _U4(data, pos)[0]
                    pos += 4
                    if key > max_memo:
                        self.add(
                            "TWS-PKL-LIMIT",
                            Severity.HIGH,
                            f"memo index {key} beyond the limit of {max_memo}",
                            op_off,
                            limit="max_memo",
                        )
                        raise _Stop
                    memo[key] = stack[-1]
                elif op == 0x68:  # BINGET
                    if pos + 1 > n:
                        truncated(op_off, "BINGET")
                    key = data[pos]
                    pos += 1
                    try:
                        append(memo[key])
                    except KeyError:
                        self.fail(
                            "TWS-PKL-MEMO-UNDEFINED",
                            f"BINGET of memo key {key} that was never stored",
                            op_off,
                            key=key,
                        )
                elif op == 0x71:  # BINPUT
                    if pos + 1 > n:
                        truncated(op_off, "BINPUT")
                    if len(stack) <= fence:
                        underflow(op_off, "BINPUT")
                    memo[data[pos]] = stack[-1]
                    pos += 1
                elif op == 0x94:  # MEMOIZE
                    if len(stack) <= fence:
                        underflow(op_off, "MEMOIZE")
                    memo[len(memo)] = stack[-1]
                    if len(memo) > max_memo:
                        self.add(
                            "TWS-PKL-LIMIT",
                            Severity.HIGH,
                            f"memo grew beyond {max_memo} entries",
                            op_off,
                            limit="max_memo",
                        )
                        raise _Stop
                elif op == 0x4D:  # BININT2
                    if pos + 2 > n:
                        truncated(op_off, "BININT2")
                    append(_U2(data, pos)[0])
                    pos += 2
                elif op == 0x4B:  # BININT1
                    if pos + 1 > n:
                        truncated(op_off, "BININT1")
                    append(data[pos])
                    pos += 1
                elif op == 0x28:  # MARK
                    marks.append(len(stack))
                    fence = len(stack)
                    if len(marks) > max_nesting:
                        self.add(
                            "TWS-PKL-LIMIT",
                            Severity.HIGH,
                            f"more than {max_nesting} nested MARKs",
                            op_off,
                            limit="max_nesting",
                        )
                        raise _Stop
                elif op == 0x58 or op == 0x8C or op == 0x8D:  # BINUNICODE/SHORT_/8
                    if op == 0x8C:
                        if pos + 1 > n:
                            truncated(op_off, "SHORT_BINUNICODE")
                        size = data[pos]
                        pos += 1
                    elif op == 0x58:
                        if pos + 4 > n:
                            truncated(op_off, "BINUNICODE")
                        size = _U4(data, pos)[0]
                        pos += 4
                    else:
                        if pos + 8 > n:
                            truncated(op_off, "BINUNICODE8")
                        size = _U8(data, pos)[0]
                        pos += 8
                    if pos + size > n:
                        truncated(op_off, _OPNAMES[op])
                    try:
                        append(str(data[pos : pos + size], "utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        self.fail(
                            "TWS-PKL-MALFORMED",
                            f"{_OPNAMES[op]} holds invalid UTF-8: the unpickler raises here",
                            op_off,
                        )
                    pos += size
                elif op == 0x74:  # TUPLE
                    k = pop_mark(op_off, "TUPLE")
                    t = tuple(stack[k:])
                    del stack[k:]
                    append(t)
                    if tuple in map(type, t):
                        self.nested_tuple(t, op_off, "TUPLE")
                elif op == 0x52:  # REDUCE
                    if len(stack) - 2 < fence:
                        underflow(op_off, "REDUCE")
                    args = pop()
                    func = stack[-1]
                    if type(func) is not _Global:
                        self.check_call(func, op_off, "REDUCE")
                    else:
                        self.check_use(func, "call", op_off, "REDUCE", args)
                        if func.name in _REBUILD_NAMES and type(args) is tuple:
                            self.check_rebuild(func, args, op_off)
                    stack[-1] = _Obj(func, args)
                elif op == 0x86:  # TUPLE2
                    if len(stack) - 2 < fence:
                        underflow(op_off, "TUPLE2")
                    b = pop()
                    t = stack[-1] = (stack[-1], b)
                    if type(b) is tuple or type(t[0]) is tuple:
                        self.nested_tuple(t, op_off, "TUPLE2")
                elif op == 0x7D:  # EMPTY_DICT
                    append(_Container("dict"))
                elif op == 0x75:  # SETITEMS
                    k = pop_mark(op_off, "SETITEMS")
                    if k <= fence or k < 1:
                        underflow(op_off, "SETITEMS")
                    if (len(stack) - k) % 2:
                        self.fail(
                            "TWS-PKL-MALFORMED",
                            "odd number of items for SETITEMS",
                            op_off,
                        )
                    if len(stack) > k:
                        target = stack[k - 1]
                        if type(target) is _Container:
                            _store_items(target, stack, k)
                        else:
                            self.check_target(target, op_off, "SETITEMS")
                            if type(target) is _Obj:
                                _note_dunder(target, stack[k::2])
                    del stack[k:]
                elif op == 0x51:  # BINPERSID
                    if len(stack) - 1 < fence:
                        underflow(op_off, "BINPERSID")
                    pid = stack[-1]
                    self.persids.append(_plain(pid))
                    stack[-1] = _Obj(_PERSISTENT, pid)
                elif op == 0x89:  # NEWFALSE
                    append(False)
                elif op == 0x29:  # EMPTY_TUPLE
                    append(())
                elif op == 0x4A:  # BININT
                    if pos + 4 > n:
                        truncated(op_off, "BININT")
                    append(_I4(data, pos)[0])
                    pos += 4
                elif op == 0x85:  # TUPLE1
                    if len(stack) - 1 < fence:
                        underflow(op_off, "TUPLE1")
                    t = stack[-1] = (stack[-1],)
                    if type(t[0]) is tuple:
                        self.nested_tuple(t, op_off, "TUPLE1")
                elif op == 0x6A:  # LONG_BINGET
                    if pos + 4 > n:
                        truncated(op_off, "LONG_BINGET")
                    key = _U4(data, pos)[0]
                    pos += 4
                    try:
                        append(memo[key])
                    except KeyError:
                        self.fail(
                            "TWS-PKL-MEMO-UNDEFINED",
                            f"LONG_BINGET of memo key {key} that was never stored",
                            op_off,
                            key=key,
                        )
                elif op == 0x87:  # TUPLE3
                    if len(stack) - 3 < fence:
                        underflow(op_off, "TUPLE3")
                    c = pop()
                    b = pop()
                    t = stack[-1] = (stack[-1], b, c)
                    if type(c) is tuple or type(b) is tuple or type(t[0]) is tuple:
                        self.nested_tuple(t, op_off, "TUPLE3")
                elif op == 0x5D:  # EMPTY_LIST
                    append(_Container("list"))
                elif op == 0x88:  # NEWTRUE
                    append(True)
                elif op == 0x4E:  # NONE
                    append(None)
                elif op == 0x62:  # BUILD
                    if len(stack) - 2 < fence:
                        underflow(op_off, "BUILD")
                    state = pop()
                    target = stack[-1]
                    self.check_target(target, op_off, "BUILD")
                    if type(target) is _Obj and type(target.origin) is _Global:
                        self.check_build(target, op_off)
                    if type(state) is _Container or type(state) is tuple or type(state) is _Obj:
                        self.check_state(state, op_off)
                    if type(target) is _Obj:
                        target.state = state
                        if build_hook is not None:
                            new_pos = build_hook(self, target, pos)
                            if new_pos != pos:
                                # joblib writes array bytes between committed frames.
                                pos = new_pos
                                if frame_end >= 0 and pos >= frame_end:
                                    frame_end = -1
                elif op == 0x63 or op == 0x69:  # GLOBAL / INST
                    opname = "GLOBAL" if op == 0x63 else "INST"
                    # _pickle.c pops INST's mark before it reads the names.
                    k = pop_mark(op_off, "INST") if op == 0x69 else 0
                    mline, pos = readline(pos, op_off, opname)
                    nline, pos = readline(pos, op_off, opname)
                    try:
                        module = mline.decode("utf-8")
                        name = nline.decode("utf-8")
                    except UnicodeDecodeError:
                        self.fail(
                            "TWS-PKL-MALFORMED",
                            f"{opname} names are not UTF-8: the unpickler raises here",
                            op_off,
                        )
                    g = self.import_global(module, name, op_off, opname)
                    if op == 0x63:
                        append(g)
                    else:
                        # INST calls the class with the items above the mark: its arguments
                        # go through the same checks as REDUCE's
                        inst_args = tuple(stack[k:])
                        use = "call" if inst_args else "new"
                        self.check_use(g, use, op_off, "INST", inst_args)
                        del stack[k:]
                        append(_Obj(g))
                elif op == 0x93:  # STACK_GLOBAL
                    if len(stack) - 2 < fence:
                        underflow(op_off, "STACK_GLOBAL")
                    name_v = pop()
                    module_v = stack[-1]
                    if type(module_v) is not str or type(name_v) is not str:
                        self.fail(
                            "TWS-PKL-MALFORMED",
                            "STACK_GLOBAL operands are not both str: the unpickler raises here",
                            op_off,
                            module=_brief(module_v),
                            name=_brief(name_v),
                        )
                    stack[-1] = self.import_global(module_v, name_v, op_off, "STACK_GLOBAL")
                elif op == 0x81:  # NEWOBJ
                    if len(stack) - 2 < fence:
                        underflow(op_off, "NEWOBJ")
                    args = pop()
                    cls = stack[-1]
                    self.check_call(cls, op_off, "NEWOBJ")
                    if type(cls) is _Global:
                        self.check_use(cls, "new", op_off, "NEWOBJ")
                    stack[-1] = _Obj(cls, args)
                elif op == 0x92:  # NEWOBJ_EX
                    if len(stack) - 3 < fence:
                        underflow(op_off, "NEWOBJ_EX")
                    pop()
                    pop()
                    cls = stack[-1]
                    self.check_call(cls, op_off, "NEWOBJ_EX")
                    if type(cls) is _Global:
                        self.check_use(cls, "new", op_off, "NEWOBJ_EX")
                    stack[-1] = _Obj(cls)
                elif op == 0x65:  # APPENDS
                    k = pop_mark(op_off, "APPENDS")
                    if k <= fence or k < 1:
                        underflow(op_off, "APPENDS")
                    if len(stack) > k:
                        target = stack[k - 1]
                        self.check_target(target, op_off, "APPENDS")
                        if type(target) is _Container and target.dunder is None:
                            target.dunder = _pairs_dunder(stack[k:])
                    del stack[k:]
                elif op == 0x61:  # APPEND
                    if len(stack) - 2 < fence:
                        underflow(op_off, "APPEND")
                    value = pop()
                    target = stack[-1]
                    self.check_target(target, op_off, "APPEND")
                    if type(target) is _Container and target.dunder is None:
                        target.dunder = _pairs_dunder((value,))
                elif op == 0x73:  # SETITEM
                    if len(stack) - 3 < fence:
                        underflow(op_off, "SETITEM")
                    value = pop()
                    key = pop()
                    target = stack[-1]
                    if type(target) is _Container:
                        _store_item(target, key, value)
                    else:
                        self.check_target(target, op_off, "SETITEM")
                        if type(target) is _Obj:
                            _note_dunder(target, (key,))
                elif op == 0x90:  # ADDITEMS
                    k = pop_mark(op_off, "ADDITEMS")
                    if k <= fence or k < 1:
                        underflow(op_off, "ADDITEMS")
                    if len(stack) > k:
                        self.check_target(stack[k - 1], op_off, "ADDITEMS")
                    del stack[k:]
                elif op == 0x95:  # FRAME
                    if pos + 8 > n:
                        truncated(op_off, "FRAME")
                    flen = _U8(data, pos)[0]
                    pos += 8
                    if pos + flen > n:
                        truncated(op_off, "FRAME")
                    if frame_end >= 0 and frame_end != op_off:
                        self.add(
                            "TWS-PKL-FRAME",
                            Severity.MEDIUM,
                            "a FRAME starts before the previous frame ended",
                            op_off,
                            frame_start=frame_start,
                            frame_end=frame_end,
                        )
                    frame_start = pos
                    frame_end = pos + flen
                elif op == 0x80:  # PROTO
                    if pos + 1 > n:
                        truncated(op_off, "PROTO")
                    proto = data[pos]
                    pos += 1
                    if proto > _MAX_PROTOCOL:
                        self.fail(
                            "TWS-PKL-MALFORMED",
                            f"unsupported pickle protocol {proto}",
                            op_off,
                        )
                    if op_off != start:
                        self.add(
                            "TWS-PKL-PROTOCOL",
                            Severity.MEDIUM,
                            f"PROTO {proto} in the middle of a pickle changes how later "
                            "names are resolved",
                            op_off,
                            protocol=proto,
                        )
                    self.proto = proto
                elif op == 0x2E:  # STOP
                    if len(stack) <= fence:
                        underflow(op_off, "STOP")
                    if len(stack) > max_stack:
                        self.add(
                            "TWS-PKL-LIMIT",
                            Severity.HIGH,
                            f"stack deeper than {max_stack}",
                            op_off,
                            limit="max_stack_depth",
                        )
                        raise _Stop
                    if frame_end >= 0 and pos != frame_end:
                        self.add(
                            "TWS-PKL-FRAME",
                            Severity.MEDIUM,
                            "STOP inside a FRAME that declares more bytes than it holds",
                            op_off,
                            frame_start=frame_start,
                            frame_end=frame_end,
                        )
                    self.opcount += opcount
                    self.result = _plain(stack[-1])
                    return pos, True
                elif op == 0x30:  # POP
                    if marks and marks[-1] == len(stack):
                        marks.pop()
                        fence = marks[-1] if marks else 0
                    elif len(stack) <= fence:
                        underflow(op_off, "POP")
                    else:
                        pop()
                elif op == 0x31:  # POP_MARK
                    k = pop_mark(op_off, "POP_MARK")
                    del stack[k:]
                elif op == 0x32:  # DUP
                    if len(stack) <= fence:
                        underflow(op_off, "DUP")
                    append(stack[-1])
                elif op == 0x6C:  # LIST
                    k = pop_mark(op_off, "LIST")
                    lst = _Container("list")
                    lst.dunder = _pairs_dunder(stack[k:])
                    del stack[k:]
                    append(lst)
                elif op == 0x64:  # DICT
                    k = pop_mark(op_off, "DICT")
                    if (len(stack) - k) % 2:
                        self.fail("TWS-PKL-MALFORMED", "odd number of items for DICT", op_off)
                    d = _Container("dict")
                    _store_items(d, stack, k)
                    del stack[k:]
                    append(d)
                elif op == 0x8F:  # EMPTY_SET
                    append(_Container("set"))
                elif op == 0x91:  # FROZENSET
                    k = pop_mark(op_off, "FROZENSET")
                    del stack[k:]
                    append(_Container("frozenset"))
                elif op == 0x6F:  # OBJ
                    k = pop_mark(op_off, "OBJ")
                    if len(stack) - k < 1:
                        underflow(op_off, "OBJ")
                    cls = stack[k]
                    obj_args = tuple(stack[k + 1 :])
                    del stack[k:]
                    if len(stack) < fence:
                        underflow(op_off, "OBJ")
                    self.check_call(cls, op_off, "OBJ")
                    if type(cls) is _Global:
                        use = "call" if obj_args else "new"
                        self.check_use(cls, use, op_off, "OBJ", obj_args)
                    append(_Obj(cls))
                elif (
                    op == 0x42
                    or op == 0x43
                    or op == 0x8E
                    or op == 0x96
                    or op == 0x54
                    or (op == 0x55)
                ):  # BINBYTES / SHORT_BINBYTES / BINBYTES8 / BYTEARRAY8 / BINSTRING / SHORT_
                    if op == 0x43 or op == 0x55:
                        if pos + 1 > n:
                            truncated(op_off, _OPNAMES[op])
                        size = data[pos]
                        pos += 1
                    elif op == 0x42:
                        if pos + 4 > n:
                            truncated(op_off, _OPNAMES[op])
                        size = _U4(data, pos)[0]
                        pos += 4
                    elif op == 0x54:
                        if pos + 4 > n:
                            truncated(op_off, _OPNAMES[op])
                        size = _I4(data, pos)[0]
                        pos += 4
                        if size < 0:
                            self.fail(
                                "TWS-PKL-MALFORMED", "BINSTRING has a negative length", op_off
                            )
                    else:
                        if pos + 8 > n:
                            truncated(op_off, _OPNAMES[op])
                        size = _U8(data, pos)[0]
                        pos += 8
                    if pos + size > n:
                        truncated(op_off, _OPNAMES[op])
                    if op == 0x54 or op == 0x55:
                        # Python 2 str: decoded to str by the default encoding, so it may
                        # feed STACK_GLOBAL; keep the text.
                        append(str(data[pos : pos + size], "utf-8", "surrogateescape"))
                    else:
                        append(_BYTES)
                    pos += size
                elif op == 0x47:  # BINFLOAT
                    if pos + 8 > n:
                        truncated(op_off, "BINFLOAT")
                    append(_FLOAT)
                    pos += 8
                elif op == 0x8A or op == 0x8B:  # LONG1 / LONG4
                    if op == 0x8A:
                        if pos + 1 > n:
                            truncated(op_off, "LONG1")
                        size = data[pos]
                        pos += 1
                    else:
                        if pos + 4 > n:
                            truncated(op_off, "LONG4")
                        size = _I4(data, pos)[0]
                        pos += 4
                        if size < 0:
                            self.fail("TWS-PKL-MALFORMED", "LONG4 has a negative length", op_off)
                    if pos + size > n:
                        truncated(op_off, _OPNAMES[op])
                    append(int.from_bytes(data[pos : pos + min(size, 16)], "little", signed=True))
                    pos += size
                elif op == 0x67 or op == 0x70:  # GET / PUT (text)
                    opname = "GET" if op == 0x67 else "PUT"
                    line, pos = readline(pos, op_off, opname)
                    try:
                        key = int(line)
                    except ValueError:
                        self.fail(
                            "TWS-PKL-MALFORMED", f"{opname} argument is not an integer", op_off
                        )
                    if op == 0x67:
                        try:
                            append(memo[key])
                        except KeyError:
                            self.fail(
                                "TWS-PKL-MEMO-UNDEFINED",
                                f"GET of memo key {key} that was never stored",
                                op_off,
                                key=key,
                            )
                    else:
                        if key < 0:
                            self.fail("TWS-PKL-MALFORMED", "negative PUT argument", op_off)
                        if key > max_memo:
                            self.add(
                                "TWS-PKL-LIMIT",
                                Severity.HIGH,
                                f"memo index {key} beyond the limit of {max_memo}",
                                op_off,
                                limit="max_memo",
                            )
                            raise _Stop
                        if len(stack) <= fence:
                            underflow(op_off, "PUT")
                        memo[key] = stack[-1]
                elif op == 0x49 or op == 0x4C:  # INT / LONG (text)
                    opname = "INT" if op == 0x49 else "LONG"
                    line, pos = readline(pos, op_off, opname)
                    if op == 0x49 and line in (b"00", b"01"):
                        append(line == b"01")
                    else:
                        # _pickle.c parses with base 0 (strtol); values are irrelevant to the
                        # analysis, so an odd spelling is accepted rather than guessed at.
                        append(_INT)
                elif op == 0x46:  # FLOAT (text)
                    line, pos = readline(pos, op_off, "FLOAT")
                    append(_FLOAT)
                elif op == 0x53:  # STRING (quoted)
                    line, pos = readline(pos, op_off, "STRING")
                    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
                        try:
                            raw = codecs.escape_decode(line[1:-1])[0]
                        except ValueError:
                            self.fail("TWS-PKL-MALFORMED", "STRING has a bad escape", op_off)
                        append(raw.decode("utf-8", "surrogateescape"))
                    else:
                        self.fail(
                            "TWS-PKL-MALFORMED",
                            "the STRING opcode argument must be quoted",
                            op_off,
                        )
                elif op == 0x56:  # UNICODE (raw-unicode-escape line)
                    line, pos = readline(pos, op_off, "UNICODE")
                    try:
                        append(line.decode("raw-unicode-escape"))
                    except UnicodeDecodeError:
                        self.fail("TWS-PKL-MALFORMED", "UNICODE has a bad escape", op_off)
                elif op == 0x50:  # PERSID (text)
                    line, pos = readline(pos, op_off, "PERSID")
                    try:
                        pid_text = line.decode("ascii")
                    except UnicodeDecodeError:
                        self.fail(
                            "TWS-PKL-MALFORMED",
                            "persistent IDs in protocol 0 must be ASCII",
                            op_off,
                        )
                    self.persids.append(pid_text)
                    append(_Obj(_PERSISTENT, pid_text))
                elif op == 0x82 or op == 0x83 or op == 0x84:  # EXT1/2/4
                    opname = _OPNAMES[op]
                    width = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                    if pos + width > n:
                        truncated(op_off, opname)
                    code = int.from_bytes(data[pos : pos + width], "little", signed=op == 0x84)
                    pos += width
                    append(self.extension(code, op_off, opname))
                elif op == 0x97:  # NEXT_BUFFER
                    append(_BUFFER)
                elif op == 0x98:  # READONLY_BUFFER
                    if len(stack) <= fence:
                        underflow(op_off, "READONLY_BUFFER")
                else:
                    self.fail(
                        "TWS-PKL-MALFORMED",
                        f"invalid opcode byte 0x{op:02x}: the unpickler raises here",
                        op_off,
                        opcode=f"0x{op:02x}",
                    )
        except _Stop:
            self.opcount += opcount
            return pos, False

    def extension(self, code: int, offset: int, opname: str) -> object:
        import copyreg

        registry: dict[int, tuple[str, str]] = copyreg._inverted_registry  # type: ignore[attr-defined]
        key = registry.get(code)
        if code <= 0:
            self.fail(
                "TWS-PKL-MALFORMED", f"{opname} with non-positive extension code {code}", offset
            )
        if key is None:
            self.add(
                "TWS-PKL-EXT",
                Severity.HIGH,
                f"{opname} refers to extension code {code}, which is not registered in "
                "copyreg's extension registry: it loads whatever the loading process "
                "registered under that code",
                offset,
                code=code,
            )
            # Keep analysing: the loading process may have registered the code.
            return _Global("<extension>", str(code), Verdict.UNKNOWN)
        self.add(
            "TWS-PKL-EXT",
            Severity.MEDIUM,
            f"{opname} imports {key[0]}.{key[1]} through copyreg's extension registry",
            offset,
            code=code,
        )
        return self.import_global(key[0], key[1], offset, opname)


def _find_newline(data: memoryview, start: int, n: int) -> int:
    # memoryview has no find(); search in bounded chunks to avoid copying huge tails.
    pos = start
    chunk = 4096
    while pos < n:
        end = min(n, pos + chunk)
        idx = bytes(data[pos:end]).find(b"\n")
        if idx >= 0:
            return pos + idx
        pos = end
        chunk = min(chunk * 4, 1 << 22)
    return -1


_MAX_TRACKED_ITEMS = 64

# Allowlisted constructors whose arguments are classes or callables they allocate or call
# (every spelling the allowlist has for each object).
_ALLOCATORS = frozenset(
    {
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "copyreg._reconstructor",
    }
)
# scikit-learn's Cython newObj(cls) helpers: each may only allocate its own class.
_NEWOBJ_TARGETS = {
    "sklearn.neighbors._kd_tree.newObj": "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.metrics._dist_metrics.newObj": "sklearn.metrics._dist_metrics.EuclideanDistance64",
}
_REBUILD_FROM_TYPE = frozenset(
    {"torch._tensor._rebuild_from_type", "torch._tensor._rebuild_from_type_v2"}
)
_TENSOR_TYPES = frozenset(
    {
        "torch.Tensor",
        "torch._tensor.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
    }
)
_NUMPY_GEN_CTORS = frozenset(
    {"numpy.random._pickle.__generator_ctor", "numpy.random._pickle.__randomstate_ctor"}
)
_BITGEN_CTOR = frozenset({"numpy.random._pickle.__bit_generator_ctor"})
_BITGEN_CLASSES = frozenset(
    f"numpy.random.{m}{c}"
    for m, cs in (
        ("", ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")),
        ("_mt19937.", ("MT19937",)),
        ("_pcg64.", ("PCG64", "PCG64DXSM")),
        ("_philox.", ("Philox",)),
        ("_sfc64.", ("SFC64",)),
    )
    for c in cs
)
_NP_RECONSTRUCT = frozenset(
    {"numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct"}
)
_ARRAY_TYPES = frozenset(
    {
        "numpy.ndarray",
        "numpy._core.multiarray.ndarray",
        "numpy.core.multiarray.ndarray",
        "numpy.recarray",
        "numpy.rec.recarray",
        "numpy._core.records.recarray",
        "numpy.core.records.recarray",
        "numpy.char.chararray",
        "numpy._core.defchararray.chararray",
        "numpy.core.defchararray.chararray",
        "numpy.matrix",
        "numpy.ma.MaskedArray",
        "numpy.ma.core.MaskedArray",
    }
)
_FACTORIES = frozenset(
    f"builtins.{t}"
    for t in (
        *("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex"),
        *("str", "bytes", "bytearray", "bool"),
    )
)

# Tensor rebuild functions whose (storage, offset, size, stride) arguments are checked.
_REBUILD_FUNCS = frozenset(
    {
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_qtensor",
    }
)
_REBUILD_NAMES = frozenset(name.rsplit(".", 1)[1] for name in _REBUILD_FUNCS)
# Globals whose results are tensors or arrays: item assignment into them at load time is a
# memory-corruption primitive, never something torch.save or numpy write.
_ARRAY_MAKERS = frozenset(
    {
        *_REBUILD_FUNCS,
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_wrapper_subclass",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._tensor._rebuild_from_type_v2",
        "torch.Size",
        "torch.Tensor",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ndarray",
    }
)


def _special_key(key: object) -> str | None:
    """What a mapping key would set as BUILD state that the check must report: a dunder name,
    or a name computed by a call (``str(b"__class__", "ascii")``), which cannot be read here."""
    if type(key) is str:
        return key if key[:2] == "__" else None
    if type(key) is _Obj:
        return f"<computed key: {_brief(key)}>"
    return None


def _pairs_dunder(items: list[Any] | tuple[Any, ...]) -> str | None:
    """The first special key among ``(key, value)`` pairs (a mapping's constructor argument)."""
    for item in items:
        if type(item) is tuple and len(item) == 2:
            special = _special_key(item[0])
            if special is not None:
                return special
    return None


def _arg_dunder(value: object) -> str | None:
    """The first special key of a mapping constructor's argument: a dict, or pairs."""
    if type(value) is _Container:
        return value.dunder
    if type(value) is tuple:
        return _pairs_dunder(value)
    return None


def _note_dunder(target: _Obj, keys: list[Any] | tuple[Any, ...]) -> None:
    # Only the first special key is kept: as BUILD state it would overwrite that attribute.
    if target.dunder is None:
        for key in keys:
            special = _special_key(key)
            if special is not None:
                target.dunder = special
                return


def _store_item(target: _Container, key: object, value: object) -> None:
    # Only small str-keyed dicts are tracked (joblib wrapper state, persistent ids); enough to
    # interpret them without keeping a copy of large containers. Dunder keys are always noted:
    # as BUILD state they would overwrite special attributes.
    if target.kind != "dict":
        return
    if target.dunder is None:
        target.dunder = _special_key(key)
    if type(key) is not str:
        return
    items = target.items
    if items is None:
        items = target.items = {}
    if len(items) < _MAX_TRACKED_ITEMS:
        items[key] = value


def _store_items(target: _Container, stack: list[Any], k: int) -> None:
    if target.kind != "dict":
        return
    if target.dunder is None:
        target.dunder = next(
            (special for special in map(_special_key, stack[k::2]) if special is not None), None
        )
    items = target.items
    if items is None:
        items = target.items = {}
    room = _MAX_TRACKED_ITEMS - len(items)
    if room <= 0:
        return
    keys = stack[k : k + 2 * room : 2]
    values = stack[k + 1 : k + 2 * room : 2]
    for key, value in zip(keys, values, strict=False):
        if type(key) is str:
            items[key] = value


#: Values ``_plain`` renders in all, whatever the shape: tuples shared through the memo make a
#: graph whose tree is exponentially larger than the pickle (each level can refer to the one
#: below 64 times), so depth and width caps alone do not bound the walk.
_PLAIN_BUDGET = 4096


def _brief(value: object) -> str:
    """A value as a finding's message names it: its ``repr``, cut at 200 characters, rendered
    no further than that (a tuple of shared tuples is never rendered whole)."""
    out: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        if size > 200:
            raise _Full
        out.append(text)
        size += len(text)

    def walk(v: object) -> None:
        if type(v) is not tuple:
            emit(repr(v)[:201])
            return
        emit("(")
        for i, x in enumerate(v):
            if i:
                emit(", ")
            walk(x)
        emit(",)" if len(v) == 1 else ")")

    with contextlib.suppress(_Full):
        walk(value)
    text = "".join(out)
    return text if len(text) <= 200 else text[:197] + "..."


class _Full(Exception):
    """Internal: a rendering reached its length."""


def _plain(value: object) -> object:
    """A small JSON-friendly rendering of a symbolic value (for evidence), bounded in size."""
    left = _PLAIN_BUDGET

    def walk(value: object, depth: int) -> object:
        nonlocal left
        t = type(value)
        if t is str:
            return value[:256]  # type: ignore[index]
        if t is int or t is bool or value is None:
            return value
        if t is tuple:
            if depth >= 6 or left <= 0:
                return "..."
            out: list[object] = []
            for v in value[:64]:  # type: ignore[index]
                left -= 1
                if left < 0:
                    out.append("...")
                    break
                tv = type(v)
                if tv is int or tv is bool or v is None:
                    out.append(v)
                elif tv is str:
                    out.append(v[:256])
                else:
                    out.append(walk(v, depth + 1))
            return out
        return _brief(value)

    return walk(value, 0)


def analyze_pickle(
    data: bytes | bytearray | memoryview,
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    location: str = "<pickle>",
    max_pickles: int | None = None,
    start: int = 0,
    deadline: float | None = None,
    joblib: bool = True,
) -> PickleAnalysis:
    """Symbolically run every pickle in ``data`` (from ``start``) and report what it would do.

    With ``joblib`` (the default) the raw array bytes that ``joblib.dump`` writes after each
    ``NumpyArrayWrapper`` are skipped the way joblib's ``NumpyUnpickler`` reads them, and
    object arrays stored there as nested pickles are analysed. Consecutive pickles are
    analysed until the data ends or ``max_pickles`` have been read (the legacy torch format
    reads several in a row). Data after the last pickle that does not parse is reported as
    ``TWS-PKL-TRAILING``. ``limits`` default to the policy's (then to :class:`Limits`). Never
    imports or calls anything from the input.
    """
    policy = policy if policy is not None else Policy.default()
    if limits is None:
        # The policy's own limits, when it sets any (a loader passes only its policy).
        limits = policy.limits if policy.limits is not None else Limits()
    own_view = not isinstance(data, memoryview)
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
        own_view = True
    try:
        return _analyze(view, policy, limits, location, max_pickles, start, deadline, joblib)
    finally:
        if own_view:
            view.release()


def _analyze(
    view: memoryview,
    policy: Policy,
    limits: Limits,
    location: str,
    max_pickles: int | None,
    start: int,
    deadline: float | None,
    joblib: bool,
) -> PickleAnalysis:
    if deadline is None:
        deadline = time.monotonic() + limits.max_seconds_per_file
    vm = _VM(view, policy, limits, location, deadline)
    if joblib:
        vm.build_hook = _joblib_hook
    pos = start
    count = 0
    complete = True
    n = len(view)
    while True:
        before_findings = len(vm.findings)
        before_globals = len(vm.globals)
        end, ok = vm.run_one(pos)
        if not ok:
            if count > 0 and len(vm.globals) == before_globals:
                # A later "pickle" that imports nothing and fails is leftover data, unless it
                # failed for a reason other than not parsing.
                new = vm.findings[before_findings:]
                if all(f.rule_id in ("TWS-PKL-MALFORMED", "TWS-PKL-TRUNCATED") for f in new):
                    del vm.findings[before_findings:]
                    vm.findings.append(
                        Finding(
                            "TWS-PKL-TRAILING",
                            Severity.MEDIUM,
                            f"{n - pos} bytes after the last pickle do not form a pickle",
                            f"{location}@{pos}",
                            {"offset": pos, "trailing_bytes": n - pos},
                        )
                    )
                    end = pos
                    break
            complete = False
            count += 1
            break
        count += 1
        pos = end
        if pos >= n or (max_pickles is not None and count >= max_pickles):
            break
    return PickleAnalysis(
        globals=tuple(vm.globals),
        findings=tuple(vm.findings),
        end_offset=end,
        pickles=count,
        persistent_ids=tuple(vm.persids),
        opcodes=vm.opcount,
        protocol=vm.proto,
        complete=complete,
        joblib_arrays=vm.joblib_arrays,
        result=vm.result,
    )


_JOBLIB_WRAPPERS = frozenset(
    {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    }
)


def _joblib_hook(vm: _VM, obj: _Obj, pos: int) -> int:
    """After BUILD of a joblib NumpyArrayWrapper: skip (or analyse) the array payload."""
    origin = obj.origin
    if type(origin) is not _Global or f"{origin.module}.{origin.name}" not in _JOBLIB_WRAPPERS:
        return pos
    state = obj.state
    items = state.items if type(state) is _Container else None
    if not items:
        vm.fail("TWS-PKL-MALFORMED", "joblib array wrapper without a readable state", pos)
        raise AssertionError  # unreachable: fail() raises
    info = _joblib_dtype(items.get("dtype"))
    shape = items.get("shape")
    if info is None or type(shape) is not tuple or not all(type(d) is int for d in shape):
        vm.fail(
            "TWS-PKL-MALFORMED",
            "cannot determine the size of a joblib array payload; its bytes cannot be skipped",
            pos,
        )
        raise AssertionError
    itemsize, hasobject = info
    vm.joblib_arrays += 1
    if hasobject:
        # joblib reads object arrays with a plain pickle.load from the same stream.
        nested = analyze_pickle(
            vm.data,
            policy=vm.policy,
            limits=vm.limits,
            location=vm.location,
            max_pickles=1,
            start=pos,
            deadline=vm.deadline,
            joblib=False,
        )
        vm.globals.extend(nested.globals)
        for f in nested.findings:
            key = f.evidence.get("global_")
            if f.rule_id in ("TWS-PKL-DANGEROUS", "TWS-PKL-UNKNOWN") and key in {
                f"{m}.{n}" for m, n in vm.reported
            }:
                continue
            vm.findings.append(f)
        vm.reported.update((g.module, g.name) for g in nested.globals)
        if not nested.complete:
            raise _Stop
        return nested.end_offset
    count = 1
    for d in shape:
        if d < 0:
            vm.fail("TWS-PKL-MALFORMED", "joblib array with a negative dimension", pos)
        count *= d
    if "numpy_array_alignment_bytes" in items:
        if pos >= vm.n:
            vm.fail("TWS-PKL-TRUNCATED", "joblib array padding missing", pos)
        pos += 1 + vm.data[pos]
    end = pos + count * itemsize
    if end > vm.n:
        vm.fail(
            "TWS-PKL-TRUNCATED",
            f"joblib array payload of {count * itemsize} bytes runs past the end of the data",
            pos,
        )
    return end


def _joblib_dtype(dtype: object) -> tuple[int, bool] | None:
    """(itemsize, hasobject) of a symbolic ``numpy.dtype(...)`` value, decided by numpy on the
    dtype it would build (never by the spelling); unknown object-ness counts as objects."""
    from trainwarden.scan._formats._dtype import dtype_info

    triple = _dtype_triple(dtype, 0)
    if triple is None:
        return None
    info = dtype_info(*triple)
    if info is None:
        return None
    itemsize, hasobject = info
    return (8, True) if hasobject is not False else (itemsize, False)


def _dtype_triple(dtype: object, depth: int, budget: list[int] | None = None) -> Any:
    """The ``(code, align, state)`` of a symbolic pickled dtype, with plain values only.

    ``None`` when it cannot be rendered, also when the state's values, counted as a tree, exceed
    ``_PLAIN_BUDGET``: tuples and sub-dtypes shared through the memo would otherwise make the
    rendering exponentially larger than the pickle.
    """
    from trainwarden.scan._formats._dtype import DtypeTriple

    if budget is None:
        budget = [_PLAIN_BUDGET]
    if depth > 32 or type(dtype) is not _Obj or type(dtype.origin) is not _Global:
        return None
    if f"{dtype.origin.module}.{dtype.origin.name}" != "numpy.dtype":
        return None
    args = dtype.args
    if type(args) is not tuple or not args or type(args[0]) is not str:
        return None
    align = args[1] if len(args) > 1 else False
    missing = object()

    def plain(v: object) -> object:
        budget[0] -= 1
        if budget[0] < 0:
            return missing
        if v is None or type(v) in (str, int, bool, float, bytes):
            return v
        if type(v) is tuple:
            out = [plain(x) for x in v]
            return missing if missing in out else tuple(out)
        if type(v) is _Container and v.kind == "dict" and v.items is not None:
            d = {k: plain(x) for k, x in v.items.items()}
            return missing if missing in d.values() else d
        if type(v) is _Obj:
            t = _dtype_triple(v, depth + 1, budget)
            return missing if t is None else t
        return missing

    state = plain(dtype.state)
    if state is missing:
        return None
    return DtypeTriple((args[0], align, state))
