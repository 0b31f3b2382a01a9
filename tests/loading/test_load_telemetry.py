"""Load telemetry: audit events during a load become findings and sink events."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import trainwarden
from trainwarden._internal.sink import MemorySink
from trainwarden.loading import UnsafeModelWarning
from trainwarden.loading import _telemetry as telemetry
from trainwarden.loading._guard import Guard

from ._payloads import call_pickle

WITNESS_MODULE = """
import importlib


def record(path):
    import tw_witness_helper  # noqa: F401
    importlib.import_module("tw_witness_other")
    with open(path, "w") as fh:
        fh.write("ran")
    return "recorded"
"""


def test_track_records_the_events_of_this_thread(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    with telemetry.track("demo.pt") as trace:
        target.write_text("x")
        compile("1 + 1", "<payload>", "eval")
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    rules = {f.rule_id for f in trace.findings()}
    assert {"TWL-TEL-WRITE", "TWL-TEL-COMPILE", "TWL-TEL-SUBPROCESS"} <= rules
    write = next(f for f in trace.findings() if f.rule_id == "TWL-TEL-WRITE")
    assert str(target) in write.message and write.location == "demo.pt"
    # nothing is recorded outside a tracked load
    with telemetry.track("other") as later:
        pass
    target.write_text("y")
    assert later.findings() == ()


@pytest.fixture
def witness_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable module (unknown to the policy) whose function imports and writes a file."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "tw_witness_mod.py").write_text(WITNESS_MODULE)
    (mods / "tw_witness_helper.py").write_text("VALUE = 1\n")
    (mods / "tw_witness_other.py").write_text("VALUE = 2\n")
    monkeypatch.syspath_prepend(str(mods))
    yield mods
    for name in ("tw_witness_mod", "tw_witness_helper", "tw_witness_other"):
        sys.modules.pop(name, None)


def test_warn_mode_load_reports_imports_and_writes(
    guard: Callable[..., Guard], witness_module: Path, tmp_path: Path, canary: Path
) -> None:
    witness = tmp_path / "witness.txt"
    path = tmp_path / "unknown.pkl"
    path.write_bytes(call_pickle("tw_witness_mod", "record", str(witness)))
    sink = MemorySink()
    guard(mode="warn", sink=sink)
    import pickle

    with pytest.warns(UnsafeModelWarning) as warned, path.open("rb") as fh:
        assert pickle.load(fh) == "recorded"
    messages = " ".join(str(w.message) for w in warned)
    assert "tw_witness_mod.record" in messages and "opened a file for writing" in messages
    events = [r for k, r in sink.events if k == "load.telemetry"]
    rules = {r["rule_id"] for r in events}
    assert {"TWL-TEL-WRITE", "TWL-TEL-IMPORT"} <= rules
    imported = next(r for r in events if r["rule_id"] == "TWL-TEL-IMPORT")
    modules = imported["evidence"]["modules"]
    assert "tw_witness_helper" in modules
    assert any(m.endswith("tw_witness_other.py") for m in modules)
    assert any(str(witness) in r["message"] for r in events if r["rule_id"] == "TWL-TEL-WRITE")
    assert witness.exists() and not canary.exists()


def test_block_mode_never_runs_the_unknown_global(
    guard: Callable[..., Guard], witness_module: Path, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.txt"
    data = call_pickle("tw_witness_mod", "record", str(witness))
    guard(mode="block")
    import pickle

    with pytest.raises(trainwarden.UnsafeModelError, match=r"tw_witness_mod\.record"):
        pickle.loads(data)
    assert not witness.exists()
    assert "tw_witness_mod" not in sys.modules  # refused before the import


def test_trainwarden_load_reports_telemetry_to_the_sink(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(1)}, path)
    sink = MemorySink()
    trainwarden.load(path, sink=sink)
    ((_kind, record),) = [(k, r) for k, r in sink.events if k == "load"]
    assert record["path"] == str(path) and record["format"] == "torch-zip"
    assert any(f["rule_id"] == "TWL-TEL-FIND-CLASS" for f in record["findings"])
    # evidence names the bytes it is about
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_load_recorded_to_no_sink_is_not_hashed(tmp_path: Path) -> None:
    import torch

    from trainwarden.loading import load_with_report

    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(1)}, path)
    assert load_with_report(path)[1].sha256 is None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_with_report(path, hash_file=True)[1].sha256 == digest
    assert load_with_report(path, sink=MemorySink())[1].sha256 == digest


def test_block_mode_refuses_a_load_whose_telemetry_is_high(
    guard: Callable[..., Guard], witness_module: Path, tmp_path: Path
) -> None:
    """A global the policy allows but which writes a file is refused after the fact in block
    mode (and only warned about in warn mode): the load's result never reaches the caller."""
    from trainwarden.scan import Policy

    witness = tmp_path / "witness.txt"
    data = call_pickle("tw_witness_mod", "record", str(witness))
    allowed = Policy.default().with_overrides(allow=["tw_witness_mod.record"])
    g = guard(mode="block", policy=allowed)
    import pickle

    with pytest.raises(trainwarden.UnsafeModelError, match="opened a file for writing") as err:
        pickle.loads(data)
    assert "TWL-TEL-WRITE" in {f.rule_id for f in err.value.findings}
    assert "TWL-TEL-WRITE" in {f.rule_id for f in g.findings}
    witness.unlink()  # the audit hook is telemetry: it saw the write, it could not prevent it
    guard(mode="warn", policy=allowed)
    with pytest.warns(UnsafeModelWarning, match="opened a file for writing"):
        assert pickle.loads(data) == "recorded"


def test_trainwarden_load_refuses_high_telemetry(witness_module: Path, tmp_path: Path) -> None:
    from trainwarden.scan import Policy

    witness = tmp_path / "witness.txt"
    path = tmp_path / "allowed.pkl"
    path.write_bytes(call_pickle("tw_witness_mod", "record", str(witness)))
    allowed = Policy.default().with_overrides(allow=["tw_witness_mod.record"])
    with pytest.raises(trainwarden.UnsafeModelError, match="opened a file for writing"):
        trainwarden.load(path, policy=allowed)
