"""What the dashboard shows, computed from the ledger's stored entries alone: one incremental
index per run (alerts, hosts, ranks, per-rank metric series, weight fingerprints, attestation and
artifact records) and the views built from it. Reads only; nothing here writes to the ledger."""

from __future__ import annotations

import json
import math
import re
import threading
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jinja2.utils import htmlsafe_json_dumps

from trainwarden.ledger.storage import Storage
from trainwarden.ledger.types import RunInfo, StoredEntry

__all__ = [
    "SEVERITIES",
    "RunIndex",
    "RunSummary",
    "RunsModel",
    "TimelineItem",
    "attest_diff",
    "downsample",
]

SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}
# Per-rank step metrics plotted on the run page: name in the page -> how to read a step record.
METRICS = ("loss", "grad_norm", "step_s")
PHASES = ("forward", "backward", "optimizer")
_PAGE = 20_000
# Service flags that mean the log itself saw something wrong with the run.
# A flag this table does not name is shown as HIGH.
_LEDGER_SEVERITY = {
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


def _num(v: Any) -> float | None:
    t = type(v)
    if t is float:
        return v if math.isfinite(v) else None
    if t is int:
        f = float(v)
        return f if math.isfinite(f) else None
    return None


_FIELD = re.compile(r'"(rule_id|severity|message|step|rank)": ("(?:[^"\\]|\\.)*"|-?\d+)')


def unwrap(rec: dict[str, Any]) -> dict[str, Any]:
    """The record as its writer meant it. A sink stores a record holding values RFC 8785 cannot
    carry (64-bit fingerprints, NaN) as ``{"noncanonical": "<JSON text>"}``, cut at 2000
    characters; a cut text still yields the fields a timeline needs."""
    text = rec.get("noncanonical")
    if len(rec) != 1 or not isinstance(text, str):
        return rec
    try:
        got = json.loads(text)
    except ValueError:
        got = None
    if isinstance(got, dict):
        return got
    out: dict[str, Any] = {"truncated_record": text}
    for m in _FIELD.finditer(text):
        if m.group(1) not in out:
            try:
                out[m.group(1)] = json.loads(m.group(2))
            except ValueError:
                continue
    return out


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
    """Everything the dashboard needs about one run, brought up to date from the entries
    appended since the last call (``update``). Thread-safe."""

    def __init__(self, run: RunInfo, *, background: bool = False) -> None:
        self.run = run
        self.background = background
        self._refreshing = False
        self.lock = threading.Lock()
        self.after = -1
        self.entries = 0
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
        self._plot_cache: tuple[int, dict[str, Any], str] | None = None

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
        try:
            doc = json.loads(row.entry)
        except ValueError:
            doc = {}
        rec = doc.get("record") if isinstance(doc, dict) else None
        rec = unwrap(rec) if isinstance(rec, dict) else {}
        host = doc.get("host") if isinstance(doc.get("host"), str) else None
        rank = doc.get("rank")
        if not isinstance(rank, int) or isinstance(rank, bool):
            r2 = rec.get("rank")
            rank = r2 if isinstance(r2, int) and not isinstance(r2, bool) else None
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
        if kind == "step":
            self._step(rec, rank if rank is not None else 0, step)
        elif kind == "timing" and step is not None:
            for p in PHASES:
                self._point(p, rank if rank is not None else 0, step, _num(rec.get(p)))
            self._point("step_s", rank if rank is not None else 0, step, _num(rec.get("step")))
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

    def _step(self, rec: dict[str, Any], rank: int, step: int | None) -> None:
        if step is None:
            return
        if self.latest_step is None or step > self.latest_step:
            self.latest_step = step
        self._point("loss", rank, step, _num(rec.get("loss")))
        gn = rec.get("grad_norm")
        if isinstance(gn, list):
            gn = gn[0] if gn else None
        self._point("grad_norm", rank, step, _num(gn))
        timing = rec.get("timing")
        if isinstance(timing, dict):
            self._point("step_s", rank, step, _num(timing.get("step")))
            for p in PHASES:
                self._point(p, rank, step, _num(timing.get(p)))
        else:
            self._point("step_s", rank, step, _num(rec.get("step_s")))
        wh = rec.get("weights_hash")
        if isinstance(wh, str):
            try:
                h = int(wh, 16)
            except ValueError:
                h = hash(wh)
            h &= 0xFFFF_FFFF_FFFF_FFFF
            if h >= 1 << 63:
                h -= 1 << 64
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
        return RunSummary(
            run=self.run,
            status=self.status(),
            owner=str(owner) if owner else "-",
            hosts=tuple(sorted(self.hosts)),
            ranks=tuple(sorted(self.ranks)),
            started=self.first_ts if self.first_ts is not None else self.run.created,
            latest_step=self.latest_step,
            counts={s: self.counts[s] for s in SEVERITIES},
            entries=self.entries,
        )

    def plots(self, buckets: int = 200) -> tuple[dict[str, Any], str]:
        """Downsampled per-rank series of every metric with the alert points kept, and the
        cross-rank fingerprint agreement; also as JSON safe to embed in HTML. Cached until the
        next entry arrives; with ``background`` set, a page asked for after new entries gets
        the previous plots (their ``as_of`` says up to which ledger index) while new ones are
        computed in a thread, so a large run's page never waits for them."""
        with self.lock:
            cached = self._plot_cache
            if cached is not None and cached[0] == self.version:
                return cached[1], cached[2]
            snap = self._snapshot()
            if cached is not None and self.background:
                if not self._refreshing:
                    self._refreshing = True
                    threading.Thread(
                        target=self._refresh, args=(snap, buckets), daemon=True
                    ).start()
                return cached[1], cached[2]
        return self._compute(snap, buckets)

    def _refresh(self, snap: _Snapshot, buckets: int) -> None:
        try:
            self._compute(snap, buckets)
        finally:
            with self.lock:
                self._refreshing = False

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
        keep = {t.step for t in snap.timeline if t.step is not None}
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
        text = htmlsafe_json_dumps(out)
        with self.lock:
            if self._plot_cache is None or self._plot_cache[0] <= snap.version:
                self._plot_cache = (snap.version, out, text)
        return out, text


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
    steps, hashes, present = _dense(cols, np.iinfo(np.int64).min)
    # The majority fingerprint of a step is held by more than half of the ranks that
    # reported it; if one exists it sits in the middle of the sorted present values. A step
    # without a strict majority (a 1-1 split) counts against every rank.
    srt = np.sort(hashes, axis=1)
    n_present = present.sum(axis=1)
    missing = hashes.shape[1] - n_present
    mid = np.minimum(missing + n_present // 2, hashes.shape[1] - 1)
    cand = srt[np.arange(len(srt)), mid]
    agree = (hashes == cand[:, None]) & present
    majority = agree.sum(axis=1) * 2 > n_present
    bad = present & (~agree | ~majority[:, None])
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
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(col == 0, 0, np.floor(np.log10(np.abs(col))))
        scale = np.power(10.0, 5 - np.nan_to_num(mag, nan=0, posinf=0, neginf=0))
        r = np.round(col * scale) / scale
    r = np.where(np.isfinite(r), r, col)
    return [None if x != x else x for x in r.tolist()]


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
    """The dashboard's run indexes over one storage, brought up to date by reading the log in
    index order from where the last look stopped (one pass for all runs, by primary key)."""

    storage: Storage
    indexes: dict[str, RunIndex] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cursor: int = 0

    def refresh(self) -> None:
        with self.lock:
            size = self.storage.size()
            while self.cursor < size:
                rows = self.storage.entries(self.cursor, min(size, self.cursor + _PAGE))
                if not rows:
                    break
                by_run: dict[str, list[StoredEntry]] = {}
                for row in rows:
                    by_run.setdefault(row.run, []).append(row)
                for run_id, got in by_run.items():
                    self._get(run_id, None).add_rows(got)
                self.cursor = rows[-1].index + 1

    def _get(self, run_id: str, run: RunInfo | None) -> RunIndex:
        idx = self.indexes.get(run_id)
        if idx is None:
            info = run or self.storage.get_run(run_id)
            if info is None:
                # An entry of a run the runs table does not know is still shown.
                info = RunInfo(run_id, run_id, 0.0, 0.0, 0, "unknown", {})
            idx = self.indexes[run_id] = RunIndex(info, background=True)
        return idx

    def index(self, run: RunInfo) -> RunIndex:
        self.refresh()
        with self.lock:
            idx = self._get(run.run_id, run)
            idx.run = run
        return idx

    def summaries(self) -> list[RunSummary]:
        self.refresh()
        out = []
        for r in self.storage.list_runs():
            with self.lock:
                idx = self._get(r.run_id, r)
                idx.run = r
            out.append(idx.summary())
        return out
