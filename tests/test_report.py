"""Every command's result is a ``Report``: findings, a JSON form and the exit code they imply."""

from __future__ import annotations

import json

import pytest

from trainwarden.attest._diff import SnapshotDiff
from trainwarden.attest._fleet import FleetReport, NodeDeviation
from trainwarden.attest._perms import PermsReport
from trainwarden.audit._types import ReplayReport
from trainwarden.findings import Finding, Severity
from trainwarden.loading._manifest import ManifestCheck
from trainwarden.loading._types import LoadReport
from trainwarden.report import Report, exit_code_for
from trainwarden.scan._types import FileReport, ScanReport

HIGH = Finding("TW-TEST-1", Severity.HIGH, "high", "a")
LOW = Finding("TW-TEST-2", Severity.LOW, "low", "b")


def _reports(findings: tuple[Finding, ...]) -> list[Report]:
    return [
        ScanReport(files=(FileReport("m.pt", 1, ("pickle",), findings),)),
        PermsReport(roots=("/x",), owner_uid=0, checked=1, findings=findings),
        ManifestCheck("m.json", 1, (), False, findings=findings, path="m"),
        LoadReport("m.pt", "pickle", None, 1, findings=findings),
        ReplayReport("run", 0, (), record_findings=findings),
    ]


@pytest.mark.parametrize("index", range(5))
def test_exit_code_follows_the_threshold(index: int) -> None:
    report = _reports((LOW, HIGH))[index]
    assert isinstance(report, Report)
    assert list(report.findings) == [LOW, HIGH]
    assert report.exit_code(Severity.HIGH) == 1
    assert report.exit_code(Severity.CRITICAL) == 0
    assert _reports(())[index].exit_code(Severity.INFO) == 0
    json.dumps(report.to_dict())  # JSON-serialisable as it stands


def test_attest_diffs_are_reports() -> None:
    d = SnapshotDiff("a", "b", {"version": ("3.11", "3.12")}, {}, (), {}, {}, {}, {})
    assert isinstance(d, Report)
    assert [f.severity for f in d.findings] == [Severity.HIGH]
    assert d.exit_code(Severity.HIGH) == 1 and d.exit_code(Severity.CRITICAL) == 0
    assert json.loads(json.dumps(d.to_dict()))["interpreter"] == {"version": ["3.11", "3.12"]}
    fleet = FleetReport(3, 2, 2, (NodeDeviation("n3", "h3", 1, (("k", "v", "m"),)),), ())
    assert isinstance(fleet, Report)
    assert fleet.exit_code(Severity.HIGH) == 1
    assert fleet.to_dict()["odd_ones_out"][0]["snapshot"] == "n3"


def test_exit_code_for() -> None:
    assert exit_code_for([LOW], Severity.LOW) == 1
    assert exit_code_for([LOW], Severity.MEDIUM) == 0
    assert exit_code_for([], Severity.INFO) == 0
