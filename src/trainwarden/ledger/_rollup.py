"""Derived data kept beside the log for the dashboard: per-run counters, the hosts and ranks seen,
per-rank metric rollups (minimum and maximum of each step bucket at several bucket widths) and
per-step weight-fingerprint tallies, written in the same transaction as the entries they come
from. Nothing here is part of the log: no hash covers it, verification never reads it, and a
page that shows it says it is unverified plot data."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FINEST",
    "METRICS",
    "STEP_LIMIT",
    "WIDTHS",
    "Derived",
    "fingerprint_value",
    "metric_values",
    "parse_entry",
    "unwrap",
]

# Per-rank step metrics: name in the page -> how to read a step (or timing) record.
METRICS = ("loss", "grad_norm", "step_s", "forward", "backward", "optimizer")
PHASES = ("forward", "backward", "optimizer")
# Bucket widths in steps, finest first; each is four times the previous one, so a page finds a
# level with between a quarter of its target and its target of buckets.
WIDTHS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)
FINEST = WIDTHS[0]
# Steps outside this range are not rolled up (the columns are 64-bit).
STEP_LIMIT = 2**62


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


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def parse_entry(entry: bytes) -> tuple[dict[str, Any], dict[str, Any], int | None, str | None]:
    """(entry document, unwrapped record, rank, host) of stored entry bytes; never raises."""
    try:
        doc = json.loads(entry)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    rec = doc.get("record")
    rec = unwrap(rec) if isinstance(rec, dict) else {}
    host = doc.get("host") if isinstance(doc.get("host"), str) else None
    rank = _int(doc.get("rank"))
    if rank is None:
        rank = _int(rec.get("rank"))
        # A record's own rank is the writer's word, unchecked by the log (a wrapped record can
        # carry any integer): only the range the log allows for an event's rank is taken.
        if rank is not None and not 0 <= rank < 2**31:
            rank = None
    return doc, rec, rank, host


def metric_values(kind: str, rec: dict[str, Any]) -> tuple[int | None, list[tuple[str, float]]]:
    """(step, [(metric, value)]) a ``step`` or ``timing`` record contributes to the plots."""
    step = _int(rec.get("step"))
    if step is None or kind not in ("step", "timing") or not -STEP_LIMIT < step < STEP_LIMIT:
        return None, []
    out: list[tuple[str, float]] = []

    def put(metric: str, v: Any) -> None:
        f = _num(v)
        if f is not None:
            out.append((metric, f))

    if kind == "timing":
        for p in PHASES:
            put(p, rec.get(p))
        # In a timing record "step" is both the step number and, as a float, its duration.
        put("step_s", rec.get("step"))
        return step, out
    put("loss", rec.get("loss"))
    gn = rec.get("grad_norm")
    if isinstance(gn, list):
        gn = gn[0] if gn else None
    put("grad_norm", gn)
    timing = rec.get("timing")
    if isinstance(timing, dict):
        put("step_s", timing.get("step"))
        for p in PHASES:
            put(p, timing.get(p))
    else:
        put("step_s", rec.get("step_s"))
    return step, out


def fingerprint_value(rec: dict[str, Any]) -> int | None:
    """A step record's ``weights_hash`` as a signed 64-bit integer (a hex fingerprint as is,
    any other string by its SHA-256), or None."""
    wh = rec.get("weights_hash")
    if not isinstance(wh, str):
        return None
    try:
        h = int(wh, 16)
    except ValueError:
        h = int.from_bytes(hashlib.sha256(wh.encode("utf-8", "replace")).digest()[:8], "big")
    h &= 0xFFFF_FFFF_FFFF_FFFF
    return h - (1 << 64) if h >= 1 << 63 else h


@dataclass(slots=True)
class _Bucket:
    n: int
    vmin: float
    smin: int
    vmax: float
    smax: int
    first_idx: int
    last_idx: int

    def merge(self, o: _Bucket) -> None:
        self.n += o.n
        if o.vmin < self.vmin:
            self.vmin, self.smin = o.vmin, o.smin
        if o.vmax > self.vmax:
            self.vmax, self.smax = o.vmax, o.smax
        self.first_idx = min(self.first_idx, o.first_idx)
        self.last_idx = max(self.last_idx, o.last_idx)


@dataclass
class Derived:
    """The derived rows of a batch of entries, aggregated before they are written."""

    stats: dict[str, list[Any]] = field(default_factory=dict)  # run -> [entries, ts, step]
    sets: set[tuple[str, str, str]] = field(default_factory=set)  # (run, what, value)
    buckets: dict[tuple[str, str, int, int], _Bucket] = field(default_factory=dict)
    fps: dict[tuple[str, int, int], list[Any]] = field(default_factory=dict)  # -> [n, ranks]

    def add(self, index: int, run: str, kind: str, entry: bytes) -> None:
        doc, rec, rank, host = parse_entry(entry)
        st = self.stats.get(run)
        if st is None:
            st = self.stats[run] = [0, None, None]
        st[0] += 1
        ts = _num(doc.get("ts"))
        if ts is not None and (st[1] is None or ts < st[1]):
            st[1] = ts
        if host:
            self.sets.add((run, "host", host))
        if rank is not None:
            self.sets.add((run, "rank", str(rank)))
        step, values = metric_values(kind, rec)
        if step is None or not -STEP_LIMIT < step < STEP_LIMIT:
            return
        r = rank if rank is not None else 0
        if kind == "step":
            if st[2] is None or step > st[2]:
                st[2] = step
            fp = fingerprint_value(rec)
            if fp is not None:
                self.sets.add((run, "fp_rank", str(r)))
                t = self.fps.get((run, step, fp))
                if t is None:
                    self.fps[(run, step, fp)] = [1, str(r)]
                else:
                    t[0] += 1
                    t[1] += f",{r}"
        b = step // FINEST
        buckets = self.buckets
        for metric, v in values:
            key = (run, metric, b, r)
            got = buckets.get(key)
            if got is None:
                buckets[key] = _Bucket(1, v, step, v, step, index, index)
                continue
            # Entries of a batch come in index order: first_idx stays, last_idx moves.
            got.n += 1
            if v < got.vmin:
                got.vmin, got.smin = v, step
            if v > got.vmax:
                got.vmax, got.smax = v, step
            got.last_idx = index

    def rollup_rows(self) -> Iterator[tuple[Any, ...]]:
        """(run, metric, width, bucket, rank, n, vmin, smin, vmax, smax, first_idx, last_idx)
        at every width, each coarser level merged from the finest."""
        level = self.buckets
        for width in WIDTHS:
            if width != FINEST:
                coarser: dict[tuple[str, str, int, int], _Bucket] = {}
                f = width // FINEST
                for (run, metric, b, r), got in self.buckets.items():
                    key = (run, metric, b // f, r)
                    have = coarser.get(key)
                    if have is None:
                        coarser[key] = _Bucket(
                            got.n,
                            got.vmin,
                            got.smin,
                            got.vmax,
                            got.smax,
                            got.first_idx,
                            got.last_idx,
                        )
                    else:
                        have.merge(got)
                level = coarser
            for (run, metric, b, r), g in level.items():
                yield (
                    run,
                    metric,
                    width,
                    b,
                    r,
                    g.n,
                    g.vmin,
                    g.smin,
                    g.vmax,
                    g.smax,
                    g.first_idx,
                    g.last_idx,
                )
