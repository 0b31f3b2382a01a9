"""CodeGuard against real torch objects and real modules written to a temporary directory."""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._compile import _disable_dynamo
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainwarden.attest import AttestationError
from trainwarden.attest._code_guard import DEFAULT_TARGETS, CodeGuard, code_digest
from trainwarden.findings import Finding, Severity

_counter = itertools.count()

MODULE_SOURCE = """
import functools

def helper(x):
    return x + 1

def step(x, scale=2.0, *, shift=0.0):
    return helper(x) * scale + shift

def _decorate(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper

@_decorate
def wrapped_step(x):
    return x - 1

class Opt:
    def step(self):
        return "real"

class SubOpt(Opt):
    pass
"""


@pytest.fixture
def make_module(tmp_path: Path) -> Iterator[Callable[[str], types.ModuleType]]:
    """Factory: write a fresh package with ``source`` as its ``__init__`` and import it."""
    names: list[str] = []
    sys.path.insert(0, str(tmp_path))

    def make(source: str) -> types.ModuleType:
        name = f"twguard_pkg_{next(_counter)}"
        pkg = tmp_path / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(textwrap.dedent(source))
        names.append(name)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        sys.modules.pop(name, None)


def _rules(findings: list[Finding]) -> list[tuple[str, Severity, str]]:
    return [(f.rule_id, f.severity, f.location) for f in findings]


def test_default_targets_clean_in_a_clean_process() -> None:
    guard = CodeGuard()
    targets = {g.target for g in guard.guarded}
    assert {
        "torch.optim.AdamW.step",
        "torch.optim.SGD.step",
        "torch.optim.Adam.zero_grad",
        "torch.nn.utils.clip_grad_norm_",
        "torch.manual_seed",
        "torch.cuda.manual_seed_all",
        "random.seed",
        "numpy.random.seed",
        "torch.utils.data.DataLoader.__iter__",
        "torch.utils.data.DistributedSampler.__iter__",
        "torch.nn.Module.__call__",
        "torch.distributed.all_reduce",
        "torch.distributed.barrier",
    } <= targets
    assert guard.baseline_findings == ()
    assert guard.check() == []
    adamw = next(g for g in guard.guarded if g.target == "torch.optim.AdamW.step")
    assert adamw.kind == "python"
    assert any("Adam.step@" in c for c in adamw.chain)
    numpy_seed = next(g for g in guard.guarded if g.target == "numpy.random.seed")
    assert numpy_seed.kind == "native"


