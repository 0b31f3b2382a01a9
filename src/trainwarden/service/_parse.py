"""Parsing of an append request's body: the same schema as ``AppendIn`` in the OpenAPI document,
checked by hand because it is the service's hot path."""

from __future__ import annotations

import re
from typing import Any

from trainwarden.ledger._canonical import CanonicalError, parse_json_strict
from trainwarden.ledger._types import Event
from trainwarden.service._core import ServiceError

__all__ = ["MAX_EVENTS", "parse_events"]

MAX_EVENTS = 5000
_WRITER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$")
_EVENT_KEYS = frozenset({"seq", "kind", "record", "ts", "rank", "host", "sha256"})


def _bad(msg: str) -> ServiceError:
    return ServiceError(422, "invalid", msg)


def _opt_int(ev: dict[str, Any], key: str, i: int, hi: int) -> int | None:
    v = ev.get(key)
    if v is None:
        return None
    if type(v) is not int or not 0 <= v < hi:
        raise _bad(f"events.{i}.{key}: must be an integer in 0..{hi - 1}")
    return v


def parse_events(body: bytes) -> tuple[str, list[Event]]:
    """(writer, events) from a JSON body; raise :class:`ServiceError` 422 naming the field."""
    try:
        data = parse_json_strict(body)
    except CanonicalError as e:
        raise _bad(f"body: {e}") from e
    if type(data) is not dict or set(data) - {"writer", "events"}:
        raise _bad("body: must be an object with only 'writer' and 'events'")
    writer = data.get("writer")
    if type(writer) is not str or not _WRITER.match(writer):
        raise _bad("writer: must match " + _WRITER.pattern)
    raw = data.get("events")
    if type(raw) is not list or not 1 <= len(raw) <= MAX_EVENTS:
        raise _bad(f"events: must be a list of 1..{MAX_EVENTS} events")
    events: list[Event] = []
    for i, ev in enumerate(raw):
        if type(ev) is not dict:
            raise _bad(f"events.{i}: must be an object")
        extra = set(ev) - _EVENT_KEYS
        if extra:
            raise _bad(f"events.{i}: unknown field {sorted(extra)[0]!r}")
        seq = ev.get("seq")
        if type(seq) is not int or not 1 <= seq < 2**53:
            raise _bad(f"events.{i}.seq: must be an integer from 1")
        kind = ev.get("kind")
        if type(kind) is not str or not 1 <= len(kind) <= 128:
            raise _bad(f"events.{i}.kind: must be a string of 1..128 characters")
        record = ev.get("record")
        if type(record) is not dict:
            raise _bad(f"events.{i}.record: must be an object")
        ts = ev.get("ts")
        if ts is not None and type(ts) not in (int, float):
            raise _bad(f"events.{i}.ts: must be a number")
        host = ev.get("host")
        if host is not None and (type(host) is not str or len(host) > 256 or "\x00" in host):
            raise _bad(f"events.{i}.host: must be a string of at most 256 characters, no NUL")
        sha = ev.get("sha256")
        if sha is not None and type(sha) is not str:
            raise _bad(f"events.{i}.sha256: must be a string")
        events.append(
            Event(
                seq=seq,
                kind=kind,
                record=record,
                ts=None if ts is None else float(ts),
                rank=_opt_int(ev, "rank", i, 2**31),
                host=host,
                sha256=sha,
            )
        )
    return writer, events
