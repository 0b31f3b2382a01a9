"""Who, besides the job owner and root, can change what a job imports or loads.

Walks each root once with ``os.scandir`` (one ``lstat`` per entry) and checks every directory
above each root up to ``/``. POSIX ACLs are read only for entries whose group bits include
write: with an ACL those bits are the ACL mask, and a mask without write means no named user or
group entry can write either, so the common case costs no extra system call.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.report import exit_code_for

__all__ = [
    "AclEntry",
    "PermsReport",
    "build_posix_acl",
    "check_permissions",
    "owner_uid",
    "parse_posix_acl",
]

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_TAGS = {
    0x01: "user_obj",
    0x02: "user",
    0x04: "group_obj",
    0x08: "group",
    0x10: "mask",
    0x20: "other",
}


@dataclass(frozen=True)
class AclEntry:
    """One POSIX ACL entry: ``tag`` (user_obj, user, group_obj, group, mask, other), the
    permission bits (4 read, 2 write, 1 execute) and the uid/gid for named entries."""

    tag: str
    perm: int
    qualifier: int | None


def parse_posix_acl(data: bytes) -> list[AclEntry]:
    """Parse the Linux ``system.posix_acl_access`` xattr (version 2, 8-byte entries)."""
    if len(data) < 4 or (len(data) - 4) % 8:
        raise ValueError(f"POSIX ACL xattr has a bad length ({len(data)} bytes)")
    (version,) = struct.unpack_from("<I", data, 0)
    if version != _ACL_VERSION:
        raise ValueError(f"unsupported POSIX ACL version {version}")
    out: list[AclEntry] = []
    for tag, perm, qual in struct.iter_unpack("<HHI", data[4:]):
        name = _TAGS.get(tag)
        if name is None:
            raise ValueError(f"unknown POSIX ACL tag 0x{tag:x}")
        out.append(AclEntry(name, perm, qual if name in ("user", "group") else None))
    return out


def build_posix_acl(entries: Iterable[AclEntry]) -> bytes:
    """Inverse of :func:`parse_posix_acl` (entries must be in the kernel's sorted order)."""
    rev = {v: k for k, v in _TAGS.items()}
    body = b"".join(
        struct.pack(
            "<HHI", rev[e.tag], e.perm, e.qualifier if e.qualifier is not None else 0xFFFFFFFF
        )
        for e in entries
    )
    return struct.pack("<I", _ACL_VERSION) + body


@dataclass(frozen=True)
class PermsReport:
    """What was checked and what others could change."""

    roots: tuple[str, ...]
    owner_uid: int
    checked: int
    findings: tuple[Finding, ...]

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a finding is at or above ``fail_on``, else ``0``."""
        return exit_code_for(self.findings, fail_on)

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner_uid": self.owner_uid,
            "roots": list(self.roots),
            "checked": self.checked,
            "findings": [f.to_dict() for f in self.findings],
        }


def _acl_writers(path: str, owner_uid: int) -> list[AclEntry] | None:
    """Named ACL entries (or the owning group) that grant effective write; None: no ACL."""
    try:
        raw = os.getxattr(path, _ACL_XATTR, follow_symlinks=False)
    except OSError:
        # ENODATA (no ACL), ENOTSUP (filesystem without ACLs) or unreadable: plain mode bits rule.
        return None
    try:
        entries = parse_posix_acl(raw)
    except ValueError:
        return [AclEntry("unparseable", 2, None)]
    mask = next((e.perm for e in entries if e.tag == "mask"), 7)
    return [
        e
        for e in entries
        if e.tag in ("user", "group", "group_obj")
        and e.perm & mask & 2
        and not (e.tag == "user" and e.qualifier in (owner_uid, 0))
    ]


class _Collector:
    def __init__(self, owner_uid: int, limit: int) -> None:
        self.owner = owner_uid
        self.trusted = {owner_uid, 0}
        self.limit = limit
        self.findings: list[Finding] = []
        # Folding is per severity too, so a HIGH finding is never hidden behind MEDIUM ones.
        self.counts: dict[tuple[str, str, Severity], int] = {}

    def add(self, root: str, f: Finding) -> None:
        key = (root, f.rule_id, f.severity)
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        if n <= self.limit:
            self.findings.append(f)

    def check(self, root: str, path: str, st: os.stat_result, *, ancestor: bool = False) -> None:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            # A link's own mode bits mean nothing; only who owns it (and may re-point it) counts.
            if st.st_uid not in self.trusted:
                self.add(root, _owned(path, st))
            return
        if ancestor:
            sticky_ok = bool(mode & stat.S_ISVTX)
            writable_by_others = st.st_uid not in self.trusted or (
                mode & (stat.S_IWOTH | stat.S_IWGRP) and not sticky_ok
            )
            if writable_by_others:
                self.add(
                    root,
                    Finding(
                        "TWA-PERM-003",
                        Severity.HIGH,
                        f"{path} (above {root}) can be changed by another user "
                        f"(owner uid {st.st_uid}, mode {stat.filemode(mode)}): anything below it "
                        "can be renamed away and replaced",
                        location=path,
                        evidence=_evidence(st, root),
                    ),
                )
            return
        if st.st_uid not in self.trusted:
            self.add(root, _owned(path, st))
        if mode & stat.S_IWOTH:
            self.add(
                root,
                Finding(
                    "TWA-PERM-001",
                    Severity.HIGH,
                    f"{path} is world-writable ({stat.filemode(mode)})",
                    location=path,
                    evidence=_evidence(st, root),
                ),
            )
        if mode & stat.S_IWGRP:
            writers = _acl_writers(path, self.owner)
            if writers is None:
                if mode & stat.S_IWOTH:
                    return  # already reported as world-writable
                self.add(
                    root,
                    Finding(
                        "TWA-PERM-001",
                        Severity.MEDIUM,
                        f"{path} is group-writable ({stat.filemode(mode)}, group "
                        f"{_group(st.st_gid)[0] or st.st_gid})",
                        location=path,
                        evidence=_evidence(st, root),
                    ),
                )
            elif writers:
                who = ", ".join(
                    f"{e.tag}:{e.qualifier if e.qualifier is not None else st.st_gid}"
                    for e in writers
                )
                self.add(
                    root,
                    Finding(
                        "TWA-PERM-004",
                        Severity.HIGH,
                        f"{path} has a POSIX ACL granting write to {who}",
                        location=path,
                        evidence={**_evidence(st, root), "acl_writers": who},
                    ),
                )


@functools.cache
def _group(gid: int) -> tuple[str | None, tuple[str, ...]]:
    """Group name and listed members (users whose primary group it is are not listed)."""
    try:
        import grp

        g = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return None, ()
    return g.gr_name, tuple(g.gr_mem)


def _evidence(st: os.stat_result, root: str) -> dict[str, object]:
    name, members = _group(st.st_gid)
    return {
        "uid": st.st_uid,
        "gid": st.st_gid,
        "group": name,
        "group_members": list(members),
        "mode": oct(st.st_mode & 0o7777),
        "root": root,
    }


def _owned(path: str, st: os.stat_result) -> Finding:
    return Finding(
        "TWA-PERM-002",
        Severity.HIGH,
        f"{path} is owned by uid {st.st_uid}, not by the job owner or root",
        location=path,
        evidence={"uid": st.st_uid, "gid": st.st_gid, "mode": oct(st.st_mode & 0o7777)},
    )


def check_permissions(
    paths: Sequence[str | Path],
    *,
    owner_uid: int | None = None,
    limit_per_rule: int = 25,
) -> PermsReport:
    """Check every path in ``paths`` (recursively) and every directory above them.

    ``owner_uid`` is the job owner (default: the current user); root is always trusted. At most
    ``limit_per_rule`` findings per rule and root are listed; the rest become one TWA-PERM-005.
    """
    owner = os.getuid() if owner_uid is None else owner_uid
    col = _Collector(owner, limit_per_rule)
    roots: list[str] = []
    seen_roots: set[str] = set()
    for p in paths:
        ap = os.path.abspath(os.fspath(p))
        if ap not in seen_roots and os.path.lexists(ap):
            seen_roots.add(ap)
            roots.append(ap)
    checked = 0
    ancestors_done: set[str] = set()
    walked: set[str] = set()
    for root in roots:
        parent = os.path.dirname(root)
        while parent not in ancestors_done:
            ancestors_done.add(parent)
            try:
                col.check(root, parent, os.lstat(parent), ancestor=True)
                checked += 1
            except OSError:
                pass
            if parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
        try:
            st = os.lstat(root)
        except OSError:
            continue
        if root in walked:
            continue
        col.check(root, root, st)
        checked += 1
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [root]
        while stack:
            d = stack.pop()
            if d in walked:
                continue
            walked.add(d)
            try:
                it = os.scandir(d)
            except OSError:
                continue
            with it:
                for e in it:
                    try:
                        est = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    checked += 1
                    col.check(root, e.path, est)
                    if stat.S_ISDIR(est.st_mode):
                        stack.append(e.path)
    for (root, rule, severity), n in sorted(
        col.counts.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2].value)
    ):
        if n > limit_per_rule:
            col.findings.append(
                Finding(
                    "TWA-PERM-005",
                    severity,
                    f"{n - limit_per_rule} more {severity} {rule} finding(s) under {root} "
                    "not listed",
                    location=root,
                    evidence={"rule": rule, "total": n},
                )
            )
    findings = sorted(col.findings, key=lambda f: (-f.severity.value, f.rule_id, f.location))
    return PermsReport(tuple(roots), owner, checked, tuple(findings))


def owner_uid(owner: str | None) -> int | None:
    """The uid of ``owner`` (a user name or a number); None for None (the caller: you)."""
    if owner is None:
        return None
    if owner.isdigit():
        return int(owner)
    import pwd

    from trainwarden.attest import AttestationError

    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise AttestationError(f"unknown user {owner!r}") from None
