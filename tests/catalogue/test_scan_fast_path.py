"""``trainwarden scan``'s start-up fast path: one option table generated from the Typer command,
the same parsed values as Typer wherever it answers, the same output and exit code, and a plain
scan that imports none of the heavy modules."""

from __future__ import annotations

import functools
import json
import os
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import trainwarden
from trainwarden.cli import _scan_argv
from trainwarden.cli._app import main
from trainwarden.cli._scan_options import ENVVARS, OPTIONS

from ._scan_argv_gen import TABLE, render, scan_command, typer_params

SRC = Path(trainwarden.__file__).resolve().parents[1]

# Sample values per option kind: every one the fast path accepts, and near-misses it leaves to
# Typer (which accepts some of them too: the fast path may decline, never disagree).
_VALUES: dict[str, list[str]] = {
    "str": ["x.toml", "torch.*", "*.pt", "a b", "", "-x", "=", "--verbose"],
    "count": ["1", "3", "12", "0", "01", "-1", "+2", " 4", "x", "99999999999"],
    "format": ["text", "json", "sarif", "JSON", "Sarif", "xml", ""],
    "severity": ["info", "low", "medium", "high", "critical", "HIGH", "Low", "warn", ""],
}
_NEAR_MISSES = [
    "--help",
    "-h",
    "--",
    "-",
    "--verbos",
    "--hash=1",
    "--hash=",
    "-vv",
    "-ofile",
    "--format",
    "--no-hash",
    "--version",
    "-vo",
    "--allow-empty=yes",
]


@functools.cache
def _command() -> Any:
    return scan_command()


def _click_params(args: list[str]) -> dict[str, Any] | None:
    return typer_params(_command(), "scan", args)


@functools.cache
def _pools() -> tuple[list[list[str]], list[list[str]]]:
    """(every token group, the groups the fast path answers alone after a path)."""
    pool: list[list[str]] = [["model.pt"], ["dir/"], ["a.pkl"]]
    for opt, (_, kind, _multiple) in OPTIONS.items():
        if kind == "flag":
            pool.append([opt])
            continue
        for value in _VALUES[kind]:
            pool.append([opt, value])
            if opt.startswith("--"):
                pool.append([f"{opt}={value}"])
    pool += [[m] for m in _NEAR_MISSES]
    plain = [t for t in pool if _scan_argv.parse(["model.pt", *t], {}) is not None]
    return pool, plain


def _tokens(rng: random.Random) -> list[str]:
    """A random invocation: mostly what the fast path answers, with near-misses mixed in."""
    pool, plain = _pools()
    groups = [["model.pt"]] if rng.random() < 0.8 else []
    groups += [rng.choice(pool if rng.random() < 0.1 else plain) for _ in range(rng.randint(0, 6))]
    rng.shuffle(groups)  # options and paths in any order (click allows paths between options)
    return [token for group in groups for token in group]


def test_the_option_table_is_generated_from_the_typer_command() -> None:
    stale = "src/trainwarden/cli/_scan_options.py is stale: run tests/catalogue/_scan_argv_gen.py"
    assert TABLE.read_text() == render(), stale


def test_every_option_spelling_alone_parses_as_typer_parses_it() -> None:
    taken = 0
    for opt, (_, kind, _multiple) in OPTIONS.items():
        cases = [[opt]] if kind == "flag" else [[opt, v] for v in _VALUES[kind]]
        if kind != "flag" and opt.startswith("--"):
            cases += [[f"{opt}={v}"] for v in _VALUES[kind]]
        for case in cases:
            args = ["model.pt", *case]
            fast = _scan_argv.parse(args, {})
            if fast is not None:
                taken += 1
                assert fast == _click_params(args), args
    # Each accepted value of each option takes the fast path (not a parser that declines all).
    accepted = {"str": 5, "count": 3, "format": 3, "severity": 5}
    expected = sum(
        1 if kind == "flag" else accepted[kind] * (2 if opt.startswith("--") else 1)
        for opt, (_, kind, _m) in OPTIONS.items()
    )
    assert taken == expected


def test_random_invocations_parse_as_typer_parses_them_or_go_to_typer() -> None:
    rng = random.Random(20261204)  # noqa: S311 - reproducible test inputs, not secrets
    taken = declined = 0
    for _ in range(3000):
        args = _tokens(rng)
        fast = _scan_argv.parse(args, {})
        if fast is None:
            declined += 1
            continue
        taken += 1
        assert fast == _click_params(args), args
    assert taken > 300 and declined > 300


@pytest.mark.parametrize("name", [*ENVVARS, "_TRAINWARDEN_COMPLETE"])
def test_an_environment_default_leaves_the_invocation_to_typer(name: str) -> None:
    assert _scan_argv.parse(["model.pt"], {}) is not None
    assert _scan_argv.parse(["model.pt"], {name: ""}) is None


def _folder(root: Path) -> Path:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    root.mkdir()
    sd = {"w": torch.ones(4, 4)}
    torch.save(sd, root / "model.pt")
    save_file(sd, str(root / "model.safetensors"))
    np.save(root / "array.npy", np.arange(8, dtype=np.float32))
    (root / "state.pkl").write_bytes(pickle.dumps({"step": 1, "names": ["a", "b"]}))
    return root


