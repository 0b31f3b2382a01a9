"""The closed set of constructors the safe loader may call while it unpickles.

An unpickler calls things at REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ and BUILD, and calls methods
at APPEND(S), SETITEM(S) and ADDITEMS. :class:`ClosedUnpickler` lets each of these through only
when the object to be called is in a table below *by identity* (never by the name the pickle used
for it) and its arguments have a shape whose only effect is creating in-memory values. Anything
else is refused before it is called, the way torch's ``weights_only`` unpickler works; nothing
here relies on noticing a side effect after the fact.

The tables are keyed by where each object is defined; :func:`resolve` turns a key into the
object, importing nothing that is not already imported (an object a pickle hands us was imported
by the unpickler's ``find_class``, after the policy allowed its name).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CALLS",
    "MUTATORS",
    "SETSTATES",
    "Refused",
    "allocate",
    "apply_state",
    "call",
    "check_mutator",
    "resolve",
]


class Refused(Exception):
    """A construction the closed set does not allow; the caller turns it into a finding."""


# -- argument shapes ------------------------------------------------------------------------------

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (tuple, list, dict, set, frozenset)
_MAX_DEPTH = 64


def _scalar(v: object) -> bool:
    return type(v) in _SCALARS


def _plain(v: object, depth: int = 0, seen: set[int] | None = None) -> bool:
    """A value built only of builtin scalars and exact builtin containers (no user code runs
    when it is iterated, hashed or compared).

    Each container is looked at once (``seen``): containers shared through the pickle's memo,
    level after level, would otherwise make the walk exponentially longer than the file.
    """
    t = type(v)
    if t in _SCALARS or t is bytearray:
        return True
    if depth > _MAX_DEPTH or t not in _CONTAINERS:
        return False
    if seen is None:
        seen = set()
    elif id(v) in seen:
        # Already judged plain, or being judged (a cycle): its verdict is decided there.
        return True
    seen.add(id(v))
    if t is dict:
        return all(
            _plain(k, depth + 1, seen) and _plain(x, depth + 1, seen)
            for k, x in v.items()  # type: ignore[attr-defined]
        )
    return all(_plain(x, depth + 1, seen) for x in v)  # type: ignore[attr-defined]


def _ints(v: object, *, maxlen: int = 64) -> bool:
    if not (type(v) in (tuple, list) or _is_size(v)):
        return False
    seq: tuple[Any, ...] | list[Any] = v  # type: ignore[assignment]
    return len(seq) <= maxlen and all(type(x) is int for x in seq)


def _is_size(v: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and type(v) is torch.Size


def _shallow(v: object) -> bool:
    """An exact builtin container (its items are objects this loader already built)."""
    return type(v) in _CONTAINERS


def _refuse(why: str) -> Refused:
    return Refused(why)


def _nargs(args: tuple[Any, ...], lo: int, hi: int) -> None:
    if not lo <= len(args) <= hi:
        raise _refuse(f"takes {lo}..{hi} arguments here, got {len(args)}")


# -- validators: each receives the positional arguments of one call -------------------------------

Validator = Callable[[tuple[Any, ...]], None]


def _scalars_only(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 8)
    if not all(_scalar(a) for a in args):
        raise _refuse("arguments must be plain scalars (None, bool, int, float, str, bytes)")


def _no_args(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 0)


def _one_container(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 1)
    if args and not _shallow(args[0]):
        raise _refuse("the argument must be an exact list, tuple, dict, set or frozenset")


def _bytes_like(args: tuple[Any, ...]) -> None:
    # bytes(n)/bytearray(n) with an integer allocate n bytes: never written by pickle.
    _nargs(args, 0, 3)
    if args and type(args[0]) not in (bytes, str, list, tuple, bytearray):
        raise _refuse("the first argument must be bytes, str or a list of ints")
    if args and type(args[0]) in (list, tuple) and not _ints(args[0], maxlen=1 << 20):
        raise _refuse("a list given to bytes() must hold ints")
    if not all(type(a) is str for a in args[1:]):
        raise _refuse("encoding and errors must be str")


_SAFE_CODECS = frozenset({"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"})


def _codec_encode(args: tuple[Any, ...]) -> None:
    # Codec lookup by name imports codec modules and reaches bytes-to-bytes codecs; pickle only
    # ever writes ``encode(text, 'latin1')``.
    _nargs(args, 1, 3)
    if type(args[0]) is not str:
        raise _refuse("only str can be encoded")
    enc = args[1] if len(args) > 1 else "utf-8"
    if type(enc) is not str or enc.lower() not in _SAFE_CODECS:
        raise _refuse(f"encoding {enc!r} is not one of {sorted(_SAFE_CODECS)}")
    if len(args) > 2 and args[2] != "strict":
        raise _refuse("errors must be 'strict'")


def _range_or_slice(args: tuple[Any, ...]) -> None:
    _nargs(args, 1, 3)
    if not all(type(a) in (int, type(None)) for a in args):
        raise _refuse("arguments must be ints or None")


def _defaultdict(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 2)
    if args and args[0] is not None and args[0] not in _FACTORIES:
        raise _refuse("the default factory must be None or a builtin container or number type")
    if len(args) > 1 and not _shallow(args[1]):
        raise _refuse("initial items must be an exact builtin container")


def _deque(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 2)
    if args and not _shallow(args[0]):
        raise _refuse("the items must be an exact builtin container")
    if len(args) > 1 and type(args[1]) not in (int, type(None)):
        raise _refuse("maxlen must be an int or None")


def _datetime_args(args: tuple[Any, ...]) -> None:
    import datetime

    _nargs(args, 1, 8)
    for a in args:
        if not (_scalar(a) or isinstance(a, (datetime.tzinfo, datetime.timedelta))):
            raise _refuse("arguments must be scalars, timedeltas or time zones")


def _regex(args: tuple[Any, ...]) -> None:
    _nargs(args, 1, 2)
    if type(args[0]) not in (str, bytes) or (len(args) > 1 and type(args[1]) is not int):
        raise _refuse("re._compile takes a str/bytes pattern and int flags")


def _enum_value(args: tuple[Any, ...]) -> None:
    # EnumType.__call__ with one argument looks a member up; with more it creates a class.
    _nargs(args, 1, 1)
    if not _plain(args[0]):
        raise _refuse("an enum member is looked up by a plain value")


def _reconstructor(args: tuple[Any, ...]) -> None:
    _nargs(args, 3, 3)
    cls, base, state = args
    if base is object:
        if state is not None:
            raise _refuse("copyreg._reconstructor with base object takes no state")
        _check_allocatable(cls, ())
        return
    if base not in _VALUE_TYPES or not isinstance(cls, type) or not issubclass(cls, base):
        raise _refuse("copyreg._reconstructor base must be object or a builtin value type")
    _check_allocatable(cls, (state,))
    if _lookup(cls, "__init__") is not _lookup(base, "__init__"):
        raise _refuse(f"{_name(cls)} has its own __init__")


def _newobj(args: tuple[Any, ...]) -> None:
    _nargs(args, 1, 64)
    _check_allocatable(args[0], args[1:])


def _newobj_ex(args: tuple[Any, ...]) -> None:
    _nargs(args, 3, 3)
    cls, a, kw = args
    if type(a) is not tuple or type(kw) is not dict:
        raise _refuse("copyreg.__newobj_ex__ takes a class, a tuple and a dict")
    _check_allocatable(cls, a, kw)


# numpy -------------------------------------------------------------------------------------------


def _np_dtype(v: object) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and type(v) is not type and isinstance(v, np.dtype)


def _np_reconstruct(args: tuple[Any, ...]) -> None:
    _nargs(args, 3, 3)
    subtype, shape, dtype = args
    if subtype not in _objects(_ARRAY_TYPES):
        raise _refuse("numpy _reconstruct builds only ndarray and its reviewed subclasses")
    if not (type(shape) is int or _ints(shape)) or type(dtype) not in (bytes, str):
        raise _refuse("numpy _reconstruct takes a shape of ints and a dtype code")


def _np_frombuffer(args: tuple[Any, ...]) -> None:
    _nargs(args, 4, 4)
    buf, dtype, shape, order = args
    if type(buf) not in (bytes, bytearray) and type(buf).__name__ != "PickleBuffer":
        raise _refuse("numpy _frombuffer reads only bytes")
    if not _np_dtype(dtype) or not _ints(shape) or order not in ("C", "F", "A", "K"):
        raise _refuse("numpy _frombuffer takes a dtype, a shape of ints and an order")


def _np_scalar(args: tuple[Any, ...]) -> None:
    _nargs(args, 1, 2)
    if not _np_dtype(args[0]):
        raise _refuse("numpy scalar takes a dtype")
    if len(args) > 1 and type(args[1]) is not bytes and not args[0].hasobject:
        raise _refuse("numpy scalar of a non-object dtype takes raw bytes")


def _np_dtype_ctor(args: tuple[Any, ...]) -> None:
    _nargs(args, 1, 3)
    if type(args[0]) is not str or not all(type(a) is bool for a in args[1:]):
        raise _refuse("numpy dtype is rebuilt from a type code (str) and two flags")


def _np_mareconstruct(args: tuple[Any, ...]) -> None:
    _nargs(args, 4, 4)
    subtype, baseclass, baseshape, basetype = args
    if subtype not in _objects(("numpy.ma.core.MaskedArray",)):
        raise _refuse("_mareconstruct builds only numpy.ma.MaskedArray")
    if baseclass not in _objects(_ARRAY_TYPES) or not _ints(baseshape):
        raise _refuse("_mareconstruct takes an ndarray class and a shape of ints")
    if not (_np_dtype(basetype) or type(basetype) is str):
        raise _refuse("_mareconstruct takes a dtype")


def _bit_generator_arg(v: object) -> bool:
    if type(v) is str:
        return v in _BIT_GENERATOR_NAMES
    return v in _objects(_BIT_GENERATORS) or type(v) in _objects(_BIT_GENERATORS)


def _np_bitgen_ctor(args: tuple[Any, ...]) -> None:
    # A class handed to __bit_generator_ctor is called: only the reviewed bit generators.
    _nargs(args, 0, 1)
    if args and not (
        (type(args[0]) is str and args[0] in _BIT_GENERATOR_NAMES)
        or args[0] in _objects(_BIT_GENERATORS)
    ):
        raise _refuse("the bit generator must be one of numpy's own, by class or name")


def _np_generator_ctor(args: tuple[Any, ...]) -> None:
    # The second argument is called with the first: only numpy's own constructor.
    _nargs(args, 0, 2)
    if args and not _bit_generator_arg(args[0]):
        raise _refuse("the bit generator must be one of numpy's own")
    if len(args) > 1 and args[1] is not resolve("numpy.random._pickle.__bit_generator_ctor"):
        raise _refuse("the bit generator constructor must be numpy's own")


def _np_seedseq(args: tuple[Any, ...]) -> None:
    _nargs(args, 3, 3)
    if args[0] is not resolve("numpy.random.bit_generator.SeedSequence"):
        raise _refuse("__pyx_unpickle_SeedSequence builds only SeedSequence")
    if type(args[1]) is not int or not _plain(args[2]):
        raise _refuse("__pyx_unpickle_SeedSequence takes a checksum and plain state")


# torch -------------------------------------------------------------------------------------------


def _is_storage(v: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, (torch.UntypedStorage, torch.storage.TypedStorage))


def _is_tensor(v: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.Tensor)


def _no_hooks(v: object) -> None:
    # Backward hooks are callables torch would run during backward(); torch.save writes none.
    if v is not None and not (type(v) in (dict,) or _is_ordered_dict(v)):
        raise _refuse("backward hooks must be a dict")
    if v:
        raise _refuse("a tensor with backward hooks (callables run later) is refused")


def _is_ordered_dict(v: object) -> bool:
    import collections

    return type(v) is collections.OrderedDict


def _obj_state(v: object) -> None:
    parts = v if type(v) is tuple else (v,)
    if len(parts) > 2:
        raise _refuse("object state is a dict or a (dict, slots) pair")
    for part in parts:
        if part is None:
            continue
        if type(part) is not dict and not _is_ordered_dict(part):
            raise _refuse("object state must be a dict")
        for k in part:
            if type(k) is not str or k.startswith("__"):
                raise _refuse(f"object state key {k!r} is not a plain attribute name")


def _tensor_view(args: tuple[Any, ...]) -> None:
    storage, offset, size, stride = args[:4]
    if not _is_storage(storage) and not _is_tensor(storage):
        raise _refuse("a tensor is rebuilt from a storage")
    if type(offset) is not int or not _ints(size) or not _ints(stride):
        raise _refuse("a tensor view takes an int offset and int size/stride")


def _t_rebuild_tensor(args: tuple[Any, ...]) -> None:
    _nargs(args, 4, 4)
    _tensor_view(args)


def _t_rebuild_tensor_v2(args: tuple[Any, ...]) -> None:
    _nargs(args, 6, 7)
    _tensor_view(args)
    if type(args[4]) is not bool:
        raise _refuse("requires_grad must be a bool")
    _no_hooks(args[5])
    if len(args) > 6 and args[6] is not None and not _plain(args[6]):
        raise _refuse("tensor metadata must be plain")


def _t_rebuild_tensor_v3(args: tuple[Any, ...]) -> None:
    _nargs(args, 7, 8)
    _tensor_view(args)
    if type(args[4]) is not bool:
        raise _refuse("requires_grad must be a bool")
    _no_hooks(args[5])
    if not _is_torch_dtype(args[6]):
        raise _refuse("dtype must be a torch dtype")


def _is_torch_dtype(v: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and type(v) is torch.dtype


def _t_rebuild_parameter(args: tuple[Any, ...]) -> None:
    _nargs(args, 3, 4)
    if not _is_tensor(args[0]) or type(args[1]) is not bool:
        raise _refuse("a parameter is rebuilt from a tensor and a bool")
    _no_hooks(args[2])
    if len(args) > 3:
        _obj_state(args[3])


def _t_rebuild_qtensor(args: tuple[Any, ...]) -> None:
    _nargs(args, 7, 7)
    _tensor_view(args)
    q = args[4]
    if type(q) is not tuple or not all(_scalar(x) or _is_tensor(x) or _is_qscheme(x) for x in q):
        raise _refuse("quantizer parameters must be scalars, tensors and a qscheme")
    if type(args[5]) is not bool:
        raise _refuse("requires_grad must be a bool")
    _no_hooks(args[6])


def _is_qscheme(v: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and type(v) is torch.qscheme


def _tensors_and_shapes(v: object, depth: int = 0, seen: set[int] | None = None) -> bool:
    if _is_tensor(v) or _scalar(v) or _is_torch_layout(v) or _ints(v):
        return True
    if depth > 4 or type(v) not in (tuple, list):
        return False
    # Each container once: shared ones would make the walk (wide)**5 long.
    if seen is None:
        seen = set()
    elif id(v) in seen:
        return True
    seen.add(id(v))
    return all(_tensors_and_shapes(x, depth + 1, seen) for x in v)  # type: ignore[attr-defined]


def _is_torch_layout(v: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and type(v) is torch.layout


def _t_rebuild_sparse(args: tuple[Any, ...]) -> None:
    _nargs(args, 2, 2)
    if not _is_torch_layout(args[0]) or not _tensors_and_shapes(args[1]):
        raise _refuse("a sparse tensor is rebuilt from a layout and tensors")


def _t_rebuild_nested(args: tuple[Any, ...]) -> None:
    _nargs(args, 4, 4)
    if not all(_is_tensor(a) for a in args):
        raise _refuse("a nested tensor is rebuilt from tensors")


def _t_rebuild_device_from(args: tuple[Any, ...]) -> None:
    _nargs(args, 4, 4)
    data, dtype, device, requires_grad = args
    np = sys.modules.get("numpy")
    is_array = np is not None and type(data) is np.ndarray and not data.dtype.hasobject
    if not (is_array or _is_tensor(data)):
        raise _refuse("a device tensor is rebuilt from an array or a CPU tensor")
    if not _is_torch_dtype(dtype) or type(requires_grad) is not bool:
        raise _refuse("a device tensor takes a torch dtype and a bool")
    if not (type(device) is str or type(device).__name__ == "device"):
        raise _refuse("a device tensor takes a device")


def _t_rebuild_meta(args: tuple[Any, ...]) -> None:
    _nargs(args, 4, 4)
    if not _is_torch_dtype(args[0]) or not _ints(args[1]) or not _ints(args[2]):
        raise _refuse("a meta tensor takes a dtype and int size/stride")
    if type(args[3]) is not bool:
        raise _refuse("requires_grad must be a bool")


def _t_rebuild_from_type(args: tuple[Any, ...]) -> None:
    # The function it is handed is called with the arguments it is handed: both are judged
    # here exactly as if the pickle had called the function itself.
    _nargs(args, 4, 4)
    func, new_type, fargs, state = args
    if new_type not in _objects(_TENSOR_TYPES):
        raise _refuse("the tensor type must be torch.Tensor or a parameter/buffer class")
    if type(fargs) is not tuple:
        raise _refuse("the wrapped call's arguments must be a tuple")
    spec = _spec_for(func)
    if spec is None or func in _objects(_REBUILD_FROM_TYPE):
        raise _refuse(f"it would call {_name(func)}, which is not a tensor constructor")
    spec(fargs)
    _obj_state(state)


def _t_size(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 1)
    if args and not _ints(args[0], maxlen=1 << 16):
        raise _refuse("torch.Size takes a tuple of ints")


def _t_device(args: tuple[Any, ...]) -> None:
    _nargs(args, 1, 2)
    if type(args[0]) is not str or (len(args) > 1 and type(args[1]) not in (int, type(None))):
        raise _refuse("torch.device takes a device type and an index")


def _one_str(args: tuple[Any, ...]) -> None:
    _nargs(args, 1, 1)
    if type(args[0]) is not str:
        raise _refuse("takes one str")


def _str_parts(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 256)
    if not all(type(a) is str for a in args):
        raise _refuse("takes str parts")


# sklearn -----------------------------------------------------------------------------------------


def _sk_tree(args: tuple[Any, ...]) -> None:
    # Tree's constructor copies n_outputs entries of n_classes without a bounds check.
    _nargs(args, 3, 3)
    n_features, n_classes, n_outputs = args
    np = sys.modules.get("numpy")
    if (
        np is None
        or type(n_features) is not int
        or type(n_outputs) is not int
        or type(n_classes) is not np.ndarray
        or n_classes.ndim != 1
        or n_classes.dtype != np.intp
        or n_outputs != n_classes.shape[0]
        or not 0 <= n_features < 1 << 31
    ):
        raise _refuse("Tree takes n_features, a 1-d intp array of classes and its length")


def _sk_newobj(cls_key: str) -> Validator:
    def check(args: tuple[Any, ...]) -> None:
        _nargs(args, 1, 1)
        if args[0] is not resolve(cls_key):
            raise _refuse(f"newObj here builds only {cls_key}")

    return check


def _one_float(args: tuple[Any, ...]) -> None:
    _nargs(args, 0, 1)
    if args and type(args[0]) not in (float, int):
        raise _refuse("takes one number")


# -- the tables ------------------------------------------------------------------------------------

#: Callables a pickle may call (REDUCE), keyed by where each is defined, with the argument check
#: that runs before the call. Classes not listed here may still be allocated (NEWOBJ, see
#: :func:`allocate`) and have state applied (BUILD, see :func:`apply_state`), never called.
CALLS: dict[str, tuple[Validator, str]] = {
    "builtins.object": (_no_args, "an empty object"),
    "builtins.bool": (_scalars_only, "a bool"),
    "builtins.int": (_scalars_only, "an int"),
    "builtins.float": (_scalars_only, "a float"),
    "builtins.complex": (_scalars_only, "a complex"),
    "builtins.str": (_scalars_only, "a str"),
    "builtins.bytes": (_bytes_like, "bytes"),
    "builtins.bytearray": (_bytes_like, "a bytearray"),
    "builtins.slice": (_range_or_slice, "a slice"),
    "builtins.range": (_range_or_slice, "a range"),
    "builtins.dict": (_one_container, "a dict"),
    "builtins.list": (_one_container, "a list"),
    "builtins.tuple": (_one_container, "a tuple"),
    "builtins.set": (_one_container, "a set"),
    "builtins.frozenset": (_one_container, "a frozenset"),
    "collections.OrderedDict": (_one_container, "an ordered dict"),
    "collections.Counter": (_one_container, "a counter"),
    "collections.defaultdict": (_defaultdict, "a dict with a builtin default factory"),
    "collections.deque": (_deque, "a deque"),
    "copyreg._reconstructor": (_reconstructor, "object.__new__ of an allocatable class"),
    "copyreg.__newobj__": (_newobj, "cls.__new__ of an allocatable class"),
    "copyreg.__newobj_ex__": (_newobj_ex, "cls.__new__ of an allocatable class"),
    "_codecs.encode": (_codec_encode, "text to bytes with a fixed text codec"),
    "datetime.date": (_datetime_args, "a date"),
    "datetime.datetime": (_datetime_args, "a datetime"),
    "datetime.time": (_datetime_args, "a time"),
    "datetime.timedelta": (_datetime_args, "a timedelta"),
    "datetime.timezone": (_datetime_args, "a time zone"),
    "decimal.Decimal": (_scalars_only, "a decimal"),
    "fractions.Fraction": (_scalars_only, "a fraction"),
    "ipaddress.IPv4Address": (_scalars_only, "an address"),
    "ipaddress.IPv6Address": (_scalars_only, "an address"),
    "ipaddress.IPv4Network": (_scalars_only, "a network"),
    "ipaddress.IPv6Network": (_scalars_only, "a network"),
    "pathlib.PurePath": (_str_parts, "a path value (no I/O)"),
    "pathlib.PurePosixPath": (_str_parts, "a path value (no I/O)"),
    "pathlib.PureWindowsPath": (_str_parts, "a path value (no I/O)"),
    "pathlib.Path": (_str_parts, "a path value (no I/O)"),
    "pathlib.PosixPath": (_str_parts, "a path value (no I/O)"),
    "pathlib.WindowsPath": (_str_parts, "a path value (no I/O)"),
    "types.SimpleNamespace": (_no_args, "an attribute bag"),
    "random.Random": (_no_args, "a random generator (state applied by BUILD)"),
    "re._compile": (_regex, "a compiled regular expression"),
    "numpy._core.multiarray._reconstruct": (_np_reconstruct, "an empty array"),
    "numpy._core.numeric._frombuffer": (_np_frombuffer, "an array from bytes"),
    "numpy._core.multiarray.scalar": (_np_scalar, "a numpy scalar from bytes"),
    "numpy.dtype": (_np_dtype_ctor, "a numpy dtype from a type code"),
    "numpy.ma.core._mareconstruct": (_np_mareconstruct, "an empty masked array"),
    "numpy.random._pickle.__bit_generator_ctor": (_np_bitgen_ctor, "a numpy bit generator"),
    "numpy.random._pickle.__generator_ctor": (_np_generator_ctor, "a numpy Generator"),
    "numpy.random._pickle.__randomstate_ctor": (_np_generator_ctor, "a numpy RandomState"),
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence": (_np_seedseq, "a seed sequence"),
    "torch._utils._rebuild_tensor": (_t_rebuild_tensor, "a tensor view of a storage"),
    "torch._utils._rebuild_tensor_v2": (_t_rebuild_tensor_v2, "a tensor view of a storage"),
    "torch._utils._rebuild_tensor_v3": (_t_rebuild_tensor_v3, "a tensor view of a storage"),
    "torch._utils._rebuild_parameter": (_t_rebuild_parameter, "a parameter of a tensor"),
    "torch._utils._rebuild_parameter_with_state": (_t_rebuild_parameter, "a parameter"),
    "torch._utils._rebuild_qtensor": (_t_rebuild_qtensor, "a quantized tensor"),
    "torch._utils._rebuild_sparse_tensor": (_t_rebuild_sparse, "a sparse tensor"),
    "torch._utils._rebuild_nested_tensor": (_t_rebuild_nested, "a nested tensor"),
    "torch._utils._rebuild_device_tensor_from_numpy": (_t_rebuild_device_from, "a tensor"),
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": (_t_rebuild_device_from, "a tensor"),
    "torch._utils._rebuild_meta_tensor_no_storage": (_t_rebuild_meta, "a meta tensor"),
    "torch._tensor._rebuild_from_type": (_t_rebuild_from_type, "a tensor of a tensor type"),
    "torch._tensor._rebuild_from_type_v2": (_t_rebuild_from_type, "a tensor of a tensor type"),
    "torch.Size": (_t_size, "a tensor shape"),
    "torch.device": (_t_device, "a device descriptor"),
    "torch.serialization._get_layout": (_one_str, "a layout constant by name"),
    "torch.torch_version.TorchVersion": (_one_str, "a version string"),
    "sklearn.tree._tree.Tree": (_sk_tree, "an empty decision tree (nodes set by BUILD)"),
    "sklearn.neighbors._kd_tree.newObj": (
        _sk_newobj("sklearn.neighbors._kd_tree.KDTree"),
        "an empty KD tree",
    ),
    "sklearn.metrics._dist_metrics.newObj": (
        _sk_newobj("sklearn.metrics._dist_metrics.EuclideanDistance64"),
        "an empty distance metric",
    ),
    "sklearn._loss._loss.CyHalfBinomialLoss": (_no_args, "a loss object without state"),
    "sklearn.linear_model._sgd_fast.Hinge": (_one_float, "a loss object with a threshold"),
}

#: ``__setstate__`` implementations BUILD may call: each only assigns attributes or copies the
#: state into in-memory structures (reviewed), keyed by the class that defines it.
SETSTATES: dict[str, str] = {
    "torch.nn.modules.module.Module": "updates __dict__",
    "torch.nn.modules.activation.MultiheadAttention": "updates __dict__, sets a flag",
    "torch.nn.modules.activation.Softmax": "updates __dict__, sets dim",
    "torch.nn.modules.activation.Softmin": "updates __dict__, sets dim",
    "torch.nn.modules.activation.LogSoftmax": "updates __dict__, sets dim",
    "torch.nn.modules.pooling.AvgPool3d": "updates __dict__, sets flags",
    "torch.nn.modules.rnn.RNNBase": "updates __dict__, rebuilds weight lists",
    "torch.nn.modules.conv._ConvNd": "updates __dict__, sets padding_mode",
    "torch.nn.modules.upsampling.Upsample": "updates __dict__",
    "torch.nn.modules.transformer.TransformerEncoderLayer": "updates __dict__",
    "torch.nn.modules.transformer.TransformerDecoderLayer": "updates __dict__",
    "torch.optim.optimizer.Optimizer": "updates __dict__, sets hook dicts",
    "torch.optim.adam.Adam": "Optimizer.__setstate__ plus defaults",
    "torch.optim.adamw.AdamW": "Optimizer.__setstate__ plus defaults",
    "torch.optim.sgd.SGD": "Optimizer.__setstate__ plus defaults",
    "torch.optim.adadelta.Adadelta": "Optimizer.__setstate__ plus defaults",
    "torch.optim.adagrad.Adagrad": "Optimizer.__setstate__ plus defaults",
    "torch.optim.adamax.Adamax": "Optimizer.__setstate__ plus defaults",
    "torch.optim.asgd.ASGD": "Optimizer.__setstate__ plus defaults",
    "torch.optim.nadam.NAdam": "Optimizer.__setstate__ plus defaults",
    "torch.optim.radam.RAdam": "Optimizer.__setstate__ plus defaults",
    "torch.optim.rmsprop.RMSprop": "Optimizer.__setstate__ plus defaults",
    "torch.optim.rprop.Rprop": "Optimizer.__setstate__ plus defaults",
    "torch.optim._adafactor.Adafactor": "Optimizer.__setstate__ plus defaults",
    "torch._tensor.Tensor": "sets data, requires_grad and attributes of a tensor",
    "numpy.ndarray": "copies raw bytes or a list into the array",
    "numpy.ma.core.MaskedArray": "ndarray.__setstate__ for data and mask",
    "numpy.dtype": "sets the dtype's fields from a tuple",
    "numpy.generic": "scalar state",
    "numpy.random.bit_generator.BitGenerator": "sets the generator state",
    "numpy.random._generator.Generator": "sets the bit generator state",
    "numpy.random.mtrand.RandomState": "sets the generator state",
    "numpy.random.bit_generator.SeedSequence": "Cython field restore of entropy and pool",
    "random.Random": "sets the generator state",
    "uuid.UUID": "sets the integer value",
    "sklearn.base.BaseEstimator": "updates __dict__ (warns on a version mismatch)",
    "sklearn.utils._bunch.Bunch": "ignores the state",
    "sklearn.tree._tree.Tree": "copies node and value arrays after checking their shape",
    "sklearn.neighbors._kd_tree.BinaryTree64": "copies arrays into the tree",
    "sklearn.metrics._dist_metrics.DistanceMetric64": "copies parameters",
    "sklearn.isotonic.IsotonicRegression": "updates __dict__, rebuilds an interpolator",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor": "updates __dict__",
    "transformers.tokenization_utils_base.BatchEncoding": "sets data and encodings",
    "torch.distributed.checkpoint.metadata.TensorProperties": "sets dataclass fields",
}

#: Methods APPEND(S), SETITEM(S) and ADDITEMS may call on an object, keyed ``class.method``.
MUTATORS: dict[str, str] = {
    "builtins.list.append": "list",
    "builtins.list.extend": "list",
    "builtins.dict.__setitem__": "dict",
    "builtins.set.add": "set",
    "builtins.set.update": "set",
    "collections.OrderedDict.__setitem__": "ordered dict",
    "collections.deque.append": "deque",
    "collections.deque.extend": "deque",
    "collections.UserDict.__setitem__": "dict wrapper",
    "torch.nn.modules.container.ModuleList.append": "module list",
    "torch.nn.modules.container.ModuleList.extend": "module list",
    "torch.nn.modules.container.ModuleDict.__setitem__": "module dict",
    "torch.nn.modules.container.ParameterList.append": "parameter list",
    "torch.nn.modules.container.ParameterList.extend": "parameter list",
    "torch.nn.modules.container.ParameterDict.__setitem__": "parameter dict",
}

_ARRAY_TYPES = (
    "numpy.ndarray",
    "numpy.recarray",
    "numpy.char.chararray",
    "numpy.matrix",
    "numpy.ma.core.MaskedArray",
)
_TENSOR_TYPES = (
    "torch._tensor.Tensor",
    "torch.nn.parameter.Parameter",
    "torch.nn.parameter.Buffer",
)
_REBUILD_FROM_TYPE = ("torch._tensor._rebuild_from_type", "torch._tensor._rebuild_from_type_v2")
_BIT_GENERATORS = (
    "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64",
    "numpy.random._pcg64.PCG64DXSM",
    "numpy.random._philox.Philox",
    "numpy.random._sfc64.SFC64",
)
_BIT_GENERATOR_NAMES = frozenset(k.rsplit(".", 1)[1] for k in _BIT_GENERATORS)
_VALUE_TYPES = (dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray)
_FACTORIES = (*_VALUE_TYPES, bool)
# __new__ of these types only allocates an in-memory value from plain arguments.
_VALUE_NEWS: frozenset[int] = frozenset(id(t.__new__) for t in _VALUE_TYPES)


# -- resolution ------------------------------------------------------------------------------------

_MISSING = object()
_resolved: dict[str, object] = {}


def resolve(key: str) -> object:
    """The object defined at ``key`` if its module is already imported, else ``None``."""
    hit = _resolved.get(key, _MISSING)
    if hit is not _MISSING:
        return hit
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        mod = sys.modules.get(".".join(parts[:i]))
        if mod is None:
            continue
        obj: object = mod
        for p in parts[i:]:
            obj = getattr(obj, p, _MISSING)
            if obj is _MISSING:
                return None
        _resolved[key] = obj
        return obj
    return None


def _objects(keys: tuple[str, ...]) -> tuple[object, ...]:
    return tuple(o for o in (resolve(k) for k in keys) if o is not None)


_by_id: dict[int, tuple[object, Validator]] = {}


def _spec_for(obj: object) -> Validator | None:
    hit = _by_id.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    for key, (check, _why) in CALLS.items():
        if resolve(key) is obj:
            _by_id[id(obj)] = (obj, check)
            return check
    return None


def _name(obj: object) -> str:
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if isinstance(mod, str) and isinstance(qual, str):
        return f"{mod}.{qual}"
    return type(obj).__name__ + " object"


def _lookup(cls: type, attr: str) -> object:
    """``attr`` as found on ``cls``'s MRO (never through a metaclass or instance)."""
    for klass in cls.__mro__:
        if attr in klass.__dict__:
            return klass.__dict__[attr]
    return None


