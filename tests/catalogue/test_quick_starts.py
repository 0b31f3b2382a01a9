"""Every user guide opens with a quick start, and what the quick starts show really works.

Each ``$ trainwarden ...`` line in a quick start names a command that exists and only options that
command has (checked against the application itself); the safe-loading quick start's Python runs.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Reference pages, not guides: they have no quick start.
REFERENCE = {
    "rules.md",
    "cli.md",
    "BENCHMARKS.md",
    "index.md",
    "threat-model.md",
    "scan-formats.md",
}
GUIDES = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in REFERENCE)


def _quick_start(guide: Path) -> str:
    text = guide.read_text(encoding="utf-8")
    m = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert m, f"{guide.name} has no '## Quick start' section"
    return m.group(1)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_guide_opens_with_a_quick_start(guide: Path) -> None:
    first = re.search(r"^## (.*)$", guide.read_text(encoding="utf-8"), flags=re.M)
    assert first is not None and first.group(1) == "Quick start", guide.name
    _quick_start(guide)


def _command_lines() -> list[tuple[str, str]]:
    lines = []
    for guide in GUIDES:
        for line in _quick_start(guide).splitlines():
            if line.startswith("$ trainwarden "):
                lines.append((guide.name, line[2:].split("  #")[0].strip()))
    return lines


def _resolve(root: Any, words: list[str]) -> tuple[Any, list[str]]:
    cmd = root
    while words and hasattr(cmd, "list_commands"):
        sub = cmd.get_command(type(root).context_class(cmd), words[0])
        if sub is None:
            break
        cmd, words = sub, words[1:]
    return cmd, words


def test_quick_start_commands_and_options_exist() -> None:
    import typer.main

    from trainwarden.cli import app

    root = typer.main.get_command(app)
    lines = _command_lines()
    assert len(lines) >= 10
    for guide, line in lines:
        cmd, rest = _resolve(root, shlex.split(line)[1:])
        assert not hasattr(cmd, "list_commands"), (guide, line, "not a command")
        known = {n for p in cmd.params for n in [*p.opts, *p.secondary_opts]}
        passes_through = cmd.context_settings.get("allow_extra_args", False)  # run SCRIPT ARGS
        for word in rest:
            if passes_through and not word.startswith("-"):
                break  # what follows the script is the script's own arguments
            if word.startswith("-"):
                assert word.split("=")[0] in known, (guide, line, word)


def test_the_safe_loading_quick_start_runs(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", _quick_start(ROOT / "docs" / "loading.md"), re.S)
    assert code
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code.group(1), "loading.md quick start", "exec"), {})  # noqa: S102 - our doc
    finally:
        os.chdir(cwd)
    assert (tmp_path / "ckpt.pt").is_file()
    assert (tmp_path / "ckpt.pt.manifest.json").is_file()
