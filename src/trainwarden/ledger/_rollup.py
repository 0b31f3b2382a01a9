"""Derived data kept beside the log for the dashboard: per-run counters, the hosts and ranks seen,
per-rank metric rollups (minimum and maximum of each step bucket at several bucket widths, one
row per bucket and rank) and per-step weight-fingerprint tallies with the ranks that disagree,
written in the same transaction as the entries they come from. Nothing here is part of the log:
no hash covers it, verification never reads it, and a page that shows it says it is unverified
plot data."""

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
    "METRIC_COLUMNS",
    "STEP_LIMIT",
    "WIDTHS",
    "Derived",
    "disagreeing",
    "fingerprint_value",
    "metric_values",
    "parse_entry",
    "rank_list",
    "rollup_columns",
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
        try:
            return float(v)
        except OverflowError:
            # An integer beyond a float's range (a wrapped record may hold one) is no value.
            return None
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
    step = rec.get("step")
    if (
        type(step) is not int
        or kind not in ("step", "timing")
        or not -STEP_LIMIT < step < STEP_LIMIT
    ):
        return None, []
    out: list[tuple[str, float]] = []
    if kind == "timing":
        for p in PHASES:
            f = _num(rec.get(p))
            if f is not None:
                out.append((p, f))
        # In a timing record "step" is both the step number and, as a float, its duration.
        out.append(("step_s", float(step)))
        return step, out
    f = _num(rec.get("loss"))
    if f is not None:
        out.append(("loss", f))
    gn = rec.get("grad_norm")
    if type(gn) is list:
        gn = gn[0] if gn else None
    f = _num(gn)
    if f is not None:
        out.append(("grad_norm", f))
    timing = rec.get("timing")
    if type(timing) is dict:
        f = _num(timing.get("step"))
        if f is not None:
            out.append(("step_s", f))
        for p in PHASES:
            f = _num(timing.get(p))
            if f is not None:
                out.append((p, f))
    else:
        f = _num(rec.get("step_s"))
        if f is not None:
            out.append(("step_s", f))
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


# A rollup row per (run, width, bucket, rank) holds every metric: for each, these columns.
METRIC_COLUMNS = ("n", "lo", "slo", "hi", "shi")
_SLOT = {m: 2 + i for i, m in enumerate(METRICS)}


def rollup_columns() -> list[str]:
    """The per-metric column names of a rollup row, in row order."""
    return [f"{m}_{c}" for m in METRICS for c in METRIC_COLUMNS]


def _merge_metric(have: list[Any], o: list[Any]) -> None:
    # On equal values the earlier step wins, whatever order the entries arrived in.
    have[0] += o[0]
    if o[1] < have[1] or (o[1] == have[1] and o[2] < have[2]):
        have[1], have[2] = o[1], o[2]
    if o[3] > have[3] or (o[3] == have[3] and o[4] < have[4]):
        have[3], have[4] = o[3], o[4]


def rank_list(ranks: str) -> list[int]:
    """The ranks of a tally's ``"rank,rank,..."``, each once, in order (anything else skipped)."""
    out: list[int] = []
    seen: set[int] = set()
    for part in str(ranks).split(","):
        try:
            r = int(part)
        except ValueError:
            continue
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def disagreeing(tally: dict[int, list[Any]]) -> set[int]:
    """The ranks whose report at one step disagrees, from that step's tally (fingerprint ->
    [ranks, "rank,rank,..."]). Each rank votes once, however often it reported: a rank that
    reported two fingerprints for the step disagrees and does not vote, and so does every
    voting rank whose fingerprint is not held by more than half of the voting ranks (every
    voting rank, when no fingerprint has such a majority)."""
    if len(tally) < 2:
        return set()
    held: dict[int, set[int]] = {}
    for h, (_, ranks) in tally.items():
        for r in rank_list(ranks):
            held.setdefault(r, set()).add(int(h))
    support: dict[int, int] = {}
    for hs in held.values():
        if len(hs) == 1:
            (h,) = hs
            support[h] = support.get(h, 0) + 1
    voters = sum(support.values())
    majority = next((h for h, n in support.items() if n * 2 > voters), None)
    return {r for r, hs in held.items() if majority is None or hs != {majority}}


@dataclass
class Derived:
    """The derived rows of a batch of entries, aggregated before they are written."""

    stats: dict[str, list[Any]] = field(default_factory=dict)  # run -> [entries, ts, step]
    sets: set[tuple[str, str, str]] = field(default_factory=set)  # (run, what, value)
    # (run, finest bucket, rank) -> [first_idx, last_idx, per metric [n, lo, slo, hi, shi]]
    buckets: dict[tuple[str, int, int], list[Any]] = field(default_factory=dict)
    # (run, step) -> fingerprint -> [ranks, "rank,rank,..."] (a rank once per fingerprint)
    fps: dict[tuple[str, int], dict[int, list[Any]]] = field(default_factory=dict)

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
        if step is None:
            return
        r = rank if rank is not None else 0
        if kind == "step":
            if st[2] is None or step > st[2]:
                st[2] = step
            fp = fingerprint_value(rec)
            if fp is not None:
                self.sets.add((run, "fp_rank", str(r)))
                tally = self.fps.get((run, step))
                if tally is None:
                    tally = self.fps[(run, step)] = {}
                t = tally.get(fp)
                if t is None:
                    tally[fp] = [1, str(r)]
                else:
                    t[0] += 1
                    t[1] += f",{r}"
        if not values:
            return
        key = (run, step // FINEST, r)
        got = self.buckets.get(key)
        if got is None:
            got = self.buckets[key] = [index, index, None, None, None, None, None, None]
        else:
            # Entries of a batch come in index order: first_idx stays, last_idx moves.
            got[1] = index
        for metric, v in values:
            i = _SLOT[metric]
            m = got[i]
            if m is None:
                got[i] = [1, v, step, v, step]
                continue
            m[0] += 1
            if v < m[1] or (v == m[1] and step < m[2]):
                m[1], m[2] = v, step
            if v > m[3] or (v == m[3] and step < m[4]):
                m[3], m[4] = v, step

    def rollup_rows(self) -> Iterator[tuple[Any, ...]]:
        """(run, width, bucket, rank, first_idx, last_idx, then per metric n, lo, slo, hi, shi)
        at every width, each coarser level merged from the finest; an absent metric is
        (0, None, None, None, None)."""
        absent = (0, None, None, None, None)
        level = self.buckets
        for width in WIDTHS:
            if width != FINEST:
                coarser: dict[tuple[str, int, int], list[Any]] = {}
                f = width // FINEST
                for (run, b, r), got in self.buckets.items():
                    key = (run, b // f, r)
                    have = coarser.get(key)
                    if have is None:
                        coarser[key] = [
                            got[0],
                            got[1],
                            *(None if m is None else list(m) for m in got[2:]),
                        ]
                        continue
                    have[0] = min(have[0], got[0])
                    have[1] = max(have[1], got[1])
                    for i in range(2, len(got)):
                        o = got[i]
                        if o is None:
                            continue
                        if have[i] is None:
                            have[i] = list(o)
                        else:
                            _merge_metric(have[i], o)
                level = coarser
            for (run, b, r), g in level.items():
                row: list[Any] = [run, width, b, r, g[0], g[1]]
                for m in g[2:]:
                    row.extend(absent if m is None else m)
                yield tuple(row)
