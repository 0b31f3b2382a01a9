"""The container-parser drill samples: each is live under the reader a victim runs (its canary
appears) and never fires under TrainWarden's scanner, ``trainwarden.load`` or the guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden.drill import Sample, canaries_fired
from trainwarden.drill._samples_containers import build_containers, container_sample_names
from trainwarden.findings import Severity
from trainwarden.scan import scan_path

SRC = Path(__file__).resolve().parents[2] / "src"
NAMES = container_sample_names()

# The plain readers a victim runs, one per trigger kind used by these samples.
READER = r"""
import json, sys, pickle, zipfile
if sys.argv[1] == "guard":
    import trainwarden.guard
    trainwarden.guard.install(mode="block")
for path, trigger in json.loads(sys.argv[2]):
  kind, _, arg = trigger.partition(":")
  try:
    if kind == "torch":
        import torch
        torch.load(path, weights_only=False)
    elif kind == "pickle":
        with open(path, "rb") as fh:
            pickle.load(fh)
    elif kind == "zip_member":
        z = zipfile.ZipFile(path)
        name = next(n for n in z.namelist() if n.endswith("/" + arg))
        pickle.loads(z.read(name))
    elif kind == "numpy":
        import numpy
        numpy.load(path, allow_pickle=True)
    elif kind == "numpy_npz":
        import numpy
        z = numpy.load(path, allow_pickle=True)
        [z[k] for k in z.files]
    elif kind == "joblib":
        import joblib
        joblib.load(path)
    elif kind == "python_file":
        import runpy
        runpy.run_path(path + "/" + arg)
    elif kind == "trainwarden.load":
        import trainwarden
        trainwarden.load(path)
  except Exception as e:
    print(path, "refused or failed:", type(e).__name__, str(e)[:200])
"""


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Sample]]:
    root = tmp_path_factory.mktemp("containers")
    built = build_containers(root)
    return root, {s.name: s for s in built}


def _run(mode: str, jobs: list[tuple[str, str]]) -> str:
    """Run each (path, trigger) through the reader in one child process (``mode`` "guard"
    installs TrainWarden's guard first); returns its output for failure messages."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run(
        [sys.executable, "-c", READER, mode, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    return done.stdout + done.stderr


def test_at_least_ten_samples_each_with_expected_rules(
    samples: tuple[Path, dict[str, Sample]],
) -> None:
    _, by_name = samples
    assert len(by_name) >= 10
    assert all(s.expected_rules for s in by_name.values())
    assert sum(1 for s in by_name.values() if s.canary is not None) >= 8


@pytest.mark.parametrize("name", NAMES)
def test_scanner_reports_the_expected_rules_at_high(
    samples: tuple[Path, dict[str, Sample]], name: str
) -> None:
    root, by_name = samples
    sample = by_name[name]
    report = scan_path(sample.path(root))
    rules = {f.rule_id for f in report.findings}
    assert report.failed(Severity.HIGH), rules
    assert set(sample.expected_rules or ()) <= rules, rules
    assert canaries_fired(root) == []


LIVE = [n for n in NAMES if n not in ("zip_ratio_bomb_1000_to_1", "zip_fanout_overlapping_bomb")]


def test_live_under_the_plain_reader_and_never_under_trainwarden(
    samples: tuple[Path, dict[str, Sample]],
) -> None:
    root, by_name = samples
    live = [by_name[n] for n in LIVE]
    assert all(s.trigger is not None and s.canary is not None for s in live)
    # TrainWarden first: its guard in front of the very same readers. Running a model folder's
    # Python file (remote code) is no unpickling call the guard wraps; for that sample the
    # defence is the scan (HIGH, asserted above) that gates trust_remote_code.
    guarded = [s for s in live if not (s.trigger or "").startswith("python_file")]
    out = _run("guard", [(str(s.path(root)), s.trigger or "") for s in guarded])
    assert canaries_fired(root) == [], out
    # The safe loader on every sample file.
    files = [s for s in live if not s.path(root).is_dir()]
    out = _run("plain", [(str(s.path(root)), "trainwarden.load") for s in files])
    assert canaries_fired(root) == [], out
    # The plain readers: every sample is live.
    out = _run("plain", [(str(s.path(root)), s.trigger or "") for s in live])
    fired = canaries_fired(root)
    for s in live:
        if s.canary is not None:
            s.canary.unlink(missing_ok=True)
    assert fired == sorted(s.name for s in live), out
