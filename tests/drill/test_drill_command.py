"""The drill's techniques, each run through the drill module itself, and the command end to end.

Every technique must be caught by the check the drill names, with its payload shown live where
the technique can show it (plain torch.load runs it) and no canary left by the protected path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainwarden.drill import runner
from trainwarden.drill.runner import TECHNIQUES, Ledger, local_ledger, run_technique
from trainwarden.sandbox import abi_version

ROOT = Path(__file__).resolve().parents[2]
BY_ID = {t.id: t for t in TECHNIQUES}

# Judged in-process by a deterministic check (no timing involved): each must be caught by it.
EXPECTED = {
    "T1-checkpoint-payload": ("trainwarden.load", "TWS-PKL-DANGEROUS"),
    "T3-sign-flip": ("watch()", "TWM-CODE-STEP"),
    "T3-lr-change": ("watch()", "TWM-HP-CHANGE"),
    "T3-weight-decay": ("watch()", "TWM-HP-CHANGE"),
    "T3-no-clipping": ("watch()", "TWM-HOOK-ADDED"),
    "T3-reverse-gradients": ("replay audit", "TWR-DIVERGED"),
    "T6-checkpoint-edit": ("manifest verification", "TWL-MAN-CHANGED"),
    "T6-weight-edit": ("watch()", "TWM-WEIGHT-EDIT"),
    "T6-moment-edit": ("watch()", "TWM-OPTSTATE-EDIT"),
    "T7-listener-payload": ("trainwarden.load", "TWS-PKL-DANGEROUS"),
}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    with local_ledger(tmp_path_factory.mktemp("ledger")) as led:
        yield led


def test_control_run_raises_nothing(tmp_path: Path, ledger: Ledger) -> None:
    res = run_technique(BY_ID["control"], tmp_path, ledger)
    assert res.error is None
    assert res.outcome.caught, res.outcome.detail  # for the control: nothing at MEDIUM+
    assert res.outcome.alert_steps == ()
    assert len(res.outcome.losses) == runner.STEPS


@pytest.mark.parametrize("tid", sorted(EXPECTED))
def test_technique_is_caught(tid: str, tmp_path: Path, ledger: Ledger) -> None:
    res = run_technique(BY_ID[tid], tmp_path, ledger)
    assert res.error is None, res.error
    o = res.outcome
    assert o.caught, o.detail
    assert (o.check, o.rule_id) == EXPECTED[tid]
    if tid == "T3-no-clipping":
        assert "TWM-CLIP-MISSING" in o.rules
    if o.check != "replay audit":
        # The evidence reached the ledger, at the index the drill reports.
        assert o.ledger_index is not None
        assert _ledger_entry(ledger, o.ledger_index)["kind"] == "alert"
    if tid in ("T1-checkpoint-payload", "T7-listener-payload"):
        assert o.effective is True  # plain torch.load ran the payload (its own canary)
        assert not (tmp_path / tid / "canary").exists()  # trainwarden.load never did


def test_weight_edit_sabotage_really_changes_the_weights(tmp_path: Path) -> None:
    # The weight edit is real: the same sabotage changes the weights the optimizer produced.
    job = runner._job()
    w = next(iter(job.model.parameters()))
    before = w.detach().clone()
    runner._edit_weights(job, 2)
    assert not bool((w.detach() == before).all())


def test_t8_ledger_edit_is_named_by_verify(tmp_path: Path, ledger: Ledger) -> None:
    res = run_technique(BY_ID["T8-ledger-edit"], tmp_path, ledger)
    assert res.error is None, res.error
    assert res.outcome.caught, res.outcome.detail
    assert res.outcome.check == "ledger verify"
    assert res.outcome.ledger_index is not None
    assert f"entry {res.outcome.ledger_index}" in res.outcome.detail


def test_t8_without_own_storage_is_not_counted_as_caught(tmp_path: Path) -> None:
    res = run_technique(BY_ID["T8-ledger-edit"], tmp_path, None)
    assert not res.passed


@pytest.mark.skipif(abi_version().version < 6, reason="needs Landlock ABI >= 6 in this kernel")
def test_t7_sandbox_blocks_listener(tmp_path: Path) -> None:
    res = run_technique(BY_ID["T7-sandbox-listener"], tmp_path)
    assert res.outcome.effective is True
    assert res.outcome.caught, res.outcome.detail


def test_crashing_technique_is_an_error_not_a_catch(tmp_path: Path) -> None:
    def boom(ctx: runner.DrillContext) -> runner.Outcome:
        raise RuntimeError("broken technique")

    res = run_technique(runner.Technique("X", "T3", "crashes", boom), tmp_path)
    assert res.error is not None
    assert not res.passed


def _ledger_entry(ledger: Ledger, index: int) -> dict[str, object]:
    import contextlib

    from trainwarden.ledger.client import LedgerClient

    with contextlib.closing(LedgerClient(ledger.url, ledger.admin_token)) as c:
        page = c.get("/v1/entries", after=index - 1, limit=1)
    entry: dict[str, object] = page["entries"][0]
    assert entry["index"] == index
    return entry


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainwarden", "drill", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )


def test_cli_end_to_end_json() -> None:
    proc = _cli(
        "--technique",
        "control",
        "--technique",
        "T6",
        "--technique",
        "T8",
        "--technique",
        "T4",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout)
    ids = [r["technique"] for r in got["techniques"]]
    assert ids == [
        "control",
        "T6-checkpoint-edit",
        "T6-weight-edit",
        "T6-moment-edit",
        "T8-ledger-edit",
    ]
    assert all(r["passed"] for r in got["techniques"])
    assert got["not_run"] == [{"threat": "T4", "description": runner.NOT_RUN["T4"]}]
    assert got["ok"] is True and got["missed"] == []


def test_cli_end_to_end_load_time_techniques() -> None:
    proc = _cli(
        "--technique",
        "T1",
        "--technique",
        "T7-listener-payload",
        "--technique",
        "T6-checkpoint-edit",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["technique", "threat", "caught"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:] if ln.startswith("T")}
    assert rows["T1-checkpoint-payload"][2:5] == ["yes", "trainwarden.load", "TWS-PKL-DANGEROUS"]
    assert rows["T6-checkpoint-edit"][2] == "yes"
    assert lines[-1] == "3/3 passed"


def test_cli_control_alone_in_a_fresh_process_is_clean() -> None:
    # A fresh process: the control is the first watch() of the process, which must not alarm.
    proc = _cli("--technique", "control", "--format", "json")
    got = json.loads(proc.stdout)
    assert got["missed"] == [], got
    assert proc.returncode == 0, proc.stderr


def test_cli_unknown_technique_is_a_usage_error() -> None:
    proc = _cli("--technique", "T9-nope")
    assert proc.returncode == 2
    assert "unknown technique" in proc.stderr
    assert "Traceback" not in proc.stderr
