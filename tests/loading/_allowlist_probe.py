"""Run in a subprocess by test_allowlist_proof.py: drive every allowlist entry through the safe
loader's gate with adversarial arguments under an audit-hook recorder.

For each distinct object the allowlist names, Hypothesis generates arguments (paths, file modes,
file-like objects, huge sizes, nested callables, other allowlisted objects, tensors and arrays)
and the probe makes every call an unpickler can make on it: REDUCE/INST/OBJ
(``constructors.call``), NEWOBJ/NEWOBJ_EX (``constructors.allocate``), BUILD
(``constructors.apply_state``) and APPEND/SETITEM/ADDITEMS (``constructors.check_mutator``).
Whatever the gate lets through is really called. A violation is any of: a file opened for
writing, an import, compile, exec, a process started, a socket opened, a module attribute
changed, a handed-over callable called, a handed-over object used as a path or written to.
Entries whose gate decisions run the same code share a group: the group's first entry gets the
full Hypothesis search, and every entry of the group (the first included) is then called with the
two explicit adversarial examples and the first ``TW_PROBE_REPLAY`` arguments that search
generated, without Hypothesis's per-test overhead. With ``TW_PROBE_SELFTEST=1`` the same process
then lets the gate call two dangerous entries to show the recorder sees them.
Prints one JSON object: entries probed, examples run, violations (and the self-test's result).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore")

# Everything the gate and the entries need is imported before the recorder starts.
import collections  # noqa: E402, F401
import datetime  # noqa: E402, F401
import enum  # noqa: E402
import pickle  # noqa: E402, F401

import hypothesis  # noqa: E402 - after the warning filter
import numpy  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from trainwarden.loading import _constructors as C  # noqa: E402
from trainwarden.scan._allowlist import SAFE  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scan._callables_gen import resolve_name  # type: ignore[import-not-found]  # noqa: E402

EXAMPLES = int(os.environ.get("TW_PROBE_EXAMPLES", "12"))
REPLAY = int(os.environ.get("TW_PROBE_REPLAY", "3"))
SHARD, SHARDS = (int(x) for x in os.environ.get("TW_PROBE_SHARD", "0/1").split("/"))

_OTHER_EVENTS = frozenset(
    {
        "ctypes.dlopen",
        "ctypes.call_function",
        "mmap.__new__",
        "shutil.rmtree",
        "os.remove",
        "os.unlink",
        "os.rename",
        "os.mkdir",
        "os.truncate",
        "os.chmod",
    }
)
_recording = False
_events: list[str] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _recording:
        return
    if event == "open":
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writes:
            _events.append(f"open for writing: {args[0]!r}")
    elif event in ("import", "compile", "exec", "os.system", "os.fork", "os.forkpty"):
        _events.append(f"{event}: {str(args[:1])[:120]}")
    elif event.startswith(("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "socket.")):
        _events.append(f"{event}: {str(args[:2])[:120]}")
    elif event in _OTHER_EVENTS:
        _events.append(f"{event}: {str(args[:1])[:120]}")


class _Trip:
    """A handed-over object that records being called, used as a path or written to."""

    def __call__(self, *a: Any, **k: Any) -> Any:
        if _recording:
            _events.append("a handed-over callable was called")
        return 0

    def __fspath__(self) -> str:
        if _recording:
            _events.append("a handed-over object was used as a path")
        return os.devnull

    def write(self, *a: Any) -> int:
        if _recording:
            _events.append("a handed-over file object was written to")
        return 0

    def read(self, *a: Any) -> bytes:
        return b""

    def seek(self, *a: Any) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def flush(self) -> None:
        return None

    def fileno(self) -> int:
        if _recording:
            _events.append("a handed-over object's file descriptor was asked for")
        return 2


def _module_fingerprint() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, mod in list(sys.modules.items()):
        d = getattr(mod, "__dict__", None)
        if isinstance(d, dict):
            out[name] = {k: id(v) for k, v in list(d.items())}
    return out


def _changed(before: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for name, attrs in before.items():
        if name.split(".")[0] in ("hypothesis", "_hypothesis_pytestplugin"):
            continue  # the recorder's own machinery
        mod = sys.modules.get(name)
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for k, ident in attrs.items():
            if k in d and id(d[k]) != ident:
                out.append(f"module attribute changed: {name}.{k}")
    return out


def _entries(selftest: bool) -> tuple[list[tuple[str, Any]], dict[int, tuple[str, Any]], list[str]]:
    objects: dict[int, tuple[str, Any]] = {}
    names = sorted(SAFE)
    if selftest:
        # Prove the recorder sees what it must: let the gate call two dangerous entries.
        names = ["numpy._core.memmap.memmap", "importlib.import_module"]
        for n in names:
            C.CALLS[n] = (lambda args: None, "self-test only")
            C._by_id.clear()
        import importlib  # noqa: F401

        # The explicit example imports colorsys; an earlier probe in this process may have.
        sys.modules.pop("colorsys", None)
    unresolved = []
    for name in names:
        obj = resolve_name(name)
        if obj is None:
            unresolved.append(name)
        elif id(obj) not in objects:
            objects[id(obj)] = (name, obj)
    entries = sorted(objects.values(), key=lambda e: e[0])
    if not selftest:
        entries = entries[SHARD::SHARDS]
    return entries, objects, unresolved


def main() -> None:
    result = probe_entries(selftest=False)
    if os.environ.get("TW_PROBE_SELFTEST"):
        result["selftest"] = probe_entries(selftest=True)
    print(json.dumps(result))  # noqa: T201 - the probe's one line of output, read by the test


def probe_entries(*, selftest: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tw-probe-"))
    entries, objects, unresolved = _entries(selftest)
    pool = [o for _, o in objects.values()]

    paths = st.sampled_from(
        [str(tmp / "victim"), tmp / "victim2", os.devnull, "../escape", "/proc/self/mem"]
    )
    modes = st.sampled_from(["w", "w+", "r+", "a", "wb", "x", "c", "readwrite"])
    sizes = st.sampled_from([2**31, 2**40, 2**62, -1, 10**12, 0])
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True),
        st.text(max_size=12),
        st.binary(max_size=24),
        paths,
        modes,
        sizes,
        st.sampled_from(pool),
        st.builds(_Trip),
        st.builds(io.BytesIO),
        st.just(torch.zeros(2)),
        st.just(torch.zeros(4, dtype=torch.uint8).untyped_storage()),
        st.just(numpy.zeros(3)),
        st.just(numpy.dtype("O")),
        st.just(torch.float32),
        st.just(torch.strided),
    )
    values = st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(st.text(max_size=6), inner, max_size=4),
        ),
        max_leaves=8,
    )
    args_st = st.lists(values, max_size=7).map(tuple)
    kwargs_st = st.dictionaries(
        st.sampled_from(["filename", "mode", "shape", "dtype", "offset", "file", "path"]),
        values,
        max_size=3,
    )
    state_st = st.one_of(
        values,
        st.dictionaries(st.text(max_size=8), values, max_size=4),
        st.tuples(st.dictionaries(st.text(max_size=8), values, max_size=3), st.none()),
    )

    violations: dict[str, list[str]] = {}
    examples = 0

    def attempt(fn: Any, *a: Any) -> Any:
        global _recording
        _recording = True
        try:
            return fn(*a)
        except C.Refused:
            return None
        except (Exception, MemoryError, RecursionError):
            return None
        finally:
            _recording = False

    def group(obj: Any) -> tuple[Any, ...]:
        """What the gate's decisions about ``obj`` depend on: entries with the same key run the
        same code for every argument, so one representative gets the full search."""
        if C._spec_for(obj) is not None:
            return ("call", id(obj))
        if isinstance(obj, enum.EnumMeta):
            return ("enum",)
        if isinstance(obj, type):
            try:
                C._check_allocatable(obj, ())
                alloc = "object" if C._lookup(obj, "__new__") in (object.__new__, None) else "new"
            except C.Refused:
                alloc = "refused"
            owner = C._defined_in(obj, "__setstate__")
            mutators = tuple(
                id(C._defined_in(obj, m)) for m in ("append", "extend", "__setitem__", "add")
            )
            return ("class", alloc, id(owner), id(C._lookup(obj, "__setattr__")), mutators)
        return ("refused", type(obj).__name__)

    explicit: list[tuple[tuple[Any, ...], dict[str, Any], Any]] = [
        ((str(tmp / "victim"), "uint8", "w+", 0, (4,)), {}, None),
        (("colorsys",), {}, None),
    ]

    def body(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], state: Any) -> None:
        nonlocal examples
        examples += 1
        attempt(C.call, obj, args)
        if isinstance(obj, type):
            inst = attempt(C.allocate, obj, args, kwargs or None)
            if inst is None:
                inst = attempt(C.allocate, obj, ())
            if inst is not None:
                attempt(C.apply_state, inst, state)
                for method in ("append", "extend", "__setitem__", "add"):
                    bound = attempt(C.check_mutator, inst, method)
                    if bound is not None:
                        attempt(bound, *(args[:2] if method == "__setitem__" else args[:1]))

    def search(obj: Any, n: int) -> list[tuple[tuple[Any, ...], dict[str, Any], Any]]:
        """The full Hypothesis search on ``obj``; returns the arguments it generated."""
        drawn: list[tuple[tuple[Any, ...], dict[str, Any], Any]] = []

        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            phases=[Phase.generate],
        )
        @given(args=args_st, kwargs=kwargs_st, state=state_st)
        def probe(args: tuple[Any, ...], kwargs: dict[str, Any], state: Any) -> None:
            drawn.append((args, kwargs, state))
            body(obj, args, kwargs, state)

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            probe()
        return drawn

    group_args: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], dict[str, Any], Any]]] = {}
    per_entry: list[int] = []
    before = _module_fingerprint()
    for name, obj in entries:
        key = group(obj)
        _events.clear()
        start = examples
        if key not in group_args:
            group_args[key] = search(obj, EXAMPLES)[:REPLAY]
        for args, kwargs, state in [*explicit, *group_args[key]]:
            body(obj, args, kwargs, state)
        per_entry.append(examples - start)
        found = sorted(set(_events))
        if found:
            violations[name] = found[:10]
    changed = _changed(before)
    if changed:
        violations["<module attributes>"] = changed[:20]
    return {
        "entries": len(entries),
        "objects": len(objects),
        "examples": examples,
        "groups": len(group_args),
        "min_examples_per_entry": min(per_entry, default=0),
        "search_examples": EXAMPLES,
        "unresolved": unresolved,
        "violations": violations,
        "hypothesis": hypothesis.__version__,
    }


if __name__ == "__main__":
    # Bound memory so that "huge sizes" fail with MemoryError instead of exhausting the machine.
    with open("/proc/self/statm") as fh:
        vm = int(fh.read().split()[0]) * resource.getpagesize()
    limit = vm + (int(os.environ.get("TW_PROBE_MEM_MB", "3072")) << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    sys.addaudithook(_hook)
    main()
