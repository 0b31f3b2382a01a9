"""Subprocess for the watchdog signal tests: start a Watchdog, say "ready", then block.

Usage: python signal_probe.py SINK MODE where MODE is one of
  block      the main thread blocks in a C-level read (like a rank stuck in a collective)
  prethread  as ``block``, with a thread started *before* the watchdog (it may take signals)
  handler    a Python SIGUSR1 handler exists before the watchdog; the main thread idles in Python
  early      record_signals_early() first, then a thread (like gloo's), then the watchdog
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from trainwarden._internal.sink import JsonlSink
from trainwarden.monitor._watchdog import Watchdog, record_signals_early


def main() -> None:
    sink = JsonlSink(Path(sys.argv[1]))
    mode = sys.argv[2]
    handled: list[int] = []
    if mode == "handler":
        signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    if mode == "early":
        record_signals_early()
    if mode in ("prethread", "early"):
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    dog = Watchdog(lambda a: sink.emit("alert", a.to_dict()), sink=sink, min_timeout_s=60.0)
    dog.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if mode == "handler":
        deadline = time.monotonic() + 30
        while not handled and time.monotonic() < deadline:
            time.sleep(0.01)
        sink.emit("handled", {"signals": handled})
        dog.stop()
        return
    r, _w = os.pipe()
    os.read(r, 1)  # blocks forever in C; only a signal's default action ends the process


if __name__ == "__main__":
    main()
