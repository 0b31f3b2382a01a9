"""The dashboard's run model over a real SQLite ledger: what it derives from stored entries
(status, fingerprints, downsampled series) and what a writer cannot steer."""

from __future__ import annotations

import time
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from trainwarden.ledger._checkpoint import load_or_create_signer
from trainwarden.ledger._log import Ledger
from trainwarden.ledger._storage import open_storage
from trainwarden.ledger._types import Event, RunInfo
from trainwarden.service._dashboard.model import RunsModel, _Series, downsample, unwrap
from trainwarden.service._dashboard.sessions import SessionStore


def _ledger(tmp_path: Path) -> Ledger:
    signer = load_or_create_signer(tmp_path / "keys", "test/log")
    return Ledger(open_storage(f"sqlite:///{tmp_path / 'l.db'}"), signer)


def _run(ledger: Ledger, name: str, events: list[tuple[str, dict[str, Any]]]) -> RunInfo:
    run = RunInfo(f"run_{name}", name, time.time(), 60.0, 0, "open", {"owner": "bob"})
    ledger.storage.create_run(run)
    evs = [
        Event(seq=i + 1, kind=k, record=r, rank=r.get("rank"), host=f"node{r.get('rank', 0)}")
        for i, (k, r) in enumerate(events)
    ]
    for i in range(0, len(evs), 5000):
        ledger.append(run.run_id, "w", evs[i : i + 5000])
    return run


def _steps(ranks: int, steps: int, diverge: tuple[int, int] | None) -> list[Any]:
    out = []
    for s in range(1, steps + 1):
        for r in range(ranks):
            h = s if diverge is None or r != diverge[0] or s < diverge[1] else s + 99
            out.append(("step", {"step": s, "rank": r, "loss": 1.0 / s, "weights_hash": f"{h:x}"}))
    return out


