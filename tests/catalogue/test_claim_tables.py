"""Every user guide's claim table names tests (and benches) that exist.

Each user guide under docs/ ends with a table whose rows pair a claim with the tests that would
fail if it were false. This checks every such table the same way, so that renaming or deleting a
test, or adding a guide without a table, cannot go unnoticed.

References are backticked in a row's last cell:

* ``tests/area/test_x.py::test_name`` or ``bench/x.py`` -- a path from the repository root;
* ``test_x.py::test_name``, ``formats/test_x.py``, ``../drill/test_x.py::...`` -- a path relative
  to the folder of the first file the table names from the root (in its header cell or a row),
  else to the folder of the file named last, else under tests/;
* ``::test_name`` or a bare ``test_name`` -- a test in the file named last (in the table, or in
  its header cell);
* a parametrized id ``test_name[...]`` names ``test_name``; ``...[id]`` repeats the last test with
  another id; a bare file names a whole file, which must hold tests; ``test_prefix_*`` names at
  least one test starting with the prefix in that file's folder.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Reference pages, not user guides: the generated CLI and rules catalogues, the index, the
# benchmark tables and the threat model (its rows point at the guides, whose tables name tests).
NOT_GUIDES = {"BENCHMARKS.md", "cli.md", "index.md", "rules.md", "threat-model.md"}
_HEADING = re.compile(r"^(#+) .*\b[Cc]laims?\b", re.M)
_PATH = r"(?:[\w.-]+/)*[\w.-]+\.py"
_TOKEN = re.compile(
    rf"^(?:(?P<path>{_PATH})(?:::(?P<ptest>test_\w+))?|::(?P<ctest>test_\w+)|(?P<bare>test_\w+)"
    r"|(?P<glob>test_\w+)\*|\.\.\.)(?:\[[^\]]*\])?$"
)


@dataclass(frozen=True)
class Ref:
    guide: str
    row: str
    path: Path
    test: str | None
    glob: bool = False


def guides() -> list[str]:
    return sorted(p.name for p in DOCS.glob("*.md") if p.name not in NOT_GUIDES)


def claim_tables(text: str) -> list[str]:
    """The text under each heading that mentions claims, up to the next heading of any level."""
    out = []
    for m in _HEADING.finditer(text):
        body = text[m.end() :]
        nxt = re.search(r"^#+ ", body, re.M)
        out.append(body[: nxt.start()] if nxt else body)
    return out


def _resolve(token: str, base: Path | None, last: Path | None) -> Path:
    if token.startswith(("tests/", "bench/")):
        return ROOT / token
    candidates = [(f.parent / token).resolve() for f in (base, last) if f is not None]
    candidates.append(ROOT / "tests" / token)
    candidates += sorted((ROOT / "tests").glob(f"*/{token}"))
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def refs_in(guide: str, table: str) -> list[Ref]:
    refs: list[Ref] = []
    base: Path | None = None
    last: Path | None = None
    last_test: str | None = None
    for line in table.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        cell = cells[-1]
        named = re.search(rf"\b(tests/{_PATH})", cell)
        if named and "`" not in cell:
            base = last = ROOT / named.group(1)
            continue
        for token in re.findall(r"`([^`]+)`", cell):
            m = _TOKEN.match(token.strip())
            if m is None:
                continue
            if m["path"]:
                last = _resolve(m["path"], base, last)
                if base is None and m["path"].startswith("tests/"):
                    base = last
                last_test = m["ptest"]
                refs.append(Ref(guide, line, last, last_test))
                continue
            assert last is not None, f"{guide}: {token!r} names a test before any file: {line}"
            if m["glob"]:
                refs.append(Ref(guide, line, last, m["glob"], glob=True))
                continue
            test = m["ctest"] or m["bare"] or last_test
            assert test is not None, f"{guide}: {token!r} repeats no test: {line}"
            last_test = test
            refs.append(Ref(guide, line, last, test))
    return refs


@cache
def _defined(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def problems(refs: list[Ref]) -> list[str]:
    bad = []
    for r in refs:
        where = r.path.relative_to(ROOT) if r.path.is_relative_to(ROOT) else r.path
        if not r.path.is_file():
            bad.append(f"{where} does not exist")
        elif r.path.suffix != ".py":
            bad.append(f"{where} is not a Python file")
        elif r.glob:
            names = {n for p in r.path.parent.rglob("test_*.py") for n in _defined(p)}
            if not any(n.startswith(r.test or "") for n in names):
                bad.append(f"no test named {r.test}* under {where.parent}")
        elif r.test is None:
            if "bench" not in r.path.parts and not any(
                n.startswith("test_") for n in _defined(r.path)
            ):
                bad.append(f"{where} holds no tests")
        elif r.test not in _defined(r.path):
            bad.append(f"{where}::{r.test} does not exist")
    return bad


@pytest.mark.parametrize("guide", guides())
def test_every_user_guide_has_a_claim_table_whose_tests_exist(guide: str) -> None:
    tables = claim_tables((DOCS / guide).read_text(encoding="utf-8"))
    assert tables, f"docs/{guide} has no claim table (a heading naming its claims)"
    refs = [r for t in tables for r in refs_in(guide, t)]
    assert len(refs) >= 5, f"docs/{guide}: only {len(refs)} tests named"
    assert problems(refs) == [], f"docs/{guide}"


def test_the_checker_catches_what_a_rename_would_break() -> None:
    """Each reference form is parsed, and each kind of stale reference is reported."""
    table = "\n".join(
        [
            "| claim | test (tests/scan/test_policy.py) |",
            "|---|---|",
            "| a | `test_no_such_test` |",
            "| b | `tests/ledger/test_merkle.py::test_root_matches_rfc_definition`, `::test_gone`,"
            " `...[id]` |",
            "| c | `test_no_such_file.py::test_x`, `tests/ledger/test_merkle.py` |",
            "| d | `test_xyz_never_*`, `watch()` is not a reference, `bench/nope.py` |",
        ]
    )
    refs = refs_in("x.md", table)
    assert [(r.path.name, r.test) for r in refs] == [
        ("test_policy.py", "test_no_such_test"),
        ("test_merkle.py", "test_root_matches_rfc_definition"),
        ("test_merkle.py", "test_gone"),
        ("test_merkle.py", "test_gone"),
        ("test_no_such_file.py", "test_x"),
        ("test_merkle.py", None),
        ("test_merkle.py", "test_xyz_never_"),
        ("nope.py", None),
    ]
    assert problems(refs) == [
        "tests/scan/test_policy.py::test_no_such_test does not exist",
        "tests/ledger/test_merkle.py::test_gone does not exist",
        "tests/ledger/test_merkle.py::test_gone does not exist",
        "tests/scan/test_no_such_file.py does not exist",
        "no test named test_xyz_never_* under tests/ledger",
        "bench/nope.py does not exist",
    ]
