"""The allowlist, proven rather than asserted: every entry driven through the safe loader's gate
with adversarial arguments under an audit-hook recorder (see ``_allowlist_probe.py``).

One subprocess (shared by both tests) drives every distinct object the allowlist names (aliases
of one object once); entries whose gate decisions run the same code share a group, one
representative of each group gets the full Hypothesis search, and every entry is called with the
two explicit adversarial examples and the first arguments its group's search generated. Memory is
capped with ``RLIMIT_AS`` so that "huge sizes" end in MemoryError, never in an exhausted machine.
The same process then lets the gate call ``numpy.memmap`` and ``importlib.import_module`` to prove
that the recorder sees a file opened for writing and a module being executed. A larger search
runs in ``bench/allowlist_proof.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainwarden.scan._allowlist import SAFE

PROBE = Path(__file__).with_name("_allowlist_probe.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _probe(**env_extra: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, str(PROBE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# Hypothesis examples for each group's search in CI, and how many of them every entry replays.
SEARCH, REPLAY = 8, 3


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    return _probe(TW_PROBE_EXAMPLES=str(SEARCH), TW_PROBE_REPLAY=str(REPLAY), TW_PROBE_SELFTEST="1")


def test_every_allowlist_entry_survives_adversarial_calls_through_the_gate(
    probe: dict[str, Any],
) -> None:
    result = probe
    assert result["violations"] == {}
    # Every entry that names an object in this environment was probed (aliases once).
    assert result["entries"] == result["objects"] >= 700
    # Names that do not resolve here cannot be imported by an unpickler here either (CUDA
    # storage classes on a CPU-only build).
    assert [n for n in result["unresolved"] if not n.startswith("torch.cuda.")] == []
    assert len(result["unresolved"]) < 0.02 * len(SAFE)
    # every entry: the two explicit examples and its group's replayed arguments
    assert result["min_examples_per_entry"] == 2 + REPLAY
    assert result["examples"] >= (2 + REPLAY) * result["objects"] + SEARCH * result["groups"]


def test_the_recorder_sees_file_writes_and_module_execution(probe: dict[str, Any]) -> None:
    found = probe["selftest"]["violations"]
    assert any("open for writing" in v for v in found["numpy._core.memmap.memmap"])
    assert any(v.startswith(("exec", "import")) for v in found["importlib.import_module"])
