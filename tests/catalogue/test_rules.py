"""The rule catalogue is the one source of rule ids: complete, well-formed, in docs/rules.md."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity
from trainwarden.monitor._types import Alert
from trainwarden.rules import RULE_ID, THREATS, Rule, catalogue, lookup, register

from ._rules_doc_gen import render

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "trainwarden"
# Anything that starts like a rule id, so a misspelt or unregistered id cannot slip past; a
# family written as ``TWA-BASE-*`` is checked as a prefix.
_ID_LIKE = re.compile(r"\bTW[A-Z]-[A-Za-z0-9_-]*(?:\*)?")


def _string_parts(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, text, inside an f-string) of every str literal, f-string pieces included."""
    out: list[tuple[int, str, bool]] = []
    in_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            in_fstring |= {id(v) for v in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value, id(node) in in_fstring))
    return out


def _ids_in_source() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text, _ in _string_parts(tree):
            for m in _ID_LIKE.finditer(text):
                where = f"{path.relative_to(ROOT)}:{line}"
                found.setdefault(m.group(0), []).append(where)
    return found


def test_every_rule_id_in_the_source_is_in_the_catalogue() -> None:
    rules = catalogue()
    found = _ids_in_source()
    unknown = {
        rid: where
        for rid, where in found.items()
        if not (rid in rules or (rid.endswith("-*") and any(r.startswith(rid[:-1]) for r in rules)))
    }
    assert unknown == {}
    # The scan saw the ids where they are emitted, not only the catalogue's own declarations.
    emitted = {rid for rid, where in found.items() if any("/rules.py:" not in w for w in where)}
    assert len(emitted) > 150


def test_no_rule_id_is_built_at_run_time() -> None:
    # An id assembled from pieces ("TWS-" + kind, f"TWS-{x}") would escape the source scan.
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text, in_fstring in _string_parts(tree):
            for m in _ID_LIKE.finditer(text):
                rid = m.group(0).removesuffix("-*")
                assert RULE_ID.fullmatch(rid), f"{path}:{line}: {text!r}"
                assert not (in_fstring and text.endswith(rid)), f"{path}:{line}"


def test_every_catalogued_rule_is_emitted_somewhere() -> None:
    found = _ids_in_source()
    declared_only = [
        rid for rid in catalogue() if all("/rules.py:" in w for w in found.get(rid, []))
    ]
    assert declared_only == []


def test_every_rule_is_well_formed() -> None:
    rules = catalogue()
    assert len(rules) > 170
    capabilities = {
        "TWS": "scan",
        "TWL": "loading",
        "TWA": "attest",
        "TWM": "monitor",
        "TWD": "data",
        "TWE": "drill",
    }
    for rid, rule in rules.items():
        assert rule.rule_id == rid and RULE_ID.fullmatch(rid)
        assert rule.title and rule.title == rule.title.strip()
        assert set(rule.threats) <= set(THREATS)
        assert (ROOT / "docs" / rule.guide).is_file(), rid
        assert rule.capability == capabilities.get(rid[:3], "audit")
    # Everything a check reports is tied to a threat except the monitor's own housekeeping.
    untied = sorted(rid for rid, rule in rules.items() if not rule.threats)
    assert untied == ["TWM-INTERNAL", "TWM-UNSUPPORTED"]


def test_every_threat_of_the_threat_model_is_covered() -> None:
    model = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    in_model = set(re.findall(r"^\| (T\d) \|", model, re.M))
    assert in_model == set(THREATS)
    covered = {t for rule in catalogue().values() for t in rule.threats}
    assert covered == set(THREATS)


def test_docs_rules_md_is_generated_from_the_catalogue() -> None:
    doc = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/rules.md is stale: run python tests/catalogue/_rules_doc_gen.py"


def test_docs_rules_md_has_an_anchor_for_every_rule() -> None:
    doc = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    for rule in catalogue().values():
        assert f'<a id="{rule.anchor}"></a>' in doc


def test_registering_an_id_twice_with_another_meaning_is_refused() -> None:
    known = lookup("TWS-PKL-DANGEROUS")
    assert known is not None
    assert register([known]) == {known.rule_id: known}  # the same definition again is harmless
    with pytest.raises(TrainWardenError, match="declared twice"):
        register([dataclasses.replace(known, severity=Severity.LOW)])
    with pytest.raises(TrainWardenError, match="declared twice"):
        register([Rule("TWX-NEW", Severity.LOW, "x"), Rule("TWX-NEW", Severity.LOW, "x")])
    assert lookup("TWX-NEW") is None
    assert lookup("TWS-PKL-DANGEROUS") == known


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule_id": "tws-lower"}, "malformed rule id"),
        ({"rule_id": "TWS-"}, "malformed rule id"),
        ({"threats": ("T9",)}, "unknown threat"),
        ({"title": ""}, "empty title"),
    ],
)
def test_a_malformed_rule_is_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"rule_id": "TWS-X", "severity": Severity.LOW, "title": "t"}
    args.update(kwargs)
    with pytest.raises(TrainWardenError, match=message):
        Rule(**args)  # type: ignore[arg-type]


