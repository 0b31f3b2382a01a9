"""`trainwarden attest ...` through a real subprocess, against a real venv."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .venvs import Venv

Cli = Callable[..., Any]  # the in-process `cli` fixture (tests/conftest.py)


def _env(tmp_path: Path) -> dict[str, str]:
    # run_cli prepends src/ to PYTHONPATH; the job under attestation is the test venv, whose
    # environment we describe through these variables.
    return {"TRAINWARDEN_CACHE_DIR": str(tmp_path / "cache"), "LD_PRELOAD": ""}


def test_snapshot_verify_diff_round_trip(
    cli: Cli, make_venv: Callable[[], Venv], tmp_path: Path
) -> None:
    venv = make_venv()
    env = _env(tmp_path)
    key = tmp_path / "k.key"
    r = cli(["attest", "keygen", str(key)], env=env)
    assert r.returncode == 0, r.stderr
    snap = tmp_path / "baseline.json"
    r = cli(
        [
            "attest",
            "snapshot",
            "--python",
            str(venv.python),
            "-o",
            str(snap),
            "--sign",
            str(key),
            "--format",
            "json",
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["signed"] is True and summary["output"] == str(snap)
    envelope = json.loads(snap.read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"

    pub = f"{key}.pub"
    r = cli(
        [
            "attest",
            "verify",
            "--python",
            str(venv.python),
            "--baseline",
            str(snap),
            "--key",
            pub,
            "--format",
            "json",
        ],
        env=env,
    )
    # PYTHONPATH (set by run_cli) is MEDIUM: below the default --fail-on high.
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["baseline"]["signature_verified"] is True
    assert {f["rule_id"] for f in doc["findings"]} <= {"TWA-REC-003", "TWA-ENV-001", "TWA-PATH-003"}

    (venv.site / "twdemo" / "core.py").write_text("def step(x):\n    return 0\n")
    r = cli(
        ["attest", "verify", "--python", str(venv.python), "--baseline", str(snap), "--key", pub],
        env=env,
    )
    assert r.returncode == 1
    assert "TWA-REC-001" in r.stdout and "CRITICAL" in r.stdout

    r = cli(["attest", "verify", "--python", str(venv.python), "--fail-on", "medium"], env=env)
    assert r.returncode == 1

    current = tmp_path / "current.json"
    r = cli(["attest", "snapshot", "--python", str(venv.python), "-o", str(current)], env=env)
    assert r.returncode == 0, r.stderr
    r = cli(["attest", "diff", str(snap), str(current)], env=env)
    assert r.returncode == 1
    assert "twdemo" in r.stdout and "twdemo/core.py" in r.stdout
    r = cli(["attest", "diff", str(snap), str(current), "--format", "json"], env=env)
    doc = json.loads(r.stdout)
    (dist,) = doc["distributions"]
    assert dist["name"] == "twdemo"
    assert [c["path"] for c in dist["changed"]] == ["twdemo/core.py"]
    r = cli(["attest", "diff", str(snap), str(snap)], env=env)
    assert r.returncode == 0 and "no differences" in r.stdout
    # The unsigned current snapshot is refused when a key is required.
    r = cli(["attest", "diff", str(snap), str(current), "--key", pub], env=env)
    assert r.returncode == 2 and "not signed" in r.stderr


def test_perms_command(cli: Cli, make_venv: Callable[[], Venv], tmp_path: Path) -> None:
    venv = make_venv()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"x")
    os.chmod(ckpt / "model.pt", 0o666)  # noqa: S103 - the unsafe mode is what is tested
    r = cli(
        [
            "attest",
            "perms",
            str(ckpt),
            "--python",
            str(venv.python),
            "--owner",
            str(ckpt.stat().st_uid),
            "--format",
            "json",
        ],
        env=_env(tmp_path),
    )
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert str(venv.site) in doc["roots"] and str(ckpt) in doc["roots"]
    locs = {(f["rule_id"], f["location"]) for f in doc["findings"]}
    assert ("TWA-PERM-001", str(ckpt / "model.pt")) in locs


def test_usage_errors_exit_2(cli: Cli, tmp_path: Path) -> None:
    env = _env(tmp_path)
    r = cli(["attest", "verify", "--python", str(tmp_path / "nope")], env=env)
    assert r.returncode == 2 and "cannot run interpreter" in r.stderr
    assert "Traceback" not in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    r = cli(["attest", "diff", str(bad), str(bad)], env=env)
    assert r.returncode == 2 and "bad.json" in r.stderr
    r = cli(["attest", "verify", "--fail-on", "loud"], env=env)
    assert r.returncode == 2 and "unknown severity" in r.stderr
    r = cli(["attest", "snapshot", "--python", "/bin/true", "-o", str(tmp_path / "s")], env=env)
    assert r.returncode == 2 and "/bin/true" in r.stderr and "Traceback" not in r.stderr
    r = cli(["attest", "snapshot", "--code", str(tmp_path / "missing-dir")], env=env)
    assert r.returncode == 2 and "missing-dir does not exist" in r.stderr
    assert not (tmp_path / "s").exists()
