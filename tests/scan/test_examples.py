"""The checked-in examples are clean: ``trainwarden scan examples/`` exits 0."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_folder_is_small_and_complete() -> None:
    files = [p for p in EXAMPLES.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 200 * 1024
    names = {p.relative_to(EXAMPLES).as_posix() for p in files}
    assert {"tiny_state_dict.pt", "tiny.safetensors", "tiny-gpt2/config.json"} <= names


def test_scan_examples_exits_clean(run_cli: Callable[..., CompletedProcess[str]]) -> None:
    result = run_cli(["scan", str(EXAMPLES)])
    assert result.returncode == 0, result.stdout + result.stderr
