"""A tiny pickle assembler for building test payloads opcode by opcode (no pickler involved)."""

from __future__ import annotations

import struct


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def inst(module: str, name: str) -> bytes:
    return b"i" + module.encode() + b"\n" + name.encode() + b"\n"


def su(s: str) -> bytes:
    """SHORT_BINUNICODE."""
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def bu(s: str) -> bytes:
    """BINUNICODE."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def bu8(s: str) -> bytes:
    b = s.encode()
    return b"\x8d" + struct.pack("<Q", len(b)) + b


def string(s: str) -> bytes:
    """Protocol 0 STRING (quoted)."""
    return b"S'" + s.encode() + b"'\n"


def unicode0(s: str) -> bytes:
    return b"V" + s.encode("raw-unicode-escape") + b"\n"


def sbs(s: str) -> bytes:
    """SHORT_BINSTRING."""
    b = s.encode()
    return b"U" + bytes([len(b)]) + b


def binstring(s: str) -> bytes:
    b = s.encode()
    return b"T" + struct.pack("<i", len(b)) + b


def sbb(b: bytes) -> bytes:
    """SHORT_BINBYTES."""
    return b"C" + bytes([len(b)]) + b


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


def binint1(i: int) -> bytes:
    return b"K" + bytes([i])


def frame(body: bytes, declared: int | None = None) -> bytes:
    n = len(body) if declared is None else declared
    return b"\x95" + struct.pack("<Q", n) + body


MARK = b"("
STOP = b"."
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
REDUCE = b"R"
BUILD = b"b"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
STACK_GLOBAL = b"\x93"
MEMOIZE = b"\x94"
OBJ = b"o"
POP = b"0"
POP_MARK = b"1"
DUP = b"2"
NONE = b"N"
SETITEM = b"s"
SETITEMS = b"u"
APPEND = b"a"
APPENDS = b"e"
ADDITEMS = b"\x90"
EMPTY_SET = b"\x8f"
BINPERSID = b"Q"
NEWTRUE = b"\x88"


def call(module: str, name: str, *args: str) -> bytes:
    """``module.name(*args)`` with GLOBAL + string args + REDUCE."""
    return glob(module, name) + MARK + b"".join(su(a) for a in args) + TUPLE + REDUCE


def ext1(code: int) -> bytes:
    return b"\x82" + bytes([code])


def ext2(code: int) -> bytes:
    return b"\x83" + struct.pack("<H", code)


def ext4(code: int) -> bytes:
    return b"\x84" + struct.pack("<i", code)
