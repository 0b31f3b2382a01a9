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

from trainwarden.drill import _runner as runner
from trainwarden.drill._runner import TECHNIQUES, Ledger, local_ledger, run_technique
from trainwarden.sandbox import abi_version

from .test_drill_types import ROW_KEYS

ROOT = Path(__file__).resolve().parents[2]
BY_ID = {t.id: t for t in TECHNIQUES}

# Judged in-process by a deterministic check (no timing involved): each must be caught by it.
EXPECTED = {
    "T1-checkpoint-payload": ("trainwarden.load", "TWS-PKL-DANGEROUS"),
    "T3-sign-flip": ("watch()", "TWM-CODE-STEP"),
    "T3-monitor-blinded": ("watch()", "TWM-MONITOR-TAMPERED"),
    "T3-monitor-closed": ("watch()", "TWM-MONITOR-CLOSED"),
    "T3-lr-change": ("watch()", "TWM-HP-CHANGE"),
    "T3-weight-decay": ("watch()", "TWM-HP-CHANGE"),
    "T3-no-clipping": ("watch()", "TWM-HOOK-ADDED"),
    "T3-reverse-gradients": ("replay audit", "TWR-DIVERGED"),
    "T3-spare-sampled": ("replay audit", "TWR-DIVERGED"),
    "T6-checkpoint-edit": ("manifest verification", "TWL-MAN-CHANGED"),
    "T6-weight-edit": ("watch()", "TWM-WEIGHT-EDIT"),
    "T6-moment-edit": ("watch()", "TWM-OPTSTATE-EDIT"),
    "T7-listener-payload": ("trainwarden.load", "TWS-PKL-DANGEROUS"),
    "T1-hf-checkpoint-payload": ("load guard", "TWS-PKL-DANGEROUS"),
    "T2-optimizer-edit": ("attest verify", "TWA-REC-001"),
    "T2-seeding-edit": ("attest verify", "TWA-REC-001"),
    "T2-loader-edit": ("attest verify", "TWA-REC-001"),
    # The saboteur rewrote RECORD too: only the baseline taken before the job names the file.
    "T2-edit-with-record": ("attest verify", "TWA-BASE-001"),
}