def test_lookup_of_an_unknown_or_malformed_id_is_none() -> None:
    assert lookup("TWS-NO-SUCH-RULE") is None
    assert lookup("not a rule") is None


def test_alert_is_a_finding_with_step_and_rank() -> None:
    evidence = {"k": 1}
    positional = Alert("TWM-HANG", Severity.HIGH, 7, 2, "stuck", evidence)
    keywords = Alert(
        rule_id="TWM-HANG",
        severity=Severity.HIGH,
        step=7,
        rank=2,
        message="stuck",
        evidence=evidence,
    )
    assert positional == keywords and hash(positional) == hash(keywords)
    assert isinstance(positional, Finding)
    assert (positional.step, positional.rank, positional.location) == (7, 2, "")
    # The record the sink and the ledger store is unchanged.
    assert positional.to_dict() == {
        "rule_id": "TWM-HANG",
        "severity": "HIGH",
        "step": 7,
        "rank": 2,
        "message": "stuck",
        "evidence": {"k": 1},
    }
    assert Alert.from_dict(positional.to_dict()) == positional
    located = Alert("TWM-HANG", Severity.HIGH, 7, 2, "stuck", location="rank 2")
    assert Alert.from_dict(located.to_dict()) == located
    assert dataclasses.replace(positional, severity=Severity.LOW).step == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        positional.step = 8  # type: ignore[misc]
    with pytest.raises(TrainWardenError, match="malformed alert"):
        Alert.from_dict(Finding("TWM-HANG", Severity.HIGH, "stuck").to_dict())


_GUIDES = sorted(
    p
    for p in (ROOT / "docs").glob("*.md")
    if p.name not in ("rules.md", "BENCHMARKS.md", "threat-model.md")
)
_BARE_ID = re.compile(r"(?<!\[)`(TW[A-Z]-[A-Z0-9-]+)`(?!\]\()")
_LINKED_ROW = re.compile(
    r"^\| \[`(TW[A-Z]-[A-Z0-9-]+)`\]\(rules\.md#([a-z0-9-]+)\) \| ([^|]+) \|", re.M
)


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (sample output shows ids unlinked)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def test_every_rule_id_in_a_guide_links_to_the_reference() -> None:
    rules = catalogue()
    for guide in _GUIDES:
        prose = _prose(guide.read_text(encoding="utf-8"))
        assert _BARE_ID.findall(prose) == [], guide.name
        for rid, anchor in re.findall(r"\[`(TW[A-Z]-[A-Z0-9-]+)`\]\(rules\.md#([^)]*)\)", prose):
            assert rid in rules, (guide.name, rid)
            assert anchor == rules[rid].anchor, (guide.name, rid)


def test_guide_rule_tables_agree_with_the_catalogue() -> None:
    rules = catalogue()
    rows = 0
    for guide in _GUIDES:
        for rid, _, severity in _LINKED_ROW.findall(guide.read_text(encoding="utf-8")):
            words = re.findall(r"\b(INFO|LOW|MEDIUM|HIGH|CRITICAL)\b", severity)
            if not words:
                continue  # "by effect", "as the class": the reference says how
            rows += 1
            assert words[0] == rules[rid].severity.name, (guide.name, rid, severity)
    assert rows > 150


def test_the_monitor_escalates_replaced_code_by_the_catalogue_tag() -> None:
    # The monitor asks the catalogue which attestation rules mean "the callable was replaced".
    tagged = sorted(rid for rid, rule in catalogue().items() if "code-replaced" in rule.tags)
    assert tagged == ["TWA-CODE-001", "TWA-CODE-002", "TWA-CODE-003"]
    source = (SRC / "monitor" / "_checks" / "code.py").read_text(encoding="utf-8")
    assert "TWA-" not in source


def test_sarif_rule_metadata_comes_from_the_catalogue() -> None:
    from trainwarden.scan import scan_bytes
    from trainwarden.scan._report import to_sarif
    from trainwarden.scan._types import ScanReport

    data = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    report = ScanReport(files=(scan_bytes(data, "payload.pkl"),))
    assert {f.rule_id for f in report.findings} == {"TWS-PKL-DANGEROUS"}
    driver = to_sarif(report, Severity.HIGH)["runs"][0]["tool"]["driver"]
    by_id = {r["id"]: r for r in driver["rules"]}
    rules = catalogue()
    assert set(by_id) == {rid for rid in rules if rid.startswith("TWS-")}
    for rid, entry in by_id.items():
        rule = rules[rid]
        assert entry["shortDescription"]["text"] == rule.title
        assert entry["properties"]["severity"] == rule.severity.name
        assert entry["properties"]["threats"] == list(rule.threats)
        assert entry["properties"]["doc"] == f"docs/rules.md#{rule.anchor}"
    assert by_id["TWS-PKL-DANGEROUS"]["defaultConfiguration"]["level"] == "error"
