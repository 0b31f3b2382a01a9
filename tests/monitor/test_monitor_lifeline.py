"""Training that goes on without the monitor is a HIGH alert: closed, detached, collected.

Written as the insider who read core.py and lifeline.py: each attack switches the monitor off by
a different door (close() from the training script, the ``with`` block left early, every hook
removed and the monitor dropped for the garbage collector, the lifeline's own hook and finalizer
removed too) and trains on. The lifeline's own hook, its finalizer or the exit check must name it.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import torch
from torch import nn

from trainwarden._internal.sink import MemorySink
from trainwarden.findings import Severity
from trainwarden.monitor import Monitor, watch
from trainwarden.monitor._types import Alert

from ._support import mlp

SRC = Path(__file__).resolve().parents[2] / "src"


def _step(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator) -> None:
    x = torch.randn(16, 8, generator=gen)
    loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()


def _closed(sink: MemorySink) -> list[dict[str, object]]:
    return [r for k, r in sink.events if k == "alert" and r["rule_id"] == "TWM-MONITOR-CLOSED"]


def _watch(model: nn.Module, opt: torch.optim.Optimizer, sink: MemorySink) -> Monitor:
    return watch(model, opt, sink=sink, watchdog=False, code_guard=False, selfcheck_interval_s=0)


def _switch_off(mon: Monitor) -> None:
    """Everything close() does except telling anyone: the private parts, one by one."""
    assert mon._selfcheck is not None
    mon._selfcheck.stop()
    for h in mon._handles:
        h.remove()
    for check in mon.checks:
        check.close()


def test_close_from_elsewhere_while_training_goes_on_is_high() -> None:
    model, gen, sink = mlp(), torch.Generator().manual_seed(0), MemorySink()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = _watch(model, opt, sink)
    for _ in range(3):
        _step(model, opt, gen)
    mon.close()  # a callback somewhere in the loop switches the monitor off
    for _ in range(4):
        _step(model, opt, gen)
    found = [a for a in mon.alerts if a.rule_id == "TWM-MONITOR-CLOSED"]
    assert len(found) == 1 and found[0].severity is Severity.HIGH
    assert found[0].evidence["event"] == "step"
    assert found[0].evidence["observed"] == 3 and found[0].evidence["unobserved"] == 1
    assert "after the monitor was closed (close(), at step 3)" in found[0].message
    # Written to the sink given at watch() after monitor_stop, through the captured emit.
    kinds = [k for k, _ in sink.events]
    assert kinds.index("monitor_stop") < len(kinds) - 1
    assert len(_closed(sink)) == 1


def test_steps_after_the_with_block_are_reported_and_eval_is_not() -> None:
    model, gen, sink = mlp(), torch.Generator().manual_seed(0), MemorySink()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with _watch(model, opt, sink) as mon:
        for _ in range(3):
            _step(model, opt, gen)
    with torch.no_grad():
        model(torch.randn(4, 8))  # evaluation after training is not training
    assert _closed(sink) == []
    _step(model, opt, gen)
    found = _closed(sink)
    assert len(found) == 1 and "(with, at step 3)" in str(found[0]["message"])
    assert found[0]["severity"] == "HIGH"
    assert [a.rule_id for a in mon.alerts if a.severity >= Severity.MEDIUM] == [
        "TWM-MONITOR-CLOSED"
    ]


def test_a_run_that_ends_cleanly_reports_nothing_even_at_exit() -> None:
    model, gen, sink = mlp(), torch.Generator().manual_seed(0), MemorySink()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with _watch(model, opt, sink) as mon:
        for _ in range(3):
            _step(model, opt, gen)
    assert mon._lifeline is not None
    mon._lifeline.at_exit()  # what the interpreter's exit handler runs
    assert _closed(sink) == []


def test_removing_only_the_monitor_hooks_is_seen_by_the_lifeline_hook() -> None:
    model, gen, sink = mlp(), torch.Generator().manual_seed(0), MemorySink()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = _watch(model, opt, sink)  # no background self-check: only the lifeline can tell
    for _ in range(2):
        _step(model, opt, gen)
    _switch_off(mon)
    _step(model, opt, gen)
    found = _closed(sink)
    assert len(found) == 1
    assert "without the monitor observing it" in str(found[0]["message"])
    mon.close()


def test_a_detached_monitor_dropped_for_the_garbage_collector_is_reported() -> None:
    model, gen, sink = mlp(), torch.Generator().manual_seed(0), MemorySink()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = _watch(model, opt, sink)
    for _ in range(3):
        _step(model, opt, gen)
    lifeline = mon._lifeline
    assert lifeline is not None
    # Detach the monitor, then drop the last reference: close() is never called.
    _switch_off(mon)
    ref = weakref.ref(mon)
    del mon
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())
    found = _closed(sink)
    assert len(found) == 1 and found[0]["evidence"]["event"] == "collected"  # type: ignore[index]
    assert "garbage-collected at step 3 without close()" in str(found[0]["message"])
    # Training on afterwards is reported too.
    _step(model, opt, gen)
    assert "after the monitor was garbage-collected" in str(_closed(sink)[-1]["message"])


def test_the_whole_training_dropped_with_its_monitor_is_not_an_attack() -> None:
    sink = MemorySink()
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = _watch(model, opt, sink)
    _step(model, opt, torch.Generator().manual_seed(0))
    _switch_off(mon)  # the checks hold the monitor through threads and wrappers otherwise
    del mon, model, opt
    gc.collect()
    assert _closed(sink) == []


def test_a_second_watch_of_the_same_optimizer_takes_over() -> None:
    model, gen = mlp(), torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first, second = MemorySink(), MemorySink()
    with _watch(model, opt, first):
        _step(model, opt, gen)
    with _watch(model, opt, second) as mon:
        for _ in range(3):
            _step(model, opt, gen)
    assert _closed(first) == [] and _closed(second) == []
    assert mon.step == 3


def test_every_hook_and_the_finalizer_removed_is_reported_at_exit(tmp_path: Path) -> None:
    """The attacker removes the lifeline's hook and detaches its finalizer as well; only the
    optimizer's own step counter, read at interpreter exit, still tells."""
    sink = tmp_path / "rank0.jsonl"
    code = textwrap.dedent(
        f"""
        import gc, torch
        from trainwarden import watch
        model = torch.nn.Linear(8, 1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        mon = watch(model, opt, sink={str(sink)!r}, watchdog=False, code_guard=False)
        def step():
            opt.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
        for _ in range(3):
            step()
        mon._selfcheck.stop()
        for h in mon._handles:
            h.remove()
        for c in mon.checks:
            c.close()
        opt._optimizer_step_post_hooks.clear()  # the lifeline's hook too
        mon._lifeline._finalizer.detach()
        del mon
        gc.collect()
        for _ in range(4):
            step()
        """
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in sink.read_text().splitlines()]
    found = [r for r in records if r["kind"] == "alert" and r["rule_id"] == "TWM-MONITOR-CLOSED"]
    assert len(found) == 1, records[-3:]
    assert found[0]["severity"] == "HIGH" and found[0]["evidence"]["event"] == "exit"
    assert found[0]["evidence"]["counter"] == 7
    assert found[0]["evidence"]["counter_at_last_observation"] == 3


def test_an_optimizer_without_a_step_counter_is_still_covered_by_the_hook() -> None:
    """Plain SGD keeps no ``step`` in its state, so the exit check cannot count its steps; the
    lifeline's hook still reports a step after close()."""
    model, gen, sink = mlp(), torch.Generator().manual_seed(0), MemorySink()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    mon = _watch(model, opt, sink)
    _step(model, opt, gen)
    mon.close()
    _step(model, opt, gen)
    assert [
        a.rule_id for a in mon.alerts if isinstance(a, Alert) and a.severity >= Severity.HIGH
    ] == ["TWM-MONITOR-CLOSED"]
