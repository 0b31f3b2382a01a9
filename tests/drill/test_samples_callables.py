"""The allowlisted-callable drill samples are live, and TrainWarden stops every one of them.

Each sample is loaded, in a subprocess whose working directory is a fresh temporary tree, by the
plain loader it targets (its canary must appear), by ``trainwarden.load`` and by the real loader
under ``trainwarden.guard.install(mode="block")`` (nothing at all may appear anywhere in the
tree). The scanner's verdict on each is HIGH or worse with the sample's expected rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden.drill import Sample, build_malicious, canaries_fired
from trainwarden.drill._samples_callables import callable_specs
from trainwarden.findings import Severity
from trainwarden.scan import scan_path

SRC = Path(__file__).resolve().parents[2] / "src"
NAMES = [s.name for s in callable_specs()]

_RUNNER = r"""
import io, json, sys, warnings
warnings.simplefilter("ignore")
mode, items = sys.argv[1], json.loads(sys.argv[2])

def plain(path, trigger):
    if trigger == "pickle":
        import pickle
        return pickle.loads(open(path, "rb").read())
    if trigger == "torch":
        import torch
        return torch.load(path, weights_only=False)
    if trigger == "torch_jit":
        import torch
        return torch.jit.load(path)
    if trigger == "joblib":
        import joblib
        return joblib.load(path)
    if trigger == "numpy":
        import numpy
        return numpy.load(path, allow_pickle=True)
    raise SystemExit("unknown trigger " + trigger)

if mode == "guard":
    import trainwarden.guard
    trainwarden.guard.install(mode="block")
out = {}
for name, path, trigger in items:
    try:
        if mode == "load":
            import trainwarden
            trainwarden.load(path)
        else:
            plain(path, trigger)
        out[name] = "loaded"
    except Exception as e:
        out[name] = type(e).__name__
print(json.dumps(out))
"""


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(mode: str, samples: list[Sample], root: Path, cwd: Path) -> dict[str, str]:
    items = [[s.name, str(s.path(root)), s.trigger] for s in samples]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, mode, json.dumps(items)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    root = tmp_path_factory.mktemp("callables")
    out: list[Sample] = []
    for name in NAMES:
        out += build_malicious(root, only=name)
    assert [s.name for s in out] == NAMES
    return root, out


def test_at_least_twenty_samples_each_with_expected_rules() -> None:
    specs = callable_specs()
    assert len(specs) >= 20
    assert all(s.expected_rules for s in specs)
    assert all(s.trigger in ("pickle", "torch", "torch_jit", "joblib", "numpy") for s in specs)


def test_every_sample_fires_its_canary_under_the_plain_loader(
    samples: tuple[Path, list[Sample]], tmp_path: Path
) -> None:
    root, built = samples
    assert canaries_fired(root) == []
    try:
        _run("plain", built, root, tmp_path)
        fired = set(canaries_fired(root))
        assert [s.name for s in built if s.name not in fired] == []
    finally:
        for p in (root / "canaries").iterdir():
            p.unlink()


@pytest.mark.parametrize("mode", ["load", "guard"])
def test_trainwarden_refuses_every_sample_and_nothing_is_created(
    samples: tuple[Path, list[Sample]], tmp_path: Path, mode: str
) -> None:
    root, built = samples
    before, cwd_before = _tree(root), _tree(tmp_path)
    outcome = _run(mode, built, root, tmp_path)
    assert {n: o for n, o in outcome.items() if o != "UnsafeModelError"} == {}
    assert _tree(root) == before
    assert _tree(tmp_path) == cwd_before
    assert canaries_fired(root) == []


def test_scanner_flags_every_sample_with_its_expected_rules(
    samples: tuple[Path, list[Sample]],
) -> None:
    root, built = samples
    for sample in built:
        report = scan_path(sample.path(root))
        assert report.failed(Severity.HIGH), sample.name
        rules = {f.rule_id for f in report.findings}
        assert set(sample.expected_rules or ()) <= rules, (sample.name, rules)
    assert canaries_fired(root) == []
