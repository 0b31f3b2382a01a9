"""A training loop that ends with an exception under ``watch()``: the watchdog records it (and,
in a multi-rank job, names the lost peers) before ``close()`` stops it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainwarden.monitor import watch


def test_exception_leaving_the_with_block_is_recorded_by_the_watchdog(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sink = tmp_path / "rank0.jsonl"
    with pytest.raises(RuntimeError, match="peer reset"), watch(model, opt, sink=sink):
        loss = model(torch.randn(2, 4)).sum()
        loss.backward()
        opt.step()
        raise RuntimeError("Connection reset by peer reset")
    recs = [json.loads(line) for line in sink.read_text().splitlines()]
    kinds = [r["kind"] for r in recs]
    crash = [r for r in recs if r["kind"] == "uncaught_exception"]
    assert crash and "peer reset" in crash[0]["error"]
    # Recorded before the monitor stopped.
    assert kinds.index("uncaught_exception") < kinds.index("monitor_stop")


def test_keyboard_interrupt_is_not_a_crash(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sink = tmp_path / "rank0.jsonl"
    with pytest.raises(KeyboardInterrupt), watch(model, opt, sink=sink):
        raise KeyboardInterrupt
    assert "uncaught_exception" not in sink.read_text()
