"""Checks 1 and 2: weights, buffers and optimizer state may only change inside optimizer.step()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainwarden.findings import Severity

from ._support import Run, mlp


def test_weight_edited_between_steps_is_named_within_one_step(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-2))

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 5:
            with torch.no_grad():
                m[0].weight[3, 2] += 1e-4

    run.train(10, attack=edit)
    alert = run.first("TWM-WEIGHT-EDIT")
    assert alert.severity == Severity.CRITICAL
    assert alert.step == 6  # caught at the very next forward
    assert alert.evidence["tensors"] == ["0.weight"]
    assert [a.rule_id for a in run.serious()] == ["TWM-WEIGHT-EDIT"]


def test_edit_through_data_bypassing_version_counter_is_caught(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2))

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 3:
            m[3].bias.data[0] = m[3].bias.data[0] + 0.5

    run.train(6, attack=edit)
    assert run.first("TWM-WEIGHT-EDIT").evidence["tensors"] == ["3.bias"]


def test_swapped_elements_keep_the_sum_but_are_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2))

    def swap(step: int, m: Any, opt: Any) -> None:
        if step == 3:
            with torch.no_grad():
                w = m[0].weight
                a, b = w[0, 0].clone(), w[5, 5].clone()
                w[0, 0], w[5, 5] = b, a

    run.train(6, attack=swap)
    assert run.first("TWM-WEIGHT-EDIT").evidence["tensors"] == ["0.weight"]


def _wide() -> nn.Sequential:
    # 8 x 1024 = 8192 elements: above the hash's SMALL size, so the weight is hashed on its own
    # in chunks rather than with the small tensors.
    return nn.Sequential(nn.Linear(1024, 8), nn.ReLU(), nn.Linear(8, 1))


def _swap_every_step(step: int, m: Any, opt: Any) -> None:
    if step >= 2:
        with torch.no_grad():
            w = m[0].weight
            a, b = w[0, 0].clone(), w[5, 5].clone()
            w[0, 0], w[5, 5] = b, a


def test_swap_in_a_large_tensor_is_caught_at_the_first_boundary(
    make_run: Callable[..., Run],
) -> None:
    model = _wide()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2), width=1024)
    run.train(4, attack=_swap_every_step)
    alert = run.first("TWM-WEIGHT-EDIT")
    assert alert.evidence["tensors"] == ["0.weight"]
    assert alert.step == 3  # the swap after the 3rd step, seen at the 4th forward


def test_buffer_edit_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp(batchnorm=True)
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 4:
            m[1].running_var.mul_(3.0)

    run.train(8, attack=edit)
    assert run.first("TWM-WEIGHT-EDIT").evidence["tensors"] == ["1.running_var"]
    assert [a.rule_id for a in run.serious()] == ["TWM-WEIGHT-EDIT"]


def test_replaced_parameter_is_reported(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2))

    def replace(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            m[0].bias = nn.Parameter(m[0].bias.detach().clone())

    run.train(4, attack=replace)
    assert "0.bias" in run.first("TWM-WEIGHT-REPLACED").evidence["tensors"]


def test_edit_between_accumulation_micro_batches_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp(dropout=0.1)
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-3), accum=3)

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 4:
            with torch.no_grad():
                m[3].weight[0, 1] -= 0.25

    run.train(6, between_micro=edit)
    alert = run.first("TWM-WEIGHT-EDIT")
    assert "micro-batches" in alert.message
    assert alert.evidence["tensors"] == ["3.weight"]
    assert alert.step == 4


def test_data_edit_between_micro_batches_is_caught_at_the_step(
    make_run: Callable[..., Run],
) -> None:
    # `.data` writes do not bump the version counter: the pre-step fingerprint catches them.
    model = mlp()
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-3), accum=2)

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 3:
            m[0].weight.data[1, 1] += 0.1

    run.train(5, between_micro=edit)
    alert = run.first("TWM-WEIGHT-EDIT-PRESTEP")
    assert alert.evidence["tensors"] == ["0.weight"]
    assert alert.step == 3


def test_data_edit_undone_before_the_step_is_caught_at_the_micro_batch_it_reached(
    make_run: Callable[..., Run],
) -> None:
    # Written through `.data` (no version counter moves) before the second of three
    # micro-batches and undone before the third: only that micro-batch's gradient saw the
    # edit, and at step() the bits are the original ones again.
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2), accum=3)
    saved: list[torch.Tensor] = []

    def edit_then_undo(step: int, m: Any, opt: Any) -> None:
        if step != 3:
            return
        if not saved:
            saved.append(m[0].weight.data.clone())
            m[0].weight.data.mul_(5.0)
        else:
            m[0].weight.data.copy_(saved[0])

    run.train(5, between_micro=edit_then_undo)
    edits = [(a.step, a.evidence["tensors"]) for a in run.monitor.alerts]
    # Seen at the micro-batch the edit reached, and again when it was undone.
    assert edits == [(3, ["0.weight"]), (3, ["0.weight"])]
    assert {a.rule_id for a in run.monitor.alerts} == {"TWM-WEIGHT-EDIT"}
    assert all("micro-batches" in a.message for a in run.monitor.alerts)


def test_adam_state_edit_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.Adam(model.parameters(), lr=1e-3))

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 5:
            opt.state[m[3].weight]["exp_avg_sq"][0, 3] *= 4.0

    run.train(8, attack=edit)
    alert = run.first("TWM-OPTSTATE-EDIT")
    assert alert.evidence["changed"] == ["3.weight:exp_avg_sq"]
    assert alert.step == 6


def test_adam_step_counter_edit_is_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 5:
            opt.state[m[0].bias]["step"].fill_(1.0)

    run.train(8, attack=edit)
    assert run.first("TWM-OPTSTATE-EDIT").evidence["changed"] == ["0.bias:step"]


def test_momentum_buffer_edit_and_removal_are_caught(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 3:
            opt.state[m[0].weight]["momentum_buffer"].neg_()
        if step == 6:
            del opt.state[m[3].bias]["momentum_buffer"]

    run.train(9, attack=edit)
    alerts = [a for a in run.monitor.alerts if a.rule_id == "TWM-OPTSTATE-EDIT"]
    assert alerts[0].evidence["changed"] == ["0.weight:momentum_buffer"]
    assert alerts[1].evidence["removed"] == ["3.bias:momentum_buffer"]


def test_clean_gpt_with_buffers_raises_nothing(make_run: Callable[..., Run]) -> None:
    from ._support import TinyGPT

    model = TinyGPT()
    run = make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-3), gpt=True)
    run.train(30)
    assert run.serious() == []
    assert run.monitor.step == 30


def test_closure_steps_are_checked_at_the_step() -> None:
    from trainwarden._internal.sink import MemorySink
    from trainwarden.monitor import watch

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(16, 8)
    with watch(model, opt, sink=MemorySink(), watchdog=False, max_grad_norm=1e-9) as mon:
        for step in range(6):

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss: torch.Tensor = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
                loss.backward()  # type: ignore[no-untyped-call]
                return loss

            opt.step(closure)
            if step == 3:
                first: Any = model[0]
                with torch.no_grad():
                    first.weight[0, 0] += 1.0
    assert [a.rule_id for a in mon.alerts if a.severity >= Severity.MEDIUM] == ["TWM-WEIGHT-EDIT"]
    assert mon.alerts[-1].step == 4 and "between two optimizer steps" in mon.alerts[-1].message
    notes = [a for a in mon.alerts if a.evidence.get("check") == "update-check-closure"]
    assert len(notes) == 1


# Attacks on the hash by an insider who read it: edits of the whole tensor that keep sums,
# on a GPT whose tensors have sizes that are multiples of 512 (the old bit sum's blind spot).


def _gpt_run(make_run: Callable[..., Run], **config: Any) -> Run:
    from ._support import TinyGPT

    model = TinyGPT()
    return make_run(model, torch.optim.AdamW(model.parameters(), lr=1e-3), gpt=True, **config)


def test_sign_flip_of_an_adam_moment_is_caught_at_the_next_step(
    make_run: Callable[..., Run],
) -> None:
    run = _gpt_run(make_run)

    def flip(step: int, m: Any, opt: Any) -> None:
        if step == 4:
            opt.state[m.head.weight]["exp_avg"].neg_()  # 64 x 32 = 2048 elements: even count

    run.train(7, attack=flip)
    alert = run.first("TWM-OPTSTATE-EDIT")
    assert alert.evidence["changed"] == ["head.weight:exp_avg"]
    assert alert.step == 5  # the edit after the 5th step is seen at the 6th step()


def test_one_off_halving_of_a_weight_is_caught_every_time(make_run: Callable[..., Run]) -> None:
    # Caught at the first forward after the edit, whatever the key: no rotation, no luck.
    for seed in range(4):
        run = _gpt_run(make_run, seed=seed)

        def halve(step: int, m: Any, opt: Any) -> None:
            if step == 3:
                with torch.no_grad():
                    m.emb.weight.mul_(0.5)  # 64 x 32 = 2048 elements, a power of two

        run.train(5, attack=halve)
        alert = run.first("TWM-WEIGHT-EDIT")
        assert alert.evidence["tensors"] == ["emb.weight"] and alert.step == 4


def test_permuting_rows_of_the_embedding_is_caught(make_run: Callable[..., Run]) -> None:
    run = _gpt_run(make_run)

    def permute(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            with torch.no_grad():
                w = m.emb.weight
                w.copy_(w[torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))])

    run.train(4, attack=permute)
    assert run.first("TWM-WEIGHT-EDIT").evidence["tensors"] == ["emb.weight"]