def test_monkeypatched_adamw_step_in_a_real_training_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    guard = CodeGuard()
    real_step = torch.optim.AdamW.step

    def sabotaged_step(self: torch.optim.AdamW, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.neg_()
        return real_step(self, closure)

    seen: list[Finding] = []
    for step in range(6):
        if step == 3:
            monkeypatch.setattr(torch.optim.AdamW, "step", sabotaged_step)
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        found = guard.check()
        if step < 3:
            assert found == []
        seen.extend(found)
    assert ("TWA-CODE-001", Severity.CRITICAL, "torch.optim.AdamW.step") in _rules(seen)
    hit = next(f for f in seen if f.location == "torch.optim.AdamW.step")
    assert "sabotaged_step" in hit.message
    # Only AdamW was patched: Adam.step and SGD.step still resolve to the real code.
    assert {f.location for f in seen} == {"torch.optim.AdamW.step"}
    monkeypatch.undo()
    assert guard.check() == []


def test_wrapping_a_module_function_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = CodeGuard(["torch.manual_seed", "torch.nn.utils.clip_grad_norm_"])
    real = torch.manual_seed

    def wrapper(seed: int) -> Any:
        return real(seed + 1)

    monkeypatch.setattr(torch, "manual_seed", wrapper)
    assert _rules(guard.check()) == [("TWA-CODE-001", Severity.CRITICAL, "torch.manual_seed")]


def test_torch_dynamo_lazy_rewrap_of_manual_seed_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = CodeGuard(["torch.manual_seed"])
    original = torch.manual_seed
    # Exactly what `import torch._dynamo` does (torch/_dynamo/__init__.py).
    monkeypatch.setattr(torch, "manual_seed", _disable_dynamo(original))
    assert guard.check() == []
    # The adopted wrapper is guarded from then on: replacing its wrapped function is caught.
    cell = next(c for c in torch.manual_seed.__closure__ or () if c.cell_contents is original)
    monkeypatch.setattr(cell, "cell_contents", lambda seed: None)
    assert _rules(guard.check()) == [("TWA-CODE-002", Severity.CRITICAL, "torch.manual_seed")]
    monkeypatch.undo()
    # A look-alike wrapper that is not torch's own is a replacement.
    guard = CodeGuard(["torch.manual_seed"])

    def inner(seed: int) -> Any:
        return original(seed)

    inner.__wrapped__ = original  # type: ignore[attr-defined]
    monkeypatch.setattr(torch, "manual_seed", inner)
    assert _rules(guard.check()) == [("TWA-CODE-001", Severity.CRITICAL, "torch.manual_seed")]


def test_torch_compile_patcher_rewrap_of_optimizer_step_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch._dynamo

    disable: Callable[..., Any] = torch._dynamo.disable  # untyped in torch's stubs
    guard = CodeGuard(["torch.optim.LBFGS.step", "torch.optim.SGD.step"])
    # What torch._dynamo.eval_frame.TorchPatcher.patch() does on the first torch.compile.
    monkeypatch.setattr(torch.optim.LBFGS, "step", disable(torch.optim.LBFGS.step, reason="test"))
    assert guard.check() == []
    monkeypatch.setattr(torch.optim.SGD, "step", disable(torch.optim.Adam.step, reason="test"))
    assert _rules(guard.check()) == [("TWA-CODE-001", Severity.CRITICAL, "torch.optim.SGD.step")]


def test_code_object_replacement_is_detected(
    make_module: Callable[[str], types.ModuleType],
) -> None:
    mod = make_module(MODULE_SOURCE)
    guard = CodeGuard([f"{mod.__name__}.step", f"{mod.__name__}.wrapped_step"])
    assert guard.check() == []

    def evil(x: Any, scale: float = 2.0, *, shift: float = 0.0) -> Any:
        return -x

    mod.step.__code__ = evil.__code__
    assert _rules(guard.check()) == [("TWA-CODE-002", Severity.CRITICAL, f"{mod.__name__}.step")]


def test_closure_cell_replacement_behind_a_decorator(
    make_module: Callable[[str], types.ModuleType],
) -> None:
    mod = make_module(MODULE_SOURCE)
    guard = CodeGuard([f"{mod.__name__}.wrapped_step"])
    cell = mod.wrapped_step.__closure__[0]
    cell.cell_contents = lambda x: x + 100
    assert _rules(guard.check()) == [
        ("TWA-CODE-002", Severity.CRITICAL, f"{mod.__name__}.wrapped_step")
    ]


def test_changed_default_arguments(make_module: Callable[[str], types.ModuleType]) -> None:
    mod = make_module(MODULE_SOURCE)
    guard = CodeGuard([f"{mod.__name__}.step"])
    mod.step.__defaults__ = (-2.0,)
    assert _rules(guard.check()) == [("TWA-CODE-005", Severity.HIGH, f"{mod.__name__}.step")]
    mod.step.__defaults__ = (2.0,)
    mod.step.__kwdefaults__ = {"shift": 5.0}
    assert _rules(guard.check()) == [("TWA-CODE-005", Severity.HIGH, f"{mod.__name__}.step")]


def test_file_edited_on_disk_after_import(make_module: Callable[[str], types.ModuleType]) -> None:
    mod = make_module(MODULE_SOURCE)
    path = Path(mod.__file__ or "")
    # Editing a comment or moving code is not a change; editing the body is.
    path.write_text("# a new comment shifts every line\n\n" + textwrap.dedent(MODULE_SOURCE))
    assert CodeGuard([f"{mod.__name__}.step"]).check() == []
    path.write_text(textwrap.dedent(MODULE_SOURCE).replace("* scale + shift", "* -scale + shift"))
    guard = CodeGuard([f"{mod.__name__}.step", f"{mod.__name__}.helper"])
    found = guard.check()
    assert _rules(found) == [("TWA-CODE-003", Severity.CRITICAL, f"{mod.__name__}.step")]
    assert found[0].evidence["memory_code_sha256"] != found[0].evidence["disk_code_sha256"]
    assert guard.baseline_findings == tuple(found)


def test_patched_before_the_guard_started(make_module: Callable[[str], types.ModuleType]) -> None:
    mod = make_module(MODULE_SOURCE)

    def foreign_step(self: object) -> str:
        return "evil"

    mod.SubOpt.step = foreign_step
    guard = CodeGuard([f"{mod.__name__}.SubOpt.step", f"{mod.__name__}.Opt.step"])
    assert _rules(guard.check()) == [
        ("TWA-CODE-004", Severity.CRITICAL, f"{mod.__name__}.SubOpt.step")
    ]


def test_wrapped_before_the_guard_started(make_module: Callable[[str], types.ModuleType]) -> None:
    import functools

    mod = make_module(MODULE_SOURCE)
    real = mod.step

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **kwargs)

    # A functools.wraps wrapper around the real function: the innermost code is genuine.
    setattr(mod, "step", wrapper)  # noqa: B010 - a module attribute mypy cannot see
    found = CodeGuard([f"{mod.__name__}.step"]).check()
    assert _rules(found) == [("TWA-CODE-004", Severity.CRITICAL, f"{mod.__name__}.step")]
    assert "wrapper" in found[0].message


