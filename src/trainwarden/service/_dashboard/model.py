"""What the dashboard shows of a run: the timeline, attestations and artifacts from the ledger's
stored entries (one incremental index per run that reads only the run's entries other than step
and timing records), and the plots, counters and fingerprint agreement from the derived tables
the storage keeps beside the log (:mod:`trainwarden.ledger._rollup`), so a page never reads all
of a large run. Reads only; nothing here writes to the ledger."""

from __future__ import annotations

import json
import re
import threading
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jinja2.utils import htmlsafe_json_dumps

from trainwarden.ledger._rollup import (
    FINEST,
    METRIC_COLUMNS,
    STEP_LIMIT,
    WIDTHS,
    _num,
    fingerprint_value,
    metric_values,
    parse_entry,
    unwrap,
)
from trainwarden.ledger._rollup import METRICS as ROLLED
from trainwarden.ledger._storage import RunStats, Storage
from trainwarden.ledger._types import RunInfo, StoredEntry

__all__ = [
    "SEVERITIES",
    "RunIndex",
    "RunSummary",
    "RunsModel",
    "TimelineItem",
    "attest_diff",
    "downsample",
    "downsample_rollup",
    "unwrap",
]

SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}
# Per-rank step metrics plotted on the run page: name in the page -> how to read a step record.
METRICS = ("loss", "grad_norm", "step_s")
PHASES = ("forward", "backward", "optimizer")
_PAGE = 20_000
# A run with at most this many entries is plotted from its entries (every point of a short run);
# a larger one from the rollups.
EXACT_LIMIT = 4000
# Service flags that mean the log itself saw something wrong with the run.
# A flag this table does not name is shown as HIGH.
_LEDGER_SEVERITY = {
    "ledger.quota_exceeded": "HIGH",
    "ledger.rate_limited": "MEDIUM",
    "ledger.record_after_close": "HIGH",
    "ledger.sequence_gap": "HIGH",
    "ledger.silence": "MEDIUM",
    "ledger.unclosed_run": "MEDIUM",
}
_ARTIFACT_PREFIXES = ("load", "scan", "manifest.")


@dataclass(frozen=True)
class TimelineItem:
    """One thing that went wrong, with where it is in the log (``index``) for its proof."""

    index: int
    kind: str
    rule_id: str
    severity: str
    step: int | None
    rank: int | None
    host: str | None
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class RunSummary:
    run: RunInfo
    status: str  # clean / warnings / tampering detected
    owner: str
    hosts: tuple[str, ...]
    ranks: tuple[int, ...]
    started: float
    latest_step: int | None
    counts: dict[str, int]
    entries: int


def _severity(v: Any) -> str:
    s = str(v).upper() if v is not None else "HIGH"
    # An unknown severity name is shown as HIGH: a writer cannot hide an alert by misspelling it.
    return s if s in _SEV_RANK else "HIGH"


class _Series:
    """Append-only (step, value) columns of one metric of one rank."""

    __slots__ = ("steps", "values")

    def __init__(self) -> None:
        self.steps = array("q")
        self.values = array("d")


@dataclass(frozen=True)
class _Snapshot:
    version: int
    as_of: int
    timeline: list[TimelineItem]
    series: dict[str, dict[int, _Series]]
    fp_steps: dict[int, array[int]]
    fp_hashes: dict[int, array[int]]


