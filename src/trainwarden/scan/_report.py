"""Machine-readable renderings of a scan: the JSON document and SARIF 2.1.0.

The library returns plain dicts; only the CLI writes them out.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from trainwarden._version import __version__
from trainwarden.findings import Finding, Severity
from trainwarden.rules import Rule, lookup
from trainwarden.scan._rules import RULES
from trainwarden.scan._types import ScanReport

__all__ = ["SARIF_SCHEMA", "all_rules", "json_safe", "path_fields", "to_json", "to_sarif"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
_OFFSET = re.compile(r"@(\d+)$")
_SURROGATE = re.compile("[\ud800-\udfff]")


def all_rules() -> dict[str, str]:
    """Every scanner rule id with its title (from the rule catalogue)."""
    return {rule_id: rule.title for rule_id, rule in sorted(RULES.items())}


def _sarif_rule(rule_id: str, rule: Rule | None) -> dict[str, Any]:
    if rule is None:
        # An id no capability declares (a test asserts this cannot happen): still listed, so
        # every result has its rule.
        return {
            "id": rule_id,
            "name": rule_id.replace("-", ""),
            "shortDescription": {"text": rule_id},
        }
    return {
        "id": rule_id,
        "name": rule_id.replace("-", ""),
        "shortDescription": {"text": rule.title},
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        "properties": {
            "severity": rule.severity.name,
            "threats": list(rule.threats),
            "doc": rule.doc,
        },
    }


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_safe(obj: Any) -> Any:
    """``obj`` with every string made valid Unicode (lone surrogates become U+FFFD).

    File names that are not UTF-8 reach Python as lone surrogates, which JSON encoders write
    as escapes no strict parser accepts; paths keep their exact bytes in ``path_b64``.
    """
    if isinstance(obj, str):
        if _is_utf8(obj):
            return obj
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {json_safe(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def path_fields(path: str) -> dict[str, str]:
    """``{"path": ...}``, plus ``path_b64`` (the name's exact bytes) when it is not UTF-8."""
    if _is_utf8(path):
        return {"path": path}
    raw = _fs_bytes(path)
    return {"path": json_safe(path), "path_b64": base64.b64encode(raw).decode("ascii")}


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
        "skipped": len(report.skipped),
    }
    for fr, entry in zip(report.files, doc["files"], strict=True):
        entry["verdict"] = fr.verdict(fail_on)
        entry.update(path_fields(fr.path))
    for (path, _reason), entry in zip(report.skipped, doc["skipped"], strict=True):
        entry.update(path_fields(path))
    return json_safe(doc)  # type: ignore[no-any-return]


def _uri(path: str) -> str:
    # Percent-encoded (RFC 3986) from the name's bytes: spaces, '#', '?', newlines and names
    # that are not UTF-8 all survive a round trip through a SARIF viewer.
    p = Path(path)
    if p.is_absolute():
        return p.as_uri()
    return urllib.parse.quote(_fs_bytes(p.as_posix()), safe="/")


def _fs_bytes(path: str) -> bytes:
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogatepass")


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
    """A SARIF 2.1.0 log with one run; its rule list comes from the rule catalogue."""
    used = sorted({f.rule_id for f in report.findings} | set(RULES))
    rules = [_sarif_rule(rule_id, RULES.get(rule_id) or lookup(rule_id)) for rule_id in used]
    results = [_result(f, fr.path) for fr in report.files for f in fr.findings]
    artifacts = []
    for fr in report.files:
        art: dict[str, Any] = {"location": {"uri": _uri(fr.path)}, "length": fr.size}
        if fr.sha256:
            art["hashes"] = {"sha-256": fr.sha256}
        artifacts.append(art)
    doc: dict[str, Any] = json_safe(
        {
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
                            ]
                            + [
                                {
                                    "level": "warning",
                                    "message": {"text": f"skipped: {reason}"},
                                    "locations": [
                                        {"physicalLocation": {"artifactLocation": {"uri": _uri(p)}}}
                                    ],
                                }
                                for p, reason in report.skipped
                            ],
                        }
                    ],
                    "properties": {"fail_on": fail_on.name, "failed": report.failed(fail_on)},
                }
            ],
        }
    )
    return doc
