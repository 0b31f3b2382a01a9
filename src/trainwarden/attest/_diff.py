"""Differences between two snapshots (node to node, or run to run), grouped by distribution.

Distributions match on their normalised name and files on their RECORD path, so two nodes with
the environment at different prefixes still compare file by file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainwarden.attest._envvars import describe
from trainwarden.attest._record import FileStatus
from trainwarden.attest._snapshot import Distribution, Snapshot
from trainwarden.findings import Finding, Severity
from trainwarden.report import exit_code_for

__all__ = ["DistDiff", "SnapshotDiff", "diff_snapshots"]

_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".dylib", ".pth", ".zip")


@dataclass(frozen=True)
class DistDiff:
    """How one distribution differs. ``change`` is added, removed, version or files.

    ``changed`` lists files whose sha256 differs: ``(path, sha_a, sha_b, status_a, status_b)``.
    """

    name: str
    change: str
    version_a: str | None
    version_b: str | None
    changed: tuple[tuple[str, str | None, str | None, str, str], ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class SnapshotDiff:
    """Everything that differs from snapshot ``a`` to snapshot ``b``. Pairs are ``(a, b)``."""

    a: str
    b: str
    interpreter: Mapping[str, tuple[str | None, str | None]]
    platform: Mapping[str, tuple[str | None, str | None]]
    distributions: tuple[DistDiff, ...]
    orphans: Mapping[str, tuple[str | None, str | None]]
    pth_files: Mapping[str, tuple[str | None, str | None]]
    customize: Mapping[str, tuple[str | None, str | None]]
    environment: Mapping[str, tuple[str | None, str | None]]
    code: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    path_files: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing that decides what code runs differs (platform details aside)."""
        return not (
            self.interpreter
            or self.distributions
            or self.orphans
            or self.pth_files
            or self.customize
            or self.environment
            or self.code
            or self.path_files
        )

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The differences as findings, for ``b`` checked against baseline ``a``."""
        return tuple(self.baseline_findings())

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a difference is at or above ``fail_on``, else ``0``."""
        return exit_code_for(self.findings, fail_on)

    def to_dict(self) -> dict[str, Any]:
        """Every difference, by kind, and the findings (``attest diff --format json``)."""
        return {
            "a": self.a,
            "b": self.b,
            "interpreter": dict(self.interpreter),
            "platform": dict(self.platform),
            "environment": dict(self.environment),
            "orphans": dict(self.orphans),
            "pth_files": dict(self.pth_files),
            "customize": dict(self.customize),
            "code": dict(self.code),
            "path_files": dict(self.path_files),
            "distributions": [
                {
                    "name": x.name,
                    "change": x.change,
                    "version_a": x.version_a,
                    "version_b": x.version_b,
                    "changed": [
                        {"path": p, "sha256_a": sa, "sha256_b": sb, "status_a": ta, "status_b": tb}
                        for p, sa, sb, ta, tb in x.changed
                    ],
                    "added": list(x.added),
                    "removed": list(x.removed),
                }
                for x in self.distributions
            ],
            "findings": [f.to_dict() for f in self.findings],
        }

    def baseline_findings(self, *, record_checked: bool = False) -> list[Finding]:
        """The differences as findings, for ``b`` checked against baseline ``a``.

        ``record_checked``: files of ``b`` that fail RECORD are left out because the caller
        already reports them (``attest verify`` does; ``attest diff`` does not).
        """
        out: list[Finding] = []
        for field_name, (va, vb) in self.interpreter.items():
            out.append(
                Finding(
                    "TWA-BASE-010",
                    # A different path alone (another node's layout) is not different content.
                    Severity.MEDIUM if field_name == "path" else Severity.HIGH,
                    f"interpreter {field_name} changed: {va} -> {vb}",
                    location=f"interpreter:{field_name}",
                    evidence={"baseline": va, "current": vb},
                )
            )
        for d in self.distributions:
            out.extend(_dist_findings(d, record_checked))
        for path, (va, vb) in self.orphans.items():
            if vb is None:
                continue
            what = "new" if va is None else "changed"
            out.append(
                Finding(
                    "TWA-BASE-007",
                    Severity.HIGH,
                    f"{what} file owned by no distribution since the baseline: {path}",
                    location=path,
                    evidence={"baseline_sha256": va, "current_sha256": vb},
                )
            )
        for path, (va, vb) in self.customize.items():
            if vb is None:
                continue
            what = "new" if va is None else "changed"
            out.append(
                Finding(
                    "TWA-BASE-008",
                    Severity.CRITICAL,
                    f"{what} {path.rsplit('/', 1)[-1]} since the baseline: {path} runs at "
                    "every interpreter start",
                    location=path,
                    evidence={"baseline_sha256": va, "current_sha256": vb},
                )
            )
        for path, (va, vb) in self.pth_files.items():
            if vb is None:
                continue
            what = "new" if va is None else "changed"
            out.append(
                Finding(
                    "TWA-BASE-009",
                    Severity.HIGH,
                    f"{what} .pth file since the baseline: {path}",
                    location=path,
                    evidence={"baseline_sha256": va, "current_sha256": vb},
                )
            )
        for name, (va, vb) in self.environment.items():
            var = describe(name)
            sev = Severity.HIGH if var and var.severity is Severity.HIGH else Severity.MEDIUM
            out.append(
                Finding(
                    "TWA-BASE-011",
                    sev,
                    f"environment variable {name} differs from the baseline: {va!r} -> {vb!r}",
                    location=f"env:{name}",
                    evidence={"baseline": va, "current": vb},
                )
            )
        for path, (va, vb) in self.path_files.items():
            what = "new" if va is None else "removed" if vb is None else "changed"
            code = path.endswith(_CODE_SUFFIXES) or ".so." in path.rsplit("/", 1)[-1]
            sev = Severity.MEDIUM if vb is None else Severity.CRITICAL if code else Severity.HIGH
            out.append(
                Finding(
                    "TWA-BASE-013",
                    sev,
                    f"{what} file on sys.path outside site-packages since the baseline: {path}",
                    location=path,
                    evidence={"baseline": va, "current": vb},
                )
            )
        for path, (va, vb) in self.code.items():
            out.append(
                Finding(
                    "TWA-BASE-012",
                    Severity.MEDIUM,
                    f"code directory {path} differs from the baseline: {va} -> {vb}",
                    location=path,
                    evidence={"baseline": va, "current": vb},
                )
            )
        return out


