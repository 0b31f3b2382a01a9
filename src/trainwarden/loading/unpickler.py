"""The restricted unpickler: it materialises only globals the policy classifies SAFE.

Every global a pickle names reaches :meth:`Enforcer.check` *before* it is imported or looked up,
so a refused global is never touched. The same enforcer backs the process-wide guard, where
``warn`` mode lets UNKNOWN globals through with a warning but still refuses DANGEROUS ones.
"""

from __future__ import annotations

import io
import pickle
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from trainwarden.findings import Finding, Severity
from trainwarden.loading._originals import ORIGINALS
from trainwarden.loading.types import UnsafeModelError, UnsafeModelWarning
from trainwarden.scan.types import Verdict

if TYPE_CHECKING:
    from trainwarden.scan.policy import Policy

__all__ = [
    "Enforcer",
    "Mode",
    "RestrictedUnpickler",
    "check_pickle_bytes",
    "restricted_loads",
    "restricted_pickle_module",
]

Mode = Literal["block", "warn"]

RULE_DANGEROUS = "TWL-GLOBAL-DANGEROUS"
RULE_UNKNOWN = "TWL-GLOBAL-UNKNOWN"
RULE_SCAN = "TWL-SCAN-REFUSED"

_CUnpickler: type[Any] = ORIGINALS["pickle.Unpickler"]
_PyUnpickler: type[Any] = ORIGINALS["pickle._Unpickler"]


@dataclass
class Enforcer:
    """Decides, for one load, whether a global may be materialised.

    ``findings`` accumulates what was refused or let through with a warning; ``emit`` (optional)
    receives each finding as it is made, so a sink sees it even when the load is aborted.
    """

    policy: Policy
    mode: Mode = "block"
    location: str = "<pickle>"
    findings: list[Finding] = field(default_factory=list)
    emit: Callable[[Finding], None] | None = None
    _warned: set[tuple[str, str]] = field(default_factory=set)

    def finding_for(self, module: str, name: str, verdict: Verdict, reason: str) -> Finding:
        dotted = f"{module}.{name}"
        if verdict is Verdict.DANGEROUS:
            return Finding(
                RULE_DANGEROUS,
                Severity.CRITICAL,
                f"{self.location} needs {dotted}, which can run code: {reason}",
                self.location,
                {"module": module, "name": name, "verdict": verdict.value, "reason": reason},
            )
        return Finding(
            RULE_UNKNOWN,
            Severity.parse(getattr(self.policy, "unknown_severity", Severity.HIGH)),
            f"{self.location} needs {dotted}, which the policy does not list as safe: {reason}",
            self.location,
            {"module": module, "name": name, "verdict": verdict.value, "reason": reason},
        )

    def check(self, module: object, name: object) -> None:
        """Return if ``module.name`` may be materialised; raise :class:`UnsafeModelError` if not."""
        mod, nm = str(module), str(name)
        verdict, reason = self.policy.classify(mod, nm)
        if verdict is Verdict.SAFE:
            return
        finding = self.finding_for(mod, nm, verdict, reason)
        if verdict is Verdict.DANGEROUS or self.mode == "block":
            self._record(finding)
            raise UnsafeModelError(
                f"refused to load {self.location}: it needs {mod}.{nm} ({verdict.value}: {reason})",
                findings=list(self.findings),
                path=self.location,
            )
        if (mod, nm) not in self._warned:
            self._warned.add((mod, nm))
            self._record(finding)
            warnings.warn(
                f"trainwarden guard (warn mode): {finding.message}",
                UnsafeModelWarning,
                stacklevel=3,
            )

    def _record(self, finding: Finding) -> None:
        if finding not in self.findings:
            self.findings.append(finding)
            if self.emit is not None:
                self.emit(finding)


class RestrictedUnpickler(_CUnpickler):  # type: ignore[misc]
    """CPython's C unpickler whose ``find_class`` asks an :class:`Enforcer` first.

    Pass ``enforcer=`` or set the class attribute ``tw_enforcer`` on a subclass (torch builds its
    own subclass of ``pickle_module.Unpickler`` and cannot pass extra arguments).
    """

    tw_enforcer: Enforcer | None = None

    def __init__(self, file: Any, *args: Any, enforcer: Enforcer | None = None, **kw: Any) -> None:
        super().__init__(file, *args, **kw)
        if enforcer is not None:
            self.tw_enforcer = enforcer

    def find_class(self, module: str, name: str) -> Any:
        enforcer = self.tw_enforcer
        if enforcer is None:
            raise UnsafeModelError("restricted unpickler used without a policy", path=None)
        enforcer.check(module, name)
        return super().find_class(module, name)


