"""The update-rule check's decisions on real torch optimizers, as an insider who tampers inside
``optimizer.step()`` sees them: which parameters and elements are checked (secret, rotating,
complete), what the reference says an honest step writes, and how far a written value may be
from it before the step is called tampered (and with what evidence).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch

from trainwarden.monitor._update_check import (
    Mismatch,
    UpdateChecker,
    reference_adam,
    reference_kind,
    reference_sgd,
)


def _params(n: int, size: int = 6) -> list[tuple[str, torch.nn.Parameter, int]]:
    g = torch.Generator().manual_seed(0)
    return [
        (f"p{i}", torch.nn.Parameter(torch.randn(size, generator=g, dtype=torch.float64)), 0)
        for i in range(n)
    ]


def _grads(params: list[tuple[str, torch.nn.Parameter, int]], seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _, p, _ in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 -- reproducible here; the monitor's own rng is secret


def _checker(kind: str, params: list[Any], **kw: Any) -> UpdateChecker:
    args: dict[str, Any] = {"rng": _rng(5), "fraction": 1.0, "elems": 1000, "rtol": 1e-6}
    args.update(kw)
    return UpdateChecker(kind, params, **args)


def test_reference_kind_names_each_supported_optimizer_and_nothing_else() -> None:
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert reference_kind(torch.optim.AdamW(p)) == "adamw"
    assert reference_kind(torch.optim.Adam(p)) == "adam"
    assert reference_kind(torch.optim.SGD(p, lr=0.1)) == "sgd"
    assert reference_kind(torch.optim.RMSprop(p)) is None
    assert reference_kind(torch.optim.Adagrad(p)) is None


@pytest.mark.parametrize("n", [1, 5, 6, 7])
@pytest.mark.parametrize("fraction", [0.01, 0.34, 0.5, 1.0])
def test_every_parameter_is_checked_once_per_rotation(n: int, fraction: float) -> None:
    params = _params(n)
    c = _checker("sgd", params, fraction=fraction)
    per_step = max(1, math.ceil(fraction * n))
    rounds = [c._next_params() for _ in range(math.ceil(n / per_step))]
    assert all(len(r) == min(per_step, n) and len(set(r)) == len(r) for r in rounds)
    if n % per_step == 0:  # whole rotations: each parameter exactly once
        assert sorted(i for r in rounds for i in r) == list(range(n))
    assert set(range(n)) <= {i for r in rounds for i in r}


def test_the_order_is_secret_and_reshuffled_each_rotation() -> None:
    params = _params(8)
    orders = []
    for seed in (1, 2):
        c = _checker("sgd", params, rng=_rng(seed), fraction=0.125)
        orders.append([c._next_params()[0] for _ in range(16)])
    assert orders[0] != orders[1]
    for order in orders:
        assert sorted(order[:8]) == sorted(order[8:]) == list(range(8))
    assert any(o[:8] != o[8:] for o in orders)


def test_elements_are_a_keyed_sample_of_large_parameters_and_all_of_small_ones() -> None:
    params = [*_params(1, size=3), *_params(1, size=50)]
    params[1] = ("big", params[1][1], 0)
    _grads(params)
    opt = torch.optim.SGD([p for _, p, _ in params], lr=0.1)
    c = _checker("sgd", params, elems=4)
    snaps = {s.name: s for s in c.snapshot(opt)}
    assert snaps["p0"].index.tolist() == [0, 1, 2]
    big = snaps["big"].index.tolist()
    assert len(big) == 4 and big == sorted(set(big)) and all(0 <= i < 50 for i in big)
    c2 = _checker("sgd", params, elems=4, rng=_rng(99))
    assert any(
        s.index.tolist() != big for _ in range(3) for s in c2.snapshot(opt) if s.name == "big"
    )


def test_the_snapshot_copies_values_state_and_hyperparameters_before_the_step() -> None:
    params = _params(2)
    _grads(params)
    opt = torch.optim.Adam([p for _, p, _ in params], lr=torch.tensor(0.01), capturable=False)
    opt.step()
    _grads(params, seed=2)
    c = _checker("adam", params)
    snaps = c.snapshot(opt)
    assert sorted(s.name for s in snaps) == ["p0", "p1"]
    s = snaps[0]
    p = s.param
    assert torch.equal(s.weights, p.detach().reshape(-1)[s.index].double())
    assert torch.equal(s.grad, p.grad.reshape(-1)[s.index].double())  # type: ignore[union-attr]
    st = opt.state[p]
    assert set(s.state) == {"step", "exp_avg", "exp_avg_sq"}
    assert torch.equal(s.state["exp_avg"], st["exp_avg"].reshape(-1)[s.index].double())
    assert s.state["step"].tolist() == [1.0]
    assert "params" not in s.hyper and s.group == 0
    lr = opt.param_groups[0]["lr"]
    assert s.hyper["lr"] is not lr and float(s.hyper["lr"]) == pytest.approx(0.01)
    lr.fill_(0.5)  # changed in place after the snapshot: the copy keeps the old value
    assert float(s.hyper["lr"]) == pytest.approx(0.01)
    st["step"].fill_(7.0)
    assert s.state["step"].tolist() == [1.0]


def test_parameters_without_a_dense_gradient_or_elements_are_not_snapshotted() -> None:
    params = _params(3)
    params.append(("empty", torch.nn.Parameter(torch.zeros(0, dtype=torch.float64)), 0))
    _grads(params)
    params[1][1].grad = None
    params[2][1].grad = torch.zeros(6, dtype=torch.float64).to_sparse()
    opt = torch.optim.SGD([p for _, p, _ in params], lr=0.1)
    assert [s.name for s in _checker("sgd", params).snapshot(opt)] == ["p0"]


@pytest.mark.parametrize(
    ("cls", "kind", "cfg"),
    [
        (torch.optim.SGD, "sgd", {"lr": 0.1}),
        (torch.optim.SGD, "sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
        (torch.optim.SGD, "sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        (torch.optim.SGD, "sgd", {"lr": 0.1, "weight_decay": 0.1, "maximize": True}),
        (torch.optim.Adam, "adam", {"lr": 0.01}),
        (torch.optim.Adam, "adam", {"lr": 0.01, "weight_decay": 0.1}),
        (torch.optim.Adam, "adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
        (torch.optim.Adam, "adam", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
        (
            torch.optim.Adam,
            "adam",
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
        (torch.optim.AdamW, "adamw", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
        (torch.optim.AdamW, "adamw", {"lr": 0.01, "betas": (0.5, 0.6), "eps": 1e-3}),
    ],
)
def test_honest_steps_pass_and_any_tampering_is_named(
    cls: type[torch.optim.Optimizer], kind: str, cfg: dict[str, Any]
) -> None:
    params = _params(3)
    opt = cls([p for _, p, _ in params], **cfg)
    c = _checker(kind, params)
    for step in range(4):
        _grads(params, seed=step)
        snaps = c.snapshot(opt)
        opt.step()
        assert c.verify(opt, snaps) == [], (step, cfg)
    # the update of p1 halved: named with the elements, expected, actual and before values
    _grads(params, seed=9)
    snaps = c.snapshot(opt)
    p1 = params[1][1]
    before = p1.detach().clone()
    opt.step()
    with torch.no_grad():
        p1.copy_(before + (p1 - before) * 0.5)
    (mm,) = c.verify(opt, snaps)
    assert (mm.name, mm.what, mm.sign_flip) == ("p1", "update", False)
    assert mm.indices == list(range(5))  # the first five bad elements
    assert mm.actual == p1.detach()[:5].tolist()
    assert mm.before == before[:5].tolist()
    exp = [b + 2 * (a - b) for a, b in zip(mm.actual, mm.before, strict=True)]
    assert mm.expected == pytest.approx(exp, rel=1e-9, abs=1e-12)
    assert mm.scale == pytest.approx(max(abs(e - b) for e, b in zip(exp, mm.before, strict=True)))
    assert mm.max_error == pytest.approx(mm.scale / 2, rel=1e-6)
    assert mm.hyper["lr"] == cfg["lr"] and "params" not in mm.hyper


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_an_update_pointing_the_other_way_is_a_sign_flip(kind: str) -> None:
    params = _params(2)
    ps = [p for _, p, _ in params]
    opt: torch.optim.Optimizer = (
        torch.optim.SGD(ps, lr=0.1) if kind == "sgd" else torch.optim.Adam(ps, lr=0.01)
    )
    c = _checker(kind, params)
    _grads(params)
    snaps = c.snapshot(opt)
    before = [p.detach().clone() for p in ps]
    opt.step()
    with torch.no_grad():
        for p, b in zip(ps, before, strict=True):
            p.copy_(b - (p - b))
    found = c.verify(opt, snaps)
    assert sorted((m.name, m.what, m.sign_flip) for m in found) == [
        ("p0", "update", True),
        ("p1", "update", True),
    ]


def test_tampered_optimizer_state_is_named_by_its_key() -> None:
    params = _params(2)
    opt = torch.optim.Adam([p for _, p, _ in params], lr=0.01)
    c = _checker("adam", params)
    _grads(params)
    opt.step()
    _grads(params, seed=3)
    snaps = c.snapshot(opt)
    opt.step()
    st = opt.state[params[0][1]]
    before = st["exp_avg_sq"].clone()
    st["exp_avg_sq"].mul_(3.0)  # the update was honest, the state written for later is not
    (mm,) = c.verify(opt, snaps)
    assert (mm.name, mm.what, mm.sign_flip) == ("p0", "exp_avg_sq", False)
    assert mm.actual == st["exp_avg_sq"][:5].tolist()
    assert mm.expected == pytest.approx(before[:5].tolist(), rel=1e-9)


def test_state_of_another_shape_is_not_compared() -> None:
    params = _params(1)
    opt = torch.optim.SGD([params[0][1]], lr=0.1, momentum=0.9)
    c = _checker("sgd", params)
    _grads(params)
    snaps = c.snapshot(opt)
    opt.step()
    opt.state[params[0][1]]["momentum_buffer"] = torch.zeros(2, dtype=torch.float64)
    assert c.verify(opt, snaps) == []


def test_rounding_of_a_float32_write_is_not_tampering_but_an_ulp_more_on_a_tiny_update_is() -> None:
    p = torch.nn.Parameter(torch.full((4,), 1.0, dtype=torch.float32))
    params = [("w", p, 0)]
    opt = torch.optim.SGD([p], lr=1.0)
    c = _checker("sgd", params, rtol=1e-3)
    p.grad = torch.full((4,), 1e-3, dtype=torch.float32)
    snaps = c.snapshot(opt)
    opt.step()
    assert c.verify(opt, snaps) == []  # float32 rounding of 0.999 is within a few ulps
    p.grad = torch.full((4,), 0.25, dtype=torch.float32)
    snaps = c.snapshot(opt)
    opt.step()
    with torch.no_grad():
        p.add_(1e-4)  # 1e-4 off an update of 0.25: 4e-4 of it, within rtol 1e-3
    assert c.verify(opt, snaps) == []
    p.grad = torch.full((4,), 0.25, dtype=torch.float32)
    snaps = c.snapshot(opt)
    opt.step()
    with torch.no_grad():
        p.add_(1e-3)  # 4e-3 of the update: beyond rtol
    (mm,) = c.verify(opt, snaps)
    assert mm.what == "update" and mm.indices == [0, 1, 2, 3]


def test_a_nan_gradient_is_numerics_business_not_tampering() -> None:
    params = _params(1)
    opt = torch.optim.SGD([params[0][1]], lr=0.1)
    c = _checker("sgd", params)
    params[0][1].grad = torch.full((6,), math.nan, dtype=torch.float64)
    snaps = c.snapshot(opt)
    opt.step()
    assert c.verify(opt, snaps) == []


def test_reference_sgd_first_momentum_step_copies_the_gradient() -> None:
    p = torch.tensor([1.0, 2.0], dtype=torch.float64)
    g = torch.tensor([0.5, -1.0], dtype=torch.float64)
    new_p, st = reference_sgd(p, g, {}, {"lr": 0.1, "momentum": 0.9, "dampening": 0.5})
    assert st["momentum_buffer"].tolist() == [0.5, -1.0]
    assert new_p.tolist() == pytest.approx([0.95, 2.1])
    new_p, st = reference_sgd(p, g, {"momentum_buffer": g * 2}, {"lr": 0.1, "momentum": 0.9})
    assert st["momentum_buffer"].tolist() == pytest.approx([0.9 + 0.5, -1.8 - 1.0])
    new_p, st = reference_sgd(p, g, {}, {"lr": 0.1})
    assert st == {} and new_p.tolist() == pytest.approx([0.95, 2.1])


def test_reference_adam_amsgrad_keeps_the_running_maximum() -> None:
    p = torch.tensor([1.0], dtype=torch.float64)
    g = torch.tensor([0.1], dtype=torch.float64)
    hp = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": True}
    state = {
        "step": torch.tensor([3.0], dtype=torch.float64),
        "exp_avg": torch.tensor([0.2], dtype=torch.float64),
        "exp_avg_sq": torch.tensor([0.5], dtype=torch.float64),
        "max_exp_avg_sq": torch.tensor([0.9], dtype=torch.float64),
    }
    new_p, st = reference_adam(p, g, state, hp, decoupled=False)
    v = 0.999 * 0.5 + 0.001 * 0.01
    m = 0.9 * 0.2 + 0.1 * 0.1
    assert st["exp_avg_sq"].item() == pytest.approx(v)
    assert st["max_exp_avg_sq"].item() == pytest.approx(0.9)
    t = 4.0
    expected = 1.0 - (0.1 / (1 - 0.9**t)) * m / (math.sqrt(0.9) / math.sqrt(1 - 0.999**t) + 1e-8)
    assert new_p.item() == pytest.approx(expected, rel=1e-12)


def test_mismatch_evidence_keeps_plain_hyperparameters_only() -> None:
    params = _params(1)
    opt = torch.optim.SGD([params[0][1]], lr=0.1, momentum=0.5)
    opt.param_groups[0]["note"] = object()  # something a user hung on the group
    opt.param_groups[0]["tag"] = "x"
    c = _checker("sgd", params)
    _grads(params)
    snaps = c.snapshot(opt)
    opt.step()
    with torch.no_grad():
        params[0][1].add_(1.0)
    (mm,) = c.verify(opt, snaps)
    assert isinstance(mm, Mismatch)
    assert "note" not in mm.hyper and "tag" not in mm.hyper
    assert mm.hyper["lr"] == 0.1 and mm.hyper["momentum"] == 0.5
    assert mm.hyper["nesterov"] is False and "foreach" in mm.hyper and mm.hyper["foreach"] is None


@pytest.mark.parametrize(
    ("cls", "kind"),
    [(torch.optim.SGD, "sgd"), (torch.optim.Adam, "adam"), (torch.optim.AdamW, "adamw")],
)
def test_a_weight_decay_of_exactly_one_is_applied(cls: Any, kind: str) -> None:
    params = _params(2)
    opt: torch.optim.Optimizer = cls([p for _, p, _ in params], lr=0.01, weight_decay=1.0)
    c = _checker(kind, params)
    for step in range(3):
        _grads(params, seed=step)
        snaps = c.snapshot(opt)
        opt.step()
        assert c.verify(opt, snaps) == []


def test_a_tampered_first_moment_is_named_and_its_before_value_kept() -> None:
    params = _params(1)
    p = params[0][1]
    opt = torch.optim.Adam([p], lr=0.01)
    c = _checker("adam", params)
    _grads(params)
    opt.step()
    before = opt.state[p]["exp_avg"].clone()
    _grads(params, seed=4)
    snaps = c.snapshot(opt)
    opt.step()
    honest = opt.state[p]["exp_avg"].clone()
    opt.state[p]["exp_avg"].neg_()
    (mm,) = c.verify(opt, snaps)
    assert (mm.name, mm.what) == ("p0", "exp_avg")
    assert mm.before == before[:5].tolist()
    assert mm.expected == pytest.approx(honest[:5].tolist(), rel=1e-9)


def test_a_state_entry_of_another_shape_does_not_hide_the_next_one() -> None:
    params = _params(1)
    p = params[0][1]
    opt = torch.optim.Adam([p], lr=0.01)
    c = _checker("adam", params)
    _grads(params)
    snaps = c.snapshot(opt)
    opt.step()
    opt.state[p]["exp_avg"] = torch.zeros(2, dtype=torch.float64)
    opt.state[p]["exp_avg_sq"].mul_(5.0)
    assert [(m.name, m.what) for m in c.verify(opt, snaps)] == [("p0", "exp_avg_sq")]


def test_state_wiped_inside_the_step_is_left_to_the_continuity_check() -> None:
    params = _params(1)
    p = params[0][1]
    opt = torch.optim.Adam([p], lr=0.01)
    c = _checker("adam", params)
    _grads(params)
    snaps = c.snapshot(opt)
    opt.step()
    opt.state.pop(p)
    assert c.verify(opt, snaps) == []


def test_float32_rounding_of_tiny_and_of_large_values_is_not_tampering() -> None:
    for value, update in ((1.0, 1e-7), (1000.0, 1e-3)):
        p = torch.nn.Parameter(torch.full((4,), value, dtype=torch.float32))
        params = [("w", p, 0)]
        opt = torch.optim.SGD([p], lr=1.0)
        c = _checker("sgd", params, rtol=1e-6)
        p.grad = torch.full((4,), update, dtype=torch.float32)
        snaps = c.snapshot(opt)
        opt.step()
        assert c.verify(opt, snaps) == [], (value, update)


def test_the_allowance_for_an_element_the_step_must_not_move() -> None:
    # lr 0: nothing may move. The allowance is 4 eps of the value (6 eps at 1.5, where floats
    # are eps apart), plus 1e-30 for zeros.
    params = [("w", torch.nn.Parameter(torch.tensor([0.0, 1.5], dtype=torch.float64)), 0)]
    p = params[0][1]
    opt = torch.optim.SGD([p], lr=0.0)
    c = _checker("sgd", params)
    eps = torch.finfo(torch.float64).eps
    for zero_move, one_move, flagged in (
        (0.0, 0.0, False),
        (1e-30, 6 * eps, False),
        (2e-30, 0.0, True),
        (0.0, 7 * eps, True),
    ):
        p.grad = torch.ones(2, dtype=torch.float64)
        snaps = c.snapshot(opt)
        opt.step()
        with torch.no_grad():
            p.copy_(torch.tensor([zero_move, 1.5 + one_move], dtype=torch.float64))
        found = c.verify(opt, snaps)
        assert bool(found) is flagged, (zero_move, one_move)
        assert all(not m.sign_flip for m in found)  # no update to flip
        with torch.no_grad():
            p.copy_(torch.tensor([0.0, 1.5], dtype=torch.float64))


def test_a_shrunk_update_is_not_a_sign_flip_but_a_reversed_one_is() -> None:
    params = [("w", torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)), 0)]
    p = params[0][1]
    opt = torch.optim.SGD([p], lr=1.0)
    c = _checker("sgd", params)
    for moved, flip in (([-1e-3, 10.0], False), ([-1.0, -1.0], True)):
        with torch.no_grad():
            p.zero_()
        p.grad = -torch.ones(2, dtype=torch.float64)  # the honest update is +1, +1
        snaps = c.snapshot(opt)
        opt.step()
        with torch.no_grad():
            p.copy_(torch.tensor(moved, dtype=torch.float64))
        (mm,) = c.verify(opt, snaps)
        assert mm.sign_flip is flip, moved


def test_tensor_hyperparameters_reach_the_evidence_as_numbers() -> None:
    params = _params(1)
    opt = torch.optim.Adam([params[0][1]], lr=torch.tensor(0.01))
    c = _checker("adam", params)
    _grads(params)
    snaps = c.snapshot(opt)
    opt.step()
    with torch.no_grad():
        params[0][1].add_(1.0)
    (mm,) = c.verify(opt, snaps)
    assert type(mm.hyper["lr"]) is float and mm.hyper["lr"] == pytest.approx(0.01)


def test_float32_adam_state_rounding_is_not_tampering() -> None:
    # The moments are written in float32: their last-bit rounding against the float64
    # reference is allowed for, as it is for the weights.
    p = torch.nn.Parameter(torch.linspace(-3.0, 3.0, 64, dtype=torch.float32))
    params = [("w", p, 0)]
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.999))
    c = _checker("adam", params, rtol=1e-6, elems=64)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        p.grad = torch.randn(64, generator=g, dtype=torch.float32) * 1e-3
        snaps = c.snapshot(opt)
        opt.step()
        assert c.verify(opt, snaps) == []


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_the_reference_for_float32_parameters_is_computed_in_float64(kind: str) -> None:
    # The evidence's expected values are the float64 reference, not a float32 re-rounding.
    g = torch.Generator().manual_seed(11)
    p = torch.nn.Parameter(torch.randn(8, generator=g, dtype=torch.float32))
    params = [("w", p, 0)]
    opt: torch.optim.Optimizer = (
        torch.optim.SGD([p], lr=0.1)
        if kind == "sgd"
        else torch.optim.AdamW([p], lr=0.01, weight_decay=0.1)
    )
    c = _checker(kind, params)
    p.grad = torch.randn(8, generator=g, dtype=torch.float32)
    w64, g64 = p.detach().double().clone(), p.grad.double().clone()
    hyper = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    snaps = c.snapshot(opt)
    opt.step()
    with torch.no_grad():
        p.add_(1.0)
    (mm,) = c.verify(opt, snaps)
    if kind == "sgd":
        ref, _ = reference_sgd(w64, g64, {}, hyper)
    else:
        ref, _ = reference_adam(w64, g64, {}, hyper, decoupled=True)
    assert mm.expected == ref[:5].tolist()


def test_an_update_within_the_rounding_allowance_does_not_vote_on_the_direction() -> None:
    # At 1.5 the allowance is 4 eps x 1.5 = 6 eps; an honest update of exactly 6 eps is rounding
    # noise, so a write far the other way is a mismatch but not called a sign flip.
    eps = torch.finfo(torch.float64).eps
    p = torch.nn.Parameter(torch.tensor([1.5], dtype=torch.float64))
    params = [("w", p, 0)]
    opt = torch.optim.SGD([p], lr=1.0)
    c = _checker("sgd", params)
    p.grad = torch.tensor([6 * eps], dtype=torch.float64)
    snaps = c.snapshot(opt)
    opt.step()
    assert p.item() == 1.5 - 6 * eps
    with torch.no_grad():
        p.fill_(2.5)
    (mm,) = c.verify(opt, snaps)
    assert (mm.what, mm.sign_flip) == ("update", False)
