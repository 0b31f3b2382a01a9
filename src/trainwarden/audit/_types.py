"""Public types of the replay audit: the job description, its errors and the replay report."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainwarden.errors import TrainWardenError
from trainwarden.findings import Finding, Severity

__all__ = ["AuditError", "IntervalResult", "Job", "ReplayReport"]


class AuditError(TrainWardenError):
    """The audit record or the job factory cannot be used (missing, malformed, inconsistent)."""


@dataclass
class Job:
    """Everything one optimizer step needs, built the same way by the job and by the auditor.

    ``loss_fn(model, batch)`` returns the scalar loss of one collated micro-batch. A step is:
    zero the gradients, ``backward`` of each micro-batch's loss divided by their number, clip the
    total gradient norm to ``max_grad_norm`` when set, ``optimizer.step()``, ``scheduler.step()``.
    """

    model: Any
    optimizer: Any
    dataset: Any
    loss_fn: Callable[[Any, Any], Any]
    scheduler: Any | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    max_grad_norm: float | None = None
    micro_step: Callable[[Any, Sequence[Any], int], Any] | None = None
    """A framework's own forward and backward of micro-batch ``i`` of a step's
    ``micro_batches`` (returning its loss), used instead of ``loss_fn`` when set: the Hugging
    Face integration passes the Trainer's ``training_step``, whose loss scaling over an
    accumulated step (``num_items_in_batch``) one micro-batch's ``loss_fn`` cannot give."""
    data: Any | None = None
    """A :class:`trainwarden.data.DataSpec` declaring the sampler and the dataset's manifest:
    the recorder's loader then yields its batches, and the replay checks every recorded batch
    against it (declared indices, items against the manifest)."""


@dataclass(frozen=True)
class IntervalResult:
    """The replay of one audited interval ``[start, end)`` of optimizer steps.

    ``status`` is ``"reproduced"``, ``"diverged"`` or ``"not-replayable"``. For a divergence,
    ``step`` is the first step whose replay differs, ``where`` says what differed first
    (``data``, ``hyperparameters``, ``rng``, ``forward``, ``backward``, ``update``,
    ``checkpoint``, and in a data-parallel run ``all-reduce``), ``tensors`` names the modules or
    tensors involved and ``rank`` the rank whose record or contribution was wrong (``None`` in a
    single-process run).
    """

    start: int
    end: int
    status: str
    step: int | None = None
    where: str = ""
    tensors: tuple[str, ...] = ()
    detail: str = ""
    distance: float | None = None
    rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "status": self.status,
            "step": self.step,
            "where": self.where,
            "tensors": list(self.tensors),
            "detail": self.detail,
            "distance": self.distance,
            "rank": self.rank,
        }

    def finding(self, run_dir: str) -> Finding | None:
        """The finding this interval contributes to the report (``None`` when reproduced)."""
        if self.status == "reproduced":
            return None
        if self.status == "not-replayable":
            return Finding(
                "TWR-NOT-REPLAYABLE",
                Severity.HIGH,
                f"steps {self.start}-{self.end - 1} cannot be replayed: {self.detail}",
                f"{run_dir}@{self.start}",
                {"start": self.start, "end": self.end},
            )
        names = ", ".join(self.tensors[:5]) + (" ..." if len(self.tensors) > 5 else "")
        on = f" on rank {self.rank}" if self.rank is not None else ""
        return Finding(
            "TWR-DIVERGED",
            Severity.CRITICAL,
            f"step {self.step} diverged in {self.where}{on}"
            + (f" ({names})" if names else "")
            + (f": {self.detail}" if self.detail else ""),
            f"{run_dir}@{self.step}",
            self.to_dict(),
        )


@dataclass(frozen=True)
class ReplayReport:
    """What a replay audit found: one :class:`IntervalResult` per sampled interval."""

    run_dir: str
    seed: int
    intervals: tuple[IntervalResult, ...]
    record_findings: tuple[Finding, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> tuple[Finding, ...]:
        out = list(self.record_findings)
        for r in self.intervals:
            f = r.finding(self.run_dir)
            if f is not None:
                out.append(f)
        return tuple(out)

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when any finding is at or above ``fail_on``, else ``0``."""
        return 1 if any(f.severity >= fail_on for f in self.findings) else 0

    def lines(self) -> list[str]:
        """The text report: one line per replayed interval (findings are printed after)."""
        out = [
            f"replayed {len(self.intervals)} of {self.meta.get('intervals_total')} intervals "
            f"of {self.run_dir} (seed {self.seed})"
        ]
        for r in self.intervals:
            line = f"  steps {r.start}-{r.end - 1}: {r.status}"
            if r.status == "diverged":
                line += f" at step {r.step} in {r.where}"
                if r.rank is not None:
                    line += f" on rank {r.rank}"
                if r.tensors:
                    more = " ..." if len(r.tensors) > 3 else ""
                    line += f" ({', '.join(r.tensors[:3])}{more})"
            if r.detail:
                line += f": {r.detail}"
            out.append(line)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "seed": self.seed,
            "intervals": [r.to_dict() for r in self.intervals],
            "findings": [f.to_dict() for f in self.findings],
            "meta": dict(self.meta),
        }
