"""The drill's verdict as a report: its JSON shape, its findings and its exit code."""

from __future__ import annotations

import json

from trainwarden.drill import DrillReport
from trainwarden.drill._runner import TECHNIQUES, DrillResult, Outcome
from trainwarden.findings import Severity
from trainwarden.report import Report
from trainwarden.rules import lookup

BY_ID = {t.id: t for t in TECHNIQUES}

#: The keys of ``trainwarden drill --format json`` and of each of its technique rows.
TOP_KEYS = ["ok", "techniques", "not_run", "missed"]
ROW_KEYS = [
    "technique",
    "threat",
    "description",
    "control",
    "caught",
    "passed",
    "check",
    "rule_id",
    "detail",
    "steps_to_detection",
    "seconds_to_detection",
    "ledger_index",
    "works_unprotected",
    "seconds",
    "error",
]


def _caught(tid: str) -> DrillResult:
    o = Outcome(
        caught=True,
        check="watch()",
        rule_id="TWM-WEIGHT-EDIT",
        detail="weights changed between steps",
        steps_to_detection=3,
        seconds_to_detection=0.5,
        ledger_index=7,
        effective=None,
    )
    return DrillResult(BY_ID[tid], o, 1.25)


def test_a_clean_drill_is_a_report_with_no_findings_and_exit_0() -> None:
    report = DrillReport.of([_caught("control"), _caught("T6-weight-edit")])
    assert isinstance(report, Report)
    assert report.findings == [] and report.ok and report.missed == []
    assert report.exit_code() == 0 and report.exit_code(Severity.LOW) == 0
    got = json.loads(json.dumps(report.to_dict()))
    assert list(got) == TOP_KEYS
    assert got["ok"] is True and got["missed"] == [] and got["not_run"] == []
    row = got["techniques"][1]
    assert list(row) == ROW_KEYS
    assert row == {
        "technique": "T6-weight-edit",
        "threat": "T6",
        "description": BY_ID["T6-weight-edit"].description,
        "control": False,
        "caught": True,
        "passed": True,
        "check": "watch()",
        "rule_id": "TWM-WEIGHT-EDIT",
        "detail": "weights changed between steps",
        "steps_to_detection": 3,
        "seconds_to_detection": 0.5,
        "ledger_index": 7,
        "works_unprotected": None,
        "seconds": 1.25,
        "error": None,
    }


def test_missed_alerted_and_errored_techniques_are_findings_with_exit_1() -> None:
    missed = DrillResult(BY_ID["T3-monitor-blinded"], Outcome(caught=False, detail="no alert"), 2)
    alerted = DrillResult(BY_ID["control"], Outcome(caught=False, detail="false alarm: X"), 2)
    errored = DrillResult(
        BY_ID["T8-ledger-edit"], Outcome(caught=False, detail="error"), 1, "OSError()"
    )
    report = DrillReport.of([alerted, _caught("T6-weight-edit"), missed, errored], [("T9", "x")])
    assert [(f.rule_id, f.location) for f in report.findings] == [
        ("TWE-CONTROL-ALERTED", "control"),
        ("TWE-MISSED", "T3-monitor-blinded"),
        ("TWE-ERROR", "T8-ledger-edit"),
    ]
    for f in report.findings:
        rule = lookup(f.rule_id)
        assert rule is not None and rule.severity == f.severity == Severity.HIGH
    assert report.exit_code() == 1
    assert report.exit_code(Severity.CRITICAL) == 0  # the threshold is honoured
    assert report.errors == ["T8-ledger-edit"]
    got = report.to_dict()
    assert got["ok"] is False
    assert got["missed"] == ["control", "T3-monitor-blinded", "T8-ledger-edit"]
    assert got["not_run"] == [{"threat": "T9", "description": "x"}]
    lines = report.text_lines()
    header = "technique threat caught by rule steps seconds ledger"
    assert lines[0].split() == header.split()
    verdicts = {ln.split()[0]: ln.split()[2] for ln in lines[1:5]}
    assert verdicts == {
        "control": "ALERTED",
        "T6-weight-edit": "yes",
        "T3-monitor-blinded": "MISSED",
        "T8-ledger-edit": "ERROR",
    }
    assert "MISSED T3-monitor-blinded: no alert" in lines
    assert lines[-1] == "1/4 passed; missed: control, T3-monitor-blinded, T8-ledger-edit"
