"""`attest diff --fleet`: every node's snapshot against the majority of all of them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainwarden.attest._cache import HashCache
from trainwarden.attest._fleet import fleet_diff
from trainwarden.attest._snapshot import Snapshot, take_snapshot
from trainwarden.findings import Severity

from .venvs import Venv

Cli = Callable[..., Any]  # the in-process `cli` fixture (tests/conftest.py)


def _fleet(
    make_venv: Callable[[], Venv], env: dict[str, str], cache: HashCache
) -> tuple[list[tuple[str, Snapshot]], Venv]:
    clean = make_venv()
    good = take_snapshot(str(clean.python), environ=env, cache=cache)
    odd_venv = make_venv()  # another node, at another prefix, with one edited file
    odd_venv.installed("twdemo/core.py").write_text("def step(x):\n    return x + 2\n")
    odd = take_snapshot(str(odd_venv.python), environ=env, cache=cache)
    nodes = [(f"node{i}.json", dataclasses.replace(good, host=f"node{i}")) for i in range(4)]
    nodes.insert(2, ("node-odd.json", dataclasses.replace(odd, host="node-odd")))
    return nodes, odd_venv


def test_the_odd_node_is_named_and_the_majority_is_clean(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    nodes, _ = _fleet(make_venv, clean_env, cache)
    report = fleet_diff(nodes)
    assert (report.nodes, report.groups, report.majority_nodes) == (5, 2, 4)
    assert [n.label for n in report.odd] == ["node-odd.json"]
    items = {k for k, _, _ in report.odd[0].differences}
    assert items == {"file:twdemo:twdemo/core.py"}
    findings = report.findings
    assert [(f.rule_id, f.severity, f.location) for f in findings] == [
        ("TWA-FLEET-001", Severity.HIGH, "node-odd.json")
    ]


def test_identical_fleet_has_no_odd_one(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    nodes, _ = _fleet(make_venv, clean_env, cache)
    same = [n for n in nodes if n[0] != "node-odd.json"]
    report = fleet_diff(same)
    assert report.odd == () and report.split == () and report.majority_nodes == 4


def test_a_split_fleet_has_no_majority_to_trust(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], cache: HashCache
) -> None:
    nodes, _ = _fleet(make_venv, clean_env, cache)
    odd = next(s for label, s in nodes if label == "node-odd.json")
    good = next(s for label, s in nodes if label == "node0.json")
    report = fleet_diff([("a", good), ("b", odd)])
    assert report.split == ("file:twdemo:twdemo/core.py",)
    assert [f.rule_id for f in report.findings] == ["TWA-FLEET-002"]


def test_cli_fleet_names_the_odd_one_and_exits_1(
    cli: Cli,
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
) -> None:
    nodes, _ = _fleet(make_venv, clean_env, cache)
    paths = []
    for label, snap in nodes:
        p = tmp_path / label
        p.write_text(json.dumps(snap.to_statement()))
        paths.append(str(p))
    r = cli(["attest", "diff", "--fleet", *paths, "--format", "json"])
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [n["host"] for n in doc["odd_ones_out"]] == ["node-odd"]
    assert doc["majority_nodes"] == 4
    r = cli(["attest", "diff", "--fleet", *[p for p in paths if "odd" not in Path(p).name]])
    assert r.returncode == 0, r.stderr
    assert "no odd ones out" in r.stdout
    r = cli(["attest", "diff", *paths[:3]])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # With a key, every node's snapshot must be signed by it.
    key = tmp_path / "k.key"
    assert cli(["attest", "keygen", str(key)]).returncode == 0
    r = cli(["attest", "diff", "--fleet", *paths, "--key", f"{key}.pub"])
    assert r.returncode == 2 and "not signed" in r.stderr and "Traceback" not in r.stderr


def test_verify_json_carries_the_subject_digests(
    cli: Cli, make_venv: Callable[[], Venv], tmp_path: Path
) -> None:
    venv = make_venv()
    env = {"TRAINWARDEN_CACHE_DIR": str(tmp_path / "cache")}
    r = cli(["attest", "verify", "--python", str(venv.python), "--format", "json"], env=env)
    doc = json.loads(r.stdout)
    names = [s["name"].split(":", 1)[0] for s in doc["subject"]]
    assert names == ["python", "environment"]
    snap = tmp_path / "s.json"
    cli(["attest", "snapshot", "--python", str(venv.python), "-o", str(snap)], env=env)
    subject = json.loads(snap.read_text())["subject"]
    # The same environment digest a snapshot of the unchanged environment records.
    assert doc["subject"][1]["digest"] == subject[1]["digest"]


def test_malformed_new_snapshot_fields_are_one_line_errors(
    cli: Cli,
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    cache: HashCache,
    tmp_path: Path,
) -> None:
    venv = make_venv()
    good = take_snapshot(str(venv.python), environ=clean_env, cache=cache).to_statement()
    a = tmp_path / "a.json"
    a.write_text(json.dumps(good))
    for field, value in (
        ("path_files", [["only-a-path"]]),
        ("shadows", [{"module": "x"}]),
        ("env_effects", [{"variable": "X", "severity": "BOGUS", "effect": "e"}]),
        ("bytecode", [[1, 2]]),
        ("bytecode_matches", ["not a sha256 digest"]),
        ("path_roots", "not a mapping"),
    ):
        bad = json.loads(json.dumps(good))
        bad["predicate"][field] = value
        b = tmp_path / f"bad-{field}.json"
        b.write_text(json.dumps(bad))
        for args in (
            ["attest", "diff", str(a), str(b)],
            ["attest", "diff", "--fleet", str(a), str(b)],
        ):
            r = cli(args)
            assert r.returncode == 2, (field, r.stdout, r.stderr)
            assert "Traceback" not in r.stderr and "malformed" in r.stderr, (field, r.stderr)
