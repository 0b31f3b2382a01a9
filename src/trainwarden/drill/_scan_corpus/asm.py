"""A pickle assembler: opcodes written by hand, so each payload is exactly the bytes it needs.

The one assembler of the project: the drill corpus and the scanner's tests build their pickles
with it (no pickler involved, so a payload can be what no pickler would ever write).
"""

from __future__ import annotations

import struct

__all__ = [
    "ADDITEMS",
    "APPEND",
    "APPENDS",
    "BINPERSID",
    "BUILD",
    "DUP",
    "EMPTY_DICT",
    "EMPTY_LIST",
    "EMPTY_SET",
    "EMPTY_TUPLE",
    "MARK",
    "MEMOIZE",
    "NEWOBJ",
    "NEWOBJ_EX",
    "NEWTRUE",
    "NONE",
    "OBJ",
    "P2",
    "P4",
    "POP",
    "POP_MARK",
    "REDUCE",
    "SETITEM",
    "SETITEMS",
    "STACK_GLOBAL",
    "STOP",
    "TUPLE",
    "TUPLE1",
    "TUPLE2",
    "TUPLE3",
    "binget",
    "binint1",
    "binput",
    "binstring",
    "bint",
    "bu",
    "bu8",
    "call",
    "call_global",
    "ext1",
    "ext2",
    "ext4",
    "frame",
    "g",
    "get",
    "glob",
    "inst",
    "long_binget",
    "long_binput",
    "proto",
    "put",
    "sbs",
    "sbytes",
    "sg",
    "string",
    "su",
    "uni",
]

MARK = b"("
STOP = b"."
POP = b"0"
POP_MARK = b"1"
DUP = b"2"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
REDUCE = b"R"
BUILD = b"b"
EMPTY_DICT = b"}"
EMPTY_TUPLE = b")"
EMPTY_LIST = b"]"
EMPTY_SET = b"\x8f"
SETITEM = b"s"
SETITEMS = b"u"
APPEND = b"a"
APPENDS = b"e"
ADDITEMS = b"\x90"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
OBJ = b"o"
NONE = b"N"
NEWTRUE = b"\x88"
BINPERSID = b"Q"
P2 = b"\x80\x02"
P4 = b"\x80\x04"


def proto(n: int) -> bytes:
    """PROTO ``n``."""
    return b"\x80" + bytes([n])


def glob(module: str, name: str) -> bytes:
    """Text GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


g = glob
"""Short name for :func:`glob` (the corpus builders use it)."""


def inst(module: str, name: str) -> bytes:
    """INST opcode (protocol 0 class instantiation)."""
    return b"i" + module.encode() + b"\n" + name.encode() + b"\n"


def su(s: str) -> bytes:
    """A str pushed with SHORT_BINUNICODE (or BINUNICODE when long)."""
    b = s.encode()
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"X" + struct.pack("<I", len(b)) + b


def bu(s: str) -> bytes:
    """BINUNICODE."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def bu8(s: str) -> bytes:
    """BINUNICODE8."""
    b = s.encode()
    return b"\x8d" + struct.pack("<Q", len(b)) + b


def uni(s: str) -> bytes:
    """Protocol-0 UNICODE opcode (raw-unicode-escape, newline terminated)."""
    return b"V" + s.encode("raw_unicode_escape") + b"\n"


def string(s: str) -> bytes:
    """Protocol 0 STRING (quoted)."""
    return b"S'" + s.encode() + b"'\n"


def sbs(s: str) -> bytes:
    """SHORT_BINSTRING."""
    b = s.encode()
    return b"U" + bytes([len(b)]) + b


def binstring(s: str) -> bytes:
    """BINSTRING."""
    b = s.encode()
    return b"T" + struct.pack("<i", len(b)) + b


def sbytes(b: bytes) -> bytes:
    """Bytes pushed with SHORT_BINBYTES (or BINBYTES when long)."""
    return (b"C" + bytes([len(b)]) if len(b) < 256 else b"B" + struct.pack("<I", len(b))) + b


def bint(n: int) -> bytes:
    """BININT (4-byte signed)."""
    return b"J" + struct.pack("<i", n)


def binint1(i: int) -> bytes:
    """BININT1."""
    return b"K" + bytes([i])


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def long_binput(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def long_binget(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def put(i: int) -> bytes:
    return b"p" + str(i).encode() + b"\n"


def get(i: int) -> bytes:
    return b"g" + str(i).encode() + b"\n"


def frame(body: bytes, declared: int | None = None) -> bytes:
    """FRAME around ``body``, declaring ``declared`` bytes (default: the true length)."""
    n = len(body) if declared is None else declared
    return b"\x95" + struct.pack("<Q", n) + body


def ext1(code: int) -> bytes:
    return b"\x82" + bytes([code])


def ext2(code: int) -> bytes:
    return b"\x83" + struct.pack("<H", code)


def ext4(code: int) -> bytes:
    return b"\x84" + struct.pack("<i", code)


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL fed by SHORT_BINUNICODE strings."""
    return su(module) + su(name) + STACK_GLOBAL


def call(fn: bytes, *args: bytes) -> bytes:
    """``fn(*args)`` via MARK ... TUPLE REDUCE (``fn`` and ``args`` already assembled)."""
    return fn + MARK + b"".join(args) + TUPLE + REDUCE


def call_global(module: str, name: str, *args: str) -> bytes:
    """``module.name(*args)`` with text GLOBAL, string arguments and REDUCE."""
    return call(glob(module, name), *(su(a) for a in args))
