"""Signed snapshots (DSSE, Ed25519), snapshot diffs and code directory state."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainwarden.attest import AttestationError
from trainwarden.attest._cache import HashCache
from trainwarden.attest._codedir import code_state
from trainwarden.attest._diff import diff_snapshots
from trainwarden.attest._signing import (
    generate_key,
    load_snapshot,
    pae,
    sign_statement,
    verify_envelope,
)
from trainwarden.attest._snapshot import Snapshot, take_snapshot
from trainwarden.attest._verify import verify_environment
from trainwarden.findings import Severity

from .venvs import Venv


def test_pae_matches_the_dsse_spec() -> None:
    # The example from the DSSE v1 protocol description.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_signed_snapshot_verifies_and_tampering_is_caught(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    key = tmp_path / "keys" / "attest.key"
    pub, keyid = generate_key(key)
    assert (key.stat().st_mode & 0o777) == 0o600
    with pytest.raises(AttestationError, match="refusing to overwrite"):
        generate_key(key)
    snap = take_snapshot(str(venv.python), environ=clean_env, cache=cache)
    env = sign_statement(snap.to_statement(), key)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert env["signatures"][0]["keyid"] == keyid
    assert verify_envelope(env, pub)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(env))
    loaded = load_snapshot(path, key=pub)
    assert loaded.signed and loaded.verified is True
    assert loaded.snapshot == snap

    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["distributions"][0]["version"] = "9.9"
    forged = dict(env, payload=base64.b64encode(json.dumps(statement).encode()).decode())
    forged_path = tmp_path / "forged.json"
    forged_path.write_text(json.dumps(forged))
    bad = load_snapshot(forged_path, key=pub)
    assert bad.verified is False
    report = verify_environment(str(venv.python), environ=clean_env, cache=cache, baseline=bad)
    sig = [f for f in report.findings if f.rule_id == "TWA-SIG-001"]
    assert [f.severity for f in sig] == [Severity.CRITICAL]
    assert report.diff is None  # the forged baseline was not used

    other_key = tmp_path / "keys" / "other.key"
    other_pub, _ = generate_key(other_key)
    assert load_snapshot(path, key=other_pub).verified is False


def test_unsigned_baseline_with_key_required(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, tmp_path: Path
) -> None:
    venv = make_venv()
    snap = take_snapshot(str(venv.python), environ=clean_env, cache=cache)
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(snap.to_statement()))
    loaded = load_snapshot(path)
    assert not loaded.signed and loaded.verified is None
    report = verify_environment(
        str(venv.python),
        environ=clean_env,
        cache=cache,
        baseline=loaded,
        require_signature=True,
    )
    assert [f.severity for f in report.findings if f.rule_id == "TWA-SIG-002"] == [Severity.HIGH]


def test_malformed_snapshot_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AttestationError, match=r"bad\.json is not a snapshot \(not UTF-8 JSON"):
        load_snapshot(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "x"}))
    with pytest.raises(AttestationError, match="not a TrainWarden environment attestation"):
        load_snapshot(other)


@pytest.mark.parametrize(
    "row",
    [
        ["pkg/a.py", "bogus", None, None],  # a status no snapshot writes
        ["pkg/a.py", "ok", None],  # a field short
        ["pkg/a.py", "ok", None, None, "extra"],  # a field too many
    ],
)
def test_a_malformed_file_row_is_a_clear_error(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache, row: list[Any]
) -> None:
    statement = take_snapshot(
        str(make_venv().python), environ=clean_env, cache=cache
    ).to_statement()
    dist = next(d for d in statement["predicate"]["distributions"] if d["files"])
    dist["files"][0] = row
    with pytest.raises(AttestationError, match=r"snap\.json: malformed snapshot predicate"):
        Snapshot.from_statement(statement, "snap.json")


def test_node_to_node_diff_grouped_by_distribution(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    node_a, node_b = make_venv(), make_venv()
    (node_b.site / "twdemo" / "core.py").write_text("def step(x):\n    return x\n")
    (node_b.site / "twdemo" / "data.txt").unlink()
    (node_b.site / "stray.py").write_text("Y = 2\n")
    a = take_snapshot(str(node_a.python), environ=clean_env, cache=cache)
    b = take_snapshot(str(node_b.python), environ={**clean_env, "LD_PRELOAD": "x.so"}, cache=cache)
    d = diff_snapshots(a, b)
    assert not d.empty
    (demo,) = d.distributions
    assert demo.name == "twdemo" and demo.change == "files"
    assert [c[0] for c in demo.changed] == ["twdemo/core.py", "twdemo/data.txt"]
    assert [c[4] for c in demo.changed] == ["modified", "missing"]
    assert d.orphans == {"<site>/stray.py": (None, b.orphans[0].sha256)}
    assert d.environment == {"LD_PRELOAD": (None, "x.so")}
    # The venvs live at different prefixes; that alone is not a difference of content.
    assert "path" in d.interpreter and set(d.interpreter) == {"path"}
    rules = {f.rule_id for f in d.findings}
    assert rules == {"TWA-BASE-001", "TWA-BASE-007", "TWA-BASE-010", "TWA-BASE-011"}
    base1 = {(f.location, f.severity) for f in d.findings if f.rule_id == "TWA-BASE-001"}
    assert base1 == {
        ("twdemo:twdemo/core.py", Severity.CRITICAL),
        ("twdemo:twdemo/data.txt", Severity.HIGH),
    }
    # verify reports RECORD failures itself and leaves them out of the baseline findings.
    assert "TWA-BASE-001" not in {f.rule_id for f in d.baseline_findings(record_checked=True)}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
            "HOME": str(repo),
            "PATH": "/usr/bin:/bin",
        },
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_code_dir_records_commit_diff_and_untracked(tmp_path: Path, cache: HashCache) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('train')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-qm", "init")
    clean = code_state(repo, cache)
    assert clean.kind == "git" and clean.commit and len(clean.commit) == 40
    assert not clean.dirty
    (repo / "train.py").write_text("print('tampered')\n")
    edited = code_state(repo, cache)
    assert edited.dirty and edited.diff_sha256 != clean.diff_sha256
    assert edited.commit == clean.commit and edited.digest != clean.digest
    (repo / "helper.py").write_text("X = 1\n")
    untracked = code_state(repo, cache)
    assert set(untracked.files) == {"helper.py"}
    assert untracked.digest != edited.digest


def test_plain_code_dir_hashes_every_file(tmp_path: Path, cache: HashCache) -> None:
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "m.py").write_text("A = 1\n")
    (code / "run.py").write_text("import pkg.m\n")
    state = code_state(code, cache)
    assert state.kind == "files" and set(state.files) == {"pkg/m.py", "run.py"}
    (code / "run.py").write_text("import os\n")
    assert code_state(code, cache).digest != state.digest


def test_version_change_removal_and_new_files_against_a_baseline(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    import dataclasses

    from trainwarden.attest._record import FileStatus
    from trainwarden.attest._snapshot import DistFile

    venv = make_venv()
    base = take_snapshot(str(venv.python), environ=clean_env, cache=cache)
    (demo,) = base.distributions
    bumped = dataclasses.replace(demo, version="2.0")
    grown = dataclasses.replace(
        demo, files=(*demo.files, DistFile("twdemo/new.py", FileStatus.OK, "ab" * 32, None))
    )
    other = dataclasses.replace(demo, name="twother")
    cases = {
        "TWA-BASE-006": (base, dataclasses.replace(base, distributions=(bumped,))),
        "TWA-BASE-005": (dataclasses.replace(base, distributions=(demo, other)), base),
        "TWA-BASE-003": (base, dataclasses.replace(base, distributions=(grown,))),
    }
    for rule, (a, b) in cases.items():
        found = diff_snapshots(a, b).findings
        assert [f.rule_id for f in found] == [rule], rule
    assert [f.severity for f in diff_snapshots(*cases["TWA-BASE-006"]).findings] == [
        Severity.MEDIUM
    ]
