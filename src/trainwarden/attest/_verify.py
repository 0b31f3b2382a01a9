"""Findings for a snapshot: against its RECORD hashes, its start-up hooks, and a baseline.

Every rule id, its meaning and severity is in the rule catalogue (:mod:`trainwarden.attest._rules`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden.attest._cache import HashCache
from trainwarden.attest._diff import SnapshotDiff, diff_snapshots
from trainwarden.attest._effects import EnvEffect
from trainwarden.attest._envvars import describe
from trainwarden.attest._record import FileStatus
from trainwarden.attest._signing import LoadedSnapshot
from trainwarden.attest._snapshot import Snapshot, take_snapshot
from trainwarden.findings import Finding, Severity
from trainwarden.report import exit_code_for

__all__ = [
    "VerifyReport",
    "baseline_code_dirs",
    "check_snapshot",
    "verify_environment",
    "vouched_bytecode",
]

_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".dylib", ".pth")


@dataclass(frozen=True)
class VerifyReport:
    """The snapshot that was checked, the baseline used (if any), the diff and the findings."""

    snapshot: Snapshot
    baseline: LoadedSnapshot | None
    diff: SnapshotDiff | None
    findings: tuple[Finding, ...]

    def at_least(self, threshold: Severity) -> list[Finding]:
        """Findings at or above ``threshold``."""
        return [f for f in self.findings if f.severity >= threshold]

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a finding is at or above ``fail_on``, else ``0``."""
        return exit_code_for(self.findings, fail_on)

    def to_dict(self) -> dict[str, Any]:
        """What a node reports about itself: a summary of the snapshot just taken, the baseline
        it was compared with, its in-toto subjects (interpreter, environment and code digests)
        and every finding. ``attest verify --format json`` prints it; it is also the payload
        meant for a ledger service."""
        base = self.baseline
        return {
            "summary": self.snapshot.summary(),
            "baseline": None
            if base is None
            else {
                "path": base.source,
                "signed": base.signed,
                "signature_verified": base.verified,
                "created": base.snapshot.created,
                "host": base.snapshot.host,
            },
            "subject": self.snapshot.subjects(),
            "findings": [f.to_dict() for f in self.findings],
        }


