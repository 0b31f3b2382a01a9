"""The built-in allowlist is readable data: every global once, under a reason in plain words."""

from __future__ import annotations

import ast
from pathlib import Path

from trainwarden.scan import _allowlist as allowlist
from trainwarden.scan._allowlist import SAFE
from trainwarden.scan._policy import Policy
from trainwarden.scan._types import Verdict

_SOURCE = Path(allowlist.__file__).read_text(encoding="utf-8")


def _groups() -> list[tuple[str, list[str]]]:
    tree = ast.parse(_SOURCE)
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and getattr(node.target, "id", "") == "_GROUPS"
            and node.value is not None
        ):
            value = ast.literal_eval(node.value)
            return [(reason, list(names)) for reason, names in value]
    raise AssertionError("allowlist.py has no _GROUPS table")


def test_the_table_is_literal_data() -> None:
    # Reasons are written where they apply, not hidden behind constants or computed.
    groups = _groups()
    assert len(groups) > 50
    assert sum(len(names) for _, names in groups) == len(SAFE)


def test_every_global_is_listed_once() -> None:
    names = [n for _, group in _groups() for n in group]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == []


def test_every_reason_is_written_once_in_plain_words() -> None:
    reasons = [reason for reason, _ in _groups()]
    assert len(reasons) == len(set(reasons))
    for reason in reasons:
        assert reason == reason.strip() and len(reason.split()) >= 2, reason
    for name, reason in SAFE.items():
        assert reason in reasons, name


def test_every_entry_is_a_dotted_global_the_default_policy_trusts() -> None:
    policy = Policy.default()
    for name in SAFE:
        module, _, qualname = name.rpartition(".")
        assert module and qualname and " " not in name, name
        verdict, _ = policy.classify(module, qualname, fix_imports=False)
        assert verdict is Verdict.SAFE, name
