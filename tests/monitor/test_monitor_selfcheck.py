"""Switching the monitor off is observable: hooks removed, alert path or sink patched, close().

Written as the insider who read core.py: each attack silences a part of the monitor and then
edits a weight; the self-check must name the silencing, through a path the attack did not
reach, and the sink records must carry sequence numbers and the self-check digest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from trainwarden.monitor import Monitor
from trainwarden.monitor._checks.continuity import WeightContinuity

from ._support import Run, mlp


def _edit(step: int, m: Any, opt: Any) -> None:
    if step == 3:
        with torch.no_grad():
            m[0].weight.mul_(0.5)


def _tampered(run: Run) -> list[str]:
    return [
        p
        for a in run.monitor.alerts
        if a.rule_id == "TWM-MONITOR-TAMPERED"
        for p in a.evidence["problems"]
    ]


def test_removing_one_hook_is_named_at_the_next_step(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)

    def unhook(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            # The attacker finds the monitor's forward pre-hook by its owner and drops it.
            for hid, fn in list(m._forward_pre_hooks.items()):
                if getattr(fn, "__self__", None) is run.monitor:
                    del m._forward_pre_hooks[hid]

    run.train(5, attack=unhook)
    problems = _tampered(run)
    assert problems == ["the monitor's forward pre hook was removed"]
    alert = run.first("TWM-MONITOR-TAMPERED")
    assert alert.step == 4 and alert.severity.name == "CRITICAL"


class _ClaimsToBeAnyHook:
    """Does nothing when called, and says it equals whatever it is compared with."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_a_hook_replaced_by_an_object_claiming_equality_is_named(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)

    def swap(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            # The hook's slot stays, with an inert callable in it that compares equal to the
            # monitor's bound method.
            for hid, fn in list(m._forward_pre_hooks.items()):
                if getattr(fn, "__self__", None) is run.monitor:
                    m._forward_pre_hooks[hid] = _ClaimsToBeAnyHook()

    run.train(5, attack=swap)
    assert _tampered(run) == ["the monitor's forward pre hook was replaced by _ClaimsToBeAnyHook"]
    assert run.first("TWM-MONITOR-TAMPERED").step == 4


class _QuietContinuity(WeightContinuity):
    def _compare(self, *args: Any, **kwargs: Any) -> Any:
        return None


@pytest.mark.parametrize("how", ["class-swapped", "list-cleared", "list-rebound", "clock-rebound"])
def test_checks_switched_off_without_touching_code_are_named(
    make_run: Callable[..., Run], how: str
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)
    mon = run.monitor

    def attack(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            if how == "class-swapped":
                # No function of WeightContinuity changes: the instance now runs a subclass.
                (check,) = [c for c in mon.checks if type(c) is WeightContinuity]
                check.__class__ = _QuietContinuity
            elif how == "list-cleared":
                mon.checks.clear()
            elif how == "list-rebound":
                mon.checks = [c for c in mon.checks if type(c) is not WeightContinuity]
            else:
                mon.clock = type(mon.clock)(torch.device("cpu"))
        _edit(step, m, opt)

    run.train(5, attack=attack)
    problems = _tampered(run)
    expected = {
        "class-swapped": "the class of the monitor's WeightContinuity was changed to "
        "_QuietContinuity",
        "list-cleared": "the monitor's list of checks was changed (removed: StepIdentity,",
        "list-rebound": "Monitor.checks was replaced on the instance",
        "clock-rebound": "Monitor.clock was replaced on the instance",
    }[how]
    assert any(p.startswith(expected) for p in problems), problems
    assert run.first("TWM-MONITOR-TAMPERED").step == 4


def test_removing_every_hook_is_seen_by_the_background_self_check(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0.05)
    run.train(2)
    for h in run.monitor._handles:
        h.remove()  # no hook of the monitor runs any more: only its own thread can tell
    deadline = time.monotonic() + 30
    while not _tampered(run) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_tampered(run)) == 4
    kinds = [r["rule_id"] for k, r in run.sink.events if k == "alert"]
    assert "TWM-MONITOR-TAMPERED" in kinds


def test_patched_alert_path_is_reported_through_the_path_captured_at_watch(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)
    baseline = run.monitor.selfcheck_digest

    def silence(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            monkeypatch.setattr(Monitor, "alert", lambda self, *a, **k: None)
        _edit(step, m, opt)

    run.train(6, attack=silence)
    assert any("Monitor.alert was replaced" in p for p in _tampered(run))
    # The weight edit itself went into the patched (silent) alert path...
    assert "TWM-WEIGHT-EDIT" not in run.rules()
    # ...but every record written since carries a different self-check digest.
    steps = [r for k, r in run.sink.events if k == "step"]
    assert steps[0]["selfcheck"] == baseline
    assert steps[-1]["selfcheck"] != baseline


def test_shadowed_sink_and_patched_code_are_named(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)
    original = WeightContinuity._compare.__code__

    def attack(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            run.sink.emit = lambda kind, record: None  # type: ignore[method-assign]
            monkeypatch.setattr(
                WeightContinuity._compare, "__code__", (lambda self, *a, **k: None).__code__
            )
        _edit(step, m, opt)

    try:
        run.train(5, attack=attack)
    finally:
        WeightContinuity._compare.__code__ = original
    problems = _tampered(run)
    assert any("MemorySink.emit was shadowed on the instance" in p for p in problems)
    assert any("WeightContinuity._compare.__code__ was patched" in p for p in problems)
    # The report went to the sink through the class's own emit, captured at watch().
    assert any(r.get("rule_id") == "TWM-MONITOR-TAMPERED" for _, r in run.sink.events)


def test_every_record_carries_a_sequence_number_and_the_digest(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01))
    run.train(4)
    run.monitor.close()
    seqs = [r["seq"] for _, r in run.sink.events]
    assert seqs == list(range(1, len(seqs) + 1))
    digests = {r["selfcheck"] for k, r in run.sink.events if k != "monitor_start"}
    assert digests == {run.monitor.selfcheck_digest} and len(run.monitor.selfcheck_digest) == 16
    stop = next(r for k, r in run.sink.events if k == "monitor_stop")
    assert any("test_every_record_carries" in line for line in stop["caller"])
    assert _tampered(run) == []


def test_replacing_the_sink_is_named(make_run: Callable[..., Run]) -> None:
    from trainwarden._internal.sink import NullSink

    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)

    def swap(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            run.monitor.sink = NullSink()  # every later record goes nowhere
        _edit(step, m, opt)

    run.train(4, attack=swap)
    assert _tampered(run) == ["the monitor's sink was replaced by NullSink"]
    # Reported into the sink given at watch(), through its class's own emit.
    assert any(r.get("rule_id") == "TWM-MONITOR-TAMPERED" for _, r in run.sink.events)


def test_silencing_a_helper_the_checks_call_is_named(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainwarden.monitor._update_check import UpdateChecker

    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)

    def attack(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            monkeypatch.setattr(UpdateChecker, "verify", lambda self, opt, snaps: [])

    run.train(3, attack=attack)
    assert any("UpdateChecker.verify was replaced" in p for p in _tampered(run))


def test_first_watch_in_a_fresh_process_raises_no_tampering_alert() -> None:
    """The monitor's helper modules (the watchdog among them) may be imported after watch()
    takes its baseline; that is not tampering. Needs a fresh interpreter, where nothing of the
    monitor was imported before."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import torch
        from trainwarden import watch
        from trainwarden._internal.sink import MemorySink
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = watch(model, opt, sink=MemorySink())
        for _ in range(3):
            opt.zero_grad()
            model(torch.ones(2, 4)).sum().backward()
            opt.step()
        print(sorted({a.rule_id for a in mon.alerts}))
        mon.close()
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "TWM-MONITOR-TAMPERED" not in proc.stdout, proc.stdout
