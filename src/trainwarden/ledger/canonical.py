"""Canonical JSON (RFC 8785, JCS) for ledger entries, using the ``rfc8785`` package (Trail of
Bits) so that one logical entry always has one byte string and one leaf hash."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["CanonicalError", "canonical_bytes", "parse_json_strict"]


class CanonicalError(ValueError):
    """A value cannot be written as RFC 8785 JSON (NaN, infinities, integers beyond 2**53,
    lone surrogates, non-string keys)."""


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 serialisation of ``value``; raises :class:`CanonicalError`."""
    import rfc8785

    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as e:
        raise CanonicalError(f"not canonicalisable JSON: {e}") from e


def _reject_constant(name: str) -> Any:
    raise CanonicalError(f"{name} is not JSON")


def parse_json_strict(data: bytes | str) -> Any:
    """``json.loads`` that refuses NaN and infinities (which the standard parser accepts)."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except CanonicalError:
        raise
    except (ValueError, RecursionError) as e:
        raise CanonicalError(f"malformed JSON: {e}") from e
