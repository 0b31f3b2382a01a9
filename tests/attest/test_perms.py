"""attest perms on real files: modes, owners, parent directories and POSIX ACLs."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.attest._perms import (
    AclEntry,
    build_posix_acl,
    check_permissions,
    parse_posix_acl,
)
from trainwarden.findings import Finding, Severity

from .venvs import Venv


def _rules(findings: tuple[Finding, ...]) -> set[tuple[str, Severity, str]]:
    return {(f.rule_id, f.severity, f.location) for f in findings}


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """A directory only its owner can write, under a tree only its owner can write."""
    d = tmp_path / "private"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)  # noqa: S103 - owner-only write, the safe mode
    return d


def _owner_of(path: Path) -> int:
    return path.stat().st_uid


def test_clean_tree_has_no_findings(private_dir: Path) -> None:
    (private_dir / "a.py").write_text("A = 1\n")
    os.chmod(private_dir / "a.py", 0o644)
    report = check_permissions([private_dir], owner_uid=_owner_of(private_dir))
    assert [f for f in report.findings if f.location.startswith(str(private_dir))] == []
    assert report.checked >= 2


def test_world_writable_file_in_a_venv(make_venv: Callable[[], Venv]) -> None:
    venv = make_venv()
    target = venv.site / "twdemo" / "core.py"
    os.chmod(target, 0o666)  # noqa: S103 - the unsafe mode is what is tested
    report = check_permissions([venv.site], owner_uid=_owner_of(venv.site))
    assert ("TWA-PERM-001", Severity.HIGH, str(target)) in _rules(report.findings)
    inside = [f for f in report.findings if f.location.startswith(str(venv.site))]
    assert [f.location for f in inside] == [str(target)]


def test_group_writable_directory(private_dir: Path) -> None:
    sub = private_dir / "pkg"
    sub.mkdir()
    os.chmod(sub, 0o775)  # noqa: S103 - the unsafe mode is what is tested
    report = check_permissions([private_dir], owner_uid=_owner_of(private_dir))
    assert ("TWA-PERM-001", Severity.MEDIUM, str(sub)) in _rules(report.findings)


def test_file_owned_by_another_user(private_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    f = private_dir / "planted.py"
    f.write_text("X = 1\n")
    os.chown(f, 4242, 4242)
    report = check_permissions([private_dir], owner_uid=0)
    assert ("TWA-PERM-002", Severity.HIGH, str(f)) in _rules(report.findings)


def test_writable_parent_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # noqa: S103 - the unsafe mode is what is tested
    code = shared / "code"
    code.mkdir(mode=0o755)
    report = check_permissions([code], owner_uid=_owner_of(code))
    assert ("TWA-PERM-003", Severity.HIGH, str(shared)) in _rules(report.findings)
    # A sticky world-writable directory (like /tmp) cannot have our entries renamed away.
    os.chmod(shared, 0o1777)  # noqa: S103 - the sticky mode is what is tested
    report = check_permissions([code], owner_uid=_owner_of(code))
    assert not any(f.location == str(shared) for f in report.findings)


def test_acl_parser_round_trip() -> None:
    entries = [
        AclEntry("user_obj", 7, None),
        AclEntry("user", 6, 4242),
        AclEntry("group_obj", 5, None),
        AclEntry("group", 2, 777),
        AclEntry("mask", 7, None),
        AclEntry("other", 5, None),
    ]
    raw = build_posix_acl(entries)
    assert len(raw) == 4 + 8 * len(entries)
    assert parse_posix_acl(raw) == entries
    with pytest.raises(ValueError, match="bad length"):
        parse_posix_acl(raw[:-1])
    with pytest.raises(ValueError, match="version"):
        parse_posix_acl(b"\x01\x00\x00\x00")


def test_posix_acl_granting_write_to_another_user(private_dir: Path) -> None:
    f = private_dir / "weights.py"
    f.write_text("W = 1\n")
    os.chmod(f, 0o644)
    acl = build_posix_acl(
        [
            AclEntry("user_obj", 6, None),
            AclEntry("user", 6, 4242),
            AclEntry("group_obj", 4, None),
            AclEntry("mask", 6, None),
            AclEntry("other", 4, None),
        ]
    )
    try:
        os.setxattr(f, "system.posix_acl_access", acl)
    except OSError as e:
        pytest.skip(f"this filesystem does not support POSIX ACLs ({e.strerror})")
    # With an ACL the group bits show the mask: rw.
    assert f.stat().st_mode & stat.S_IWGRP
    report = check_permissions([private_dir], owner_uid=_owner_of(private_dir))
    hits = [x for x in report.findings if x.rule_id == "TWA-PERM-004"]
    assert [(x.severity, x.location) for x in hits] == [(Severity.HIGH, str(f))]
    assert "user:4242" in hits[0].message


def test_many_findings_are_folded(private_dir: Path) -> None:
    for i in range(30):
        p = private_dir / f"m{i}.py"
        p.write_text("")
        os.chmod(p, 0o666)  # noqa: S103 - the unsafe mode is what is tested
    worst = private_dir / "zz_world.py"
    worst.write_text("")
    os.chmod(worst, 0o666)  # noqa: S103 - the unsafe mode is what is tested
    for p in private_dir.glob("m*.py"):
        os.chmod(p, 0o664)
    report = check_permissions([private_dir], owner_uid=_owner_of(private_dir), limit_per_rule=5)
    perm1 = [f for f in report.findings if f.rule_id == "TWA-PERM-001"]
    assert len(perm1) == 6
    # The one HIGH finding is listed, never folded behind the MEDIUM ones.
    assert [f.location for f in perm1 if f.severity is Severity.HIGH] == [str(worst)]
    (fold,) = [f for f in report.findings if f.rule_id == "TWA-PERM-005"]
    assert fold.evidence["total"] == 30 and fold.severity is Severity.MEDIUM
