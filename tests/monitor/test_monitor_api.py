"""watch() as a user sees it: hooks, sinks, fail-closed, fail-open, configuration errors."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trainwarden
from trainwarden._internal.sink import MemorySink
from trainwarden.findings import Severity
from trainwarden.monitor import MonitorConfig, MonitorError, TamperingDetected, watch
from trainwarden.monitor._fingerprint import Fingerprinter

from ._support import Run, mlp


def test_package_root_exports() -> None:
    assert trainwarden.watch is watch
    assert trainwarden.TamperingDetected is TamperingDetected
    alert = trainwarden.Alert("TWM-X", Severity.LOW, 1, 0, "m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        alert.step = 2  # type: ignore[misc]


def test_fail_closed_raises_at_the_next_boundary(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-2), fail_closed=True)

    def edit(step: int, m: Any, o: Any) -> None:
        if step == 3:
            with torch.no_grad():
                m[0].bias[0] += 1.0

    with pytest.raises(TamperingDetected) as info:
        run.train(10, attack=edit)
    assert run.monitor.step == 4  # the 5th forward never ran
    assert [a.rule_id for a in info.value.alerts] == ["TWM-WEIGHT-EDIT"]
    assert "tampering detected at step 4" in info.value.diagnostics()


def test_fail_closed_stops_a_sign_flipping_optimizer_before_its_second_step(
    make_run: Callable[..., Run],
) -> None:
    class FlipSGD(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            for g in self.param_groups:
                for p in g["params"]:
                    p.grad.neg_()
            return super().step(closure)

    model = mlp()
    run = make_run(model, FlipSGD(model.parameters(), lr=0.1), fail_closed=True)
    with pytest.raises(TamperingDetected):
        run.train(5)
    assert run.monitor.step == 1


def test_fail_open_turns_a_monitor_bug_into_an_alert() -> None:
    class FlakySink(MemorySink):
        """A sink whose own bug (not a patch of the monitor) fails on step records."""

        def emit(self, kind: str, record: Any) -> None:
            if kind == "step":
                raise RuntimeError("simulated monitor bug")
            super().emit(kind, record)

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 8)
    with watch(model, opt, sink=FlakySink(), fail_closed=True, watchdog=False) as mon:
        for _ in range(3):  # training is never interrupted by the monitor's own failure
            opt.zero_grad()
            nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)).backward()  # type: ignore[no-untyped-call]
            opt.step()
    internal = [a for a in mon.alerts if a.rule_id == "TWM-INTERNAL"]
    assert internal and "simulated monitor bug" in internal[0].message
    assert internal[0].severity == Severity.MEDIUM
    assert mon.step == 3


def test_patching_the_monitor_code_is_tampering_not_a_bug(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Fingerprinter, tensors: Any) -> torch.Tensor:
        raise RuntimeError("simulated monitor bug")

    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), fail_closed=True)
    monkeypatch.setattr(Fingerprinter, "compute", broken)
    with pytest.raises(TamperingDetected) as info:
        run.train(3)
    assert [a.rule_id for a in info.value.alerts] == ["TWM-MONITOR-TAMPERED"]
    assert "Fingerprinter.compute was replaced" in info.value.alerts[0].message


def test_close_removes_every_hook_and_wrapper() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seed_before = (torch.manual_seed, random.seed)
    mon = watch(model, opt, sink=torch_sink(), watchdog=False)
    assert model._forward_pre_hooks and opt._optimizer_step_pre_hooks
    mon.close()
    mon.close()  # idempotent
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert not opt._optimizer_step_pre_hooks
    # Only the lifeline's step counter stays: it reports training that goes on after close().
    assert mon._lifeline is not None
    assert list(opt._optimizer_step_post_hooks) == [mon._lifeline.handle_id]
    assert (torch.manual_seed, random.seed) == seed_before
    opt.step()
    assert mon.step == 0
    assert [a.rule_id for a in mon.alerts if a.rule_id != "TWM-UNSUPPORTED"] == [
        "TWM-MONITOR-CLOSED"
    ]


def torch_sink() -> Any:
    from trainwarden._internal.sink import MemorySink

    return MemorySink()


def test_default_sink_is_jsonl_per_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINWARDEN_MONITOR_DIR", str(tmp_path / "mon"))
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt, watchdog=False) as mon:
        for _ in range(3):
            loss = model(torch.randn(4, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        opt.param_groups[0]["lr"] = 1.0
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
    lines = [json.loads(x) for x in (tmp_path / "mon" / "rank0.jsonl").read_text().splitlines()]
    kinds = [x["kind"] for x in lines]
    assert kinds[0] == "monitor_start" and kinds[-1] == "monitor_stop"
    assert kinds.count("step") == 4 and "hparam" in kinds
    alert = next(x for x in lines if x["kind"] == "alert" and x["rule_id"] == "TWM-HP-CHANGE")
    assert alert["severity"] == "HIGH" and alert["step"] == 3 and "ts" in alert
    assert mon.records[-1]["step"] == 4


def test_sink_path_argument(tmp_path: Path) -> None:
    model = mlp()
    target = tmp_path / "run.jsonl"
    with watch(model, torch.optim.SGD(model.parameters(), lr=0.1), sink=target, watchdog=False):
        pass
    assert json.loads(target.read_text().splitlines()[0])["kind"] == "monitor_start"


def test_configuration_errors_are_clear() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(MonitorError, match=r"unknown monitor setting.*check_evry"):
        watch(model, opt, check_evry=2)
    with pytest.raises(MonitorError, match="update_check_fraction"):
        watch(model, opt, update_check_fraction=0.0, sink=torch_sink())
    with pytest.raises(MonitorError, match="sink must be"):
        watch(model, opt, sink=42)  # type: ignore[arg-type]
    with pytest.raises(MonitorError, match=r"torch\.optim\.Optimizer"):
        watch(model, "adam")  # type: ignore[arg-type]
    assert not model._forward_pre_hooks
    assert (
        MonitorConfig.from_kwargs({"fail_severity": "critical"}).fail_severity == Severity.CRITICAL
    )


def test_check_every_skips_unchecked_boundaries(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=0.01), check_every=2)

    def edit(step: int, m: Any, o: Any) -> None:
        if step in (2, 5):  # after step 3 (unchecked) and after step 6 (checked)
            with torch.no_grad():
                m[0].bias[0] += 1.0

    run.train(8, attack=edit)
    edits = [a.step for a in run.monitor.alerts if a.rule_id == "TWM-WEIGHT-EDIT"]
    assert edits == [6]


def test_checkpoint_digest_is_stable_and_recorded(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    run.train(2)
    a = run.monitor.checkpoint_digest()
    assert a == run.monitor.checkpoint_digest() and len(a) == 64
    run.train(1)
    assert run.monitor.checkpoint_digest() != a
    recs = [r for k, r in run.sink.events if k == "checkpoint"]
    assert [r["step"] for r in recs] == [2, 2, 3]


def test_hf_style_output_loss_is_picked_up_without_observe_loss() -> None:
    class WithLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": self.lin(x).pow(2).mean()}

    model = WithLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt, sink=torch_sink(), watchdog=False) as mon:
        out = model(torch.randn(3, 4))
        out["loss"].backward()
        opt.step()
    assert mon.records[-1]["loss"] == pytest.approx(out["loss"].item())


def test_code_guard_reports_patched_data_loading_once(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp()
    run = make_run(
        model, torch.optim.SGD(model.parameters(), lr=0.01), code_guard_every=2, code_guard=True
    )
    run.train(3)
    original = torch.utils.data.DataLoader.__iter__

    def reordering_iter(self: Any) -> Any:
        return original(self)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", reordering_iter)
    run.train(6)
    code = [a for a in run.monitor.alerts if a.rule_id == "TWM-CODE"]
    assert len(code) == 1, code
    assert code[0].severity == Severity.CRITICAL and code[0].step == 4
    assert "DataLoader.__iter__" in code[0].evidence["finding"]["location"]
