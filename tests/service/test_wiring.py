"""Capabilities send their verdicts to the ledger when TRAINWARDEN_LEDGER_URL and
TRAINWARDEN_LEDGER_TOKEN are set, and `--ledger` refuses to run without them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainwarden.ledger import LedgerSink, open_storage
from trainwarden.sink import TeeSink

from .conftest import ROOT, Server


def test_scan_verdicts_reach_the_ledger(
    start_server: Callable[..., Server], run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    srv = start_server(extra=["--no-deadman"])
    run, token = srv.create_run(ranks=0)
    env = {
        "TRAINWARDEN_LEDGER_URL": srv.url,
        "TRAINWARDEN_LEDGER_TOKEN": token,
        "TRAINWARDEN_LEDGER_SPOOL": str(tmp_path / "spool"),
    }
    r = run_cli(["--ledger", "scan", str(ROOT / "examples")], env=env)
    assert r.returncode in (0, 1), r.stderr
    st = open_storage(srv.db_url)
    try:
        entries = [json.loads(e.entry) for e in st.iter_entries() if e.run == run]
    finally:
        st.close()
    kinds = [e["kind"] for e in entries]
    assert kinds.count("scan") == 1
    summary = next(e for e in entries if e["kind"] == "scan")
    assert summary["record"]["items"] == kinds.count("scan.item") > 0
    assert summary["host"] and isinstance(summary.get("ts"), float)


def test_ledger_flag_without_settings_is_a_usage_error(run_cli: Callable[..., Any]) -> None:
    r = run_cli(
        ["--ledger", "scan", str(ROOT / "examples")],
        env={"TRAINWARDEN_LEDGER_URL": "", "TRAINWARDEN_LEDGER_TOKEN": ""},
    )
    assert r.returncode == 2
    assert "TRAINWARDEN_LEDGER_URL" in r.stderr and "Traceback" not in r.stderr


def test_monitor_default_sink_includes_the_ledger(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from trainwarden.monitor._core import _resolve_sink

    monkeypatch.setenv("TRAINWARDEN_LEDGER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TRAINWARDEN_LEDGER_TOKEN", "tw_x")
    monkeypatch.setenv("TRAINWARDEN_LEDGER_SPOOL", str(tmp_path / "spool"))
    sink, owned = _resolve_sink(str(tmp_path / "rank0.jsonl"), 0)
    try:
        assert owned and isinstance(sink, TeeSink)
        assert any(isinstance(s, LedgerSink) for s in sink.sinks)
    finally:
        for s in sink.sinks if isinstance(sink, TeeSink) else ():
            if isinstance(s, LedgerSink):
                s.close(timeout=0.1)
            else:
                s.close()


def test_library_load_reaches_the_ledger(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """trainwarden.load() with no sink and no guard still logs to the configured ledger."""
    import os
    import subprocess
    import sys

    srv = start_server(extra=["--no-deadman"])
    run, token = srv.create_run(ranks=0)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "TRAINWARDEN_LEDGER_URL": srv.url,
        "TRAINWARDEN_LEDGER_TOKEN": token,
        "TRAINWARDEN_LEDGER_SPOOL": str(tmp_path / "spool"),
    }
    code = "import trainwarden, sys; trainwarden.load(sys.argv[1])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "examples" / "tiny_state_dict.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    st = open_storage(srv.db_url)
    try:
        entries = [json.loads(e.entry) for e in st.iter_entries() if e.run == run]
    finally:
        st.close()
    (load,) = [e for e in entries if e["kind"] == "load"]
    assert load["record"]["path"].endswith("tiny_state_dict.pt")
