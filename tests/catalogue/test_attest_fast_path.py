"""``trainwarden attest verify``'s start-up fast path: one option table generated from the Typer
command, the same parsed values as Typer wherever it answers, and none otherwise. (The same
report and exit code on both paths, and what a plain verify imports, are tested against a real
venv in ``tests/attest/test_cli_attest_fast_path.py``.)"""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from trainwarden.cli import _attest_argv
from trainwarden.cli._attest_options import ENVVARS, OPTIONS

from ._attest_argv_gen import TABLE, render, verify_command
from ._scan_argv_gen import typer_params

# Sample values per option kind: every one the fast path accepts, and near-misses it leaves to
# Typer (which accepts some of them too: the fast path may decline, never disagree).
_VALUES: dict[str, list[str]] = {
    "str": ["python3", "/usr/bin/python3.11", "a b", "=", "", "-x", "--no-cache"],
    "path": ["baseline.json", "keys/attest.pub", "a b", "", " x", "x ", "x\n", "-x", "--pub"],
    "format": ["text", "json", "JSON", "Text", "sarif", ""],
    "severity": ["info", "low", "medium", "high", "critical", "HIGH", "Low", "warn", ""],
}
_ACCEPTED = {"str": 4, "path": 3, "format": 2, "severity": 5}
_NEAR_MISSES = [
    "--help",
    "-h",
    "--",
    "-",
    "--no-cach",
    "--no-cache=1",
    "--no-cache=",
    "--format",
    "--cache",
    "--version",
    "-v",
    "baseline.json",
    "verify",
]


@functools.cache
def _command() -> Any:
    return verify_command()


def _click_params(args: list[str]) -> dict[str, Any] | None:
    return typer_params(_command(), "verify", args)


def _same(fast: dict[str, Any], slow: dict[str, Any] | None) -> bool:
    # click gives a repeatable option's values as a list or a tuple: compare the values.
    if slow is None:
        return False

    def norm(d: dict[str, Any]) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    return norm(fast) == norm(slow)


def test_the_option_table_is_generated_from_the_typer_command() -> None:
    stale = (
        "src/trainwarden/cli/_attest_options.py is stale: run tests/catalogue/_attest_argv_gen.py"
    )
    assert TABLE.read_text() == render(), stale


def test_no_invocation_parses_to_defaults_other_than_typers() -> None:
    assert _same(_attest_argv.parse([], {}) or {}, _click_params([]))


def test_every_option_spelling_alone_parses_as_typer_parses_it() -> None:
    taken = 0
    for opt, (_, kind, _multiple) in OPTIONS.items():
        cases = [[opt]] if kind == "flag" else [[opt, v] for v in _VALUES[kind]]
        if kind != "flag" and opt.startswith("--"):
            cases += [[f"{opt}={v}"] for v in _VALUES[kind]]
        for args in cases:
            fast = _attest_argv.parse(args, {})
            if fast is not None:
                taken += 1
                assert _same(fast, _click_params(args)), args
    # Each accepted value of each option takes the fast path (not a parser that declines all).
    expected = sum(
        1 if kind == "flag" else _ACCEPTED[kind] * (2 if opt.startswith("--") else 1)
        for opt, (_, kind, _m) in OPTIONS.items()
    )
    assert taken == expected


@functools.cache
def _pools() -> tuple[list[list[str]], list[list[str]]]:
    """(every token group, the groups the fast path answers alone)."""
    pool: list[list[str]] = []
    for opt, (_, kind, _multiple) in OPTIONS.items():
        if kind == "flag":
            pool.append([opt])
            continue
        for value in _VALUES[kind]:
            pool.append([opt, value])
            if opt.startswith("--"):
                pool.append([f"{opt}={value}"])
    pool += [[m] for m in _NEAR_MISSES]
    plain = [t for t in pool if _attest_argv.parse(t, {}) is not None]
    return pool, plain


def test_random_invocations_parse_as_typer_parses_them_or_go_to_typer() -> None:
    rng = random.Random(20261205)  # noqa: S311 - reproducible test inputs, not secrets
    pool, plain = _pools()
    taken = declined = 0
    for _ in range(3000):
        groups = [
            rng.choice(pool if rng.random() < 0.15 else plain) for _ in range(rng.randint(0, 6))
        ]
        args = [token for group in groups for token in group]
        fast = _attest_argv.parse(args, {})
        if fast is None:
            declined += 1
            continue
        taken += 1
        assert _same(fast, _click_params(args)), args
    assert taken > 300 and declined > 300


@pytest.mark.parametrize("name", [*ENVVARS, "_TRAINWARDEN_COMPLETE"])
def test_an_environment_default_leaves_the_invocation_to_typer(name: str) -> None:
    assert _attest_argv.parse(["--format", "json"], {}) is not None
    assert _attest_argv.parse(["--format", "json"], {name: ""}) is None


def test_an_argument_leaves_the_invocation_to_typer() -> None:
    assert _attest_argv.parse(["extra"], {}) is None
    assert _attest_argv.parse(["--no-cache", "extra"], {}) is None
