"""The multi-rank drill job records signals from its first line, but only in a rank: the drill's
runner imports the rank module for its constants, and that import must leave the importing
process's signals alone (blocked signals there would be inherited by every child it starts)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import signal
import trainwarden.drill._ranks, trainwarden.drill._runner
from trainwarden.monitor import _watchdog
assert _watchdog._EARLY is None, "signal recorder started by an import"
blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
assert not blocked, f"signals blocked by an import: {sorted(s.name for s in blocked)}"
print("ok")
"""


def test_importing_the_rank_module_leaves_the_signal_mask_alone() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"