# Multi-rank techniques (torchrun, gloo): rank 0, the honest rank, must name rank 1.
RANKED = {
    "T4-rank1-payload": ("cross-rank check (rank 0)", "TWM-XRANK-DIVERGED"),
    "T5-rank-killed": ("watchdog heartbeats (rank 0)", "TWM-LOST-RANK"),
    "T5-rank-stopped": ("watchdog heartbeats (rank 0)", "TWM-LOST-RANK"),
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
    if tid == "T3-monitor-closed":
        # The lifeline names the first step after close(); the end of the with-block names it too.
        assert o.detail.startswith("optimizer.step() ran after the monitor was closed (close()")
        assert "TWM-MONITOR-TAMPERED" in o.rules
    if tid == "T3-no-clipping":
        assert "TWM-CLIP-MISSING" in o.rules
    if o.check != "replay audit":
        # The evidence reached the ledger, at the index the drill reports.
        assert o.ledger_index is not None
        assert _ledger_entry(ledger, o.ledger_index)["kind"] == "alert"
    if tid in ("T1-checkpoint-payload", "T1-hf-checkpoint-payload", "T7-listener-payload"):
        assert o.effective is True  # plain torch.load ran the payload (its own canary)
        assert not (tmp_path / tid / "canary").exists()  # trainwarden.load never did
    if tid.startswith("T2-"):
        assert o.effective is True  # the edited file changed what the framework computes
        assert "drill_framework/" in o.detail  # the finding names the edited file


@pytest.mark.parametrize("tid", sorted(RANKED))
def test_multi_rank_technique_names_rank_1(tid: str, tmp_path: Path, ledger: Ledger) -> None:
    res = run_technique(BY_ID[tid], tmp_path, ledger)
    assert res.error is None, res.error
    o = res.outcome
    assert o.caught, o.detail
    assert (o.check, o.rule_id) == RANKED[tid]
    assert "rank 1" in o.detail, o.detail
    # Alive or not, no rank process of the run is left behind.
    for rank in (0, 1):
        for rec in runner._read_jsonl(tmp_path / tid / "ranks" / f"rank{rank}.jsonl"):
            if rec.get("kind") == "drill_rank":
                assert not _alive(int(rec["pid"]))
    assert o.ledger_index is not None
    assert _ledger_entry(ledger, o.ledger_index)["kind"] == "alert"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_rank1_payload_does_not_fire_in_a_single_process() -> None:
    # The payload hides from single-process tests: without a process group it does nothing.
    from trainwarden.drill._ranks import rank1_payload

    job = runner._job()
    w = next(iter(job.model.parameters()))
    before = w.detach().clone()
    assert rank1_payload(job.model) is False
    assert bool((w.detach() == before).all())


def test_multi_rank_technique_needs_two_ranks(tmp_path: Path) -> None:
    res = run_technique(BY_ID["T4-rank1-payload"], tmp_path, None, ranks=1)
    assert not res.passed
    assert "--ranks" in res.outcome.detail


def test_t2_clean_environment_verifies_without_high_findings(tmp_path: Path) -> None:
    # The control for T2: the same throwaway environment, unedited, raises nothing at HIGH.
    from trainwarden.attest._cache import HashCache
    from trainwarden.attest._signing import LoadedSnapshot
    from trainwarden.attest._snapshot import take_snapshot
    from trainwarden.attest._verify import verify_environment
    from trainwarden.drill import _framework_edit as fe
    from trainwarden.findings import Severity

    python = fe.make_env(tmp_path / "env")
    fe.probe(python)
    env = fe.job_environ()
    snap = take_snapshot(str(python), environ=env, cache=HashCache(None))
    report = verify_environment(
        str(python),
        baseline=LoadedSnapshot(snap, "baseline", False, None),
        environ=env,
        cache=HashCache(None),
    )
    assert [f for f in report.findings if f.severity >= Severity.MEDIUM] == []


def test_t3_sleeps_are_caught(tmp_path: Path) -> None:
    # The sleeps are sized from the step times the saboteur observes, so the verdict does not
    # depend on how loaded the machine is.
    res = run_technique(BY_ID["T3-sleeps"], tmp_path)
    assert res.error is None, res.error
    assert res.outcome.caught, res.outcome.detail
    assert res.outcome.rule_id == "TWM-TIME-REPEATED"


def test_sleeper_sizes_sleeps_from_observed_steps() -> None:
    s = runner.AdaptiveSleeper()
    s.intervals = [1.0] * 8 + [3.0] * 8  # median 2, MAD 1
    assert s.sleep_for() == pytest.approx(runner.SLEEP_MEDIANS * 2.0 + runner.SLEEP_MADS * 1.4826)
    s.intervals = [0.01] * 16
    assert s.sleep_for() == runner.MIN_SLEEP_S


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

    from trainwarden.ledger._client import LedgerClient

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
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout)
    # The shape the drill's report type prints (keys in this order).
    assert list(got) == ["ok", "techniques", "not_run", "missed"]
    assert all(list(r) == ROW_KEYS for r in got["techniques"])
    ids = [r["technique"] for r in got["techniques"]]
    assert ids == [
        "control",
        "T6-checkpoint-edit",
        "T6-weight-edit",
        "T6-moment-edit",
        "T8-ledger-edit",
    ]
    assert all(r["passed"] for r in got["techniques"])
    assert got["not_run"] == []
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
    assert rows["T1-hf-checkpoint-payload"][2:5] == ["yes", "load", "guard"]
    assert rows["T6-checkpoint-edit"][2] == "yes"
    assert lines[-1] == "4/4 passed"  # T1 selects both T1 techniques


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


def test_blinded_monitor_is_caught_without_the_background_self_check(tmp_path: Path) -> None:
    # The drill's own blinding, with the monitor's background thread off: once every hook is
    # gone only close() can tell, so the verdict cannot depend on how fast the steps ran.
    ctx = runner.DrillContext(tmp_path)
    o = runner._watched_run(
        ctx,
        "blinded",
        before_step=runner._blind_monitor_then_flip,
        start=2,
        watch_config={"selfcheck_interval_s": 0},
    )
    assert o.caught, o.detail
    assert o.rule_id == "TWM-MONITOR-TAMPERED"
    assert o.detail.startswith("the monitor was tampered with (self-check at close)")
    assert "the monitor's step post hook was removed" in o.detail
    assert o.steps_to_detection == runner.STEPS  # seen when the monitor closed, after the loop


def test_ci_runs_the_full_drill_and_fails_on_a_miss() -> None:
    # .ci/run stops at the first failing command (set -e), and runs the drill with no
    # --technique filter: every technique, so a missed one (exit 1) fails CI.
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "set -euo pipefail" in lines
    drill = [ln for ln in lines if ln.startswith("trainwarden drill")]
    assert drill == ["trainwarden drill"]
    assert lines.index("trainwarden drill") < lines.index('echo "== lint"')