def _dist_findings(d: DistDiff, record_checked: bool) -> list[Finding]:
    out: list[Finding] = []
    if d.change == "added":
        return [
            Finding(
                "TWA-BASE-004",
                Severity.HIGH,
                f"distribution {d.name} {d.version_b} was installed since the baseline",
                location=d.name,
                evidence={"version": d.version_b},
            )
        ]
    if d.change == "removed":
        return [
            Finding(
                "TWA-BASE-005",
                Severity.MEDIUM,
                f"distribution {d.name} {d.version_a} was removed since the baseline",
                location=d.name,
                evidence={"version": d.version_a},
            )
        ]
    if d.change == "version":
        return [
            Finding(
                "TWA-BASE-006",
                Severity.MEDIUM,
                f"distribution {d.name} changed version {d.version_a} -> {d.version_b}",
                location=d.name,
                evidence={"baseline": d.version_a, "current": d.version_b},
            )
        ]
    ok = FileStatus.OK.value
    for path, sa, sb, status_a, status_b in d.changed:
        failed = status_b in (FileStatus.MODIFIED.value, FileStatus.MISSING.value)
        if failed and record_checked:
            continue  # already reported against RECORD (TWA-REC-001/002)
        if status_b == ok and status_a != ok:
            continue  # the file was restored to what RECORD says
        if failed:
            out.append(
                Finding(
                    "TWA-BASE-001",
                    Severity.CRITICAL if sb is not None else Severity.HIGH,
                    f"{d.name} {d.version_b}: {path} differs from the reference and is "
                    f"{status_b} against RECORD",
                    location=f"{d.name}:{path}",
                    evidence={"baseline_sha256": sa, "current_sha256": sb, "status": status_b},
                )
            )
        elif status_b == ok:
            out.append(
                Finding(
                    "TWA-BASE-001",
                    Severity.CRITICAL,
                    f"{d.name} {d.version_b}: {path} matches RECORD but differs from the "
                    "baseline: RECORD was rewritten with the file",
                    location=f"{d.name}:{path}",
                    evidence={"baseline_sha256": sa, "current_sha256": sb},
                )
            )
        else:
            # No RECORD hash: any change is reported, also to no digest at all (a symbolic link
            # swapped in, or a file that can no longer be read).
            out.append(
                Finding(
                    "TWA-BASE-002",
                    Severity.HIGH,
                    f"{d.name} {d.version_b}: {path} (no RECORD hash) differs from the baseline",
                    location=f"{d.name}:{path}",
                    evidence={"baseline_sha256": sa, "current_sha256": sb},
                )
            )
    if d.added or d.removed:
        out.append(
            Finding(
                "TWA-BASE-003",
                Severity.HIGH,
                f"{d.name} {d.version_b}: {len(d.added)} file(s) added, {len(d.removed)} "
                "removed since the baseline",
                location=d.name,
                evidence={"added": list(d.added[:50]), "removed": list(d.removed[:50])},
            )
        )
    return out