def _defined_in(cls: type, attr: str) -> type | None:
    for klass in cls.__mro__:
        if attr in klass.__dict__:
            return klass
    return None


def _key_of(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _is(klass: type, keys: Mapping[str, str]) -> bool:
    return any(resolve(k) is klass for k in keys)


# -- the operations ---------------------------------------------------------------------------


def _check_allocatable(cls: object, args: tuple[Any, ...], kwargs: Any = None) -> None:
    if not isinstance(cls, type):
        raise _refuse(f"{_name(cls)} is not a class")
    if kwargs:
        raise _refuse("allocation with keyword arguments")
    new = _lookup(cls, "__new__")
    if new is object.__new__ or new is None:
        if args:
            raise _refuse(f"object.__new__ of {_name(cls)} takes no arguments")
        return
    if id(new) in _VALUE_NEWS or (
        isinstance(new, staticmethod) and id(new.__func__) in _VALUE_NEWS
    ):
        if not all(_plain(a) for a in args):
            raise _refuse(f"{_name(cls)} is allocated from plain values only")
        return
    if _is_namedtuple_new(cls, new):
        if not all(_plain(a) or _shallow(a) for a in args):
            raise _refuse(f"{_name(cls)} is allocated from plain values only")
        return
    if cls in _objects(_TENSOR_TYPES[1:]) and not args:
        return  # Parameter/Buffer.__new__ with no data makes an empty tensor
    raise _refuse(f"{_name(cls)} has its own __new__, which this loader does not call")


def _is_namedtuple_new(cls: type, new: object) -> bool:
    # collections.namedtuple's generated __new__ only calls tuple.__new__ on its arguments.
    # The class holds it as a staticmethod, which does not expose the function's globals.
    func = new.__func__ if isinstance(new, staticmethod) else new
    glb = getattr(func, "__globals__", None)
    return (
        issubclass(cls, tuple)
        and isinstance(glb, dict)
        and glb.get("_tuple_new") is tuple.__new__
        and str(glb.get("__name__", "")).startswith("namedtuple_")
    )


def allocate(
    cls: object,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    trusted: Mapping[int, object] | None = None,
) -> Any:
    """``cls.__new__(cls, *args, **kwargs)`` (NEWOBJ, NEWOBJ_EX, INST/OBJ without arguments)."""
    if not (trusted and trusted.get(id(cls)) is cls):
        _check_allocatable(cls, args, kwargs)
    if not isinstance(cls, type):
        raise _refuse(f"{_name(cls)} is not a class")
    return cls.__new__(cls, *args, **(kwargs or {}))


def call(func: object, args: tuple[Any, ...], trusted: Mapping[int, object] | None = None) -> Any:
    """``func(*args)`` (REDUCE, INST/OBJ with arguments) if the closed set allows it.

    ``trusted`` holds objects the user's own policy ``allow`` entries named: calling them is the
    user's decision, not the closed set's.
    """
    if type(args) is not tuple:
        raise _refuse("call arguments must be a tuple")
    if trusted and trusted.get(id(func)) is func:
        return func(*args)  # type: ignore[operator]
    check = _spec_for(func)
    if check is None and isinstance(func, enum.EnumMeta):
        # A member is looked up in the class's own table: no _missing_ or metaclass code runs.
        _enum_value(args)
        try:
            return func._value2member_map_[args[0]]
        except (KeyError, TypeError):
            member: Any
            for member in func.__members__.values():
                if member._value_ == args[0]:
                    return member
        raise _refuse(f"{_name(func)} has no member with value {args[0]!r}")
    if check is None:
        raise _refuse(
            f"it calls {_name(func)}, which is not one of the constructors this loader calls"
        )
    check(args)
    return func(*args)  # type: ignore[operator]


def apply_state(inst: object, state: object, trusted: Mapping[int, object] | None = None) -> None:
    """BUILD: ``inst.__setstate__(state)`` for a reviewed implementation, else plain attribute
    assignment with the object's own ``__setattr__`` only when that is a reviewed one."""
    cls = type(inst)
    if trusted and trusted.get(id(cls)) is cls:
        _pickle_build(inst, state)
        return
    owner = _defined_in(cls, "__setstate__")
    if owner is not None:
        if _key_of(owner) not in SETSTATES and not _is(owner, SETSTATES):
            raise _refuse(
                f"BUILD would run {_key_of(owner)}.__setstate__, which this loader does not call"
            )
        setstate = owner.__dict__["__setstate__"]
        setstate.__get__(inst, cls)(state)
        return
    _obj_state(state)
    if type(state) is tuple and len(state) != 2:
        raise _refuse("BUILD state tuples are (dict, slots) pairs")
    dict_state, slots = state if type(state) is tuple else (state, None)
    if dict_state:
        inst.__dict__.update(dict_state)
    if slots:
        setattr_ = _lookup(cls, "__setattr__")
        if setattr_ is not object.__setattr__:
            raise _refuse(f"BUILD slot state would run {_name(cls)}.__setattr__")
        for k, v in slots.items():
            object.__setattr__(inst, k, v)


def _pickle_build(inst: Any, state: Any) -> None:
    """pickle's own BUILD semantics (for classes the user's policy trusts)."""
    setstate = getattr(inst, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        inst.__dict__.update(state)
    if slots:
        for k, v in slots.items():
            setattr(inst, k, v)


def check_mutator(obj: object, method: str, trusted: Mapping[int, object] | None = None) -> Any:
    """The bound method ``method`` of ``obj`` if APPEND/SETITEM/ADDITEMS may call it."""
    cls = type(obj)
    if trusted and trusted.get(id(cls)) is cls:
        return getattr(obj, method)
    owner = _defined_in(cls, method)
    if owner is None:
        raise _refuse(f"{_name(cls)} has no {method}")
    key = f"{_key_of(owner)}.{method}"
    if key not in MUTATORS and not any(
        resolve(k.rsplit(".", 1)[0]) is owner and k.endswith("." + method) for k in MUTATORS
    ):
        raise _refuse(f"it would call {key}, which this loader does not call")
    return owner.__dict__[method].__get__(obj, cls)
