"""Weight and optimizer-state continuity, alert by alert, as the insider who edits between steps.

Each test runs a real model and optimizer under the monitor, edits a tensor (or replaces, adds or
removes one) where only the optimizer may write, and asserts the whole alert: which rule, which
boundary the message names, which tensors, and the fingerprints expected and found. The digests
the cross-rank exchange compares are checked the same way: two identical replicas agree field by
field, and one edit shows in exactly its own field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainwarden.monitor._types import Alert

from ._support import Run, mlp


def _alerts(run: Run, rule: str) -> list[Alert]:
    return [a for a in run.monitor.alerts if a.rule_id == rule]


def _post(run: Run) -> dict[str, Any]:
    """The fingerprints the weight check holds for the last step boundary, by name."""
    check: Any = run.monitor.check_named("weights")
    names, _ids, rows = check.post
    return dict(zip(names, rows, strict=True))


def test_an_edit_after_the_step_names_the_tensor_and_both_fingerprints(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2))
    seen: dict[str, Any] = {}

    def edit(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            seen.update(_post(run))
            with torch.no_grad():
                m[3].weight[0, 0] += 0.5
                m[0].bias[1] -= 0.5

    run.train(4, attack=edit)
    (a,) = _alerts(run, "TWM-WEIGHT-EDIT")
    assert a.step == 3
    assert a.message == (
        "between optimizer step and next forward: 2 tensor(s) changed outside the optimizer: "
        "0.bias, 3.weight"
    )
    assert a.evidence["tensors"] == ["0.bias", "3.weight"]
    fps = a.evidence["fingerprints"]
    assert set(fps) == {"0.bias", "3.weight"}
    for n in fps:
        assert fps[n]["expected"] == seen[n]
        assert fps[n]["actual"] != seen[n]
        assert fps[n]["actual"][1] == seen[n][1]  # same dtype and shape, other values
    assert _alerts(run, "TWM-WEIGHT-REPLACED") == []


def test_a_replaced_added_or_removed_tensor_is_named(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2))

    def swap(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            m[0].bias = nn.Parameter(m[0].bias.detach().clone())  # same values, new tensor
        if step == 3:
            m[3].register_buffer("planted", torch.zeros(2))
        if step == 5:
            del m[3].planted

    run.train(7, attack=swap)
    replaced = _alerts(run, "TWM-WEIGHT-REPLACED")
    assert [(a.step, a.evidence["tensors"]) for a in replaced] == [
        (2, ["0.bias"]),
        (4, ["3.planted"]),
        (6, ["3.planted"]),
    ]
    assert replaced[0].message == (
        "between optimizer step and next forward: tensors replaced, added or removed outside "
        "the optimizer: 0.bias"
    )
    # the replacement kept the values: no edit is reported for it, only the replacement
    assert _alerts(run, "TWM-WEIGHT-EDIT") == []
    assert "TWM-INTERNAL" not in run.rules()


def test_a_replaced_tensor_with_other_values_is_also_an_edit(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2))

    def swap(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            m[0].bias = nn.Parameter(m[0].bias.detach() + 1.0)

    run.train(3, attack=swap)
    assert [a.evidence["tensors"] for a in _alerts(run, "TWM-WEIGHT-REPLACED")] == [["0.bias"]]
    (edit,) = _alerts(run, "TWM-WEIGHT-EDIT")
    assert edit.evidence["tensors"] == ["0.bias"]
    assert "TWM-INTERNAL" not in run.rules()


def test_micro_batch_and_prestep_edits_name_their_boundary(make_run: Callable[..., Run]) -> None:
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2), accum=2)

    def between(step: int, m: Any, opt: Any) -> None:
        with torch.no_grad():
            if step == 2:
                m[0].weight[0, 0] += 0.25  # bumps the version counter
            if step == 4:
                m[3].bias.data[0] += 0.25  # does not: seen all the same

    run.train(6, between_micro=between)
    micro = _alerts(run, "TWM-WEIGHT-EDIT")
    said = (
        "between gradient-accumulation micro-batches: 1 tensor(s) changed outside the optimizer: "
    )
    assert [(a.step, a.message) for a in micro] == [(2, said + "0.weight"), (4, said + "3.bias")]
    pre = _alerts(run, "TWM-WEIGHT-EDIT-PRESTEP")
    what = "between forward and optimizer step: 1 tensor(s) changed outside the optimizer: "
    # the micro-batch edit is also seen against the forward's fingerprint at the step
    assert [(a.step, a.message) for a in pre] == [(2, what + "0.weight"), (4, what + "3.bias")]


def test_prestep_check_off_leaves_forward_to_step_edits_to_the_next_boundary(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    run = make_run(
        model, torch.optim.SGD(model.parameters(), lr=1e-2), accum=2, check_weights_prestep=False
    )

    def between(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            m[3].bias.data[0] += 0.25

    run.train(4, between_micro=between)
    assert _alerts(run, "TWM-WEIGHT-EDIT-PRESTEP") == []


def test_optimizer_state_edit_removal_and_addition_in_one_alert(
    make_run: Callable[..., Run],
) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    run = make_run(model, opt)
    seen: dict[str, Any] = {}

    def edit(step: int, m: Any, o: Any) -> None:
        if step == 2:
            check: Any = run.monitor.check_named("optimizer-state")
            seen.update(zip(*check.post, strict=True))
            o.state[m[0].weight]["momentum_buffer"].mul_(2.0)
            del o.state[m[3].bias]["momentum_buffer"]
            o.state[m[3].weight]["planted"] = torch.zeros(1)

    run.train(4, attack=edit)
    (a,) = _alerts(run, "TWM-OPTSTATE-EDIT")
    assert a.step == 3
    assert a.message == (
        "optimizer state changed between two steps: 1 tensor(s) edited: 0.weight:momentum_buffer;"
        " removed: 3.bias:momentum_buffer; added: 3.weight:planted"
    )
    ev = a.evidence
    assert ev["changed"] == ["0.weight:momentum_buffer"]
    assert ev["removed"] == ["3.bias:momentum_buffer"]
    assert ev["added"] == ["3.weight:planted"]
    fp = ev["fingerprints"]["0.weight:momentum_buffer"]
    assert fp["expected"] == seen["0.weight:momentum_buffer"] != fp["actual"]
    assert list(ev["fingerprints"]) == ["0.weight:momentum_buffer"]


def _replica(make_run: Callable[..., Run]) -> Run:
    torch.manual_seed(7)
    model = mlp()
    return make_run(model, torch.optim.Adam(model.parameters(), lr=1e-2), seed=3)


def _digests(run: Run) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for name in ("weights", "optimizer-state"):
        check: Any = run.monitor.check_named(name)
        out.update(check.digest())
    return out


def test_identical_replicas_agree_and_one_edit_shows_in_its_own_field(
    make_run: Callable[..., Run],
) -> None:
    a, b = _replica(make_run), _replica(make_run)
    a.train(3)
    b.train(3)
    da, db = _digests(a), _digests(b)
    params = [n for n, _ in a.model.named_parameters()]
    assert list(da) == [f"weight:{n}" for n in params] + ["optimizer_state"]
    assert da == db
    assert all(isinstance(v, int) and -(1 << 63) <= v < (1 << 63) for v in da.values())
    assert da["weight:0.weight"] == _post(a)["0.weight"][0]
    with torch.no_grad():
        b.model[0].weight[0, 0] += 1.0  # type: ignore[index]
    # lr 0 from here: the step moves no weight, so only the edited one can differ
    for r in (a, b):
        r.opt.param_groups[0]["lr"] = 0.0
    b.train(1)
    a.train(1)
    da, db = _digests(a), _digests(b)
    assert sorted(k for k in da if da[k] != db[k]) == ["optimizer_state", "weight:0.weight"]


def test_buffers_are_fingerprinted_but_not_exchanged(make_run: Callable[..., Run]) -> None:
    model = mlp(batchnorm=True)
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2))
    run.train(2)
    buffers = {n for n, _ in model.named_buffers()}
    assert buffers and buffers <= set(_post(run))
    assert not {k.removeprefix("weight:") for k in _digests(run)} & buffers


def test_records_carry_the_combined_hashes(make_run: Callable[..., Run]) -> None:
    from trainwarden.monitor._fingerprint import combine

    model = mlp()
    run = make_run(model, torch.optim.Adam(model.parameters(), lr=1e-2))
    run.train(2)
    w: Any = run.monitor.check_named("weights")
    s: Any = run.monitor.check_named("optimizer-state")
    rec: dict[str, Any] = {}
    w.record(rec)
    s.record(rec)
    assert rec == {
        "weights_hash": combine(w.post[0], w.post[2]),
        "state_hash": combine(*s.post),
    }
    assert s.digest() == [("optimizer_state", int(combine(*s.post)[:16], 16) - (1 << 63))]


def test_an_unchecked_step_forgets_the_boundary(make_run: Callable[..., Run]) -> None:
    # With check_every=2 every other step is not fingerprinted: nothing is compared against the
    # stale fingerprints of two steps ago, and no digest or hash is offered for it.
    model = mlp()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2), check_every=2)
    w: Any = run.monitor.check_named("weights")
    s: Any = run.monitor.check_named("optimizer-state")
    seen = []
    for _ in range(4):
        run.train(1)
        rec: dict[str, Any] = {}
        w.record(rec)
        s.record(rec)
        seen.append((run.monitor.step_checked, w.post is not None, bool(w.digest()), len(rec)))
    assert sorted(seen) == [(False, False, False, 0)] * 2 + [(True, True, True, 2)] * 2
    assert run.serious() == []


def _deep() -> nn.Sequential:
    # 31 layers, 62 parameters: more than the 10 names a message lists and the 50 evidence keeps
    return nn.Sequential(*[nn.Linear(8, 8) for _ in range(30)], nn.Linear(8, 1))


def _names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


def test_swapping_in_every_tensor_is_named_up_to_the_evidence_limits(
    make_run: Callable[..., Run],
) -> None:
    model = _deep()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-3))

    def swap_all(step: int, m: Any, opt: Any) -> None:
        if step == 1:  # the same values in new tensors: load_state_dict(assign=True)
            m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()}, assign=True)

    run.train(3, attack=swap_all)
    (a,) = _alerts(run, "TWM-WEIGHT-REPLACED")
    names = sorted(_names(model))
    assert a.message == (
        "between optimizer step and next forward: tensors replaced, added or removed outside "
        "the optimizer: " + ", ".join(names[:10])
    )
    assert a.evidence == {"tensors": names[:50]}
    assert _alerts(run, "TWM-WEIGHT-EDIT") == []
    assert "TWM-INTERNAL" not in run.rules()


def test_editing_every_tensor_is_counted_and_named_up_to_the_evidence_limits(
    make_run: Callable[..., Run],
) -> None:
    model = _deep()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-3))

    def edit_all(step: int, m: Any, opt: Any) -> None:
        if step == 1:
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.5)

    run.train(3, attack=edit_all)
    (a,) = _alerts(run, "TWM-WEIGHT-EDIT")
    names = _names(model)
    assert a.message == (
        "between optimizer step and next forward: 62 tensor(s) changed outside the optimizer: "
        + ", ".join(names[:10])
    )
    assert a.evidence["tensors"] == names[:50]
    assert list(a.evidence["fingerprints"]) == names[:10]
    assert "TWM-INTERNAL" not in run.rules()


def test_micro_batch_check_compares_parameters_not_running_statistics(
    make_run: Callable[..., Run],
) -> None:
    # BatchNorm's running statistics change in every training forward; between micro-batches
    # only the parameters are compared, at each later micro-batch.
    model = mlp(batchnorm=True)
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-2), accum=3)
    first = _names(model)[0]

    def between(step: int, m: Any, opt: Any) -> None:
        if step == 2:
            with torch.no_grad():
                dict(m.named_parameters())[first].view(-1)[0] += 0.25

    run.train(4, between_micro=between)
    micro = [a for a in _alerts(run, "TWM-WEIGHT-EDIT") if "micro-batches" in a.message]
    assert [(a.step, a.evidence["tensors"]) for a in micro] == [(2, [first]), (2, [first])]
    assert "TWM-INTERNAL" not in run.rules()


def test_every_optimizer_state_tensor_edited_removed_or_added_is_counted_within_limits(
    make_run: Callable[..., Run],
) -> None:
    model = _deep()
    run = make_run(model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    keys = [f"{n}:momentum_buffer" for n in _names(model)]

    def attack(step: int, m: Any, opt: Any) -> None:
        for p in m.parameters():
            if step == 1:
                opt.state[p]["momentum_buffer"].mul_(2.0)
            if step == 3:
                del opt.state[p]["momentum_buffer"]
            if step == 5:
                opt.state[p]["planted"] = torch.zeros(1)

    run.train(7, attack=attack)
    edited, removed, added = _alerts(run, "TWM-OPTSTATE-EDIT")
    ordered = sorted(keys)
    assert edited.message == (
        "optimizer state changed between two steps: 62 tensor(s) edited: " + ", ".join(ordered[:10])
    )
    assert edited.evidence["changed"] == ordered[:50]
    assert list(edited.evidence["fingerprints"]) == ordered[:10]
    assert removed.message == (
        "optimizer state changed between two steps: removed: " + ", ".join(ordered[:10])
    )
    assert removed.evidence["removed"] == ordered[:50]
    planted = sorted(f"{n}:planted" for n in _names(model))
    assert added.message == (
        "optimizer state changed between two steps: added: " + ", ".join(planted[:10])
    )
    assert added.evidence["added"] == planted[:50]
    assert "TWM-INTERNAL" not in run.rules()


def test_closure_steps_compare_parameters_and_buffers_between_two_steps() -> None:
    from trainwarden._internal.sink import MemorySink
    from trainwarden.monitor import watch

    model = mlp()
    model.register_buffer("scale", torch.ones(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 8)
    with watch(model, opt, sink=MemorySink(), watchdog=False) as mon:
        for step in range(5):

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss: torch.Tensor = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
                loss.backward()  # type: ignore[no-untyped-call]
                return loss

            opt.step(closure)
            if step == 2:
                model.scale.mul_(2.0)  # type: ignore[operator]
    edits = [a for a in mon.alerts if a.rule_id == "TWM-WEIGHT-EDIT"]
    assert [(a.step, a.message) for a in edits] == [
        (3, "between two optimizer steps: 1 tensor(s) changed outside the optimizer: scale")
    ]
    # The closure's forward runs inside step(), where the forward hooks stand aside (the step
    # compared the weights already): nothing fails on it.
    assert "TWM-INTERNAL" not in [a.rule_id for a in mon.alerts]