def check_snapshot(snap: Snapshot) -> list[Finding]:
    """Findings from the snapshot alone: RECORD mismatches, orphans, hooks, loader variables."""
    out: list[Finding] = []
    no_hash: dict[str, int] = {}
    for d in snap.distributions:
        if d.record_problem:
            out.append(
                Finding(
                    "TWA-REC-004",
                    # An OS package's metadata: its files are checked by the OS tools (REC-006).
                    Severity.INFO if d.os_package else Severity.MEDIUM,
                    f"{d.name} {d.version}: {d.record_problem}",
                    location=d.metadata_dir,
                    evidence={"distribution": d.name, "version": d.version, "kind": d.kind},
                )
            )
        # OS packages (dpkg) may legitimately change files after the wheel was built (stripped
        # binaries, moved scripts) and only root can change /usr: reported, less loudly.
        os_note = f" (OS package {d.os_package}: check with debsums)" if d.os_package else ""
        for f in d.files:
            status = f.status
            if status is FileStatus.OK:
                continue
            if status is FileStatus.NO_HASH:
                # Most non-OK files of a clean environment: counted, so no path is built for them.
                no_hash[d.name] = no_hash.get(d.name, 0) + 1
                continue
            full = os.path.normpath(os.path.join(d.location, f.path))
            if status is FileStatus.MODIFIED:
                out.append(
                    Finding(
                        "TWA-REC-001",
                        Severity.MEDIUM if d.os_package else Severity.CRITICAL,
                        f"{full} of {d.name} {d.version} differs from its RECORD hash{os_note}",
                        location=full,
                        evidence={
                            "distribution": d.name,
                            "version": d.version,
                            "expected": f.expected,
                            "actual_sha256": f.sha256,
                        },
                    )
                )
            elif status is FileStatus.MISSING:
                out.append(
                    Finding(
                        "TWA-REC-002",
                        Severity.LOW if d.os_package else Severity.HIGH,
                        f"{full} of {d.name} {d.version} is listed in RECORD but missing{os_note}",
                        location=full,
                        evidence={"distribution": d.name, "version": d.version},
                    )
                )
    if no_hash:
        top = sorted(no_hash.items(), key=lambda kv: -kv[1])[:10]
        out.append(
            Finding(
                "TWA-REC-003",
                Severity.INFO,
                f"{sum(no_hash.values())} installed file(s) have no RECORD hash (mostly bytecode "
                "compiled at install time, which is compared with its source); compare against "
                "a baseline to cover the rest",
                location=snap.interpreter.prefix,
                evidence={"per_distribution": dict(top)},
            )
        )
    if snap.os_packages:
        total = sum(snap.os_packages.values())
        out.append(
            Finding(
                "TWA-REC-006",
                Severity.INFO,
                f"{total} file(s) in site directories belong to {len(snap.os_packages)} OS "
                "package(s) (dpkg) without RECORD; verify them with `debsums` or `dpkg --verify`",
                location=snap.interpreter.prefix,
                evidence={"packages": dict(snap.os_packages)},
            )
        )
    for path, error in snap.unreadable.items():
        out.append(
            Finding(
                "TWA-REC-005",
                Severity.HIGH,
                f"{path} could not be read ({error}); it was not verified",
                location=path,
            )
        )
    # .pth files and customize modules get their own, more specific rules below.
    hook_paths = {p.path for p in snap.pth_files} | {c.path for c in snap.customize}
    # Folders some distribution installed files below (a package directory linked into place,
    # as Spack and Nix views do, has its files checked against RECORD through the link); built
    # only when an orphan is a link, as walking every installed file costs every verify.
    owned: set[str] | None = None
    for o in snap.orphans:
        if o.path in hook_paths:
            continue
        code = o.path.endswith(_CODE_SUFFIXES) or ".so." in os.path.basename(o.path)
        # Only a symbolic link has no digest without being unreadable. Python imports through
        # it (a link to a directory is a package) and the walk does not enter it: unless a
        # distribution owns what is below it, nothing there was checked (fail closed).
        link = o.sha256 is None and o.path not in snap.unreadable
        if link:
            if owned is None:
                owned = {
                    os.path.normpath(os.path.join(d.location, f.path.split("/", 1)[0]))
                    for d in snap.distributions
                    for f in d.files
                    if "/" in f.path
                }
            link = o.path not in owned
        out.append(
            Finding(
                "TWA-ORPH-001",
                Severity.HIGH if code or link else Severity.LOW,
                f"{o.path} is inside site-packages but no distribution installed it"
                + (
                    " (importable code)"
                    if code
                    else " (a symbolic link Python imports through; what it leads to was not "
                    "checked)"
                    if link
                    else ""
                ),
                location=o.path,
                evidence={"sha256": o.sha256, "size": o.size},
            )
        )
    for p in snap.pth_files:
        if p.owner is None and p.import_lines:
            out.append(
                Finding(
                    "TWA-PTH-001",
                    Severity.CRITICAL,
                    f"{p.path} belongs to no distribution and runs code at every interpreter "
                    f"start: {p.import_lines[0][:120]}",
                    location=p.path,
                    evidence={"import_lines": list(p.import_lines), "sha256": p.sha256},
                )
            )
        elif p.owner is None:
            out.append(
                Finding(
                    "TWA-PTH-002",
                    Severity.MEDIUM,
                    f"{p.path} belongs to no distribution and adds {len(p.path_entries)} "
                    "directory(ies) to sys.path",
                    location=p.path,
                    evidence={"path_entries": list(p.path_entries), "sha256": p.sha256},
                )
            )
        elif p.import_lines:
            out.append(
                Finding(
                    "TWA-PTH-003",
                    Severity.INFO,
                    f"{p.path} (from {p.owner}) runs code at every interpreter start",
                    location=p.path,
                    evidence={"owner": p.owner, "import_lines": list(p.import_lines)},
                )
            )
    for c in snap.customize:
        if c.owner is None and c.where != "stdlib":
            out.append(
                Finding(
                    "TWA-CUST-001",
                    Severity.CRITICAL,
                    f"{c.module} at {c.path} ({c.where}) belongs to no distribution"
                    + (" and runs at every interpreter start" if c.active else ""),
                    location=c.path,
                    evidence={"module": c.module, "active": c.active, "sha256": c.sha256},
                )
            )
        else:
            source = f"distribution {c.owner}" if c.owner else "the Python installation (stdlib)"
            out.append(
                Finding(
                    "TWA-CUST-002",
                    Severity.MEDIUM,
                    f"{c.module} at {c.path} comes from {source}; verify it with its package "
                    "manager",
                    location=c.path,
                    evidence={"module": c.module, "active": c.active, "sha256": c.sha256},
                )
            )
    out.extend(_path_findings(snap))
    effects: dict[str, list[EnvEffect]] = {}
    for e in snap.env_effects:
        effects.setdefault(e.variable, []).append(e)
    for name, value in snap.environment.items():
        var = describe(name)
        if name in effects:
            worst = max(effects[name], key=lambda e: Severity[e.severity])
            out.append(
                Finding(
                    "TWA-ENV-001",
                    Severity[worst.severity],
                    worst.effect
                    + (f" (and {len(effects[name]) - 1} more)" if len(effects[name]) > 1 else ""),
                    location=f"env:{name}",
                    evidence={"value": value, "effects": [e.to_dict() for e in effects[name]]},
                )
            )
            continue
        if var is None or var.severity is None or not value:
            continue
        out.append(
            Finding(
                "TWA-ENV-001",
                var.severity,
                f"{name} is set ({var.reason}): {value[:200]}",
                location=f"env:{name}",
                evidence={"value": value},
            )
        )
    return out


