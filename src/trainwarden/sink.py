"""The public event-sink protocol: where load telemetry, scan verdicts, attestation results,
monitor alerts and per-step records go. Implementations: ``JsonlSink``, ``MemorySink`` and
``NullSink`` here, and :class:`trainwarden.ledger.LedgerSink` for the ledger service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from trainwarden._internal.sink import JsonlSink, MemorySink, NullSink

__all__ = ["EventSink", "JsonlSink", "MemorySink", "NullSink", "TeeSink"]


@runtime_checkable
class EventSink(Protocol):
    """Anything that accepts events. ``emit`` must not raise into the caller's hot path;
    ``record`` must be JSON-serialisable."""

    def emit(self, kind: str, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class TeeSink:
    """Sends every event to each of ``sinks`` in turn; one failing sink does not stop the
    others. ``close`` closes them all."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def emit(self, kind: str, record: Mapping[str, Any]) -> None:
        for s in self.sinks:
            try:
                s.emit(kind, record)
            except Exception:  # noqa: S112 - a broken sink must not silence the others
                continue

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception:  # noqa: S112 - close the rest regardless
                continue


def __getattr__(name: str) -> Any:
    if name in ("JsonlSink", "MemorySink", "NullSink"):
        from trainwarden._internal import sink

        return getattr(sink, name)
    raise AttributeError(name)