def test_fingerprints_name_the_rank_that_diverged_and_from_which_step(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    run = _run(ledger, "fp", _steps(4, 60, diverge=(2, 37)))
    fp = RunsModel(ledger.storage).index(run).plots()[0]["fingerprint"]
    assert fp["ranks"] == 4
    assert fp["diverged"] == [{"rank": 2, "from_step": 37, "steps": 24}]
    clean = _run(ledger, "ok", _steps(4, 10, diverge=None))
    assert RunsModel(ledger.storage).index(clean).plots()[0]["fingerprint"]["diverged"] == []


def test_a_two_rank_tie_has_no_majority_so_both_ranks_disagree(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    run = _run(ledger, "tie", _steps(2, 10, diverge=(1, 4)))
    fp = RunsModel(ledger.storage).index(run).plots()[0]["fingerprint"]
    assert {d["rank"] for d in fp["diverged"]} == {0, 1}
    assert all(d["from_step"] == 4 for d in fp["diverged"])


def test_status_follows_the_worst_alert_and_unknown_severities_count_as_high(
    tmp_path: Path,
) -> None:
    ledger = _ledger(tmp_path)
    model = RunsModel(ledger.storage)
    _run(ledger, "warn", [("alert", {"rule_id": "R", "severity": "LOW", "step": 1})])
    _run(ledger, "bad", [("alert", {"rule_id": "R", "severity": "harmless", "step": 1})])
    clean = _run(ledger, "clean", _steps(1, 3, None))
    got = {s.run.name: s.status for s in model.summaries()}
    assert got == {"warn": "warnings", "bad": "tampering detected", "clean": "clean"}
    # Entries appended later are picked up by the next view.
    ledger.append(clean.run_id, "w", [Event(seq=4, kind="alert", record={"severity": "HIGH"})])
    assert model.index(clean).status() == "tampering detected"


def test_a_cut_noncanonical_record_still_yields_its_alert_fields() -> None:
    text = (
        '{"rule_id": "TWM-WEIGHT-EDIT", "severity": "CRITICAL", "step": 3, '
        '"message": "a \\"b\\"", "ev'
    )
    got = unwrap({"noncanonical": text})
    assert (got["rule_id"], got["severity"], got["step"]) == ("TWM-WEIGHT-EDIT", "CRITICAL", 3)
    assert got["message"] == 'a "b"'
    assert unwrap({"noncanonical": text, "other": 1}) == {"noncanonical": text, "other": 1}


def _series(values: list[float], start: int = 0) -> _Series:
    s = _Series()
    s.steps = array("q", range(start, start + len(values)))
    s.values = array("d", values)
    return s


def test_downsample_bounds_points_keeps_extremes_and_alert_steps() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=100_000).tolist()
    b = rng.normal(size=100_000).tolist()
    a[54_321] = 50.0
    b[77_777] = -50.0
    out = downsample({0: _series(a), 1: _series(b)}, {12_345, 99_999}, buckets=100)
    assert len(out["x"]) <= 4 * 100 + 2
    assert out["points"] == 100_000
    assert 12_345 in out["x"] and 99_999 in out["x"]
    i = out["x"].index(12_345)
    assert out["y"][0][i] == float(f"{a[12_345]:.6g}")
    assert max(v for v in out["y"][0] if v is not None) == 50.0
    assert min(v for v in out["y"][1] if v is not None) == -50.0
    assert out["x"] == sorted(out["x"])


def test_sessions_expire_and_die_with_their_token(tmp_path: Path) -> None:
    from trainwarden.ledger._types import Role
    from trainwarden.service._core import LedgerService, hash_token

    ledger = _ledger(tmp_path)
    service = LedgerService(ledger, deadman=False)
    token, info = service.issue_token(Role.reader, None)
    store = SessionStore(ledger.storage, ttl_s=0.3)
    sid, _ = store.open(hash_token(token), info.token_id, Role.reader)
    assert store.get(sid) is not None
    assert store.get(sid + "x") is None
    time.sleep(0.4)
    assert store.get(sid) is None
    long = SessionStore(ledger.storage, ttl_s=3600)
    sid, _ = long.open(hash_token(token), info.token_id, Role.reader)
    service.revoke(info.token_id)
    assert long.get(sid) is None


def test_a_huge_step_number_costs_one_row_not_its_range(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    events = _steps(2, 5, None)
    events.append(("step", {"step": 10**15, "rank": 0, "loss": 1.0, "weights_hash": "1"}))
    run = _run(ledger, "huge", events)
    plots, _ = RunsModel(ledger.storage).index(run).plots()
    loss = plots["metrics"]["loss"]
    assert loss["points"] == 6 and loss["x"][-1] == 10**15


def test_new_entries_are_in_the_next_view(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    run = _run(ledger, "live", _steps(2, 5, None))
    model = RunsModel(ledger.storage)
    for exact_limit in (4000, 0):
        assert model.index(run).plots(exact_limit=exact_limit)[0]["metrics"]["loss"]["x"][-1] == 5
    more = [
        Event(seq=11 + i, kind="step", record={"step": 6, "rank": i, "loss": 0.1}, rank=i)
        for i in range(2)
    ]
    ledger.append(run.run_id, "w", more)
    idx = model.index(run)
    for exact_limit in (4000, 0):
        loss = idx.plots(exact_limit=exact_limit)[0]["metrics"]["loss"]
        assert loss["x"][-1] == 6 and loss["y"][0][-1] == 0.1
    assert idx.summary().latest_step == 6


def test_run_page_shows_artifacts_with_sha256_and_verdicts_and_diffs_two_nodes(
    tmp_path: Path,
) -> None:
    import hashlib

    import pytest
    import torch

    import trainwarden
    from trainwarden.loading._types import UnsafeModelError
    from trainwarden.service._dashboard.routes import render_run_page, run_page_context
    from trainwarden.sink import MemorySink

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04cbuiltins\neval\n.")  # names eval, never calls it
    sink = MemorySink()
    trainwarden.load(good, sink=sink)
    with pytest.raises(UnsafeModelError):
        trainwarden.load(bad, sink=sink)
    events = list(sink.events)
    # What `trainwarden scan --hash` sends: one scan.item per file.
    from trainwarden.findings import Severity
    from trainwarden.scan._engine import scan_paths
    from trainwarden.scan._report import to_json

    doc = to_json(scan_paths([good], hash_files=True), Severity.HIGH)
    events += [("scan.item", item) for item in doc["files"]]
    assert any(k == "load" for k, _ in events)
    ledger = _ledger(tmp_path)
    run = RunInfo("run_art", "art", time.time(), 60.0, 0, "open", {})
    ledger.storage.create_run(run)
    # What a LedgerSink stores: the record made canonicalisable.
    from trainwarden.ledger._client import _safe_record

    evs = [
        Event(seq=i + 1, kind=k, record=_safe_record(r), host="nodeA")
        for i, (k, r) in enumerate(events)
    ]
    n = len(evs)
    for host, torch_v in (("nodeA", "2.13.0"), ("nodeB", "2.13.0+evil")):
        n += 1
        summary = {"distributions": 120, "orphans": 0, "torch": torch_v}
        evs.append(Event(n, "attest.verify", {"summary": summary, "findings": []}, host=host))
    ledger.append(run.run_id, "w", evs)
    idx = RunsModel(ledger.storage).index(run)
    html = render_run_page(idx)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert digest in html
    # the same bytes, loaded and scanned, each named by sha256; the scan found nothing (the load's
    # telemetry findings depend on what the process had imported before)
    named = {a["kind"]: a["verdict"] for a in idx.artifacts if a["sha256"] == digest}
    assert sorted(named) == ["load", "scan.item"]
    assert named["scan.item"] == "clean"
    refused = [a for a in idx.artifacts if a["kind"] == "load.refused"]
    assert [(a["path"], a["worst"]) for a in refused] == [(str(bad), "CRITICAL")]
    assert any(t.kind == "load.refused" and t.severity == "CRITICAL" for t in idx.timeline)
    assert idx.status() == "tampering detected"
    ctx = run_page_context(idx, "nodeA", "nodeB", 200)
    assert ctx["nodes"] == ["nodeA", "nodeB"]
    assert [d[0] for d in ctx["diff"]] == ["summary.torch"]


def test_hostile_names_and_messages_are_escaped_in_the_page(tmp_path: Path) -> None:
    from trainwarden.service._dashboard.routes import render_run_page

    ledger = _ledger(tmp_path)
    evil = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
    alert = {"rule_id": evil, "severity": "HIGH", "step": 1, "message": evil, "evidence": {evil: 1}}
    events: list[Any] = [("alert", alert), *_steps(1, 3, None)]
    run = _run(ledger, evil, events)
    html = render_run_page(RunsModel(ledger.storage).index(run))
    assert "<script>alert" not in html and "<img src=x" not in html
    assert html.count("<script") == 3  # uPlot, the page's script, the JSON data block


def test_the_services_own_flags_are_on_the_timeline(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    run = _run(ledger, "flags", _steps(1, 2, None))
    ledger.append_service(run.run_id, "ledger.sequence_gap", {"writer": "w", "got_seq": 9})
    ledger.append_service(run.run_id, "ledger.silence", {"ranks": [3]})
    ledger.append_service(run.run_id, "ledger.quota_exceeded", {"writer": "w"})
    ledger.append_service(run.run_id, "ledger.rate_limited", {"writer": "w"})
    ledger.append_service(run.run_id, "ledger.something_new", {})
    idx = RunsModel(ledger.storage).index(run)
    got = [(t.kind, t.severity) for t in idx.timeline]
    assert got == [
        ("ledger.sequence_gap", "HIGH"),
        ("ledger.silence", "MEDIUM"),
        ("ledger.quota_exceeded", "HIGH"),
        ("ledger.rate_limited", "MEDIUM"),
        ("ledger.something_new", "HIGH"),
    ]
    assert idx.status() == "tampering detected"


def test_a_rank_repeating_its_fingerprint_counts_once_and_one_reporting_two_disagrees(
    tmp_path: Path,
) -> None:
    # Rank 3 diverges from step 5 and repeats each of its reports five times (six reports
    # against the other three ranks' three); rank 1 sends a second fingerprint for step 7
    # before its honest one, which is the last it sent. Both the entries (a short run) and the
    # tallies kept at ingest (a long one) must name rank 3 alone from step 5, and rank 1 at 7.
    ledger = _ledger(tmp_path)

    def events(steps: int) -> list[Any]:
        out: list[Any] = [("step", {"step": 7, "rank": 1, "weights_hash": "abc"})]
        out += _steps(4, steps, diverge=(3, 5))
        out += [
            ("step", {"step": s, "rank": 3, "weights_hash": f"{s + 99:x}"})
            for s in range(5, steps + 1)
            for _ in range(5)
        ]
        return out

    for name, steps, source in (("short", 10, "entries"), ("long", 700, "rollup")):
        run = _run(ledger, name, events(steps))
        plot = RunsModel(ledger.storage).index(run).plots()[0]
        assert plot["source"] == source
        assert plot["fingerprint"]["diverged"] == [
            {"rank": 3, "from_step": 5, "steps": steps - 4},
            {"rank": 1, "from_step": 7, "steps": 1},
        ], name