def test_class_attribute_set_on_subclass_and_bases_changed(
    make_module: Callable[[str], types.ModuleType],
) -> None:
    mod = make_module(MODULE_SOURCE)
    guard = CodeGuard([f"{mod.__name__}.SubOpt.step"])
    assert guard.check() == []

    class Other:
        def step(self) -> str:
            return "other"

    mod.SubOpt.__bases__ = (Other,)
    assert _rules(guard.check()) == [
        ("TWA-CODE-001", Severity.CRITICAL, f"{mod.__name__}.SubOpt.step")
    ]


def test_global_optimizer_hook_registered_at_run_time() -> None:
    guard = CodeGuard(["torch.optim.SGD.step"])

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        return None

    handle = register_optimizer_step_pre_hook(hook)
    try:
        found = guard.check()
    finally:
        handle.remove()
    assert _rules(found) == [
        ("TWA-CODE-006", Severity.HIGH, "torch.optim.optimizer._global_optimizer_pre_hooks")
    ]
    assert "hook" in found[0].message
    assert guard.check() == []


def test_unresolvable_explicit_target_is_an_error() -> None:
    with pytest.raises(AttestationError, match=r"torch\.optim\.NoSuchOptimizer\.step"):
        CodeGuard(["torch.optim.NoSuchOptimizer.step"])
    with pytest.raises(AttestationError, match="no_such_module_xyz"):
        CodeGuard(["no_such_module_xyz.f"])


def test_code_digest_ignores_position_but_not_content() -> None:
    a = compile("def f(x):\n    return x + 1\n", "a.py", "exec")
    b = compile("\n\n\ndef f(x):\n    return x + 1\n", "b.py", "exec")
    c = compile("def f(x):\n    return x + 2\n", "a.py", "exec")
    assert code_digest(a) == code_digest(b)
    assert code_digest(a) != code_digest(c)


def test_default_list_is_configurable() -> None:
    assert "torch.optim.*.step" in DEFAULT_TARGETS
    guard = CodeGuard(["random.seed"], extra=["torch.manual_seed"])
    assert [g.target for g in guard.guarded] == ["random.seed", "torch.manual_seed"]


def test_trainwarden_monitor_seed_wrappers_are_accepted() -> None:
    from trainwarden.monitor._rng import seed_watch

    guard = CodeGuard()
    calls: list[str] = []

    def listener(target: str, args: tuple[Any, ...], stack: list[str]) -> None:
        calls.append(target)

    seed_watch.add(listener)
    try:
        torch.manual_seed(3)
        assert guard.check() == []
        assert calls == ["torch.manual_seed"]
        # A look-alike carrying the monitor's marker attribute is still a replacement.
        real = torch.cuda.manual_seed_all

        def fake(seed: int) -> None:
            return None

        fake.__wrapped__ = real  # type: ignore[attr-defined]
        fake.__trainwarden_seed_wrapper__ = True  # type: ignore[attr-defined]
        torch.cuda.manual_seed_all = fake
        try:
            assert _rules(guard.check()) == [
                ("TWA-CODE-001", Severity.CRITICAL, "torch.cuda.manual_seed_all")
            ]
        finally:
            torch.cuda.manual_seed_all = real
    finally:
        seed_watch.remove(listener)
    # The monitor restored the originals: still clean.
    assert guard.check() == []


def test_monitored_training_run_has_no_code_guard_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainwarden import watch
    from trainwarden._internal.sink import MemorySink

    monkeypatch.chdir(tmp_path)  # nothing the monitor writes may land in the repository
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with watch(model, opt, sink=MemorySink(), code_guard_every=10) as mon:
        for _ in range(30):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.observe_loss(loss)
    assert [a for a in mon.alerts if "code guard" in str(a)] == []
