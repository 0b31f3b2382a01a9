"""Drill samples for callables that are harmless to name and dangerous to call.

Each sample calls, allocates or rebuilds something a reader of our allowlist might hope to slip
through: ``numpy.memmap`` under its other spellings and through every opcode that calls or
allocates a class (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ, ``copyreg.__newobj__``/``__newobj_ex__``),
torch's ``_rebuild_from_type(_v2)`` handed a file-creating callable, the same payloads inside a
torch checkpoint, a joblib file and an ``.npy`` object array, and TorchScript archives whose
``__setstate__`` creates a file at ``torch.jit.load``. All are benign: the only effect a loader
that ran them could have is creating (and writing a byte into) the sample's canary file.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

from trainwarden.drill._scan_corpus._base import (
    _bytes_sample,
    _Mal,
    _write,
    p4,
)
from trainwarden.drill._scan_corpus.asm import (
    EMPTY_DICT,
    EMPTY_TUPLE,
    MARK,
    MEMOIZE,
    NEWOBJ,
    NEWOBJ_EX,
    P2,
    REDUCE,
    SETITEM,
    STACK_GLOBAL,
    STOP,
    TUPLE,
    TUPLE1,
    bint,
    call,
    g,
    sg,
    su,
)

__all__ = ["callable_specs"]

_REF = "TrainWarden adversarial review: allowlisted name, dangerous call"
_MEMMAP = ("numpy._core.memmap", "memmap")
_DANGEROUS = ("TWS-PKL-DANGEROUS",)


def _mm_args(c: Path) -> bytes:
    """memmap(filename, dtype, mode, offset, shape): creates (or truncates) ``c``."""
    return su(str(c)) + su("uint8") + su("w+") + bint(0) + bint(4) + TUPLE1


def _mm_kwargs(c: Path) -> bytes:
    return (
        EMPTY_DICT
        + MARK
        + su("filename")
        + su(str(c))
        + su("mode")
        + su("w+")
        + su("shape")
        + bint(4)
        + TUPLE1
        + b"u"
    )


def _reduce_with(module: str, name: str) -> Any:
    def f(c: Path) -> bytes:
        return p4(call(sg(module, name), _mm_args(c)))

    return f


def _dotted(module: str, name: str) -> Any:
    # Protocol 4 resolves a dotted name attribute by attribute: another spelling of one object.
    return _reduce_with(module, name)


def _text_global(c: Path) -> bytes:
    return P2 + g(*_MEMMAP) + MARK + _mm_args(c) + TUPLE + REDUCE + STOP


def _memo_alias(c: Path) -> bytes:
    # The module and name strings come from the memo, not from the STACK_GLOBAL's neighbours.
    head = su(_MEMMAP[0]) + MEMOIZE + su(_MEMMAP[1]) + MEMOIZE + b"0" + b"0"
    return p4(head + b"h\x00h\x01" + STACK_GLOBAL + MARK + _mm_args(c) + TUPLE + REDUCE)


def _newobj(c: Path) -> bytes:
    return p4(sg(*_MEMMAP) + MARK + _mm_args(c) + TUPLE + NEWOBJ)


def _newobj_ex(c: Path) -> bytes:
    return p4(sg(*_MEMMAP) + EMPTY_TUPLE + _mm_kwargs(c) + NEWOBJ_EX)


def _copyreg_newobj(c: Path) -> bytes:
    return p4(call(sg("copyreg", "__newobj__"), sg(*_MEMMAP), _mm_args(c)))


def _copyreg_newobj_ex(c: Path) -> bytes:
    return p4(call(sg("copyreg", "__newobj_ex__"), sg(*_MEMMAP), EMPTY_TUPLE, _mm_kwargs(c)))


def _inst(c: Path) -> bytes:
    args = f"V{c}\nVuint8\nVw+\nI0\n(I4\nt".encode()
    return b"(" + args + b"i" + "\n".join(_MEMMAP).encode() + b"\n."


def _obj(c: Path) -> bytes:
    return p4(MARK + sg(*_MEMMAP) + _mm_args(c) + b"o")


def _setitem_writes(c: Path) -> bytes:
    # The mapping is created, then SETITEM stores a chosen byte through it into the file.
    return p4(call(sg(*_MEMMAP), _mm_args(c)) + bint(0) + bint(65) + SETITEM)


def _build_state(c: Path) -> bytes:
    return p4(
        call(sg("collections", "OrderedDict"))
        + EMPTY_DICT
        + su("cache")
        + call(sg(*_MEMMAP), _mm_args(c))
        + SETITEM
        + b"b"
    )


def _rebuild_from_type(name: str, func: bytes, args: bytes) -> bytes:
    return p4(
        call(
            sg("torch._tensor", name),
            func,
            sg("torch", "Tensor"),
            MARK + args + TUPLE,
            EMPTY_DICT,
        )
    )


def _rft_v2(c: Path) -> bytes:
    return _rebuild_from_type("_rebuild_from_type_v2", sg(*_MEMMAP), _mm_args(c))


def _rft_v1(c: Path) -> bytes:
    return _rebuild_from_type("_rebuild_from_type", sg(*_MEMMAP), _mm_args(c))


def _rft_newobj_chain(c: Path) -> bytes:
    # The handed callable is itself allowlisted (copyreg.__newobj__) and allocates memmap.
    return _rebuild_from_type(
        "_rebuild_from_type_v2", sg("copyreg", "__newobj__"), sg(*_MEMMAP) + _mm_args(c)
    )


def _torch_zip(c: Path) -> bytes:
    # A PyTorch zip checkpoint (what torch.load reads) whose data.pkl maps the canary.
    body = p4(
        EMPTY_DICT
        + su("weight")
        + bint(0)
        + SETITEM
        + su("cache")
        + call(sg(*_MEMMAP), _mm_args(c))
        + SETITEM
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _npy_object(c: Path) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    pad = 64 - (10 + len(header) + 1) % 64
    text = (header + " " * pad + "\n").encode()
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    return head + P2 + g(*_MEMMAP) + MARK + _mm_args(c) + TUPLE + REDUCE + STOP


def _torchscript(kind: str) -> Any:
    def build(path: Path, canary: Path) -> None:
        from trainwarden.drill import _torchscript_payloads

        _write(path, _torchscript_payloads.archive(kind, canary))

    return build


def _m(
    name: str,
    technique: str,
    fn: Any,
    *,
    ext: str = ".pkl",
    trigger: str = "pickle",
    rules: tuple[str, ...] = _DANGEROUS,
    builder: Any = None,
) -> _Mal:
    return _Mal(
        name,
        ext,
        technique,
        _REF,
        builder if builder is not None else _bytes_sample(fn),
        trigger=trigger,
        expected_rules=rules,
    )


def callable_specs() -> list[_Mal]:
    """The samples of this module, in the order the drill lists them."""
    return [
        _m(
            "memmap_reduce_defining_module",
            "numpy._core.memmap.memmap(canary, mode='w+') by REDUCE: an 'in-memory array' class "
            "that creates files",
            _reduce_with(*_MEMMAP),
        ),
        _m(
            "memmap_reduce_numpy_core_alias",
            "the same class spelled numpy.core.memmap (numpy's compatibility module re-export)",
            _reduce_with("numpy.core", "memmap"),
        ),
        _m(
            "memmap_reexport_in_numpy_core",
            "the same class re-exported as numpy._core.memmap (a package attribute)",
            _reduce_with("numpy._core", "memmap"),
        ),
        _m(
            "memmap_dotted_name_from_numpy",
            "the same class as module numpy, name _core.memmap (protocol-4 dotted path)",
            _dotted("numpy", "_core.memmap"),
        ),
        _m(
            "memmap_text_global_protocol2",
            "memmap named by the text GLOBAL opcode (protocol 2)",
            _text_global,
        ),
        _m(
            "memmap_stack_global_from_memo",
            "memmap named by STACK_GLOBAL whose strings come from the memo",
            _memo_alias,
        ),
        _m(
            "memmap_newobj",
            "NEWOBJ: memmap.__new__(memmap, canary, 'uint8', 'w+') allocates by creating a file",
            _newobj,
        ),
        _m(
            "memmap_newobj_ex_kwargs",
            "NEWOBJ_EX with keyword arguments filename=, mode='w+', shape=",
            _newobj_ex,
        ),
        _m(
            "memmap_copyreg_newobj",
            "copyreg.__newobj__ (allowlisted) handed memmap and its file arguments",
            _copyreg_newobj,
        ),
        _m(
            "memmap_copyreg_newobj_ex",
            "copyreg.__newobj_ex__ (allowlisted) handed memmap with keyword arguments",
            _copyreg_newobj_ex,
        ),
        _m("memmap_inst_opcode", "protocol-0 INST opcode instantiating memmap", _inst),
        _m("memmap_obj_opcode", "OBJ opcode instantiating memmap", _obj),
        _m(
            "memmap_setitem_writes_byte",
            "memmap creates the file, then SETITEM writes a chosen byte through the mapping",
            _setitem_writes,
        ),
        _m(
            "memmap_in_build_state",
            "the memmap call hidden in the BUILD state of an allowlisted OrderedDict",
            _build_state,
        ),
        _m(
            "rebuild_from_type_v2_calls_memmap",
            "torch._tensor._rebuild_from_type_v2 (allowlisted) calls the memmap it is handed",
            _rft_v2,
        ),
        _m(
            "rebuild_from_type_calls_memmap",
            "torch._tensor._rebuild_from_type (old form) calls the memmap it is handed",
            _rft_v1,
        ),
        _m(
            "rebuild_from_type_v2_newobj_chain",
            "_rebuild_from_type_v2 handed copyreg.__newobj__, which allocates memmap",
            _rft_newobj_chain,
        ),
        _m(
            "torch_zip_memmap_in_data_pkl",
            "a PyTorch zip checkpoint whose data.pkl maps the canary (torch.load, "
            "weights_only=False)",
            _torch_zip,
            ext=".pt",
            trigger="torch",
        ),
        _m(
            "joblib_memmap_pickle",
            "a .joblib file (a plain pickle for joblib.load) calling memmap",
            _reduce_with(*_MEMMAP),
            ext=".joblib",
            trigger="joblib",
        ),
        _m(
            "npy_object_array_memmap",
            "an .npy object-array whose pickle calls memmap (numpy.load allow_pickle=True)",
            _npy_object,
            ext=".npy",
            trigger="numpy",
        ),
        _m(
            "torchscript_setstate_from_file",
            "TorchScript archive whose __setstate__ calls torch.from_file(canary, shared=True): "
            "torch.jit.load creates the file",
            None,
            ext=".pt",
            trigger="torch_jit",
            rules=("TWS-TORCHSCRIPT-OP",),
            builder=_torchscript("setstate"),
        ),
        _m(
            "torchscript_helper_from_file",
            "TorchScript archive whose __setstate__ calls a scripted helper function that calls "
            "torch.from_file",
            None,
            ext=".pt",
            trigger="torch_jit",
            rules=("TWS-TORCHSCRIPT-OP",),
            builder=_torchscript("helper"),
        ),
        _m(
            "torchscript_submodule_from_file",
            "TorchScript archive whose file-creating __setstate__ sits in a nested submodule",
            None,
            ext=".pt",
            trigger="torch_jit",
            rules=("TWS-TORCHSCRIPT-OP",),
            builder=_torchscript("submodule"),
        ),
    ]
