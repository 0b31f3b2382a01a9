"""Cross-rank comparison: every check's digest values and the step timings, once per step."""

from __future__ import annotations

import importlib
import math
import struct
from typing import Any

import torch

from trainwarden.monitor.check import Check
from trainwarden.monitor.config import MonitorConfig
from trainwarden.monitor.timing import PHASES

__all__ = ["CrossRank"]


def _bits(value: int | float) -> int:
    """A digest value as a signed 64-bit pattern: hashes as themselves, floats by their bits."""
    if isinstance(value, int):
        value &= 0xFFFF_FFFF_FFFF_FFFF
        return value - (1 << 64) if value >= 1 << 63 else value
    return int(struct.unpack("<q", struct.pack("<d", float(value)))[0])


class CrossRank(Check):
    """All-gathers ``[step, digest of every check, timings]`` and names the odd rank out."""

    name = "cross-rank"
    rules = (
        "TWM-XRANK-DIVERGED",
        "TWM-XRANK-STEP",
        "TWM-XRANK-STRAGGLER",
        "TWM-XRANK-COLLECTIVE",
        "TWM-XRANK-FIELDS",
        "TWM-XRANK-DIGEST",
    )
    cost = "one all_gather of a few hundred float64 per step (multi-rank runs only)"

    @classmethod
    def enabled(cls, config: MonitorConfig) -> bool:
        return config.cross_rank

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self.exchange: Any = None
        self.fields: list[str] | None = None
        self._off = not (monitor.distributed and monitor.world_size > 1)

    def step_end(self) -> None:
        mon = self.mon
        if self._off or not mon.step_checked:
            return
        named: list[tuple[str, int | float]] = [("step", float(mon.step))]
        for check in mon.checks:
            if check is not self:
                named += check.digest()
        values = dict(named)
        if self.exchange is None:
            if not any(n.startswith("weight:") for n in values):
                return  # nothing fingerprinted at this boundary yet
            try:
                mod = importlib.import_module("trainwarden.monitor.distributed")
            except ImportError:
                mon.note("cross-rank", "cross-rank check unavailable (monitor.distributed missing)")
                self._off = True
                return
            self.fields = [n for n, _ in named]
            hang = mon.check_named("watchdog")
            self.exchange = mod.RankExchange(self.fields, watchdog=getattr(hang, "watchdog", None))
        if mon.suspect:
            self.exchange.mark_suspect()
            mon.suspect = False
        assert self.fields is not None  # noqa: S101 -- set with the exchange; narrows for mypy
        # Bit patterns travel as float64 words: the comparator compares them bit for bit, so a
        # 64-bit hash arrives exactly.
        digest = torch.tensor(
            [_bits(values.get(f, math.nan)) for f in self.fields], dtype=torch.int64
        ).view(torch.float64)
        t = mon.values.get("timing") or {}
        timings = torch.tensor([t.get(p, 0.0) for p in PHASES], dtype=torch.float64)
        for alert in self.exchange.exchange(mon.step, digest, timings):
            mon.emit_external(alert)
