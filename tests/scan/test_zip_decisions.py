"""The ZIP handler's disagreement findings, exactly as an operator reads them: what the local
header says against the central directory, which member, and where."""

from __future__ import annotations

from trainwarden.findings import Severity
from trainwarden.scan import scan_bytes

from ._zipbuild import Member, build_zip


def test_a_local_header_naming_another_member_is_reported_exactly() -> None:
    data = build_zip([Member("a.txt", b"hello", local_name="b.txt"), Member("c.txt", b"x")])
    r = scan_bytes(data, "x.zip")
    found = [
        (f.rule_id, f.severity, f.message, f.location, f.evidence)
        for f in r.findings
        if f.rule_id == "TWS-ZIP-MISMATCH"
    ]
    assert found == [
        (
            "TWS-ZIP-MISMATCH",
            Severity.MEDIUM,
            "member 'a.txt': local header names b'b.txt' but the central directory names b'a.txt'",
            "x.zip:a.txt",
            {"member": "a.txt"},
        )
    ]


def test_local_flags_disagreeing_are_reported_with_both_values() -> None:
    data = build_zip([Member("w.bin", b"\x00" * 8, local_flags=0x2)])
    r = scan_bytes(data, "m.zip")
    found = [(f.message, f.location) for f in r.findings if f.rule_id == "TWS-ZIP-MISMATCH"]
    assert found == [
        (
            "member 'w.bin': local header flags 0x0002 differ from the central directory's 0x0000",
            "m.zip:w.bin",
        )
    ]
