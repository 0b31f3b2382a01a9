"""``trainwarden scan``: formats, exit codes, env defaults, SARIF shape.

A few cases run the real ``python -m trainwarden`` subprocess; the rest call the same entry
point in-process (``trainwarden.cli.main``) to keep the suite fast on small machines.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainwarden.drill._scan_corpus import asm as A

RunCli = Callable[..., subprocess.CompletedProcess[str]]


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run ``trainwarden ARGS`` in-process through the real entry point."""
    from trainwarden.cli import main

    def run(
        args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Result:
        capsys.readouterr()
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            if cwd is not None:
                m.chdir(cwd)
            try:
                main(args)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def evil(canary: Path) -> bytes:
    return A.proto(2) + A.call_global("os", "system", f"touch {canary}") + A.STOP


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    canary = tmp_path / "canary"
    d = tmp_path / "models"
    (d / "sub").mkdir(parents=True)
    (d / "clean.pkl").write_bytes(pickle.dumps({"lr": 0.1}, protocol=4))
    (d / "sub" / "evil.bin").write_bytes(evil(canary))
    (d / "notes.txt").write_text("hello\n")
    return {"dir": d, "canary": canary, "root": tmp_path}


def test_text_report_and_exit_code(run_cli: RunCli, tree: dict[str, Path]) -> None:
    r = run_cli(["scan", str(tree["dir"])])
    assert r.returncode == 1, r.stderr
    assert "UNSAFE" in r.stdout
    assert "TWS-PKL-DANGEROUS" in r.stdout
    assert "global=os.system" in r.stdout
    assert "offset=2" in r.stdout
    # Files without findings are counted, and listed only with --verbose.
    assert "CLEAN" not in r.stdout
    assert "file(s) without findings not listed" in r.stdout
    r = run_cli(["scan", "--verbose", str(tree["dir"])])
    assert r.returncode == 1, r.stderr
    assert "CLEAN" in r.stdout
    assert not tree["canary"].exists()


def test_clean_file_exits_zero(cli: Callable[..., Result], tree: dict[str, Path]) -> None:
    r = cli(["scan", str(tree["dir"] / "clean.pkl")])
    assert r.returncode == 0, r.stdout + r.stderr


def test_json_report_with_hash(cli: Callable[..., Result], tree: dict[str, Path]) -> None:
    r = cli(["scan", str(tree["dir"]), "--format", "json", "--hash"])
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    files = {Path(f["path"]).name: f for f in doc["files"]}
    assert set(files) == {"clean.pkl", "evil.bin", "notes.txt"}
    evil_entry = files["evil.bin"]
    assert evil_entry["verdict"] == "unsafe"
    assert evil_entry["sha256"] == hashlib.sha256(evil(tree["canary"])).hexdigest()
    assert evil_entry["findings"][0]["evidence"]["global_"] == "os.system"
    assert doc["summary"]["failed"] is True
    assert doc["summary"]["fail_on"] == "HIGH"
    assert not tree["canary"].exists()


def test_json_without_hash_has_no_digest(cli: Callable[..., Result], tree: dict[str, Path]) -> None:
    r = cli(["scan", str(tree["dir"] / "clean.pkl"), "--format", "json"])
    assert json.loads(r.stdout)["files"][0]["sha256"] is None


def _check_sarif(doc: dict[str, Any]) -> None:
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(doc["runs"], list) and doc["runs"]
    for run in doc["runs"]:
        driver = run["tool"]["driver"]
        assert driver["name"] == "trainwarden"
        rule_ids = {rule["id"] for rule in driver["rules"]}
        assert all(rule["shortDescription"]["text"] for rule in driver["rules"])
        for res in run["results"]:
            assert res["ruleId"] in rule_ids
            assert res["level"] in {"none", "note", "warning", "error"}
            assert res["message"]["text"]
            assert res["locations"]
            for loc in res["locations"]:
                uri = loc["physicalLocation"]["artifactLocation"]["uri"]
                assert isinstance(uri, str) and uri
                region = loc["physicalLocation"].get("region")
                if region is not None:
                    assert region["byteOffset"] >= 0


def test_sarif_is_valid(run_cli: RunCli, tree: dict[str, Path]) -> None:
    r = run_cli(["scan", str(tree["dir"]), "--format", "sarif"])
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    _check_sarif(doc)
    results = doc["runs"][0]["results"]
    assert {res["ruleId"] for res in results} == {"TWS-PKL-DANGEROUS"}
    assert results[0]["level"] == "error"
    assert results[0]["locations"][0]["physicalLocation"]["region"] == {"byteOffset": 2}


def test_fail_on_and_env_defaults(cli: Callable[..., Result], tree: dict[str, Path]) -> None:
    target = str(tree["dir"] / "sub" / "evil.bin")
    r = cli(["scan", target, "--fail-on", "critical"])
    assert r.returncode == 1
    r = cli(["scan", target], env={"TRAINWARDEN_ALLOW": "os.system"})
    assert r.returncode == 0, r.stdout
    r = cli(["scan", str(tree["dir"])], env={"TRAINWARDEN_EXCLUDE": "sub"})
    assert r.returncode == 0, r.stdout
    r = cli(["scan", str(tree["dir"]), "--format", "json"], env={"TRAINWARDEN_INCLUDE": "*.pkl"})
    assert [Path(f["path"]).name for f in json.loads(r.stdout)["files"]] == ["clean.pkl"]


def test_policy_file_and_deny(cli: Callable[..., Result], tree: dict[str, Path]) -> None:
    pol = tree["root"] / "trainwarden.toml"
    pol.write_text('deny = ["builtins.dict"]\nfail_on = "medium"\n')
    data = pickle.dumps({"x": 1}, protocol=2)  # plain dicts need no global
    f = tree["root"] / "d.pkl"
    f.write_bytes(data)
    assert cli(["scan", str(f), "--policy", str(pol)]).returncode == 0
    r = cli(["scan", str(f), "--deny", "builtins.dict"])
    assert r.returncode == 0  # the pickle never imports builtins.dict
    g = tree["root"] / "od.pkl"
    import collections

    g.write_bytes(pickle.dumps(collections.OrderedDict(a=1), protocol=2))
    assert cli(["scan", str(g)]).returncode == 0
    assert cli(["scan", str(g), "--deny", "collections.*"]).returncode == 1


def test_output_file(cli: Callable[..., Result], tree: dict[str, Path]) -> None:
    out = tree["root"] / "report.sarif"
    r = cli(["scan", str(tree["dir"]), "--format", "sarif", "--output", str(out)])
    assert r.returncode == 1
    assert r.stdout == ""
    _check_sarif(json.loads(out.read_text()))


def test_workers(cli: Callable[..., Result], tree: dict[str, Path]) -> None:
    r = cli(["scan", str(tree["dir"]), "--workers", "2", "--format", "json"])
    assert r.returncode == 1
    assert len(json.loads(r.stdout)["files"]) == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["scan", "/nonexistent/model.pt"], "no such file"),
        (["scan", ".", "--fail-on", "severe"], "unknown severity"),
        (["scan", ".", "--policy", "/nonexistent.toml"], "cannot read policy file"),
        (["scan", ".", "--allow", "nodot"], "invalid policy entry"),
    ],
)
def test_usage_errors_exit_2(
    cli: Callable[..., Result], tmp_path: Path, args: list[str], needle: str
) -> None:
    r = cli(args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_error_in_a_real_subprocess(run_cli: RunCli, tmp_path: Path) -> None:
    r = run_cli(["scan", str(tmp_path / "missing.pt"), "--format", "json"])
    assert r.returncode == 2
    assert "no such file" in r.stderr
    assert "Traceback" not in r.stderr