class RunIndex:
    """Everything the dashboard needs about one run. ``add_rows`` takes the run's entries in
    index order; over a storage (``RunsModel``) it is given only the entries other than step
    and timing records, and the counters and plots come from the storage's derived tables.
    Thread-safe."""

    def __init__(self, run: RunInfo, storage: Storage | None = None) -> None:
        self.run = run
        self.storage = storage
        self.lock = threading.Lock()
        self.after = -1
        self.entries = 0
        self.stats: RunStats | None = None
        self.timeline: list[TimelineItem] = []
        self.counts: Counter[str] = Counter()
        self.hosts: set[str] = set()
        self.ranks: set[int] = set()
        self.first_ts: float | None = None
        self.latest_step: int | None = None
        self.series: dict[str, dict[int, _Series]] = {m: {} for m in (*METRICS, *PHASES)}
        self.fp_steps: dict[int, array[int]] = {}
        self.fp_hashes: dict[int, array[int]] = {}
        self.attest: list[dict[str, Any]] = []
        self.artifacts: list[dict[str, Any]] = []
        self.version = 0
        self._plot_cache: tuple[Any, dict[str, Any], str] | None = None
        # What the last plots read of the rollups, so that the next reads only what changed.
        self._rolled = RollupCache()
        self._computing = threading.Lock()

    def add_rows(self, rows: list[StoredEntry]) -> None:
        """Take this run's entries, in index order, newer than any taken before."""
        with self.lock:
            for row in rows:
                if row.index > self.after:
                    self._add(row)
                    self.after = row.index
            self.version += 1

    # -- ingest ----------------------------------------------------------------------------

    def _add(self, row: StoredEntry) -> None:
        self.entries += 1
        doc, rec, rank, host = parse_entry(row.entry)
        if host:
            self.hosts.add(host)
        if rank is not None:
            self.ranks.add(rank)
        ts = _num(doc.get("ts"))
        if ts is not None and (self.first_ts is None or ts < self.first_ts):
            self.first_ts = ts
        kind = row.kind
        step = rec.get("step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else None
        if kind in ("step", "timing"):
            self._metrics(kind, rec, rank if rank is not None else 0)
        elif kind == "alert":
            self._timeline(row, rec, rank, host, step, _severity(rec.get("severity")))
        elif kind.startswith("ledger."):
            self._timeline(row, rec, rank, host, step, _LEDGER_SEVERITY.get(kind, "HIGH"))
        elif kind == "uncaught_exception":
            self._timeline(row, rec, rank, host, step, "HIGH", message=str(rec.get("error", "")))
        elif kind.startswith("attest"):
            self.attest.append({"index": row.index, "kind": kind, "host": host, "record": rec})
        elif kind.startswith(_ARTIFACT_PREFIXES):
            self._artifact(row, doc, rec, host)

    def _metrics(self, kind: str, rec: dict[str, Any], rank: int) -> None:
        step, values = metric_values(kind, rec)
        if step is None:
            return
        for metric, v in values:
            self._point(metric, rank, step, v)
        if kind != "step":
            return
        if self.latest_step is None or step > self.latest_step:
            self.latest_step = step
        h = fingerprint_value(rec)
        if h is not None:
            self.fp_steps.setdefault(rank, array("q")).append(step)
            self.fp_hashes.setdefault(rank, array("q")).append(h)

    def _point(self, metric: str, rank: int, step: int, value: float | None) -> None:
        if value is None:
            return
        s = self.series[metric].get(rank)
        if s is None:
            s = self.series[metric][rank] = _Series()
        s.steps.append(step)
        s.values.append(value)

    def _timeline(
        self,
        row: StoredEntry,
        rec: dict[str, Any],
        rank: int | None,
        host: str | None,
        step: int | None,
        severity: str,
        message: str | None = None,
    ) -> None:
        ev = rec.get("evidence")
        item = TimelineItem(
            index=row.index,
            kind=row.kind,
            rule_id=str(rec.get("rule_id") or row.kind),
            severity=severity,
            step=step,
            rank=rank,
            host=host,
            message=message if message is not None else str(rec.get("message", "")),
            evidence=ev if isinstance(ev, dict) else {k: v for k, v in rec.items() if k != "seq"},
        )
        self.timeline.append(item)
        self.counts[severity] += 1

    def _artifact(
        self, row: StoredEntry, doc: dict[str, Any], rec: dict[str, Any], host: str | None
    ) -> None:
        findings = rec.get("findings")
        worst = None
        if isinstance(findings, list):
            for f in findings:
                if isinstance(f, dict):
                    s = _severity(f.get("severity"))
                    if worst is None or _SEV_RANK[s] > _SEV_RANK[worst]:
                        worst = s
        verdict = rec.get("verdict") or rec.get("outcome")
        if verdict is None and "ok" in rec:
            verdict = "ok" if rec.get("ok") is True else "FAILED"
        if verdict is None:
            verdict = worst or ("clean" if isinstance(findings, list) else "-")
        sha = doc.get("sha256") or rec.get("sha256")
        self.artifacts.append(
            {
                "index": row.index,
                "kind": row.kind,
                "host": host,
                "path": str(rec.get("path", "")),
                "sha256": sha if isinstance(sha, str) else "",
                "verdict": str(verdict),
                "worst": worst,
                "manifest": rec.get("manifest"),
                "findings": findings if isinstance(findings, list) else [],
            }
        )
        if worst is not None and _SEV_RANK[worst] >= _SEV_RANK["MEDIUM"]:
            self.counts[worst] += 1
            self.timeline.append(
                TimelineItem(
                    index=row.index,
                    kind=row.kind,
                    rule_id=row.kind,
                    severity=worst,
                    step=None,
                    rank=None,
                    host=host,
                    message=f"{rec.get('path', '')}: {len(findings or [])} finding(s)",
                    evidence={"findings": findings},
                )
            )

    # -- views -----------------------------------------------------------------------------

    def status(self) -> str:
        if self.counts["HIGH"] or self.counts["CRITICAL"]:
            return "tampering detected"
        if self.counts["LOW"] or self.counts["MEDIUM"]:
            return "warnings"
        return "clean"

    def summary(self) -> RunSummary:
        owner = self.run.meta.get("owner") if isinstance(self.run.meta, dict) else None
        hosts, ranks = set(self.hosts), set(self.ranks)
        first_ts, latest, entries = self.first_ts, self.latest_step, self.entries
        st = self.stats
        if st is not None:
            hosts.update(st.hosts)
            ranks.update(st.ranks)
            if st.first_ts is not None and (first_ts is None or st.first_ts < first_ts):
                first_ts = st.first_ts
            if st.latest_step is not None and (latest is None or st.latest_step > latest):
                latest = st.latest_step
            entries = max(entries, st.entries)
        return RunSummary(
            run=self.run,
            status=self.status(),
            owner=str(owner) if owner else "-",
            hosts=tuple(sorted(hosts)),
            ranks=tuple(sorted(ranks)),
            started=first_ts if first_ts is not None else self.run.created,
            latest_step=latest,
            counts={s: self.counts[s] for s in SEVERITIES},
            entries=entries,
        )

    def plots(
        self, buckets: int = 200, exact_limit: int = EXACT_LIMIT
    ) -> tuple[dict[str, Any], str]:
        """Downsampled per-rank series of every metric with the alert points kept, and the
        cross-rank fingerprint agreement; also as JSON safe to embed in HTML. Over a storage, a
        run of at most ``exact_limit`` entries is plotted from its step entries, a larger one
        from the rollups (``source`` says which); both are unverified plot data. Cached until
        the run gets new entries."""
        if self.storage is None:
            with self.lock:
                cached = self._plot_cache
                if cached is not None and cached[0] == self.version:
                    return cached[1], cached[2]
                snap = self._snapshot()
            return self._compute(snap, buckets)
        st = self.stats
        key = (st.entries if st is not None else 0, self.after, buckets, exact_limit)
        with self._computing:
            return self._storage_plots(key, st, buckets, exact_limit)

    def _storage_plots(
        self, key: tuple[int, int, int, int], st: RunStats | None, buckets: int, exact_limit: int
    ) -> tuple[dict[str, Any], str]:
        storage = self.storage
        if storage is None:  # pragma: no cover - plots() only comes here with a storage
            raise RuntimeError("a run index without a storage has no derived tables")
        with self.lock:
            cached = self._plot_cache
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
            timeline = list(self.timeline)
        if st is None or st.entries <= exact_limit:
            scratch = RunIndex(self.run)
            after = -1
            while True:
                rows = storage.query(
                    run=self.run.run_id, kind=None, writer=None, after=after, limit=_PAGE
                )
                if not rows:
                    break
                scratch.add_rows(rows)
                after = rows[-1].index
            out, _ = scratch._compute(scratch._snapshot(), buckets)
            out["source"] = "entries"
        else:
            out = rollup_plots(storage, self.run.run_id, timeline, st, buckets, self._rolled)
            out["source"] = "rollup"
        out["as_of"] = key[1]
        text = htmlsafe_json_dumps(out)
        with self.lock:
            self._plot_cache = (key, out, text)
        return out, text

    def _snapshot(self) -> _Snapshot:
        def copy(s: _Series) -> _Series:
            c = _Series()
            c.steps, c.values = array("q", s.steps), array("d", s.values)
            return c

        return _Snapshot(
            version=self.version,
            as_of=self.after,
            timeline=list(self.timeline),
            series={m: {r: copy(s) for r, s in pr.items()} for m, pr in self.series.items()},
            fp_steps={r: array("q", a) for r, a in self.fp_steps.items()},
            fp_hashes={r: array("q", a) for r, a in self.fp_hashes.items()},
        )

    def _compute(self, snap: _Snapshot, buckets: int) -> tuple[dict[str, Any], str]:
        keep = _alert_steps(snap.timeline)
        out: dict[str, Any] = {"metrics": {}, "as_of": snap.as_of}
        for metric, per_rank in snap.series.items():
            if per_rank:
                out["metrics"][metric] = downsample(per_rank, keep, buckets)
        out["alerts"] = [
            {"step": t.step, "rank": t.rank, "rule": t.rule_id, "severity": t.severity}
            for t in snap.timeline
            if t.step is not None
        ]
        out["fingerprint"] = _fingerprint(snap.fp_steps, snap.fp_hashes)
        out["source"] = "entries"
        text = htmlsafe_json_dumps(out)
        with self.lock:
            if self._plot_cache is None or self._plot_cache[0] <= snap.version:
                self._plot_cache = (snap.version, out, text)
        return out, text


def _alert_steps(timeline: list[TimelineItem]) -> set[int]:
    """The steps of the timeline that a plot can hold (a writer's step may be any integer)."""
    return {t.step for t in timeline if t.step is not None and -STEP_LIMIT < t.step < STEP_LIMIT}


def _fingerprint(fp_steps: dict[int, Any], fp_hashes: dict[int, Any]) -> dict[str, Any]:
    if not fp_steps:
        return {"ranks": 0, "steps": 0, "diverged": []}
    ranks = sorted(fp_steps)
    cols = [
        (
            np.frombuffer(fp_steps[r], dtype=np.int64),
            np.frombuffer(fp_hashes[r], dtype=np.int64),
        )
        for r in ranks
    ]
    fill = np.iinfo(np.int64).min
    steps, hashes, present = _dense(cols, fill)
    # A rank votes once per step (its last report fills its cell). One that reported two
    # fingerprints for a step disagrees there and does not vote, whatever its last report says.
    twice = np.zeros_like(present)
    for j, (st, v) in enumerate(cols):
        if len(st) > 1 and not bool(np.all(st[1:] > st[:-1])):
            order = np.argsort(st, kind="stable")
            s2, v2 = st[order], v[order]
            found = s2[1:][(s2[1:] == s2[:-1]) & (v2[1:] != v2[:-1])]
            if len(found):
                twice[np.searchsorted(steps, np.unique(found)), j] = True
    voting = present & ~twice
    votes = np.where(voting, hashes, fill)
    # The majority fingerprint of a step is held by more than half of the ranks that voted;
    # if one exists it sits in the middle of the sorted votes. A step without a strict
    # majority (a 1-1 split) counts against every voting rank.
    srt = np.sort(votes, axis=1)
    n_vote = voting.sum(axis=1)
    missing = votes.shape[1] - n_vote
    mid = np.minimum(missing + n_vote // 2, votes.shape[1] - 1)
    cand = srt[np.arange(len(srt)), mid]
    agree = (votes == cand[:, None]) & voting
    majority = agree.sum(axis=1) * 2 > n_vote
    bad = (voting & (~agree | ~majority[:, None])) | twice
    diverged = []
    for j, r in enumerate(ranks):
        rows = np.flatnonzero(bad[:, j])
        if len(rows):
            diverged.append({"rank": int(r), "from_step": int(steps[rows[0]]), "steps": len(rows)})
    return {
        "ranks": len(ranks),
        "steps": len(steps),
        "diverged": sorted(diverged, key=lambda d: (d["from_step"], d["rank"])),
    }


def _dense(
    cols: list[tuple[Any, Any]], fill: Any
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(distinct steps, steps x ranks matrix, presence mask) from per-rank (steps, values)
    columns. Sized by the steps actually recorded, never by their range: a writer that sends
    step 10**15 costs one row, not 10**15."""
    ref = cols[0][0]
    # The usual case: every rank reported the same increasing steps; no sort needed.
    same = bool(np.all(ref[1:] > ref[:-1])) and all(np.array_equal(c[0], ref) for c in cols)
    steps = ref if same else np.unique(np.concatenate([c[0] for c in cols]))
    dtype = cols[0][1].dtype
    dense = np.full((len(steps), len(cols)), fill, dtype=dtype)
    present = np.zeros((len(steps), len(cols)), dtype=bool)
    for j, (st, v) in enumerate(cols):
        if same:
            dense[:, j] = v
            present[:, j] = True
        else:
            pos = np.searchsorted(steps, st)
            dense[pos, j] = v
            present[pos, j] = True
    return steps, dense, present


def _round(col: np.ndarray[Any, Any]) -> list[float | None]:
    """Values to 6 significant digits (short JSON), NaN as None."""
    return _round_columns(col[:, None])[0]


def _round_columns(y: np.ndarray[Any, Any]) -> list[list[float | None]]:
    """Each column of ``y`` as :func:`_round` gives it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(y == 0, 0, np.floor(np.log10(np.abs(y))))
        scale = np.power(10.0, 5 - np.nan_to_num(mag, nan=0, posinf=0, neginf=0))
        r = np.round(y * scale) / scale
    r = np.where(np.isfinite(r), r, y)
    nan_cols: np.ndarray[Any, Any] = np.asarray(np.isnan(r).any(axis=0))
    gaps = [bool(nan_cols[j]) for j in range(r.shape[1])]
    cols: list[list[float | None]] = r.T.tolist()
    return [
        [None if x != x else x for x in c] if gap else c for c, gap in zip(cols, gaps, strict=True)
    ]


def downsample(per_rank: dict[int, Any], keep_steps: set[int], buckets: int) -> dict[str, Any]:
    """Min/max decimation over step buckets shared by all ranks: each bucket is two slots
    (at its first step and its middle) carrying, per rank, the bucket's minimum and maximum in
    the order they occurred, so every rank's extremes are kept exactly in value (their step
    placed within the bucket); every step in ``keep_steps`` stays exact. Returns
    ``{"x": [...], "ranks": [...], "y": [[...] per rank], "points": steps recorded}``."""
    ranks = sorted(per_rank)
    cols = [
        (np.frombuffer(per_rank[r].steps, dtype=np.int64), np.frombuffer(per_rank[r].values))
        for r in ranks
    ]
    steps, dense, present = _dense(cols, np.nan)
    n = len(steps)
    keep_rows = np.flatnonzero(np.isin(steps, np.fromiter(keep_steps, np.int64)))
    if n <= 2 * buckets:
        x = steps
        y = dense
    else:
        width = -(-n // buckets)
        nb = -(-n // width)
        pad = width * nb - n
        d = np.concatenate([dense, np.full((pad, len(ranks)), np.nan)]) if pad else dense
        d = d.reshape(nb, width, len(ranks))
        # argmin/argmax with NaN as missing (an all-NaN bucket of a rank stays NaN).
        amin = np.argmin(np.where(np.isnan(d), np.inf, d), axis=1)
        amax = np.argmax(np.where(np.isnan(d), -np.inf, d), axis=1)
        vmin = np.take_along_axis(d, amin[:, None, :], axis=1)[:, 0, :]
        vmax = np.take_along_axis(d, amax[:, None, :], axis=1)[:, 0, :]
        first = np.where(amin <= amax, vmin, vmax)
        second = np.where(amin <= amax, vmax, vmin)
        starts = np.arange(nb) * width
        mids = np.minimum(starts + width // 2, n - 1)
        x = np.empty(2 * nb, dtype=np.int64)
        x[0::2], x[1::2] = steps[starts], steps[mids]
        y = np.empty((2 * nb, len(ranks)))
        y[0::2], y[1::2] = first, second
        if len(keep_rows):
            x = np.concatenate([x, steps[keep_rows]])
            y = np.concatenate([y, dense[keep_rows]])
            order = np.argsort(x, kind="stable")
            x, y = x[order], y[order]
    del present
    return {
        "x": x.tolist(),
        "ranks": ranks,
        "y": [_round(y[:, j]) for j in range(len(ranks))],
        "points": n,
    }


def flatten(value: Any, prefix: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
    """A record as ``path -> value`` lines (depth-limited) for diffing two attestations."""
    out = {} if out is None else out
    if len(out) > 5000:
        return out
    if isinstance(value, dict) and prefix.count(".") < 8:
        for k in sorted(value):
            flatten(value[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and prefix.count(".") < 8 and len(value) <= 200:
        for i, v in enumerate(value):
            flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True)[:500]
    return out


def attest_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(path, value in a, value in b) for every path whose value differs."""
    fa, fb = flatten(a), flatten(b)
    return [
        (k, fa.get(k, "(absent)"), fb.get(k, "(absent)"))
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k)
    ]


@dataclass
class RunsModel:
    """The dashboard's run indexes over one storage. A run's index reads only the run's entries
    other than step and timing records (by index, from where the last look stopped); its
    counters and plots come from the storage's derived tables."""

    storage: Storage
    indexes: dict[str, RunIndex] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _refresh(self, idx: RunIndex) -> None:
        while True:
            rows = self.storage.notes(idx.run.run_id, idx.after, _PAGE)
            if not rows:
                break
            idx.add_rows(rows)
        idx.stats = self.storage.run_stats(idx.run.run_id)

    def _get(self, run: RunInfo) -> RunIndex:
        with self.lock:
            idx = self.indexes.get(run.run_id)
            if idx is None:
                idx = self.indexes[run.run_id] = RunIndex(run, self.storage)
            idx.run = run
        return idx

    def index(self, run: RunInfo) -> RunIndex:
        idx = self._get(run)
        self._refresh(idx)
        return idx

    def summaries(self) -> list[RunSummary]:
        return [self.index(r).summary() for r in self.storage.list_runs()]


_Cols = tuple[
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
]


def _merge_buckets(cols: _Cols, buckets: int) -> _Cols:
    """Rollup columns (bucket, rank, n, vmin, smin, vmax, smax) with runs of consecutive present
    buckets merged into at most ``buckets`` groups (the group number replaces the bucket); the
    earliest step wins a tie."""
    b, rk, n, v0, s0, v1, s1 = cols
    present = np.unique(b)
    per = max(1, -(-len(present) // max(1, buckets)))
    g = np.searchsorted(present, b) // per
    lo_order = np.lexsort((s0, v0, rk, g))
    hi_order = np.lexsort((s1, -v1, rk, g))
    gs, rs = g[lo_order], rk[lo_order]
    start = np.ones(len(gs), dtype=bool)
    start[1:] = (gs[1:] != gs[:-1]) | (rs[1:] != rs[:-1])
    seg = np.cumsum(start) - 1
    total = np.zeros(int(seg[-1]) + 1 if len(seg) else 0, dtype=np.int64)
    np.add.at(total, seg, n[lo_order])
    # Both orders sort by (group, rank) first, so their segments line up.
    first_lo, first_hi = lo_order[start], hi_order[start]
    return (
        g[first_lo],
        rk[first_lo],
        total,
        v0[first_lo],
        s0[first_lo],
        v1[first_hi],
        s1[first_hi],
    )


def downsample_rollup(
    cols: _Cols, exact: dict[int, dict[int, float]], buckets: int
) -> dict[str, Any]:
    """The plot of one metric from rollup columns (bucket, rank, n, vmin, smin, vmax, smax),
    one element per bucket and rank: each bucket (after merging down to at most ``buckets``)
    is two slots, at the earliest and the latest step where a rank had its minimum or maximum,
    carrying per rank that bucket's minimum and maximum in the order they occurred, so every
    rank's envelope is kept exactly in value; ``exact`` (step -> rank -> value) adds the alert
    steps exactly. Same shape as :func:`downsample`."""
    if len(np.unique(cols[0])) > buckets:
        cols = _merge_buckets(cols, buckets)
    b, rk, n, v0, s0, v1, s1 = cols
    extra = np.array([r for v in exact.values() for r in v], dtype=np.int64)
    ranks = np.unique(np.concatenate([rk, extra]))
    nr = len(ranks)
    if len(b):
        ri = np.searchsorted(ranks, rk)
        present = np.unique(b)
        gi = np.searchsorted(present, b)
        in_order = s0 <= s1
        first = np.full((len(present), nr), np.nan)
        second = np.full((len(present), nr), np.nan)
        first[gi, ri] = np.where(in_order, v0, v1)
        second[gi, ri] = np.where(in_order, v1, v0)
        lo = np.full(len(present), np.iinfo(np.int64).max)
        hi = np.full(len(present), np.iinfo(np.int64).min)
        np.minimum.at(lo, gi, np.minimum(s0, s1))
        np.maximum.at(hi, gi, np.maximum(s0, s1))
        per_rank = np.zeros(nr, dtype=np.int64)
        np.add.at(per_rank, ri, n)
        points = int(per_rank.max())
    else:
        first = second = np.empty((0, nr))
        lo = hi = np.empty(0, dtype=np.int64)
        points = 0
    ex_steps = np.array(sorted(exact), dtype=np.int64)
    ex = np.full((len(ex_steps), nr), np.nan)
    for i, step in enumerate(ex_steps.tolist()):
        for rank, v in exact[step].items():
            ex[i, int(np.searchsorted(ranks, rank))] = v
    x = np.concatenate([lo, hi, ex_steps])
    y = np.concatenate([first, second, ex])
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    return {
        "x": x.tolist(),
        "ranks": ranks.tolist(),
        "y": _round_columns(y),
        "points": points,
    }


def _metric_columns(rows: list[tuple[Any, ...]]) -> dict[str, _Cols]:
    """Rollup rows (bucket, rank, then per metric n, lo, slo, hi, shi, with n = 0 where the
    metric has no values) as columns per metric, keeping the buckets and ranks with values."""
    out: dict[str, _Cols] = {}
    if not rows:
        return out
    arr = np.array(rows, dtype=object)
    b = arr[:, 0].astype(np.int64)
    rk = arr[:, 1].astype(np.int64)
    k = len(METRIC_COLUMNS)
    for i, metric in enumerate(ROLLED):
        c = 2 + i * k
        ok = arr[:, c].astype(np.int64) > 0
        if not ok.any():
            continue
        sel = arr[ok, c : c + k]
        out[metric] = (
            b[ok],
            rk[ok],
            sel[:, 0].astype(np.int64),
            sel[:, 1].astype(float),
            sel[:, 2].astype(np.int64),
            sel[:, 3].astype(float),
            sel[:, 4].astype(np.int64),
        )
    return out


def _alert_values(
    storage: Storage, run_id: str, steps: set[int], spans: list[tuple[int, int]]
) -> dict[str, dict[int, dict[int, float]]]:
    """metric -> step -> rank -> value at each alert step, read from the run's step and timing
    entries in ``spans``, the index spans the finest rollup rows of those steps' buckets
    record."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    if not steps:
        return out
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    wanted = b"|".join(str(s).encode() for s in sorted(steps))
    maybe = re.compile(rb'"step":(?:' + wanted + rb")[,}]|\"noncanonical\"")
    for a, b in merged:
        start = a
        while start <= b:
            end = min(b, start + _PAGE - 1)
            for kind, entry in storage.metric_entries(run_id, start, end):
                # A canonical record holding step S contains '"step":S' (a wrapped
                # noncanonical one is parsed anyway); the rest are skipped unparsed.
                if maybe.search(entry) is None:
                    continue
                _, rec, rank, _ = parse_entry(entry)
                step, values = metric_values(kind, rec)
                if step in steps:
                    r = rank if rank is not None else 0
                    for metric, v in values:
                        out.setdefault(metric, {}).setdefault(step, {})[r] = v
            start = end + 1
    return out


def _fingerprint_tally(storage: Storage, run_id: str, fp_ranks: int) -> dict[str, Any]:
    """The cross-rank fingerprint agreement as the storage keeps it at ingest: per rank, the
    steps where its fingerprint was not the one more than half of the step's ranks held (or
    where no fingerprint had such a majority, or where it reported two)."""
    steps, per_rank = storage.fingerprint_tally(run_id)
    if not steps:
        return {"ranks": 0, "steps": 0, "diverged": []}
    diverged = [{"rank": r, "from_step": first, "steps": n} for r, first, n in per_rank]
    return {
        "ranks": fp_ranks,
        "steps": steps,
        "diverged": sorted(diverged, key=lambda d: (d["from_step"], d["rank"])),
    }


@dataclass
class RollupCache:
    """The rollup rows of one bucket width as last read (keyed by bucket and rank), the log
    size they were read at, and the alert steps' exact values with the index spans they came
    from: the next plots re-read only rows that entries appended since then changed."""

    width: int = 0
    since: int = -1
    rows: dict[tuple[int, int], tuple[Any, ...]] = field(default_factory=dict)
    alert_key: Any = None
    alert_values: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)


def _width(storage: Storage, run_id: str, buckets: int) -> int | None:
    """The finest bucket width with at most ``buckets`` buckets (else the widest), or None
    when the run has no rollup rows."""
    # Coarsest first: each probe is an index seek that stops after ``buckets + 1``.
    if storage.rollup_buckets(run_id, WIDTHS[-1], buckets) == 0:
        return None
    width = WIDTHS[-1]
    for w in reversed(WIDTHS[:-1]):
        if storage.rollup_buckets(run_id, w, buckets) > buckets:
            break
        width = w
    return width


def rollup_plots(
    storage: Storage,
    run_id: str,
    timeline: list[TimelineItem],
    stats: RunStats,
    buckets: int,
    cache: RollupCache | None = None,
) -> dict[str, Any]:
    """The plots of a run from its rollups: every metric at the finest bucket width with at
    most ``buckets`` buckets (or the coarsest, merged down), every alert step exact, and the
    fingerprint agreement. Reads O(buckets x ranks) rollup rows (with ``cache``, only those
    changed since its last read) plus the step entries of the alert steps' buckets, never the
    whole run."""
    cache = cache if cache is not None else RollupCache()
    alert_steps = _alert_steps(timeline)
    spans = sorted(storage.rollup_spans(run_id, [s // FINEST for s in alert_steps]))
    alert_key = (frozenset(alert_steps), tuple(spans))
    if cache.alert_key != alert_key:
        cache.alert_values = _alert_values(storage, run_id, alert_steps, spans)
        cache.alert_key = alert_key
    exact = cache.alert_values
    # Rows changed after this size carry a last index at or beyond it.
    head = storage.size()
    width = _width(storage, run_id, buckets)
    out: dict[str, Any] = {"metrics": {}}
    if width is None:
        cache.rows, cache.width, cache.since = {}, 0, -1
    else:
        if width != cache.width:
            cache.rows, cache.width, cache.since = {}, width, -1
        for row in storage.rollup(run_id, width, cache.since):
            cache.rows[(int(row[0]), int(row[1]))] = row
        cache.since = head
        for metric, cols in _metric_columns(list(cache.rows.values())).items():
            out["metrics"][metric] = downsample_rollup(cols, exact.get(metric, {}), buckets)
    out["alerts"] = [
        {"step": t.step, "rank": t.rank, "rule": t.rule_id, "severity": t.severity}
        for t in timeline
        if t.step is not None
    ]
    out["fingerprint"] = _fingerprint_tally(storage, run_id, len(stats.fp_ranks))
    return out
