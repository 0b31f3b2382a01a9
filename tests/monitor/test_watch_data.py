"""``watch(..., data=DataSpec(...))``: a real training loop whose data is tampered with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trainwarden import watch
from trainwarden._internal.sink import MemorySink
from trainwarden.data import DataSpec, dataset_manifest
from trainwarden.findings import Severity


class Labelled(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(48, 4, generator=g)
        self.y = torch.arange(48) % 3

    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i].clone(), self.y[i].clone()


def train(
    steps: int, tamper: Callable[[int, Any], Any] | None = None, before: Any = None
) -> list[tuple[int, str]]:
    """Train a small classifier on the declared loader; (step, rule) of alerts >= MEDIUM."""
    torch.manual_seed(0)
    ds = Labelled()
    spec = DataSpec(ds, dataset_manifest(ds), batch_size=4, seed=3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if before is not None:
        before(spec)
    mon = watch(model, opt, data=spec, sink=MemorySink())
    try:
        it = iter(spec.loader())
        for s in range(steps):
            x, y = next(it)
            if tamper is not None:
                x, y = tamper(s, (x, y))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    finally:
        mon.close()
    return [(a.step, a.rule_id) for a in mon.alerts if a.severity >= Severity.MEDIUM]


def test_clean_declared_data_raises_nothing() -> None:
    assert train(10) == []


def test_inputs_edited_after_the_loader_are_caught_at_the_forward() -> None:
    def shuffle_rows(s: int, b: Any) -> Any:
        x, y = b
        return (x.flip(0), y) if s >= 4 else (x, y)

    found = train(8, shuffle_rows)
    assert found and found[0][1] == "TWM-DATA-MISMATCH"
    assert found[0][0] == 4


def test_a_dataset_patched_mid_run_is_caught_by_the_manifest() -> None:
    ds_state: dict[str, Any] = {}

    def relabel(s: int, b: Any) -> Any:
        if s == 3:
            spec = ds_state["spec"]
            spec.dataset.y[:] = (spec.dataset.y + 1) % 3  # labels flipped in memory
        return b

    found = train(8, relabel, before=lambda spec: ds_state.__setitem__("spec", spec))
    rules = {r for _, r in found}
    assert "TWM-DATA-TAMPERED" in rules


def test_a_reordering_sampler_is_caught_on_labels_and_inputs() -> None:
    from trainwarden.data import _verify as verify

    original = verify._DeclaredBatches.__iter__

    def reordered(self: Any) -> Any:
        for b in original(self):
            yield b[::-1]

    verify._DeclaredBatches.__iter__ = reordered  # type: ignore[method-assign]
    try:
        found = train(3)
    finally:
        verify._DeclaredBatches.__iter__ = original  # type: ignore[method-assign]
    assert (0, "TWM-DATA-MISMATCH") in found


def test_removing_the_monitors_loader_observer_is_reported() -> None:
    def detach(s: int, b: Any) -> Any:
        if s == 2:
            ds_state["spec"].observers.clear()  # the saboteur silences the label check
        return b

    ds_state: dict[str, Any] = {}
    found = train(6, detach, before=lambda spec: ds_state.__setitem__("spec", spec))
    assert (2, "TWM-DATA-UNVERIFIABLE") in found


def test_a_stale_batch_fed_again_is_caught_at_the_forward() -> None:
    extra: dict[str, Any] = {}

    def bypass(s: int, b: Any) -> Any:
        if s == 0:
            extra["b"] = b
        return extra["b"] if s == 3 else b  # a batch fed twice without the loader

    found = train(5, bypass)
    assert (3, "TWM-DATA-MISMATCH") in found
