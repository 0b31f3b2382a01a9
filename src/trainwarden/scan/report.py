"""Machine-readable renderings of a scan: the JSON document and SARIF 2.1.0.

The library returns plain dicts; only the CLI writes them out.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

from trainwarden import __version__
from trainwarden.findings import Finding, Severity
from trainwarden.scan.types import ScanReport

__all__ = ["SARIF_SCHEMA", "all_rules", "to_json", "to_sarif"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
_OFFSET = re.compile(r"@(\d+)$")


def all_rules() -> dict[str, str]:
    """Every scanner rule id with its meaning (core, pickle VM and each format module)."""
    from trainwarden.scan import engine, formats, pickle_vm

    rules: dict[str, str] = {**pickle_vm.RULES, **engine.ENGINE_RULES}
    for info in pkgutil.iter_modules(formats.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{formats.__name__}.{info.name}")
        extra = getattr(mod, "RULES", None)
        if isinstance(extra, dict):
            rules.update({str(k): str(v) for k, v in extra.items()})
    return dict(sorted(rules.items()))


def to_json(report: ScanReport, fail_on: Severity) -> dict[str, Any]:
    """The JSON document of ``trainwarden scan --format json``."""
    doc = report.to_dict()
    doc["summary"] = {
        "files": len(report.files),
        "findings": len(report.findings),
        "max_severity": report.max_severity.name if report.max_severity else None,
        "fail_on": fail_on.name,
        "failed": report.failed(fail_on),
        "errors": len(report.errors),
    }
    for fr, entry in zip(report.files, doc["files"], strict=True):
        entry["verdict"] = fr.verdict(fail_on)
    return doc


def _uri(path: str) -> str:
    p = Path(path)
    return p.as_uri() if p.is_absolute() else p.as_posix()


def _result(f: Finding, file_path: str) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(file_path)}}
    m = _OFFSET.search(f.location)
    # A byte offset is only meaningful when it points into the file itself, not a member.
    if m and f.location[: m.start()] == file_path:
        physical["region"] = {"byteOffset": int(m.group(1))}
    location: dict[str, Any] = {"physicalLocation": physical}
    if f.location and f.location != file_path:
        location["logicalLocations"] = [{"fullyQualifiedName": f.location, "kind": "member"}]
    return {
        "ruleId": f.rule_id,
        "level": _LEVEL[f.severity],
        "message": {"text": f.message},
        "locations": [location],
        "properties": {"severity": f.severity.name, "evidence": dict(f.evidence)},
    }


def to_sarif(report: ScanReport, fail_on: Severity) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run; rules carry their meaning as shortDescription."""
    catalog = all_rules()
    used = sorted({f.rule_id for f in report.findings} | set(catalog))
    rules = [
        {
            "id": rule,
            "name": rule.replace("-", ""),
            "shortDescription": {"text": catalog.get(rule, rule)},
        }
        for rule in used
    ]
    results = [_result(f, fr.path) for fr in report.files for f in fr.findings]
    artifacts = []
    for fr in report.files:
        art: dict[str, Any] = {"location": {"uri": _uri(fr.path)}, "length": fr.size}
        if fr.sha256:
            art["hashes"] = {"sha-256": fr.sha256}
        artifacts.append(art)
    return {
        "version": "2.1.0",
        "$schema": SARIF_SCHEMA,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "trainwarden",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
                "artifacts": artifacts,
                "invocations": [
                    {
                        "executionSuccessful": not report.errors,
                        "toolExecutionNotifications": [
                            {"level": "error", "message": {"text": e}} for e in report.errors
                        ],
                    }
                ],
                "properties": {"fail_on": fail_on.name, "failed": report.failed(fail_on)},
            }
        ],
    }
