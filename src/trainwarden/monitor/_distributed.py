"""Cross-rank checks: one small all_gather per step to compare replicas and find stragglers.

Every rank contributes ``[digest | timings | step, exchange wait, suspect flag]`` (float64). Data
parallel replicas must hold identical digests; the odd rank(s) out are named by majority vote.
Per-phase timings and how long each rank waited at the previous exchange name stragglers.

What to put in the digest under sharding (FSDP, ZeRO): shards differ by design, so only
quantities every rank must agree on belong in the digest exchanged over the whole world:
hyperparameters, the step counter, the global gradient norm (after FSDP's reduction), RNG-state
fingerprints that are seeded identically on purpose. A per-shard weight digest is only
comparable inside a data-parallel replica group (the ranks holding the same shard, e.g. across
nodes with HSDP); pass that group as ``group=`` to a second :class:`RankExchange`.
"""

from __future__ import annotations

import math
import statistics
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainwarden.findings import Severity
from trainwarden.monitor._types import Alert, MonitorError

__all__ = ["TIMING_FIELDS", "RankExchange", "ReplicaComparator", "StragglerPolicy"]

TIMING_FIELDS = ("step_s", "forward_s", "backward_s", "optimizer_s")
#: How long a failed collective waits for the lost peer's pid to disappear before reporting.
_LOST_SETTLE_S = 10.0
_META = 4  # step, previous exchange wait (s), suspect flag, field-schema checksum


@dataclass(frozen=True)
class StragglerPolicy:
    """When a rank counts as a straggler.

    A rank is *slow* at a step when its own time (outside backward, whose all-reduce makes the
    fast ranks wait for the slow one), or how late it arrived at the previous exchange, exceeds
    the other ranks' median by more than ``rel_margin`` of the median step time *and* by more
    than ``abs_margin_s``. It is reported when slow at ``patience`` of the last ``window`` steps,
    or at once when the excess is above ``huge_abs_s`` and ``huge_rel`` times the other ranks'
    own time.
    """

    rel_margin: float = 0.5
    abs_margin_s: float = 0.05
    patience: int = 3
    window: int = 20
    huge_rel: float = 10.0
    huge_abs_s: float = 2.0

    def __post_init__(self) -> None:
        if self.rel_margin < 0 or self.abs_margin_s < 0 or self.huge_rel < 0:
            raise MonitorError("straggler margins must be >= 0")
        if not 1 <= self.patience <= self.window:
            raise MonitorError(
                f"straggler patience ({self.patience}) must be in 1..window ({self.window})"
            )


