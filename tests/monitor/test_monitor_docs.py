"""docs/monitor.md stays true: every rule is listed, every check is declared and timed.

(Its claim tables are checked with every guide's by tests/catalogue/test_claim_tables.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from trainwarden._internal.sink import MemorySink
from trainwarden.monitor import RULES, watch
from trainwarden.monitor._checks import CHECKS

from ._support import mlp

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "monitor.md").read_text(encoding="utf-8")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_rule_is_in_the_rule_table() -> None:
    table = DOC.split("## Rule ids", 1)[1].split("\n## ", 1)[0]
    for rule_id, rule in RULES.items():
        if rule.guide != "monitor.md":
            continue  # the distributed checks' rules are in monitor-distributed.md
        row = f"| [`{rule_id}`](rules.md#{rule_id.lower()}) | {rule.severity.name} |"
        assert row in table, rule_id


def test_every_check_declares_known_rules_and_is_timed() -> None:
    for cls in CHECKS:
        assert cls.rules and cls.cost, cls.name
        for rule in cls.rules:
            assert rule in RULES, (cls.name, rule)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt, sink=MemorySink(), watchdog=False, code_guard=False) as mon:
        x = torch.randn(4, 8)
        for _ in range(2):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    assert set(mon.check_seconds) == {"core"} | {c.name for c in mon.checks}
    assert all(v >= 0 for v in mon.check_seconds.values())