def _first_by_key(dists: tuple[Distribution, ...]) -> dict[str, Distribution]:
    out: dict[str, Distribution] = {}
    for d in dists:
        out.setdefault(d.key, d)
    return out


def _pairs(
    a: Mapping[str, str | None], b: Mapping[str, str | None]
) -> dict[str, tuple[str | None, str | None]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _rel(path: str, roots: tuple[str, ...]) -> str:
    # Orphans and hooks are compared relative to their site directory so prefixes may differ.
    for root in roots:
        if path.startswith(root + "/"):
            return f"<site>/{path[len(root) + 1 :]}"
    return path


def _path_map(s: Snapshot) -> dict[str, str | None]:
    # Keyed relative to the interpreter's prefixes, so nodes with different install paths of the
    # same interpreter still compare file by file.
    base, prefix = s.interpreter.base_prefix, s.interpreter.prefix
    out: dict[str, str | None] = {}
    for f in s.path_files:
        key = f.path
        for root, label in ((prefix, "<prefix>"), (base, "<base>")):
            if root and key.startswith(root + "/"):
                key = f"{label}/{key[len(root) + 1 :]}"
                break
        out[key] = f"symlink:{f.detail}" if f.status == "symlink" else f.sha256
    return out


def diff_snapshots(
    a: Snapshot, b: Snapshot, *, a_label: str = "A", b_label: str = "B"
) -> SnapshotDiff:
    """Compare two snapshots; ``a`` is the reference (baseline, or node A)."""
    ia, ib = a.interpreter, b.interpreter
    interp = {}
    for name in ("version", "implementation", "sha256", "path"):
        va, vb = getattr(ia, name), getattr(ib, name)
        if va != vb:
            interp[name] = (va, vb)
    plat = _pairs(dict(a.platform), dict(b.platform))
    plat.pop("node", None)
    da, db = _first_by_key(a.distributions), _first_by_key(b.distributions)
    dists: list[DistDiff] = []
    for key in sorted(set(da) | set(db)):
        x, y = da.get(key), db.get(key)
        if x is None and y is not None:
            dists.append(DistDiff(y.name, "added", None, y.version))
        elif y is None and x is not None:
            dists.append(DistDiff(x.name, "removed", x.version, None))
        elif x is not None and y is not None:
            if x.version != y.version:
                dists.append(DistDiff(y.name, "version", x.version, y.version))
                continue
            fa = {f.path: f for f in x.files}
            fb = {f.path: f for f in y.files}
            changed = tuple(
                (p, fa[p].sha256, fb[p].sha256, fa[p].status.value, fb[p].status.value)
                for p in sorted(set(fa) & set(fb))
                if fa[p].sha256 != fb[p].sha256
            )
            added = tuple(sorted(set(fb) - set(fa)))
            removed = tuple(sorted(set(fa) - set(fb)))
            if changed or added or removed:
                dists.append(
                    DistDiff(y.name, "files", x.version, y.version, changed, added, removed)
                )
    ra, rb = tuple(a.site_packages), tuple(b.site_packages)
    # .pth files and customize modules are compared on their own, not again as orphans.
    hooks_a = {p.path for p in a.pth_files} | {c.path for c in a.customize}
    hooks_b = {p.path for p in b.pth_files} | {c.path for c in b.customize}
    orph = _pairs(
        {_rel(o.path, ra): o.sha256 for o in a.orphans if o.path not in hooks_a},
        {_rel(o.path, rb): o.sha256 for o in b.orphans if o.path not in hooks_b},
    )
    pth = _pairs(
        {_rel(p.path, ra): p.sha256 for p in a.pth_files},
        {_rel(p.path, rb): p.sha256 for p in b.pth_files},
    )
    cust = _pairs(
        {_rel(c.path, ra): c.sha256 for c in a.customize},
        {_rel(c.path, rb): c.sha256 for c in b.customize},
    )
    env = _pairs(dict(a.environment), dict(b.environment))
    code = _pairs(
        {c.path: f"{c.commit or c.kind}:{c.digest[:16]}" for c in a.code},
        {c.path: f"{c.commit or c.kind}:{c.digest[:16]}" for c in b.code},
    )
    return SnapshotDiff(
        path_files=_pairs(_path_map(a), _path_map(b)),
        a=a_label,
        b=b_label,
        interpreter=interp,
        platform=plat,
        distributions=tuple(dists),
        orphans=orph,
        pth_files=pth,
        customize=cust,
        environment=env,
        code=code,
    )
