"""Training data: every training forward's input, and every batch the declared loader yields,
is the batch the declared sampler gives, item for item against the dataset's manifest."""

from __future__ import annotations

from typing import Any

import torch

from trainwarden.monitor._check import Check
from trainwarden.monitor._config import MonitorConfig

__all__ = ["DataCheck"]

_RULE = {
    "TWD-BATCH-MISMATCH": "TWM-DATA-MISMATCH",
    "TWD-ITEM-TAMPERED": "TWM-DATA-TAMPERED",
    "TWD-BATCH-UNVERIFIABLE": "TWM-DATA-UNVERIFIABLE",
}


class DataCheck(Check):
    """Verifies batches against ``watch(..., data=DataSpec(...))``."""

    name = "data"
    rules = ("TWM-DATA-MISMATCH", "TWM-DATA-TAMPERED", "TWM-DATA-UNVERIFIABLE")
    cost = "re-reads and collates the verified items of each batch (items_per_batch of them)"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.data is not None

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        from trainwarden.data import BatchVerifier, DataSpec

        spec = monitor.config.data
        if not isinstance(spec, DataSpec):
            from trainwarden.monitor._types import MonitorError

            raise MonitorError(
                f"data= must be a trainwarden.data.DataSpec, not {type(spec).__name__}"
            )
        self.spec = spec
        # Two counters: the forward sees each micro-batch's input, the loader each whole batch.
        self._inputs = BatchVerifier(spec)
        self._batches = BatchVerifier(spec)
        self._silenced = False

    def start(self) -> None:
        self.spec.observers.append(self._on_loader_batch)

    def close(self) -> None:
        if self._on_loader_batch in self.spec.observers:
            self.spec.observers.remove(self._on_loader_batch)

    def _raise(self, findings: list[Any]) -> None:
        for f in findings:
            self.mon.alert(_RULE[f.rule_id], f.message, {"batch": f.batch, **f.evidence})

    def _on_loader_batch(self, batch: Any) -> None:
        self._raise(self._batches.check_batch(batch))

    def forward_pre(self, first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.mon.model.training:
            return  # evaluation forwards read other data
        x = next(
            (v for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)),
            None,
        )
        if x is None:
            self._raise(self._inputs._unverifiable(self._inputs.next_batch, "no tensor input"))
            self._inputs.next_batch += 1
            return
        self._raise(self._inputs.check_input(x))
        self._loader_still_checked()

    def _loader_still_checked(self) -> None:
        # Once the declared loader is in use, every forward's batch must have passed through
        # it first: an observer removed from the spec (or a loader swapped for another one)
        # would otherwise switch the label check off without a sound.
        used = self._batches.next_batch > 0
        if self._silenced or not used:
            return
        detached = self._on_loader_batch not in self.spec.observers
        if detached or self._batches.next_batch < self._inputs.next_batch:
            self._silenced = True
            self.mon.alert(
                "TWM-DATA-UNVERIFIABLE",
                "the declared loader's batches stopped being checked "
                + (
                    "(the monitor's observer was removed from the DataSpec)"
                    if detached
                    else "(the model received more batches than the declared loader yielded)"
                ),
                {"loader_batches": self._batches.next_batch, "forwards": self._inputs.next_batch},
            )
