"""Many nodes against the fleet's majority: which snapshots differ from what most nodes run.

Each snapshot is reduced to a flat map of everything that decides what code runs (interpreter
digest and version, distribution versions and file digests, files outside site-packages,
orphans, hooks, loader variables, code directories), keyed so that nodes with different install
prefixes compare. Identical maps are grouped first, so hundreds of identical nodes cost one map
in memory; the majority value of every key is then the value most nodes hold, and a node is an
odd one out when any of its values differs from a strict majority.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trainwarden.attest._diff import _path_map, _rel
from trainwarden.attest._snapshot import Snapshot
from trainwarden.findings import Finding, Severity
from trainwarden.report import exit_code_for

__all__ = ["FleetReport", "NodeDeviation", "fleet_diff", "fleet_key_map"]

_MAX_LISTED = 50


def fleet_key_map(s: Snapshot) -> dict[str, str | None]:
    """The comparable items of one snapshot: ``{key: value}`` (host-specific fields left out)."""
    out: dict[str, str | None] = {}
    ip = s.interpreter
    out["interpreter:version"] = ip.version
    out["interpreter:implementation"] = ip.implementation
    out["interpreter:sha256"] = ip.sha256
    for d in s.distributions:
        key = d.key
        out[f"dist:{key}"] = d.version
        for f in d.files:
            out[f"file:{key}:{f.path}"] = f.sha256
    roots = tuple(s.site_packages)
    hooks = {p.path for p in s.pth_files} | {c.path for c in s.customize}
    for o in s.orphans:
        if o.path not in hooks:
            out[f"orphan:{_rel(o.path, roots)}"] = o.sha256
    for p in s.pth_files:
        out[f"pth:{_rel(p.path, roots)}"] = p.sha256
    for cm in s.customize:
        out[f"customize:{_rel(cm.path, roots)}"] = cm.sha256
    for k, v in _path_map(s).items():
        out[f"path:{k}"] = v
    for k, v in s.environment.items():
        out[f"env:{k}"] = v
    for c in s.code:
        out[f"code:{c.path}"] = f"{c.commit or c.kind}:{c.digest}"
    return out


def _digest(m: Mapping[str, str | None]) -> str:
    return hashlib.sha256(json.dumps(sorted(m.items())).encode()).hexdigest()


@dataclass(frozen=True)
class NodeDeviation:
    """A node that differs from the majority: ``differences`` are ``(key, its value, majority
    value)`` (None: absent), the first :data:`_MAX_LISTED` of ``count``."""

    label: str
    host: str
    count: int
    differences: tuple[tuple[str, str | None, str | None], ...]


@dataclass(frozen=True)
class FleetReport:
    """``nodes`` snapshots in ``groups`` distinct environments; ``majority_nodes`` run the
    majority environment; ``odd`` are the others; ``split`` are keys without a strict majority."""

    nodes: int
    groups: int
    majority_nodes: int
    odd: tuple[NodeDeviation, ...]
    split: tuple[str, ...]

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a finding is at or above ``fail_on``, else ``0``."""
        return exit_code_for(self.findings, fail_on)

    def to_dict(self) -> dict[str, Any]:
        """Majority, odd ones out and split keys (``attest diff --fleet --format json``)."""
        return {
            "nodes": self.nodes,
            "distinct_environments": self.groups,
            "majority_nodes": self.majority_nodes,
            "odd_ones_out": [
                {
                    "snapshot": n.label,
                    "host": n.host,
                    "differences": n.count,
                    "items": [{"item": k, "node": v, "majority": m} for k, v, m in n.differences],
                }
                for n in self.odd
            ],
            "split": list(self.split),
            "findings": [f.to_dict() for f in self.findings],
        }

    @property
    def findings(self) -> tuple[Finding, ...]:
        """One HIGH finding per odd node, one MEDIUM per split key (first 50)."""
        out = [
            Finding(
                "TWA-FLEET-001",
                Severity.HIGH,
                f"{n.label} ({n.host}) differs from the fleet majority in {n.count} item(s): "
                + ", ".join(k for k, _, _ in n.differences[:5]),
                location=n.label,
                evidence={
                    "host": n.host,
                    "count": n.count,
                    "differences": [
                        {"item": k, "node": v, "majority": m} for k, v, m in n.differences
                    ],
                },
            )
            for n in self.odd
        ]
        out.extend(
            Finding(
                "TWA-FLEET-002",
                Severity.MEDIUM,
                f"no strict majority of the {self.nodes} nodes agrees on {k}",
                location=k,
            )
            for k in self.split[:_MAX_LISTED]
        )
        return tuple(out)


def fleet_diff(snapshots: Iterable[tuple[str, Snapshot]]) -> FleetReport:
    """Compare every snapshot with the fleet majority (snapshots are consumed one at a time)."""
    maps: dict[str, dict[str, str | None]] = {}
    members: dict[str, list[tuple[str, str]]] = {}
    for label, snap in snapshots:
        m = fleet_key_map(snap)
        dg = _digest(m)
        maps.setdefault(dg, m)
        members.setdefault(dg, []).append((label, snap.host))
    nodes = sum(len(v) for v in members.values())
    counts = {dg: len(v) for dg, v in members.items()}
    keys = sorted({k for m in maps.values() for k in m})
    majority: dict[str, str | None] = {}
    split: list[str] = []
    for k in keys:
        tally: dict[str | None, int] = {}
        for dg, m in maps.items():
            v = m.get(k)
            tally[v] = tally.get(v, 0) + counts[dg]
        value, n = max(tally.items(), key=lambda kv: kv[1])
        if n * 2 > nodes:
            majority[k] = value
        else:
            split.append(k)
    odd: list[NodeDeviation] = []
    majority_nodes = 0
    for dg, m in maps.items():
        diffs = [
            (k, m.get(k), majority[k]) for k in keys if k in majority and m.get(k) != majority[k]
        ]
        if not diffs:
            # Split keys (no strict majority) are reported once each, not per node.
            majority_nodes += counts[dg]
            continue
        for label, host in members[dg]:
            odd.append(NodeDeviation(label, host, len(diffs), tuple(diffs[:_MAX_LISTED])))
    odd.sort(key=lambda n: n.label)
    return FleetReport(nodes, len(maps), majority_nodes, tuple(odd), tuple(split))
