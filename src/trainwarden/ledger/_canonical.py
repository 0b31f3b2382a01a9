"""Canonical JSON (RFC 8785, JCS) for ledger entries, so that one logical entry always has one
byte string and one leaf hash.

The reference is the ``rfc8785`` package (Trail of Bits). Serialising every event through it
costs about 40 us in pure Python, so values it would write exactly like Python's C JSON encoder
take a fast path (strings via ``json.dumps(ensure_ascii=False)``, integers, and floats whose
shortest repr has no exponent, which is the digit string RFC 8785 prescribes); everything else
(exponent floats) goes to ``rfc8785``. A property test holds the two equal on random JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["CanonicalError", "canonical_bytes", "parse_json_strict"]

_MAX_INT = 2**53 - 1
_MAX_DEPTH = 64
_dumps_str = json.JSONEncoder(ensure_ascii=False).encode
_isfinite = math.isfinite


class CanonicalError(ValueError):
    """A value cannot be written as RFC 8785 JSON (NaN, infinities, integers beyond 2**53,
    lone surrogates, non-string keys, nesting deeper than 64)."""


def _float(f: float) -> str:
    if not _isfinite(f):
        raise CanonicalError(f"{f!r} is not a JSON number")
    if f == 0:
        return "0"
    r = repr(f)
    if "e" in r:
        import rfc8785

        return rfc8785.dumps(f).decode()
    return r[:-2] if r.endswith(".0") else r


def _utf16_key(k: str) -> bytes:
    return k.encode("utf-16-be", "surrogatepass")


# Object keys repeat from record to record: their encoding is kept (a bounded cache).
_KEYS: dict[str, str] = {}


def _key(k: str) -> str:
    got = _KEYS.get(k)
    if got is None:
        got = _dumps_str(k)
        if len(_KEYS) < 4096 and len(k) <= 64:
            _KEYS[k] = got
    return got


def _enc(v: Any, out: list[str], depth: int) -> None:
    t = type(v)
    if t is str:
        out.append(_dumps_str(v))
    elif t is int:
        if not -_MAX_INT <= v <= _MAX_INT:
            raise CanonicalError(f"integer {v} is outside the I-JSON range (2**53)")
        out.append(str(v))
    elif t is float:
        out.append(_float(v))
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif v is None:
        out.append("null")
    elif t is dict:
        if depth >= _MAX_DEPTH:
            raise CanonicalError("JSON nested too deeply")
        keys = list(v)
        for k in keys:
            if type(k) is not str:
                raise CanonicalError(f"object key {k!r} is not a string")
        # RFC 8785 sorts by UTF-16 code units; that equals code point order below U+D800.
        if not keys or max(keys) < "\ud800":
            keys.sort()
        else:
            keys.sort(key=_utf16_key)
        out.append("{")
        first = True
        for k in keys:
            if not first:
                out.append(",")
            first = False
            out.append(_key(k))
            out.append(":")
            # Scalars inline (the common record is a flat object of numbers and strings).
            x = v[k]
            tx = type(x)
            if tx is float:
                out.append(_float(x))
            elif tx is str:
                out.append(_dumps_str(x))
            elif tx is int and -_MAX_INT <= x <= _MAX_INT:
                out.append(str(x))
            else:
                _enc(x, out, depth + 1)
        out.append("}")
    elif t is list or t is tuple:
        if depth >= _MAX_DEPTH:
            raise CanonicalError("JSON nested too deeply")
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _enc(x, out, depth + 1)
        out.append("]")
    else:
        raise CanonicalError(f"{t.__name__} is not a JSON value")


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 serialisation of ``value``; raises :class:`CanonicalError`."""
    out: list[str] = []
    _enc(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as e:
        raise CanonicalError("string holds a lone surrogate") from e


def _reject_constant(name: str) -> Any:
    raise CanonicalError(f"{name} is not JSON")


def _integer(text: str) -> int | float:
    """An integer literal as I-JSON reads every number: a double. Within 2**53 the integer is
    that double exactly and stays an int. Beyond it, RFC 8785 writes a double of no fraction
    below 1e21 as plain digits (a loss that exploded: ``2692329619381729300``), so digits that
    are exactly the canonical spelling of a double are that double; any other integer beyond
    2**53 (``9007199254740993``) is no double and is refused."""
    v = int(text)
    if -_MAX_INT <= v <= _MAX_INT:
        return v
    f = float(text)
    if not _isfinite(f) or _float(f) != text:
        raise CanonicalError(f"integer {text[:40]} is outside the I-JSON range (2**53)")
    return f


def parse_json_strict(data: bytes | str) -> Any:
    """``json.loads`` that refuses NaN and infinities (which the standard parser accepts), and
    reads integer literals beyond 2**53 as the double they spell (refused unless they are its
    canonical spelling), so that what :func:`canonical_bytes` wrote reads back to the same
    value."""
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_int=_integer)
    except CanonicalError:
        raise
    except (ValueError, RecursionError) as e:
        raise CanonicalError(f"malformed JSON: {e}") from e
