"""The self-check runs once more when the monitor is closed, while the hooks are still its own.

Written as the insider who removes every hook of the monitor: no hook of the monitor runs any
more, so only its background thread or its close() can tell. A run that ends before the thread
wakes (a fast loop, a loaded machine that delays the thread, or no thread at all) must still
report the removal: these tests turn the thread off, so the verdict cannot depend on timing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._support import Run, mlp


def _tampered(run: Run) -> list[str]:
    return [
        p
        for a in run.monitor.alerts
        if a.rule_id == "TWM-MONITOR-TAMPERED"
        for p in a.evidence["problems"]
    ]


def _unhook_all(step: int, m: Any, opt: Any) -> None:
    # What torch keeps in plain dicts, anyone can clear: every hook on the model and optimizer.
    if step == 1:
        for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
            getattr(opt, name).clear()
        for mod in m.modules():
            for name in ("_forward_pre_hooks", "_forward_hooks"):
                getattr(mod, name).clear()


def test_every_hook_removed_is_named_at_close_without_the_background_thread(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)
    run.train(4, attack=_unhook_all)
    assert _tampered(run) == []  # no hook of the monitor ran after the removal
    run.monitor.close()
    assert sorted(_tampered(run)) == sorted(
        f"the monitor's {w} hook was removed"
        for w in ("forward pre", "forward", "step pre", "step post")
    )
    alert = run.first("TWM-MONITOR-TAMPERED")
    assert "self-check at close" in alert.message and alert.severity.name == "CRITICAL"
    # Reported into the sink given at watch() before the monitor_stop record.
    kinds = [(k, r.get("rule_id")) for k, r in run.sink.events]
    assert kinds.index(("alert", "TWM-MONITOR-TAMPERED")) < kinds.index(("monitor_stop", None))


def test_with_block_exit_reports_hooks_removed_inside_it(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)
    with run.monitor:
        run.train(3, attack=_unhook_all)
    assert len(_tampered(run)) == 4


def test_a_clean_run_closed_raises_no_tampering_alert(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)
    with run.monitor:
        run.train(3)
    run.monitor.close()  # a second close is a no-op, not a second report
    assert _tampered(run) == []
    assert [k for k, _ in run.sink.events].count("monitor_stop") == 1


def test_close_called_mid_run_is_named_when_the_owning_block_ends(
    make_run: Callable[..., Run],
) -> None:
    import gc

    from trainwarden.monitor import Monitor

    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)

    def switch_off(step: int, m: Any, opt: Any) -> None:
        # The insider finds the monitor without a reference to it and closes it properly: no
        # hook is left to remove and close() itself says nothing.
        if step == 1:
            for obj in gc.get_objects():
                if type(obj) is Monitor and obj.model is m:
                    obj.close()

    with run.monitor:
        run.train(4, attack=switch_off)
        assert _tampered(run) == []  # nothing watched steps 3 and 4
    alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-MONITOR-TAMPERED"]
    assert len(alerts) == 1
    assert alerts[0].message.startswith("the monitor was closed at step 2 while training went on")
    assert alerts[0].evidence["changed_tensors"] == 4  # every weight and bias moved on
    assert any("switch_off" in line for line in alerts[0].evidence["caller"])
    assert any(r.get("rule_id") == "TWM-MONITOR-TAMPERED" for _, r in run.sink.events)


def test_closing_after_the_last_step_inside_the_block_is_not_tampering(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), selfcheck_interval_s=0)
    with run.monitor:
        run.train(3)
        run.monitor.close()
    assert _tampered(run) == []
