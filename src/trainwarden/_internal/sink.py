"""Event sinks: where load telemetry, monitor alerts and per-step records are sent.

A sink receives ``(kind, record)`` pairs; ``record`` must be JSON-serialisable. The JSONL sink is
the default; :class:`trainwarden.ledger.LedgerSink` ships events to the ledger service. The
protocol itself lives in the public module :mod:`trainwarden.sink`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainwarden.sink import EventSink

__all__ = ["EventSink", "JsonlSink", "MemorySink", "NullSink"]


class NullSink:
    """Discards every event."""

    def emit(self, kind: str, record: Mapping[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


class MemorySink:
    """Keeps events in a list (``events``) of ``(kind, record)``; useful for tests and callers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def emit(self, kind: str, record: Mapping[str, Any]) -> None:
        with self._lock:
            self.events.append((kind, dict(record)))

    def close(self) -> None:
        return None


class JsonlSink:
    """Appends one JSON object per line: ``{"kind": ..., "ts": <unix time>, **record}``.

    Lines are written with a single ``write`` on a file opened in append mode and flushed at once,
    so concurrent writers (several ranks, several threads) never interleave partial lines.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = self.path.open("a", encoding="utf-8")

    def emit(self, kind: str, record: Mapping[str, Any]) -> None:
        line = json.dumps({"kind": kind, "ts": time.time(), **record}, default=str)
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()