class RankExchange:
    """Compare a per-step digest across the ranks of ``group`` (default: the whole world).

    ``fields`` names the digest's entries, identically ordered on every rank. Construct after
    ``torch.distributed.init_process_group``. :meth:`exchange` is a collective: every rank of the
    group must call it at the same step, like any other collective. ``watchdog`` (a
    :class:`~trainwarden.monitor._watchdog.Watchdog`) is asked for the lost-rank report when the
    collective fails because a peer died.
    """

    def __init__(
        self,
        fields: Sequence[str],
        *,
        group: object | None = None,
        rtol: float = 0.0,
        straggler: StragglerPolicy | None = None,
        watchdog: Any | None = None,
    ) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise MonitorError(
                "RankExchange needs an initialised torch.distributed process group",
                hint="call torch.distributed.init_process_group() first (torchrun sets env://)",
            )
        pg: Any = group
        self.group = pg
        self.rank = int(dist.get_rank(pg))
        self.world_size = int(dist.get_world_size(pg))
        global_ranks = list(range(self.world_size))
        if pg is not None:
            global_ranks = [int(dist.get_global_rank(pg, r)) for r in range(self.world_size)]
        self.backend = str(dist.get_backend(pg))
        self.comparator = ReplicaComparator(
            fields,
            rank=self.rank,
            world_size=self.world_size,
            global_ranks=global_ranks,
            rtol=rtol,
            straggler=straggler,
        )
        self.fields = self.comparator.fields
        self.watchdog = watchdog
        self.broken = False
        self._prev_wait_s = 0.0
        self._suspect = False
        self.last_gathered: torch.Tensor | None = None

    def mark_suspect(self) -> None:
        """Say that this rank's own continuity checks failed since the last exchange.

        With two ranks a majority vote cannot name the culprit; the flag breaks the tie.
        """
        self._suspect = True

    def exchange(
        self,
        step: int,
        digest: torch.Tensor,
        timings: torch.Tensor,
        local: torch.Tensor | None = None,
    ) -> list[Alert]:
        """All-gather ``[digest | timings]`` once and return the alerts it raises.

        ``digest``: 1-D float64, one value per field. ``timings``: 1-D float64
        ``[step_s, forward_s, backward_s, optimizer_s]`` (missing phases as 0). ``local``:
        per-rank values that differ by design (local loss, local gradient norm), carried by the
        same collective and not compared here; every rank must pass the same number of them.
        After the call, ``last_gathered[:, -len(local):]`` holds every rank's. A failing
        collective (a dead gloo peer) becomes alerts, and later calls return ``[]`` at once.
        """
        if self.broken:
            return []
        c = self.comparator
        if digest.dim() != 1 or digest.numel() != len(c.fields):
            return [
                c.alert(
                    "TWM-XRANK-DIGEST",
                    Severity.MEDIUM,
                    step,
                    f"digest has shape {tuple(digest.shape)}, expected ({len(c.fields)},); "
                    "this step was not exchanged",
                    {},
                )
            ]
        import torch.distributed as dist

        device = digest.device if self.backend == "nccl" else torch.device("cpu")
        t = timings.detach().to(device=device, dtype=torch.float64).flatten()[:4]
        if t.numel() < 4:
            t = torch.cat([t, torch.zeros(4 - t.numel(), dtype=torch.float64, device=device)])
        meta = torch.tensor(
            [float(step), self._prev_wait_s, 1.0 if self._suspect else 0.0, c.schema],
            dtype=torch.float64,
            device=device,
        )
        parts = [digest.detach().to(device=device, dtype=torch.float64), t, meta]
        if local is not None:
            parts.append(local.detach().to(device=device, dtype=torch.float64).flatten())
        mine = torch.cat(parts)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        entered = time.monotonic()
        try:
            dist.all_gather(out, mine, group=self.group)
        except (RuntimeError, ValueError) as exc:
            # gloo raises (connection reset / closed by peer) when a peer process died.
            self.broken = True
            return self._collective_failed(step, exc)
        self._prev_wait_s = time.monotonic() - entered
        self._suspect = False
        gathered = torch.stack(out).to("cpu")
        self.last_gathered = gathered
        return c.analyse(step, gathered)

    def _collective_failed(self, step: int, exc: BaseException) -> list[Alert]:
        text = f"{type(exc).__name__}: {exc}".strip()
        alerts = [
            self.comparator.alert(
                "TWM-XRANK-COLLECTIVE",
                Severity.HIGH,
                step,
                f"the cross-rank exchange failed at step {step} (a peer is gone or the group "
                f"is broken): {text.splitlines()[0][:300]}",
                {"error": text[:2000]},
            )
        ]
        report_fn = getattr(self.watchdog, "report_lost_ranks", None)
        if callable(report_fn):
            # The peer's connection closes before its pid is gone: let the report settle.
            lost = report_fn(
                f"rank {self.rank}: cross-rank exchange failed at step {step}",
                settle_s=_LOST_SETTLE_S,
            )
            if isinstance(lost, Alert):
                alerts.append(lost)
        return alerts