def _root_of(path: str, roots: Sequence[str]) -> str | None:
    best = None
    for r in roots:
        if path.startswith(r + "/") and (best is None or len(r) > len(best)):
            best = r
    return best


def _unvouched_in_managed_stdlib(snap: Snapshot) -> list[Finding]:
    # Where a package manager installed the standard library (Debian: every file but the
    # bytecode py3compile writes), a file it does not know was added by someone else.
    stdlib_roots = [r for r, kind in snap.path_roots.items() if kind == "stdlib"]
    managed: dict[str, str] = {}
    for f in snap.path_files:
        if f.source is None:
            continue
        root = _root_of(f.path, stdlib_roots)
        if root is not None:
            managed.setdefault(root, f.source.split(":", 1)[0])
    out: list[Finding] = []
    if not managed:
        return out
    for f in snap.path_files:
        if f.status != "unvouched":
            continue
        root = _root_of(f.path, stdlib_roots)
        if root is None or root not in managed:
            continue
        if os.path.basename(os.path.dirname(f.path)) == "__pycache__" and f.path.endswith(".pyc"):
            continue  # compiled at install time; covered by a baseline
        out.append(
            Finding(
                "TWA-PATH-005",
                Severity.HIGH,
                f"{f.path} is in the standard library {root}, which {managed[root]} installed, "
                "but no package manager installed this file",
                location=f.path,
                evidence={"root": root, "manager": managed[root], "sha256": f.sha256},
            )
        )
    return out


def _path_findings(snap: Snapshot) -> list[Finding]:
    out: list[Finding] = []
    vouched: dict[str, int] = {}
    unvouched = 0
    for f in snap.path_files:
        if f.status == "modified":
            out.append(
                Finding(
                    "TWA-PATH-001",
                    Severity.CRITICAL,
                    f"{f.path} differs from the hash {f.source} recorded for it",
                    location=f.path,
                    evidence={"vouched_by": f.source, "expected": f.detail, "sha256": f.sha256},
                )
            )
        if f.source is not None:
            manager = f.source.split(":", 1)[0]
            vouched[manager] = vouched.get(manager, 0) + 1
        elif f.status == "unvouched":
            unvouched += 1
    out.extend(_unvouched_in_managed_stdlib(snap))
    for sh in snap.shadows:
        if sh.standard:
            continue  # the real standard module beating a backport is how Python is meant to work
        entries = [sh.winner, *sh.shadowed]
        classes = [sh.winner_class, *sh.shadowed_classes]
        # Reported even when an earlier entry (PYTHONPATH) wins today: without it, this one would.
        for i, cls in enumerate(classes[:-1]):
            if cls != "stdlib":
                continue
            out.append(
                Finding(
                    "TWA-PATH-002",
                    Severity.CRITICAL,
                    f"module {sh.module} in the standard-library directory {entries[i]} is not a "
                    f"standard module and shadows the one in {', '.join(entries[i + 1 :])}",
                    location=os.path.join(entries[i], sh.module),
                    evidence={"module": sh.module, "shadowed": entries[i + 1 :]},
                )
            )
            break
    if snap.path_files:
        out.append(
            Finding(
                "TWA-PATH-003",
                Severity.INFO,
                f"{len(snap.path_files)} file(s) on sys.path outside site-packages: "
                + ", ".join(f"{n} vouched by {m}" for m, n in sorted(vouched.items()))
                + (", " if vouched else "")
                + f"{unvouched} known to no package manager (only a baseline covers them)",
                location=snap.interpreter.base_prefix,
                evidence={
                    "roots": dict(snap.path_roots),
                    "vouched": vouched,
                    "unvouched": unvouched,
                },
            )
        )
    for root in snap.path_cut:
        out.append(
            Finding(
                "TWA-PATH-004",
                Severity.HIGH,
                f"{root} on sys.path has more files than the walk limit; the rest was not checked",
                location=root,
            )
        )
    for e in snap.env_effects:
        if e.variable and e.variable in snap.environment:
            continue
        out.append(
            Finding(
                "TWA-ENV-002",
                Severity[e.severity],
                e.effect,
                location=f"env:{e.variable}" if e.variable else str(e.evidence.get("path", "")),
                evidence=dict(e.evidence),
            )
        )
    for b in snap.bytecode:
        rule, sev = {
            "mismatch": ("TWA-BYTE-001", Severity.CRITICAL),
            "sourceless": ("TWA-BYTE-002", Severity.HIGH),
        }.get(b.status, ("TWA-BYTE-003", Severity.HIGH))
        text = {
            "TWA-BYTE-001": f"{b.pyc} is what Python imports for {b.source}, and {b.detail}",
            "TWA-BYTE-002": f"{b.pyc} has no source beside it: Python imports it as is",
            "TWA-BYTE-003": f"{b.pyc} could not be compared with its source ({b.detail})",
        }[rule]
        out.append(
            Finding(
                rule, sev, text, location=b.pyc, evidence={"source": b.source, "detail": b.detail}
            )
        )
    return out


