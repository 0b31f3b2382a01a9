"""How the torchrun test drivers end a rank (imported from the drivers' own directory, which Python
puts first on ``sys.path`` when it runs a script)."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

__all__ = ["exit_before_finalization"]


def exit_before_finalization(code: int) -> NoReturn:
    """End the rank like a normal exit (exit handlers run, output flushed) minus the interpreter's
    finalization. gloo's worker threads release each finished work object on their own, after
    the waiting main thread has moved on; a DDP all-reduce launched in backward captured a Python
    object in its thread-local state (backward() stashes a contextvars context there), so the
    release needs the GIL. A rank that exits right after its last step (as rank 1 does when its
    monitor was switched off: nothing left to close) can reach finalization first; the worker
    thread then cannot take the GIL, CPython ends it with pthread_exit, and the unwind through
    PyTorch's C++ frames calls std::terminate ("terminate called without an active exception",
    SIGABRT). A PyTorch race, seen in plain DDP scripts without trainwarden too; no thread can
    run into finalization if there is none."""
    atexit._run_exitfuncs()  # what an exit runs still runs (e.g. the monitor's exit-time check)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