class ReplicaComparator:
    """The analysis half of :class:`RankExchange`: compares gathered rows, keeps history.

    Separate from the collective so it can be used on rows gathered by other means.
    """

    def __init__(
        self,
        fields: Sequence[str],
        *,
        rank: int,
        world_size: int,
        global_ranks: Sequence[int] | None = None,
        rtol: float = 0.0,
        straggler: StragglerPolicy | None = None,
    ) -> None:
        self.fields = tuple(fields)
        if len(set(self.fields)) != len(self.fields):
            raise MonitorError(f"duplicate digest field names: {self.fields}")
        if rtol < 0:
            raise MonitorError(f"rtol must be >= 0, got {rtol}")
        self.rank = rank
        self.world_size = world_size
        self.global_ranks = list(global_ranks) if global_ranks else list(range(world_size))
        self.rtol = float(rtol)
        self.straggler = straggler or StragglerPolicy()
        self._divergence_sig: tuple[Any, ...] | None = None
        self._step_sig: tuple[Any, ...] | None = None
        self._slow: list[deque[bool]] = [
            deque(maxlen=self.straggler.window) for _ in range(world_size)
        ]
        self._straggler_alerted: set[int] = set()
        self._schema_reported = False
        #: crc32 of the field names: ranks must exchange the same fields in the same order.
        self.schema = float(zlib.crc32("\0".join(self.fields).encode("utf-8")))

    def _schema_mismatch(self, step: int, schemas: list[int]) -> list[Alert]:
        if self._schema_reported:
            return []
        self._schema_reported = True
        groups = self._groups([(v,) for v in schemas])
        odd = [self.global_ranks[r] for g in groups[1:] for r in g]
        return [
            self.alert(
                "TWM-XRANK-FIELDS",
                Severity.HIGH,
                step,
                f"ranks exchange different digest fields (rank(s) {odd} differ from "
                f"{[self.global_ranks[r] for r in groups[0]]}): models, optimizers or param "
                "groups are not the same on every rank; digests were not compared",
                {"ranks": odd, "schemas": schemas},
            )
        ]

    # ------------------------------------------------------------------ analysis
    def analyse(self, step: int, gathered: torch.Tensor) -> list[Alert]:
        """Compare an already gathered ``(world_size, fields + 8)`` matrix (CPU float64)."""
        n = len(self.fields)
        digests = gathered[:, :n]
        timings = gathered[:, n : n + 4]
        meta = gathered[:, n + 4 : n + 4 + _META]
        alerts: list[Alert] = []
        schemas = [int(v) for v in meta[:, 3].tolist()]
        if len(set(schemas)) > 1:
            # Comparing values of differently named/ordered fields would only produce noise.
            return self._schema_mismatch(step, schemas)
        alerts.extend(self._check_steps(step, meta[:, 0]))
        alerts.extend(self._check_digests(step, digests, meta[:, 2]))
        alerts.extend(self._check_stragglers(step, timings, meta[:, 1]))
        return alerts

    def _keys(self, column: torch.Tensor) -> list[Any]:
        """Exact identity of each rank's value (bit pattern, so NaN == NaN and -0.0 != 0.0)."""
        if self.rtol > 0:
            return [float(v) for v in column.tolist()]
        return [int(v) for v in column.contiguous().view(torch.int64).tolist()]

    def _same(self, a: Any, b: Any) -> bool:
        if self.rtol > 0:
            if math.isnan(a) and math.isnan(b):
                return True
            return math.isclose(a, b, rel_tol=self.rtol, abs_tol=0.0)
        return bool(a == b)

    def _groups(self, rows: list[tuple[Any, ...]]) -> list[list[int]]:
        groups: list[list[int]] = []
        for r, row in enumerate(rows):
            for g in groups:
                ref = rows[g[0]]
                if all(self._same(x, y) for x, y in zip(row, ref, strict=True)):
                    g.append(r)
                    break
            else:
                groups.append([r])
        groups.sort(key=len, reverse=True)
        return groups

    def _check_steps(self, step: int, steps: torch.Tensor) -> list[Alert]:
        values = [int(v) for v in steps.tolist()]
        if len(set(values)) == 1:
            self._step_sig = None
            return []
        sig = tuple(values)
        if sig == self._step_sig:
            return []
        self._step_sig = sig
        groups = self._groups([(v,) for v in values])
        odd = [r for g in groups[1:] for r in g] if len(groups[0]) * 2 > self.world_size else []
        return [
            self.alert(
                "TWM-XRANK-STEP",
                Severity.HIGH,
                step,
                "ranks are at different step counters: "
                + ", ".join(f"rank {self.global_ranks[r]}={v}" for r, v in enumerate(values))
                + (f" (odd rank(s) out: {[self.global_ranks[r] for r in odd]})" if odd else ""),
                {"steps": values, "ranks": [self.global_ranks[r] for r in odd]},
            )
        ]

    def _check_digests(
        self, step: int, digests: torch.Tensor, suspect: torch.Tensor
    ) -> list[Alert]:
        columns = [self._keys(digests[:, i]) for i in range(digests.shape[1])]
        rows = [tuple(col[r] for col in columns) for r in range(self.world_size)]
        groups = self._groups(rows)
        if len(groups) == 1:
            self._divergence_sig = None
            return []
        majority = groups[0] if len(groups[0]) * 2 > self.world_size else None
        values = digests.tolist()
        suspects = [self.global_ranks[r] for r, s in enumerate(suspect.tolist()) if s > 0]

        def differing(r: int, ref: int) -> dict[str, dict[str, float]]:
            return {
                self.fields[i]: {"value": values[r][i], "reference": values[ref][i]}
                for i in range(len(self.fields))
                if not self._same(rows[r][i], rows[ref][i])
            }

        evidence: dict[str, Any] = {"world_size": self.world_size, "suspects": suspects}
        if majority is not None:
            ref = majority[0]
            odd = [r for g in groups[1:] for r in g]
            per_rank = {str(self.global_ranks[r]): differing(r, ref) for r in odd}
            fields = sorted({f for d in per_rank.values() for f in d})
            named = [self.global_ranks[r] for r in odd]
            msg = (
                f"rank(s) {named} disagree with the majority "
                f"({len(majority)}/{self.world_size} ranks) on {', '.join(fields)}"
            )
            evidence.update(
                ranks=named,
                fields=fields,
                differences=per_rank,
                majority=[self.global_ranks[r] for r in majority],
            )
        else:
            named = [self.global_ranks[r] for g in groups for r in g]
            a = groups[0][0]
            fields = sorted({f for g in groups[1:] for f in differing(g[0], a)})
            if self.world_size == 2:
                msg = f"ranks {named[0]} and {named[1]} disagree on {', '.join(fields)}"
            else:
                msg = (
                    "no majority among replicas: groups "
                    + " vs ".join(str([self.global_ranks[r] for r in g]) for g in groups)
                    + f" differ on {', '.join(fields)}"
                )
            evidence.update(
                ranks=sorted(named),
                fields=fields,
                groups=[[self.global_ranks[r] for r in g] for g in groups],
                differences={
                    f: {
                        str(self.global_ranks[g[0]]): values[g[0]][self.fields.index(f)]
                        for g in groups
                    }
                    for f in fields
                },
            )
            if len(suspects) == 1:
                msg += (
                    f"; rank {suspects[0]} also failed its own step-to-step continuity check, "
                    "so it is the likely culprit"
                )
                evidence["likely_culprit"] = suspects[0]
        sig = (tuple(evidence["ranks"]), tuple(evidence["fields"]))
        if sig == self._divergence_sig:
            return []
        self._divergence_sig = sig
        return [self.alert("TWM-XRANK-DIVERGED", Severity.HIGH, step, msg, evidence)]

    def _check_stragglers(
        self, step: int, timings: torch.Tensor, waits: torch.Tensor
    ) -> list[Alert]:
        if self.world_size < 2:
            return []
        pol = self.straggler
        rows = timings.tolist()
        step_s = [row[0] for row in rows]
        # A rank's own time: everything but backward, where DDP's all-reduce makes the fast ranks
        # wait for the slow one (so backward time is the same everywhere and names nobody).
        own = [max(row[0] - row[2], 0.0) if row[0] > 0 else 0.0 for row in rows]
        prev_wait = waits.tolist()
        median_step = statistics.median(step_s)
        alerts: list[Alert] = []
        for r in range(self.world_size):
            others = [own[k] for k in range(self.world_size) if k != r]
            excess = own[r] - statistics.median(others)
            # Arriving late at the previous exchange shows as waiting less than the others.
            other_waits = [prev_wait[k] for k in range(self.world_size) if k != r]
            late = statistics.median(other_waits) - prev_wait[r]
            worst = max(excess, late)
            slow = worst > pol.abs_margin_s and worst > pol.rel_margin * max(median_step, 1e-9)
            # Synchronous training makes every rank's step as long as the slowest one, so a huge
            # outlier is measured against the others' own time instead.
            typical = max(statistics.median(others), 1e-9)
            huge = worst > pol.huge_abs_s and worst > pol.huge_rel * typical
            self._slow[r].append(slow)
            count = sum(self._slow[r])
            if count == 0:
                self._straggler_alerted.discard(r)
            if r in self._straggler_alerted or not (huge or count >= pol.patience):
                continue
            self._straggler_alerted.add(r)
            g = self.global_ranks[r]
            alerts.append(
                self.alert(
                    "TWM-XRANK-STRAGGLER",
                    Severity.MEDIUM,
                    step,
                    f"rank {g} is a straggler: {worst:.3f}s slower than the other ranks' median "
                    f"(median step {median_step:.3f}s), slow at {count} of the last "
                    f"{len(self._slow[r])} steps",
                    {
                        "ranks": [g],
                        "excess_s": round(worst, 6),
                        "median_step_s": round(median_step, 6),
                        "slow_steps": count,
                        "window": len(self._slow[r]),
                        "timings": {
                            str(self.global_ranks[k]): dict(
                                zip(TIMING_FIELDS, rows[k], strict=True)
                            )
                            for k in range(self.world_size)
                        },
                        "previous_exchange_wait_s": {
                            str(self.global_ranks[k]): prev_wait[k] for k in range(self.world_size)
                        },
                    },
                )
            )
        return alerts

    def alert(
        self, rule: str, severity: Severity, step: int, message: str, evidence: dict[str, Any]
    ) -> Alert:
        return Alert(
            rule_id=rule,
            severity=severity,
            step=step,
            rank=self.global_ranks[self.rank],
            message=message,
            evidence=evidence,
        )