def baseline_code_dirs(baseline: LoadedSnapshot | None) -> list[Path]:
    """The code directories a baseline recorded (none from a baseline whose signature failed)."""
    if baseline is None or baseline.verified is False:
        return []
    return [Path(c.path) for c in baseline.snapshot.code]


def vouched_bytecode(baseline: LoadedSnapshot | None) -> frozenset[str]:
    """The bytecode verdicts (content keys) of ``baseline`` that may be reused: all of them when
    its signature verified under the key the user gave, none otherwise (unsigned, not checked,
    or failed)."""
    if baseline is None or not baseline.signed or baseline.verified is not True:
        return frozenset()
    return frozenset(baseline.snapshot.bytecode_matches)


def verify_environment(
    python: str | None = None,
    *,
    baseline: LoadedSnapshot | None = None,
    code_dirs: Sequence[Path] = (),
    environ: Mapping[str, str] | None = None,
    require_signature: bool = False,
    cache: HashCache | None = None,
    workers: int | None = None,
    snapshot: Snapshot | None = None,
) -> VerifyReport:
    """Snapshot ``python`` now (or use ``snapshot``) and report findings.

    With ``baseline``, differences become ``TWA-BASE-*`` findings; a baseline whose signature
    failed to verify is not used (``TWA-SIG-001``). ``require_signature`` (a key was given) turns
    an unsigned baseline into ``TWA-SIG-002``. Only a baseline whose signature was verified
    vouches for bytecode: what it found to match its source is not compiled again here.
    """
    snap = snapshot or take_snapshot(
        python,
        code_dirs=code_dirs,
        environ=environ,
        cache=cache,
        workers=workers,
        vouched_bytecode=vouched_bytecode(baseline),
    )
    findings = check_snapshot(snap)
    diff: SnapshotDiff | None = None
    if baseline is not None:
        if baseline.verified is False:
            findings.append(
                Finding(
                    "TWA-SIG-001",
                    Severity.CRITICAL,
                    f"the signature of baseline {baseline.source} does not verify with the given "
                    "key; the baseline was ignored",
                    location=baseline.source,
                    evidence={"keyids": list(baseline.keyids)},
                )
            )
        else:
            if require_signature and not baseline.signed:
                findings.append(
                    Finding(
                        "TWA-SIG-002",
                        Severity.HIGH,
                        f"baseline {baseline.source} is not signed; anyone who can write it can "
                        "change what counts as clean",
                        location=baseline.source,
                    )
                )
            diff = diff_snapshots(
                baseline.snapshot, snap, a_label=baseline.source, b_label="current"
            )
            if not code_dirs:
                diff = SnapshotDiff(**{**diff.__dict__, "code": {}})
            findings.extend(diff.baseline_findings(record_checked=True))
    order = {s: i for i, s in enumerate(sorted(Severity, reverse=True))}
    findings.sort(key=lambda f: (order[f.severity], f.rule_id, f.location))
    return VerifyReport(snap, baseline, diff, tuple(findings))
