"""The scanner's handler contract: handlers use only the ScanContext protocol.

A context that is not the engine's own must get the same behaviour from every handler, the
user's policy first of all (a handler that asked "is this the engine's context?" and fell back
to the default policy otherwise would quietly scan with rules the user did not choose).
"""

from __future__ import annotations

import ast
import collections
import io
import pickle
import zipfile
from pathlib import Path

from trainwarden.findings import Severity
from trainwarden.scan import _engine as engine
from trainwarden.scan import scan_bytes
from trainwarden.scan._formats import HANDLERS
from trainwarden.scan._formats import pickle as pickle_format
from trainwarden.scan._formats import zip as zip_format
from trainwarden.scan._policy import Policy
from trainwarden.scan._types import Limits

from .formats.fmt_support import RecordingContext

SCAN = Path(engine.__file__).parent


def _ordered_dict_pickle() -> bytes:
    # A global the default policy allows: only a policy that denies it makes it a finding.
    return pickle.dumps(collections.OrderedDict(a=1), protocol=2)


def _deny_ordered_dict() -> Policy:
    return Policy.default().with_overrides(deny=["collections.OrderedDict"])


def test_default_policy_allows_the_probe_global() -> None:
    ctx = RecordingContext()
    pickle_format.HANDLER.scan(_ordered_dict_pickle(), "<t>", ctx)
    assert ctx.findings == []
    assert "collections.OrderedDict" in ctx.globals


def test_a_custom_context_policy_is_honoured_by_the_pickle_handler() -> None:
    ctx = RecordingContext(policy=_deny_ordered_dict())
    pickle_format.HANDLER.scan(_ordered_dict_pickle(), "<t>", ctx)
    assert [f.rule_id for f in ctx.findings] == ["TWS-PKL-DANGEROUS"]
    assert ctx.findings[0].severity >= Severity.HIGH


def test_a_custom_context_policy_is_honoured_inside_a_torch_zip() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", _ordered_dict_pickle())
        z.writestr("archive/version", "3\n")
    data = buf.getvalue()
    ctx = RecordingContext(policy=_deny_ordered_dict())
    assert zip_format.HANDLER.sniff(data)
    zip_format.HANDLER.scan(data, "<t>", ctx)
    assert "TWS-PKL-DANGEROUS" in {f.rule_id for f in ctx.findings}
    # The engine's own context agrees.
    engine_report = scan_bytes(data, policy=_deny_ordered_dict())
    assert "TWS-PKL-DANGEROUS" in {f.rule_id for f in engine_report.findings}


def test_an_unclaimed_headerless_pickle_uses_the_context_policy() -> None:
    body = _ordered_dict_pickle()[2:]  # no PROTO header: only the engine's probe looks at it
    ctx = RecordingContext(policy=_deny_ordered_dict())
    pickle_format.probe_unclaimed(body, "<t>", ctx)
    assert "TWS-PKL-DANGEROUS" in {f.rule_id for f in ctx.findings}


def test_a_custom_context_decompression_budget_is_enforced() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps([0] * 1000, protocol=2))
        z.writestr("archive/big", b"\0" * 200_000)
    ctx = RecordingContext(limits=Limits(max_decompressed_bytes=50_000))
    zip_format.HANDLER.scan(buf.getvalue(), "<t>", ctx)
    assert "max_decompressed_bytes" in ctx.limits_hit
    assert any(f.rule_id == "TWS-LIMIT" and f.severity is Severity.HIGH for f in ctx.findings)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_no_handler_imports_the_engine() -> None:
    # engine -> formats -> pickle -> engine was a cycle, hidden behind deferred imports.
    for path in sorted((SCAN / "_formats").glob("*.py")):
        assert "trainwarden.scan._engine" not in _imports(path), path.name


def test_handlers_use_no_getattr_on_the_context() -> None:
    for path in sorted((SCAN / "_formats").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "getattr(ctx" not in text and "getattr(self.ctx" not in text, path.name


def test_the_engine_imports_the_handler_list_at_module_level() -> None:
    tree = ast.parse((SCAN / "_engine.py").read_text(encoding="utf-8"))
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert "trainwarden.scan._formats" in top
    assert engine.__dict__["HANDLERS"] is HANDLERS
    deferred = [
        n.module
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        for n in ast.walk(f)
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("trainwarden")
    ]
    assert deferred == []
