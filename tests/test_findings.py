"""Severity ordering and Finding serialisation."""

from __future__ import annotations

import json

import pytest

import trainwarden
from trainwarden import Finding, Severity, TrainWardenError


def test_severity_total_order() -> None:
    ordered = [Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]
    assert sorted(reversed(ordered)) == ordered
    assert Severity.INFO < Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert Severity.CRITICAL >= Severity.HIGH
    assert not Severity.LOW > Severity.MEDIUM
    assert max(ordered) is Severity.CRITICAL


def test_severity_does_not_compare_with_ints() -> None:
    with pytest.raises(TypeError):
        _ = Severity.HIGH < 3


@pytest.mark.parametrize("text", ["high", "HIGH", " High "])
def test_severity_parse(text: str) -> None:
    assert Severity.parse(text) is Severity.HIGH


def test_severity_parse_rejects_unknown_with_hint() -> None:
    with pytest.raises(TrainWardenError) as info:
        Severity.parse("urgent")
    assert "urgent" in info.value.diagnostics()
    assert "critical" in info.value.diagnostics()


def test_finding_round_trip_through_json() -> None:
    f = Finding(
        "TW-PKL-001",
        Severity.CRITICAL,
        "calls os.system",
        "model.pt:archive/data.pkl@17",
        {"global": "os.system", "offset": 17},
    )
    data = json.loads(json.dumps(f.to_dict()))
    assert data["severity"] == "CRITICAL"
    assert Finding.from_dict(data) == f


def test_finding_is_frozen_and_hashable() -> None:
    f = Finding("TW-X", Severity.LOW, "m", evidence={"a": [1, 2]})
    with pytest.raises(AttributeError):
        f.message = "changed"  # type: ignore[misc]  # the point of the test
    assert len({f, Finding("TW-X", Severity.LOW, "m", evidence={"a": [1, 2]})}) == 1


def test_finding_from_malformed_dict() -> None:
    with pytest.raises(TrainWardenError, match="malformed finding"):
        Finding.from_dict({"rule_id": "X"})


def test_root_exports() -> None:
    for name in ("Finding", "Severity", "TrainWardenError"):
        assert name in trainwarden.__all__
        assert getattr(trainwarden, name) is not None


def test_error_diagnostics_includes_hint() -> None:
    e = TrainWardenError("file x.pt is unreadable", hint="check its permissions")
    assert e.diagnostics() == "file x.pt is unreadable\n  hint: check its permissions"
    assert TrainWardenError("plain").diagnostics() == "plain"
