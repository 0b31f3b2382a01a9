"""The claim → test tables of the scanner and loader guides name tests that exist.

A table row names tests as ``file.py::test_name`` (``::test_name`` continues the previous file;
a parametrized id ``test_name[...]`` names ``test_name``; a bare ``file.py`` names a whole file,
which must hold tests). Paths are relative to the folder the guide says (``tests/scan/`` for
scan.md and scan-formats.md) or start with ``tests/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# guide -> (heading of its claim table, folder its relative test paths start from)
GUIDES = {
    "scan.md": ("## Claim → test", ROOT / "tests" / "scan"),
    "scan-formats.md": ("### Claim → test", ROOT / "tests" / "scan"),
    "loading.md": ("## Claim → test", ROOT / "tests" / "loading"),
}
_REF = re.compile(r"`((?:[\w./-]+\.py)?)(?:::(test_\w+)(?:\[[^\]`]*\])?)?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _refs(guide: str) -> list[tuple[str, int, Path, str | None]]:
    heading, base = GUIDES[guide]
    text = (ROOT / "docs" / guide).read_text(encoding="utf-8")
    assert heading in text, f"{guide} has no claim table"
    table = text.split(heading, 1)[1].split("\n#", 1)[0]
    refs: list[tuple[str, int, Path, str | None]] = []
    rows = [ln for ln in table.splitlines() if ln.startswith("|") and "`" in ln]
    for lineno, row in enumerate(rows, 1):
        current: Path | None = None
        for file, test in _REF.findall(row.rsplit("|", 2)[-2]):
            if file:
                current = (ROOT / file) if file.startswith("tests/") else (base / file)
            elif not test:
                continue
            assert current is not None, f"{guide} row {lineno}: `::{test}` without a file"
            refs.append((guide, lineno, current, test or None))
    return refs


@pytest.mark.parametrize("guide", sorted(GUIDES))
def test_every_test_named_in_the_claim_table_exists(guide: str) -> None:
    refs = _refs(guide)
    assert len(refs) >= 10, f"{guide}: only {len(refs)} tests named"
    missing = []
    for _, lineno, path, test in refs:
        if not path.is_file():
            missing.append(f"row {lineno}: {path.relative_to(ROOT)} does not exist")
        elif test is None:
            if not any(t.startswith("test_") for t in _tests_in(path)):
                missing.append(f"row {lineno}: {path.relative_to(ROOT)} holds no tests")
        elif test not in _tests_in(path):
            missing.append(f"row {lineno}: {path.relative_to(ROOT)}::{test}")
    assert missing == [], f"{guide}: " + "; ".join(missing)


def test_the_checker_catches_a_missing_test(tmp_path: Path) -> None:
    """The parser finds references of every form, so a renamed test cannot go unnoticed."""
    row = (
        "| c | `test_policy.py::test_classify`, `::test_nope[x]`, "
        "`tests/loading/test_load_guard.py::test_x` |"
    )
    found = _REF.findall(row.rsplit("|", 2)[-2])
    assert found == [
        ("test_policy.py", "test_classify"),
        ("", "test_nope"),
        ("tests/loading/test_load_guard.py", "test_x"),
    ]
    assert "test_nope" not in _tests_in(ROOT / "tests" / "scan" / "test_policy.py")