class RestrictedPyUnpickler(_PyUnpickler):  # type: ignore[misc]
    """The pure-Python unpickler with the same restriction (used where a library needs it)."""

    tw_enforcer: Enforcer | None = None

    def find_class(self, module: str, name: str) -> Any:
        enforcer = self.tw_enforcer
        if enforcer is None:
            raise UnsafeModelError("restricted unpickler used without a policy", path=None)
        enforcer.check(module, name)
        return super().find_class(module, name)


def restricted_pickle_module(enforcer: Enforcer) -> types.SimpleNamespace:
    """A stand-in ``pickle`` module (``Unpickler``, ``load``, ``loads``) bound to ``enforcer``.

    Suitable as ``pickle_module=`` for ``torch.load`` and torch's internal loaders.
    """
    cls = type("TrainWardenUnpickler", (RestrictedUnpickler,), {"tw_enforcer": enforcer})

    def load(file: Any, **kw: Any) -> Any:
        return cls(file, **kw).load()

    def loads(data: bytes, /, **kw: Any) -> Any:
        return cls(io.BytesIO(data), **kw).load()

    return types.SimpleNamespace(
        Unpickler=cls,
        load=load,
        loads=loads,
        UnpicklingError=pickle.UnpicklingError,
        __name__="trainwarden.loading.unpickler",
    )


def restricted_loads(data: bytes | bytearray | memoryview, enforcer: Enforcer, **kw: Any) -> Any:
    """Unpickle exactly ``data`` with ``enforcer`` deciding every global."""
    return RestrictedUnpickler(io.BytesIO(data), enforcer=enforcer, **kw).load()


def check_pickle_bytes(
    data: bytes | bytearray | memoryview,
    enforcer: Enforcer,
    *,
    max_pickles: int | None = 1,
    globals_only: bool = False,
) -> tuple[Finding, ...]:
    """Statically analyse one pickle before it is loaded; raise if the enforcer's mode refuses it.

    Block mode refuses any finding at or above the policy's ``fail_on``; warn mode refuses only
    a DANGEROUS global and otherwise warns. ``max_pickles`` is how many consecutive pickles the
    loader will read (``None``: all). With ``globals_only`` only the globals are judged (for
    streams, like joblib's, that interleave raw bytes the static pass cannot parse). Returns the
    analysis findings.
    """
    from trainwarden.scan.pickle_vm import analyze_pickle

    analysis = analyze_pickle(
        data, policy=enforcer.policy, location=enforcer.location, max_pickles=max_pickles
    )
    if globals_only:
        for g in analysis.globals:
            if g.verdict is not Verdict.SAFE:
                enforcer.check(g.module, g.name)
        return tuple(analysis.findings)
    fail_on = Severity.parse(getattr(enforcer.policy, "fail_on", Severity.HIGH))
    bad = [f for f in analysis.findings if f.severity >= fail_on]
    dangerous = [g for g in analysis.globals if g.verdict is Verdict.DANGEROUS]
    if not bad and not dangerous:
        return tuple(analysis.findings)
    if enforcer.mode == "block" or dangerous:
        for f in bad:
            enforcer._record(f)
        names = sorted(
            {f"{g.module}.{g.name}" for g in analysis.globals if g.verdict is not Verdict.SAFE}
        )
        what = f": it needs {', '.join(names)}" if names else ""
        raise UnsafeModelError(
            f"refused to load {enforcer.location}{what}",
            findings=[*bad, *[f for f in enforcer.findings if f not in bad]],
            path=enforcer.location,
        )
    unknown = sorted(
        {f"{g.module}.{g.name}" for g in analysis.globals if g.verdict is not Verdict.SAFE}
    )
    for g in analysis.globals:
        enforcer._warned.add((g.module, g.name))
    for f in bad:
        enforcer._record(f)
    what = (
        f"needs {', '.join(unknown)}, which the policy does not list as safe"
        if unknown
        else ("has findings: " + "; ".join(f.message for f in bad[:3]))
    )
    warnings.warn(
        f"trainwarden guard (warn mode): {enforcer.location} {what}; loading it anyway",
        UnsafeModelWarning,
        stacklevel=3,
    )
    return tuple(analysis.findings)
