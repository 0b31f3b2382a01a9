"""Code integrity: ``optimizer.step`` replaced or wrapped, and the attestation code guard."""

from __future__ import annotations

from typing import Any

from trainwarden.findings import Severity
from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig
from trainwarden.rules import lookup

__all__ = ["CodeGuardCheck", "StepIdentity"]

# Guarded in addition to the attestation guard's defaults: what the update, the schedule, dropout
# and the backward actually run, and the guard's own check (unresolvable names are skipped).
MONITOR_TARGETS: tuple[str, ...] = (
    "torch.optim.adam._single_tensor_adam",
    "torch.optim.adam._multi_tensor_adam",
    "torch.optim.adam._fused_adam",
    "torch.optim.sgd._single_tensor_sgd",
    "torch.optim.sgd._multi_tensor_sgd",
    "torch.optim.sgd._fused_sgd",
    "torch.optim.lr_scheduler.*.step",
    "torch.optim.lr_scheduler.*.get_lr",
    "torch.optim.lr_scheduler.*.get_last_lr",
    "torch.utils.data.sampler.*.__iter__",
    "torch.utils.data.DistributedSampler.set_epoch",
    "torch.nn.functional.dropout",
    "torch.nn.functional.dropout1d",
    "torch.nn.functional.dropout2d",
    "torch.nn.functional.dropout3d",
    "torch.nn.functional.alpha_dropout",
    "torch.nn.modules.dropout.*.forward",
    "torch.dropout",
    "torch.Tensor.backward",
    "torch.autograd.backward",
    "torch.autograd.grad",
    "trainwarden.attest._code_guard.CodeGuard.check",
)


def monitor_targets() -> list[str]:
    """:data:`MONITOR_TARGETS` and every ``torch._foreach_*`` kernel (native: by identity)."""
    import torch

    return list(MONITOR_TARGETS) + [
        f"torch.{n}" for n in sorted(dir(torch)) if n.startswith("_foreach_")
    ]


# A replaced callable whose location mentions one of these is CRITICAL (T2/T3: optimizer,
# seeding, data order, clipping).
_CRITICAL_CODE = (
    "optim",
    "seed",
    "dataloader",
    "sampler",
    "clip_grad",
    "_foreach_",
    "dropout",
    "backward",
    "autograd",
    "code_guard",
)


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class StepIdentity(Check):
    """``optimizer.step`` is the one present at watch(), and not wrapped by another step()."""

    name = "step-identity"
    rules = ("TWM-CODE-STEP",)
    cost = "two attribute reads per forward"

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        opt = monitor.optimizer
        self._cls_step = type(opt).step
        self._inst_step = opt.__dict__.get("step")
        self._nested_reported = False

    def forward_pre(self, first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mon = self.mon
        opt = mon.optimizer
        cls_step = type(opt).step
        inst_step = opt.__dict__.get("step")
        if cls_step is not self._cls_step:
            self._cls_step = cls_step
            mon.alert(
                "TWM-CODE-STEP",
                f"{type(opt).__qualname__}.step was replaced after watch(): "
                f"now {_qualname(cls_step)}",
                {"new": repr(cls_step)},
            )
        if inst_step is not self._inst_step:
            self._inst_step = inst_step
            # An LR scheduler created after watch() wraps optimizer.step to count calls; that
            # wrapper (marked by torch) around the class's own step is legitimate.
            if getattr(inst_step, "_wrapped_by_lr_sched", False) and (
                getattr(inst_step, "__wrapped__", None) is cls_step
            ):
                return
            mon.alert(
                "TWM-CODE-STEP",
                "optimizer.step was replaced on the optimizer instance after watch(): "
                f"{_qualname(inst_step)}",
                {"new": repr(inst_step)},
            )

    def nested_step(self) -> None:
        """The hooked step ran inside another step() call (called by the core)."""
        if self._nested_reported:
            return
        self._nested_reported = True
        opt = self.mon.optimizer
        self.mon.alert(
            "TWM-CODE-STEP",
            "optimizer.step() is wrapped: the hooked step ran inside another step() call; the "
            "wrapper can change gradients or state before the real update",
            {"class": f"{type(opt).__module__}.{type(opt).__qualname__}"},
        )


class CodeGuardCheck(Check):
    """The attestation code guard, every ``code_guard_every`` steps."""

    name = "code-guard"
    rules = ("TWM-CODE",)
    cost = "hashes the guarded functions' code objects every code_guard_every steps"
    targets = staticmethod(monitor_targets)

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.code_guard

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self.guard: Any = None
        self._seen: set[tuple[str, str]] = set()
        self._check_fn: Any = None
        self._check_code: Any = None
        self._guard_reported = False

    def start(self) -> None:
        try:
            from trainwarden.attest import _code_guard as mod
        except ImportError:
            self.mon.note("code-guard", "code guard unavailable (trainwarden.attest not installed)")
            return
        try:
            self.guard = mod.CodeGuard(extra=self.targets())
        except Exception as e:  # fail-open: the guard is optional
            self.mon.internal(e, "CodeGuard()")
            return
        self._check_fn = type(self.guard).__dict__.get("check")
        self._check_code = getattr(self._check_fn, "__code__", None)
        self.run()

    def _guard_intact(self) -> bool:
        """The guard's own ``check`` is the function (and code) seen at start.

        A replaced ``check`` could return nothing, so this is decided here, not by the guard.
        """
        fn = type(self.guard).__dict__.get("check")
        inst = vars(self.guard).get("check")
        code = getattr(fn, "__code__", None)
        if fn is self._check_fn and code is self._check_code and inst is None:
            return True
        if not self._guard_reported:
            self._guard_reported = True
            self.mon.alert(
                "TWM-CODE",
                "code guard: CodeGuard.check was replaced, its code swapped or shadowed on the "
                f"instance after watch() (now {_qualname(inst or fn)}); the guard's findings can "
                "no longer be trusted",
                {"replaced": repr(inst or fn)},
                severity=Severity.CRITICAL,
            )
        return False

    def run(self) -> None:
        self._guard_intact()
        try:
            findings = self.guard.check()
        except Exception as e:  # fail-open
            self.mon.internal(e, "CodeGuard.check")
            return
        for f in findings:
            # The guard reports a persisting problem on every check: alert once per problem.
            key = (f.rule_id, f.location)
            if key in self._seen:
                continue
            self._seen.add(key)
            text = f"{f.location} {f.message}".lower()
            # Which attestation rules mean "the callable was replaced" is the catalogue's
            # business (its "code-replaced" tag), not a list of ids kept here.
            rule = lookup(f.rule_id)
            replaced = rule is not None and "code-replaced" in rule.tags
            sensitive = any(w in text for w in _CRITICAL_CODE)
            self.mon.alert(
                "TWM-CODE",
                f"code guard: {f.message}",
                {"finding": f.to_dict()},
                severity=Severity.CRITICAL if replaced and sensitive else f.severity,
            )

    def step_end(self) -> None:
        every = self.mon.config.code_guard_every
        if self.guard is None:
            return
        if every and self.mon.step % every == 0:
            self.run()
        else:
            self._guard_intact()  # two identity reads: every step, whatever code_guard_every
