"""The scanner against the generated corpus: every technique detected, no clean file flagged.

Each malicious sample reproduces a published technique or advisory; its payload could only create
a canary file, and every test asserts that no canary was ever created.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from trainwarden.drill import Corpus, Sample, canaries_fired, sample_names
from trainwarden.findings import Finding, Severity
from trainwarden.rules import catalogue
from trainwarden.scan import scan_bytes, scan_path

MALICIOUS = sample_names("malicious")
CLEAN = sample_names("clean")


def _describe(report: object) -> str:
    to_dict = getattr(report, "to_dict", None)
    return json.dumps(to_dict(), indent=1)[:3000] if to_dict else repr(report)


def test_docs_list_every_sample() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "drill.md").read_text()
    assert [n for n in MALICIOUS + CLEAN if f"`{n}`" not in doc] == []


def test_corpus_is_big_and_distinct(corpus: Corpus) -> None:
    malicious = corpus.of_kind("malicious")
    clean = corpus.of_kind("clean")
    assert len({s.technique for s in malicious}) >= 60
    assert len({s.name for s in malicious}) == len(malicious)
    assert len(clean) >= 30
    assert all(s.reference for s in malicious + clean)
    assert all(s.path(corpus.root).exists() for s in malicious + clean)
    assert canaries_fired(corpus.root) == []


def _missing_rules(sample: Sample, findings: Iterable[Finding]) -> list[str]:
    """The expected rules of ``sample`` that no finding raised (internal errors excluded); the
    callers separately require the sample as a whole to fail at HIGH."""
    raised = {f.rule_id for f in findings if f.rule_id != "TWS-INTERNAL"}
    assert sample.expected_rules, f"{sample.name} names no expected rule"
    return sorted(set(sample.expected_rules) - raised)


def test_every_malicious_sample_names_its_expected_rules(corpus: Corpus) -> None:
    """A sample flagged by something else (an internal crash, an unrelated global) is a miss."""
    assert [s.name for s in corpus.of_kind("malicious") if not s.expected_rules] == []


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_sample_is_detected(corpus: Corpus, name: str) -> None:
    report = scan_path(corpus.path(name))
    assert report.failed(Severity.HIGH), f"{name} not flagged at HIGH:\n{_describe(report)}"
    missing = _missing_rules(corpus.samples[name], report.findings)
    assert missing == [], f"{name} lacks {missing}:\n{_describe(report)}"
    assert not [f for f in report.findings if f.rule_id == "TWS-INTERNAL"], _describe(report)
    assert canaries_fired(corpus.root) == []


@pytest.mark.parametrize("name", CLEAN)
def test_clean_sample_has_no_finding(corpus: Corpus, name: str) -> None:
    report = scan_path(corpus.path(name))
    serious = [f for f in report.findings if f.severity >= Severity.MEDIUM]
    assert serious == [], f"{name} false alarm:\n{_describe(report)}"
    assert report.errors == ()
    assert canaries_fired(corpus.root) == []


def test_malicious_bytes_detected_by_content_alone(corpus: Corpus) -> None:
    """The same bytes with no file name at all: detection never depends on the extension."""
    missed = []
    for sample in corpus.of_kind("malicious"):
        path = sample.path(corpus.root)
        if path.is_dir():
            continue
        report = scan_bytes(path.read_bytes(), "<anonymous>")
        worst = report.max_severity
        if worst is None or worst < Severity.HIGH or _missing_rules(sample, report.findings):
            missed.append(sample.name)
    assert missed == []
    assert canaries_fired(corpus.root) == []


def test_whole_corpus_in_one_scan(corpus: Corpus) -> None:
    """One call over the malicious tree reports every sample's file(s) as failing."""
    report = scan_path(corpus.root / "malicious")
    failing = {fr.path for fr in report.files if fr.verdict(Severity.HIGH) == "unsafe"}
    for sample in corpus.of_kind("malicious"):
        path = sample.path(corpus.root)
        assert any(p == str(path) or p.startswith(str(path) + "/") for p in failing), sample.name
    # Every rule id the corpus makes the scanner emit is one the rule catalogue declares.
    emitted = {f.rule_id for f in report.findings}
    assert len(emitted) > 25 and sorted(emitted - set(catalogue())) == []
    assert canaries_fired(corpus.root) == []


def test_cli_exit_codes_on_corpus(
    corpus: Corpus, run_cli: Callable[..., CompletedProcess[str]]
) -> None:
    bad = run_cli(["scan", "--format", "json", str(corpus.root / "malicious")])
    assert bad.returncode == 1, bad.stderr
    data = json.loads(bad.stdout)
    assert len(data["files"]) >= len(MALICIOUS)
    good = run_cli(["scan", str(corpus.root / "clean")])
    assert good.returncode == 0, good.stdout + good.stderr
    assert canaries_fired(corpus.root) == []