def _evil(root: Path) -> Path:
    # os.system named by a GLOBAL opcode and never called: the bytes are only scanned.
    path = root / "evil.pkl"
    path.write_bytes(b"\x80\x04cos\nsystem\n(S'true'\ntR.")
    return path


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    # Elapsed times differ between any two runs.
    scrub = re.compile(r'(scanned in |"elapsed_s": )[0-9.]+(?:e-?[0-9]+)?')
    code = exc.value.code if isinstance(exc.value.code, int) else -1
    return code, scrub.sub(r"\g<1>0", out), scrub.sub(r"\g<1>0", err)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["-v"],
        ["--format", "json"],
        ["--format=sarif", "--fail-on", "critical"],
        ["--allow", "os.system", "--verbose"],
        ["--deny", "builtins.dict", "--hash"],
        ["--exclude", "*.pkl", "--include", "*.pt"],
    ],
)
def test_the_fast_path_and_typer_give_the_same_report_and_exit_code(
    extra: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = _folder(tmp_path / "models")
    _evil(folder)
    monkeypatch.chdir(tmp_path)
    args = ["scan", str(folder), *extra]
    assert _scan_argv.parse(args[1:], os.environ) is not None
    fast = _run_main(args, capsys)
    monkeypatch.setenv("TRAINWARDEN_WORKERS", "1")  # an environment default: Typer parses
    assert _scan_argv.parse(args[1:], os.environ) is None
    slow = _run_main(args, capsys)
    assert fast == slow
    assert fast[0] in (0, 1)
    if "--format" in extra:
        json.loads(fast[1])


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "does-not-exist.pt"],
        ["scan", "empty"],
        ["scan", "empty", "--allow-empty"],
        ["scan", "evil.pkl", "--policy", "missing.toml"],
        ["scan", "evil.pkl", "--output", "no/such/dir/report.txt"],
        ["scan", "evil.pkl", "--allow", "not-a-global"],
    ],
)
def test_errors_are_the_same_on_both_paths(
    args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "empty").mkdir()
    _evil(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert _scan_argv.parse(args[1:], os.environ) is not None
    fast = _run_main(args, capsys)
    monkeypatch.setenv("TRAINWARDEN_WORKERS", "1")
    slow = _run_main(args, capsys)
    assert fast == slow
    assert "Traceback" not in fast[2]


# What a plain `trainwarden scan` of ordinary model files must not import: each is either not
# needed (Typer, click, rich, pydantic are the command-line framework; the scanner reads .npy
# headers numpy writes without numpy) or needed only by options and inputs this scan lacks
# (a process pool for large trees, tomllib for a policy file, hashlib for --hash, the template
# analyser for chat templates).
_BUDGET = (
    "typer",
    "click",
    "rich",
    "pydantic",
    "numpy",
    "torch",
    "concurrent.futures.process",
    "multiprocessing",
    "tomllib",
    "hashlib",
    "tarfile",
    "subprocess",
    "trainwarden.cli._common",
    "trainwarden.scan._report",
    "trainwarden.scan._formats._jinja",
    "trainwarden.loading",
)


def _modules_after_scan(target: Path, cwd: Path, *options: str) -> tuple[int, set[str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    for name in (*ENVVARS, "TRAINWARDEN_LEDGER_URL", "TRAINWARDEN_LEDGER"):
        env.pop(name, None)
    code = (
        "import contextlib, io, json, sys\n"
        "from trainwarden.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main(['scan', {str(target)!r}, *{list(options)!r}])\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "print(json.dumps([code, sorted(sys.modules)]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=True,
    )
    rc, mods = json.loads(r.stdout.splitlines()[-1])
    return rc, set(mods)


def _over_budget(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == b or m.startswith(b + ".") for b in _BUDGET))


def test_a_plain_scan_of_a_pickle_imports_no_heavy_module(tmp_path: Path) -> None:
    rc, mods = _modules_after_scan(_evil(tmp_path), tmp_path)
    assert rc == 1  # the pickle was analysed: os.system is reported
    assert "trainwarden.scan._pickle_vm" in mods
    assert _over_budget(mods) == []


def test_a_plain_scan_of_model_files_imports_no_heavy_module(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "models")
    for fmt in ([], ["--format", "json"]):
        rc, mods = _modules_after_scan(folder, tmp_path, *fmt)
        assert rc == 0
        assert "trainwarden.scan._formats._zip" in mods  # the torch archive was read
        over = _over_budget(mods)
        if fmt:  # JSON needs its writer, nothing else
            assert over == ["trainwarden.scan._report"]
        else:
            assert over == []


def test_the_budget_check_sees_a_heavy_import(tmp_path: Path) -> None:
    # An object-dtype .npy needs numpy's own reading of its header: the check must notice.
    import numpy as np

    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _rc, mods = _modules_after_scan(path, tmp_path)
    assert "numpy" in _over_budget(mods)
    _rc, mods = _modules_after_scan(path, tmp_path, "--hash")
    assert "hashlib" in _over_budget(mods)


def test_text_safe_shortcut_for_printable_ascii_escapes_what_the_full_check_escapes() -> None:
    import unicodedata

    from trainwarden.cli._output import text_safe

    for cp in range(128):
        ch = chr(cp)
        unsafe = unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        assert text_safe(f"a{ch}b") == (f"a\\x{cp:02x}b" if unsafe else f"a{ch}b")
    assert text_safe("model\u202e.pt") == "model\\u202e.pt"  # not ASCII: the full check


@pytest.mark.parametrize("typer_path", [False, True])
def test_a_closed_stdout_is_one_error_line_and_exit_2_on_both_paths(
    typer_path: bool, tmp_path: Path
) -> None:
    folder = _folder(tmp_path / "models")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    for name in ENVVARS:
        env.pop(name, None)
    if typer_path:
        env["TRAINWARDEN_WORKERS"] = "1"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        r = subprocess.run(
            [sys.executable, "-m", "trainwarden", "scan", "--verbose", str(folder)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert r.returncode == 2
    assert r.stderr == "error: stdout was closed before the whole report was written\n"
