"""The ZIP handler's decisions, exactly as an operator reads them: what the local header says
against the central directory, which reader unpickles which member by name, what kind an archive
is, what other readers (miniz, zipfile) see that TrainWarden's reading does not, and which .npy
members may go unread. Fast and torch-free: the zip-checks mutation target runs this file."""

from __future__ import annotations

import io
import pickle
import struct
import time
import zlib
from typing import Any

import numpy as np
import pytest

from trainwarden.findings import Severity
from trainwarden.scan import FileReport, scan_bytes
from trainwarden.scan._formats.zip import _kind, _NotPlain, _NpyProbe, _OutOfTime, unpickled_by
from trainwarden.scan._types import Limits

from ._zipbuild import Member, build_zip, stored, zip64_shadowed


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


# --- which reader unpickles a member by its name, and what kind an archive is ---------------


@pytest.mark.parametrize(
    ("kind", "name", "reader"),
    [
        ("pytorch-zip", "archive/data.pkl", "torch.load"),
        ("pytorch-zip", "data.pkl", "torch.load"),
        ("pytorch-zip", "a/b/c/data.pkl", "torch.load"),
        ("torchscript", "m/data.pkl", "torch.load"),
        ("torchscript", "data.pkl", "torch.load"),
        ("torchscript", "m/constants.pkl", "torch.jit.load"),
        ("torchscript", "constants.pkl", "torch.jit.load"),
        ("torchscript", "m/code/__torch__.py.debug_pkl", "torch.jit.load"),
        ("torchscript", "x.debug_pkl", "torch.jit.load"),
        ("torchscript", "m/xconstants.pkl", None),
        ("torchscript", "m/constants.pkl.bak", None),
        ("torchscript", "m/other.pkl", None),
        ("torchscript", "m/code/__torch__.py", None),
        ("pytorch-zip", "archive/constants.pkl", None),
        ("pytorch-zip", "archive/x.debug_pkl", None),
        ("pytorch-zip", "archive/data/0", None),
        ("pytorch-zip", "archive/xdata.pkl", None),
        ("pytorch-zip", "archive/data.pkl/x", None),
        ("zip", "data.pkl", None),
        ("zip", "m/constants.pkl", None),
        ("npz", "data.pkl", None),
        ("npz", "a.npy", None),
    ],
)
def test_which_reader_unpickles_a_member_by_its_name(
    kind: str, name: str, reader: str | None
) -> None:
    assert unpickled_by(kind, name) == reader


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (["m/code/__torch__/model.py", "m/data.pkl"], "torchscript"),
        (["code/__torch__.py"], "torchscript"),
        (["m/constants.pkl"], "torchscript"),
        (["constants.pkl", "x.txt"], "torchscript"),
        (["m/code/notes.txt", "m/data.pkl"], "pytorch-zip"),
        (["m/xcode/model.py", "m/data.pkl"], "pytorch-zip"),
        (["model.py"], "zip"),
        (["m/data.pkl"], "pytorch-zip"),
        (["data.pkl"], "pytorch-zip"),
        (["notes.txt", "archive/data.pkl"], "pytorch-zip"),
        (["m/xdata.pkl"], "zip"),
        (["data.pkl.bak"], "zip"),
        (["a.npy", "b/c.npy"], "npz"),
        (["a.npy", "b.txt"], "zip"),
        (["b.txt", "a.npy"], "zip"),
        ([], "zip"),
    ],
)
def test_archive_kind_by_member_names(names: list[str], kind: str) -> None:
    assert _kind(names) == kind


def test_archive_kind_is_the_format_the_report_names() -> None:
    data = build_zip([Member("m/code/__torch__.py", b"x = 1\n"), Member("m/data.txt", b"x")])
    assert scan_bytes(data, "ts.zip").formats == ("zip", "torchscript")
    assert scan_bytes(build_zip([Member("a.txt", b"x")]), "p.zip").formats == ("zip",)


# --- what other readers see that TrainWarden's reading does not -----------------------------

_EVIL = b"cos\nsystem\n(S'echo'\ntR."
_MINIZ = "PyTorch's reader (miniz)"
_ZIPFILE = "Python's zipfile"


def _differential(r: FileReport) -> list[tuple[Severity, str, str, object]]:
    return [
        (f.severity, f.message, f.location, f.evidence)
        for f in r.findings
        if f.rule_id == "TWS-ZIP-DIFFERENTIAL"
    ]


@pytest.mark.parametrize("shared", [7, 8, 59])
def test_members_another_reader_sees_differently_are_reported_exactly(shared: int) -> None:
    names = [f"archive/m{i:02d}" for i in range(shared)]
    shadow = {n: b"shadow %d" % i for i, n in enumerate(names)}
    shadow["archive/data.pkl"] = _EVIL
    benign = {n: b"benign text %d" % i for i, n in enumerate(names)}
    benign["archive/data.pkl"] = b"\x80\x04K\x01."
    r = scan_bytes(zip64_shadowed(shadow, benign), "s.pt")
    split = sorted([*names, "archive/data.pkl"])
    extra = [*names, "archive/data.pkl"]
    more = ", ..." if len(extra) > 8 else ""
    assert _differential(r) == [
        (
            Severity.HIGH,
            f"{_MINIZ} and {_ZIPFILE} read different content for {len(split)} member(s) "
            f"({', '.join(repr(n) for n in split[:8])}): torch.load and zipfile-based loaders "
            "such as numpy.load see different files",
            "s.pt",
            {"readers": [_MINIZ, _ZIPFILE], "members": split[:50]},
        ),
        (
            Severity.HIGH,
            f"{_MINIZ} reads {len(extra)} member(s) that differ from TrainWarden's reading of "
            f"this archive ({', '.join(repr(n) for n in extra[:8])}{more}): the archive shows "
            "different content to different readers",
            "s.pt",
            {"reader": _MINIZ, "members": extra[:50]},
        ),
    ]
    # what only miniz reads is scanned, under a location naming that reader
    danger = [(f.location, f.severity) for f in r.findings if f.rule_id == "TWS-PKL-DANGEROUS"]
    assert danger == [(f"s.pt:<{_MINIZ}>:archive/data.pkl@0", Severity.CRITICAL)]


def test_members_only_one_reader_has_are_extra_but_not_split() -> None:
    r = scan_bytes(
        zip64_shadowed({"archive/data.pkl": _EVIL}, {"archive/other.pkl": b"\x80\x04K\x01."}),
        "o.pt",
    )
    assert _differential(r) == [
        (
            Severity.HIGH,
            f"{_MINIZ} reads 1 member(s) that differ from TrainWarden's reading of this archive "
            "('archive/data.pkl'): the archive shows different content to different readers",
            "o.pt",
            {"reader": _MINIZ, "members": ["archive/data.pkl"]},
        )
    ]


def _multi_disk(members: list[Member]) -> bytes:
    """An archive whose end record names another disk: TrainWarden and miniz refuse it,
    Python's zipfile opens it."""
    data = bytearray(build_zip(members))
    struct.pack_into("<H", data, len(data) - 22 + 6, 5)  # disk of the central directory
    return bytes(data)


def test_an_archive_only_zipfile_opens_is_high_and_its_members_are_scanned() -> None:
    data = _multi_disk([Member("a.pkl", _EVIL), Member("t.txt", b"hello")])
    r = scan_bytes(data, "d.zip")
    got = [(f.rule_id, f.severity, f.message, f.location, f.evidence) for f in r.findings]
    assert got == [
        (
            "TWS-ZIP-MALFORMED",
            Severity.HIGH,
            "unreadable ZIP structure: multi-disk archives are not supported",
            "d.zip",
            {"error": "multi-disk archives are not supported"},
        ),
        (
            "TWS-ZIP-DIFFERENTIAL",
            Severity.HIGH,
            f"{_ZIPFILE} reads 2 member(s) that differ from TrainWarden's reading of this "
            "archive ('a.pkl', 't.txt'): the archive shows different content to different "
            "readers",
            "d.zip",
            {"reader": _ZIPFILE, "members": ["a.pkl", "t.txt"]},
        ),
        (
            "TWS-PKL-DANGEROUS",
            Severity.CRITICAL,
            "imports dangerous global os.system: os exposes process control (system, exec*, "
            "spawn*, fork, kill) and file operations",
            f"d.zip:<{_ZIPFILE}>:a.pkl@0",
            {"global_": "os.system", "opcode": "GLOBAL", "offset": 0},
        ),
    ]


def test_readers_agreeing_with_trainwarden_add_nothing() -> None:
    data = build_zip([Member("a.txt", b"hello"), Member("b/c.bin", bytes(range(64)))])
    assert scan_bytes(data, "ok.zip").findings == ()


# --- .npy members whose payload numpy reads as raw numbers ----------------------------------


def _npy(arr: np.ndarray[Any, Any]) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=True)
    return b.getvalue()


@pytest.mark.parametrize("floats", [4000, 20000])
def test_a_plain_npy_member_is_not_read_past_its_header(floats: int) -> None:
    """numpy.load reads a plain dtype's payload as numbers: the member is not held for
    analysis, so a payload over max_member_bytes is no finding (stored members above and below
    the 64 KiB the header is looked for in, as numpy.savez writes them, and one after them)."""
    b = io.BytesIO()
    np.savez(b, w=np.arange(float(floats)), v=np.arange(200.0))
    r = scan_bytes(b.getvalue(), "w.npz", limits=Limits(max_member_bytes=1024))
    assert r.findings == ()
    assert r.formats == ("zip", "npz", "npy")


def test_an_object_npy_member_is_analysed() -> None:
    data = build_zip([Member("o.npy", _npy(np.array([1, "x"], dtype=object)))])
    r = scan_bytes(data, "o.npz")
    assert [(f.rule_id, f.location, f.evidence) for f in r.findings] == [
        ("TWS-NPY-OBJECT", "o.npz:o.npy", {"descr": "'|O'"})
    ]


def test_npy_magic_with_an_unreadable_header_goes_to_the_npy_checks() -> None:
    data = build_zip([Member("a.npy", b"\x93NUMPY\x01\x00\x04\x00{}  \n")])
    r = scan_bytes(data, "b.npz")
    assert [(f.rule_id, f.severity, f.location) for f in r.findings] == [
        ("TWS-NPY-MALFORMED", Severity.HIGH, "b.npz:a.npy")
    ]


def test_a_member_without_the_npy_magic_is_scanned_by_content() -> None:
    inner = build_zip([Member("a.pkl", _EVIL)])
    r = scan_bytes(build_zip([Member("inner.zip", inner), Member("t.npy", b"hello")]), "n.zip")
    assert [(f.rule_id, f.location) for f in r.findings] == [
        ("TWS-PKL-DANGEROUS", "n.zip:inner.zip:a.pkl@0")
    ]


def test_a_plain_npy_member_only_another_reader_sees_is_not_read_past_its_header() -> None:
    big = _npy(np.arange(20000.0))  # 160 KiB: more than the bytes the header is looked for in
    data = _multi_disk([Member("w.npy", big)])
    r = scan_bytes(data, "m.npz", limits=Limits(max_member_bytes=1024))
    assert [f.rule_id for f in r.findings] == ["TWS-ZIP-MALFORMED", "TWS-ZIP-DIFFERENTIAL"]
    assert r.formats == ("zip", "npy")


def test_a_compressed_plain_npy_member_is_streamed_not_held() -> None:
    """A compressed .npy member whose dtype holds no objects is decided while it streams
    (header, CRC-32, last bytes): it is never held, so max_member_bytes does not apply to it,
    in our reading and in another reader's view alike."""
    b = io.BytesIO()
    np.savez_compressed(b, w=np.random.default_rng(0).random(20000))
    r = scan_bytes(b.getvalue(), "c.npz", limits=Limits(max_member_bytes=65536))
    assert r.findings == ()
    assert r.formats == ("zip", "npz", "npy")
    small = _multi_disk([Member("w.npy", _npy(np.arange(4000.0)), deflate=True)])
    r = scan_bytes(small, "d.npz", limits=Limits(max_member_bytes=1024))
    assert [(f.rule_id, f.location) for f in r.findings] == [
        ("TWS-ZIP-MALFORMED", "d.npz"),
        ("TWS-ZIP-DIFFERENTIAL", "d.npz"),
    ]


def _deflated_npz(member: bytes, name: str = "w.npy", crc: int | None = None) -> bytes:
    return build_zip([Member(name, member, deflate=True, crc=crc)])


def test_a_compressed_npy_member_with_objects_is_read_whole_with_the_limits() -> None:
    member = _npy(np.array([1, "x"] * 20000, dtype=object))
    r = scan_bytes(_deflated_npz(member), "o.npz", limits=Limits(max_member_bytes=65536))
    assert [(f.rule_id, f.location, f.evidence) for f in r.findings] == [
        ("TWS-LIMIT", "o.npz:w.npy", {"limit": "max_member_bytes"})
    ]
    r = scan_bytes(_deflated_npz(member), "o.npz")
    assert [(f.rule_id, f.location) for f in r.findings] == [("TWS-NPY-OBJECT", "o.npz:w.npy")]


@pytest.mark.parametrize("floats", [10, 20000])
def test_a_compressed_member_that_is_no_plain_npy_is_read_whole(floats: int) -> None:
    """An archive at its end, another content, or a CRC that does not match: the member is
    read whole, as before, and what that finds is reported."""
    tail = _npy(np.arange(float(floats))) + stored({"archive/data.pkl": _EVIL})
    r = scan_bytes(_deflated_npz(tail), "t.npz")
    assert (
        "TWS-PKL-DANGEROUS",
        f"t.npz:w.npy:<{_ZIPFILE}>:archive/data.pkl@0",
    ) in [(f.rule_id, f.location) for f in r.findings]
    r = scan_bytes(_deflated_npz(_EVIL + bytes(floats)), "p.npz")
    assert ("TWS-PKL-DANGEROUS", "p.npz:w.npy@0") in [(f.rule_id, f.location) for f in r.findings]
    member = _npy(np.arange(float(floats)))
    r = scan_bytes(_deflated_npz(member, crc=zlib.crc32(member) ^ 1), "c.npz")
    assert [(f.rule_id, f.severity) for f in r.findings] == [("TWS-ZIP-CRC", Severity.MEDIUM)]


@pytest.mark.parametrize(
    ("limit", "where"), [(480_255, "w1"), (480_256, "w2"), (500_000, "w2"), (720_383, "w2")]
)
def test_a_streamed_npy_member_counts_against_the_files_decompression_budget(
    limit: int, where: str
) -> None:
    """Three members of 240,128 bytes each: the budget runs out in the member where it ends,
    which is reported there; exactly all three fit."""
    members = [Member(f"w{i}.npy", _npy(np.arange(30000.0)), deflate=True) for i in range(3)]
    assert len(members[0].data) == 240_128
    r = scan_bytes(build_zip(members), "b.npz", limits=Limits(max_decompressed_bytes=limit))
    assert [(f.rule_id, f.location, f.evidence) for f in r.findings] == [
        ("TWS-LIMIT", f"b.npz:{where}.npy", {"limit": "max_decompressed_bytes"})
    ]
    assert (
        scan_bytes(
            build_zip(members), "b.npz", limits=Limits(max_decompressed_bytes=3 * 240_128)
        ).findings
        == ()
    )


def test_a_stored_plain_npy_member_is_decided_on_its_header_and_end_only() -> None:
    """Its body is never read, so neither is its CRC-32 checked (zipfile-based readers refuse
    a wrong one; torch does not read .npz): a stored member never goes through the stream."""
    member = _npy(np.arange(1000.0))
    data = build_zip([Member("w.npy", member, crc=zlib.crc32(member) ^ 1)])
    r = scan_bytes(data, "s.npz")
    assert r.findings == ()


def test_a_member_after_the_budget_is_exactly_spent_is_reported_not_skipped() -> None:
    members = [Member(f"w{i}.npy", _npy(np.arange(30000.0)), deflate=True) for i in range(4)]
    r = scan_bytes(build_zip(members), "e.npz", limits=Limits(max_decompressed_bytes=3 * 240_128))
    assert [(f.rule_id, f.location, f.evidence) for f in r.findings] == [
        ("TWS-LIMIT", "e.npz:w3.npy", {"limit": "max_decompressed_bytes"})
    ]


def test_a_streamed_npy_member_stops_at_the_files_time_limit() -> None:
    """The probe gives up once the file's deadline passed (a 60 GB array must not stream for
    minutes past it); the limit is reported once, and no member is read again."""
    probe = _NpyProbe(deadline=time.monotonic() - 1)
    with pytest.raises(_OutOfTime):
        probe.write(_npy(np.arange(3.0)))
    assert probe.size == 0
    b = io.BytesIO()
    np.savez_compressed(b, w=np.arange(1000.0), v=np.arange(10.0))
    r = scan_bytes(b.getvalue(), "t.npz", limits=Limits(max_seconds_per_file=1e-9))
    assert [(f.rule_id, f.evidence) for f in r.findings] == [
        ("TWS-LIMIT", {"limit": "max_seconds_per_file"})
    ]


@pytest.mark.parametrize("late", [True, False, None])
def test_the_stream_is_given_the_files_deadline(late: bool | None) -> None:
    """A context whose deadline passed while the member streams (True), has not (False), or
    has none (None: no time limit)."""
    from trainwarden.scan._engine import FileScan
    from trainwarden.scan._formats._zip import ZipArchive
    from trainwarden.scan._formats.zip import HANDLER
    from trainwarden.scan._policy import Policy

    data = _deflated_npz(_npy(np.arange(1000.0)))
    archive = ZipArchive.parse(data, 10)
    (ent,) = archive.entries
    archive.load_local(ent)
    ctx = FileScan("d.npz", Policy.default(), Limits())
    ctx.size = len(data)
    # ScanContext allows no deadline at all (None); the engine's own context always has one
    deadline = {True: time.monotonic() - 1, False: time.monotonic() + 600, None: None}[late]
    ctx.deadline = deadline  # type: ignore[assignment]
    assert HANDLER._plain_npy(data, ent, "d.npz:w.npy", ctx) is True
    want = [("TWS-LIMIT", "d.npz:w.npy", {"limit": "max_seconds_per_file"})] if late else []
    assert [(f.rule_id, f.location, f.evidence) for f in ctx.findings] == want


def test_a_streamed_npy_bomb_is_stopped_by_the_ratio() -> None:
    member = _npy(np.zeros(9_000_000))  # 72 MB of zeros deflate about 1000:1
    r = scan_bytes(_deflated_npz(member), "z.npz")
    assert [(f.rule_id, f.location, f.evidence) for f in r.findings] == [
        ("TWS-LIMIT", "z.npz:w.npy", {"limit": "max_compression_ratio"})
    ]


def test_a_streamed_npy_bomb_is_stopped_by_its_own_ratio_where_the_file_is_large() -> None:
    """Beside 1.6 MB that do not compress, the file's budget would let 320 MB out: the bomb
    member is stopped by its own ratio once past 64 MiB."""
    noise = _npy(np.random.default_rng(0).random(200_000))
    bomb = _npy(np.zeros(9_000_000))
    data = build_zip([Member("a.npy", noise), Member("w.npy", bomb, deflate=True)])
    r = scan_bytes(data, "z.npz")
    assert [(f.rule_id, f.location, f.evidence) for f in r.findings] == [
        ("TWS-LIMIT", "z.npz:w.npy", {"limit": "max_compression_ratio"})
    ]
    assert r.findings[0].message.startswith("member 'w.npy' decompresses at more than 200:1")


def _probe_fed(data: bytes, piece: int) -> _NpyProbe:
    probe = _NpyProbe()
    for i in range(0, len(data), piece):
        probe.write(memoryview(data)[i : i + piece])
    return probe


@pytest.mark.parametrize("piece", [1000, 65536, 1 << 20])
def test_the_stream_probe_keeps_the_head_the_tail_the_size_and_the_crc(piece: int) -> None:
    data = _npy(np.arange(40000.0))
    probe = _probe_fed(data, piece)
    assert bytes(probe.head) == data[:65536]
    assert probe.tail == data[-(22 + 0xFFFF) :]
    assert (probe.size, probe.crc) == (len(data), zlib.crc32(data))
    assert probe.plain()


@pytest.mark.parametrize("piece", [1000, 65536])
@pytest.mark.parametrize(
    "data",
    [
        _EVIL * 20000,
        b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (9,), }"
        + b" " * 60
        + b"\n"
        + bytes(70000),
    ],
    ids=["pickle", "objects"],
)
def test_the_stream_probe_stops_once_its_head_shows_no_plain_npy(data: bytes, piece: int) -> None:
    probe = _NpyProbe()
    with pytest.raises(_NotPlain):
        for i in range(0, len(data), piece):
            probe.write(data[i : i + piece])
    assert probe.size < 65536 + piece  # stopped as the head filled, not at the end


def test_a_short_member_is_decided_at_its_end() -> None:
    short = _npy(np.arange(3.0))
    probe = _probe_fed(short, 7)
    assert probe.size < 65536 and probe.plain()
    assert bytes(probe.head) == short and probe.tail == short
    probe = _probe_fed(_EVIL, 7)  # too short to decide while it streamed
    assert not probe.plain()


def test_a_compressed_npy_whose_header_is_malformed_is_reported() -> None:
    member = b"\x93NUMPY\x01\x00\x10\x00{'descr': 12}  \n" + bytes(64)
    r = scan_bytes(_deflated_npz(member), "m.npz")
    assert [f.rule_id for f in r.findings] == ["TWS-NPY-MALFORMED"]


@pytest.mark.parametrize("floats", [4000, 20000])
def test_an_archive_at_the_end_of_a_plain_npy_member_is_scanned(floats: int) -> None:
    """numpy.load reads the array, but the member read on its own opens as a zip archive in
    zipfile-based loaders: it is scanned as the same bytes as a file would be."""
    member = _npy(np.arange(float(floats))) + stored({"archive/data.pkl": _EVIL})
    for data, where in (
        (build_zip([Member("w.npy", member)]), "a.npz:w.npy"),
        (_multi_disk([Member("w.npy", member)]), f"a.npz:<{_ZIPFILE}>:w.npy"),
    ):
        r = scan_bytes(data, "a.npz")
        got = [(f.rule_id, f.location) for f in r.findings if f.location.startswith(where)]
        assert got == [
            ("TWS-ZIP-DIFFERENTIAL", where),
            ("TWS-PKL-DANGEROUS", f"{where}:<{_ZIPFILE}>:archive/data.pkl@0"),
        ]


def test_an_archive_signature_only_early_in_a_large_plain_npy_member_is_not_read() -> None:
    """Zip readers look for the end record in a file's last 64 KiB + 22 bytes only."""
    arr = np.zeros(20000)
    arr[10] = np.frombuffer(b"PK\x05\x06\x00\x00\x00\x00", dtype="<f8")[0]
    b = io.BytesIO()
    np.savez(b, w=arr)
    r = scan_bytes(b.getvalue(), "s.npz", limits=Limits(max_member_bytes=1024))
    assert r.findings == ()


def test_a_compressed_member_whose_raw_bytes_read_as_a_plain_npy_is_decompressed() -> None:
    """No reader takes a bzip2 member's raw bytes for the array: they are decompressed (and here
    fail to), never skipped because they look like a plain .npy."""
    for multi_disk, where in ((False, "z.npz:w.npy"), (True, f"z.npz:<{_ZIPFILE}>:w.npy")):
        data = bytearray(build_zip([Member("w.npy", _npy(np.arange(3.0)))]))
        struct.pack_into("<H", data, 8, 12)  # the local header's method: bzip2
        cd = data.rfind(b"PK\x01\x02")
        struct.pack_into("<H", data, cd + 10, 12)  # and the central directory's
        if multi_disk:
            struct.pack_into("<H", data, len(data) - 22 + 6, 5)  # only zipfile opens it
        r = scan_bytes(bytes(data), "z.npz")
        assert [(f.rule_id, f.severity) for f in r.findings if f.location == where] == [
            ("TWS-ZIP-UNREADABLE", Severity.HIGH)
        ]


def test_an_encrypted_member_is_unreadable_not_skipped() -> None:
    r = scan_bytes(build_zip([Member("x.npy", _npy(np.arange(3.0)), flags=0x1)]), "e.zip")
    assert [(f.rule_id, f.severity, f.message, f.location) for f in r.findings] == [
        (
            "TWS-ZIP-UNREADABLE",
            Severity.HIGH,
            "member 'x.npy' cannot be inspected: member is encrypted",
            "e.zip:x.npy",
        )
    ]


def test_a_member_only_zipfile_reads_differently_is_reported_when_miniz_agrees() -> None:
    """The local header's extra field pushes the data past the end of the file: zipfile reads
    what is left, PyTorch's reader (miniz) and TrainWarden the recorded size."""
    data = bytearray(build_zip([Member("a.bin", bytes(range(256)) * 4, deflate=True)]))
    csize = struct.unpack_from("<L", data, 18)[0]
    struct.pack_into("<H", data, 28, 46 + len("a.bin") + 22 + csize // 2)
    r = scan_bytes(bytes(data), "e.zip")
    assert _differential(r)[1:] == [
        (
            Severity.HIGH,
            f"{_ZIPFILE} reads 1 member(s) that differ from TrainWarden's reading of this "
            "archive ('a.bin'): the archive shows different content to different readers",
            "e.zip",
            {"reader": _ZIPFILE, "members": ["a.bin"]},
        )
    ]
    assert [f.location for f in r.findings if f.rule_id == "TWS-ZIP-UNREADABLE"] == [
        "e.zip:a.bin",
        f"e.zip:<{_ZIPFILE}>:a.bin",
    ]


# --- the member walk: what is read as a pickle by name, what is skipped as tensor bytes --------


class _Storage:
    """Stands for a tensor storage: pickled as a persistent id, as torch.save writes one."""


class _CheckpointPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        return ("storage", "FloatStorage", "0", "cpu", 4) if isinstance(obj, _Storage) else None


def _data_pkl() -> bytes:
    b = io.BytesIO()
    _CheckpointPickler(b, protocol=2).dump({"w": _Storage()})
    return b.getvalue()


def _dangerous(r: FileReport) -> list[str]:
    return [f.location for f in r.findings if f.rule_id == "TWS-PKL-DANGEROUS"]


@pytest.mark.parametrize("storage_first", [False, True])
def test_a_stored_storage_named_by_the_checkpoint_pickle_is_not_read(storage_first: bool) -> None:
    """torch.load reads it as raw tensor bytes: even bytes that would make a pickle are inert
    (whichever comes first in the archive, the pickle naming it or the storage)."""
    members = [Member("archive/data.pkl", _data_pkl()), Member("archive/data/0", _EVIL)]
    r = scan_bytes(build_zip(members[::-1] if storage_first else members), "a.pt")
    assert r.findings == ()
    assert r.formats == ("zip", "pytorch-zip", "pickle")


def test_storages_a_reader_could_interpret_are_read() -> None:
    pkl = Member("archive/data.pkl", _data_pkl())
    compressed = build_zip([pkl, Member("archive/data/0", _EVIL, deflate=True)])
    assert _dangerous(scan_bytes(compressed, "b.pt")) == ["b.pt:archive/data/0@0"]
    unnamed = build_zip([pkl, Member("archive/data/1", _EVIL)])
    assert _dangerous(scan_bytes(unnamed, "d.pt")) == ["d.pt:archive/data/1@0"]
    npy = build_zip([pkl, Member("archive/data/0", _npy(np.array([1, "x"], dtype=object)))])
    r = scan_bytes(npy, "c.pt")
    assert [(f.rule_id, f.location) for f in r.findings] == [
        ("TWS-NPY-OBJECT", "c.pt:archive/data/0")
    ]
    # in a plain zip nothing names storages: every member is read
    plain = build_zip([Member("data/0", _EVIL)])
    assert _dangerous(scan_bytes(plain, "p.zip")) == ["p.zip:data/0@0"]


@pytest.mark.parametrize(
    ("names", "member", "reader"),
    [
        (["archive/data.pkl"], "archive/data.pkl", "torch.load"),
        (
            ["m/data.pkl", "m/code/__torch__.py", "m/constants.pkl"],
            "m/constants.pkl",
            "torch.jit.load",
        ),
    ],
)
def test_a_member_unpickled_by_name_whose_content_is_not_a_pickle_is_high(
    names: list[str], member: str, reader: str
) -> None:
    content = {n: (_data_pkl() if n.endswith("data.pkl") else b"x = 1\n") for n in names}
    content[member] = b"hello world, not a pickle"
    r = scan_bytes(build_zip([Member(n, c) for n, c in content.items()]), "k.pt")
    kind = [
        (f.severity, f.message, f.location, f.evidence)
        for f in r.findings
        if f.rule_id == "TWS-ZIP-MEMBER-KIND"
    ]
    assert kind == [
        (
            Severity.HIGH,
            f"member {member!r} is unpickled by {reader}, but its content does not read as a "
            "plain pickle (a reader that goes by content takes it for another format); analysed "
            "both ways",
            f"k.pt:{member}",
            {"member": member, "reader": reader},
        )
    ]
    # and it was analysed as the pickle the reader would run
    assert [f.location for f in r.findings if f.rule_id == "TWS-PKL-MEMO-UNDEFINED"] == [
        f"k.pt:{member}@0"
    ]


def test_a_member_unpickled_by_name_is_analysed_both_ways() -> None:
    """A data.pkl behind another format's magic: analysed as the pickle torch.load runs (which
    raises at once here) and by its content (an .npy header numpy refuses)."""
    r = scan_bytes(build_zip([Member("archive/data.pkl", b"\x93NUMPY" + _EVIL)]), "n.pt")
    assert [(f.rule_id, f.location) for f in r.findings] == [
        ("TWS-PKL-MALFORMED", "n.pt:archive/data.pkl@0"),
        ("TWS-ZIP-MEMBER-KIND", "n.pt:archive/data.pkl"),
        ("TWS-NPY-MALFORMED", "n.pt:archive/data.pkl"),
    ]
    assert r.formats == ("zip", "pytorch-zip", "pickle", "npy")


def test_the_walk_skips_only_empty_folders_and_code_and_goes_on_after_them() -> None:
    folders = build_zip(
        [
            Member("dir/", b""),
            Member("dir2/", _EVIL),  # a "folder" with data: readers hand the data on
            Member("e.bin", b""),
            Member("x.pkl", _EVIL),
        ]
    )
    assert [(f.rule_id, f.location) for f in scan_bytes(folders, "f.zip").findings] == [
        ("TWS-PKL-DANGEROUS", "f.zip:dir2/@0"),
        ("TWS-PKL-DANGEROUS", "f.zip:x.pkl@0"),
    ]
    # TorchScript code is reviewed as code, not read as a pickle; the members after it are read
    code = build_zip(
        [
            Member("m/data.pkl", _data_pkl()),
            Member("m/code/__torch__.py", _EVIL),
            Member("m/x.bin", _EVIL),
        ]
    )
    assert [(f.rule_id, f.location) for f in scan_bytes(code, "t.pt").findings] == [
        ("TWS-TORCHSCRIPT-OP", "t.pt:m/code/__torch__.py"),
        ("TWS-PKL-DANGEROUS", "t.pt:m/x.bin@0"),
    ]


def test_an_unreadable_member_read_by_name_is_high_and_the_walk_goes_on() -> None:
    data = build_zip(
        [Member("archive/data.pkl", _data_pkl(), flags=0x1), Member("archive/x.bin", _EVIL)]
    )
    assert [(f.rule_id, f.location) for f in scan_bytes(data, "u.pt").findings] == [
        ("TWS-ZIP-UNREADABLE", "u.pt:archive/data.pkl"),
        ("TWS-PKL-DANGEROUS", "u.pt:archive/x.bin@0"),
    ]


def test_a_member_after_each_kind_of_passed_over_member_is_still_read() -> None:
    """Whatever the walk does with one member (analyse it both ways, skip it as a storage,
    leave it to numpy, find it unreadable), the members after it are read."""
    ok = {"global_": "os.system", "opcode": "GLOBAL", "offset": 0}
    msg = (
        "imports dangerous global os.system: os exposes process control (system, exec*, "
        "spawn*, fork, kill) and file operations"
    )
    not_pickle = build_zip(
        [Member("archive/data.pkl", b"hello world, not a pickle"), Member("archive/x.bin", _EVIL)]
    )
    assert [(f.rule_id, f.location) for f in scan_bytes(not_pickle, "k.pt").findings] == [
        ("TWS-PKL-MEMO-UNDEFINED", "k.pt:archive/data.pkl@0"),
        ("TWS-ZIP-MEMBER-KIND", "k.pt:archive/data.pkl"),
        ("TWS-PKL-DANGEROUS", "k.pt:archive/x.bin@0"),
    ]
    storage = build_zip(
        [
            Member("archive/data.pkl", _data_pkl()),
            Member("archive/data/0", bytes(16)),
            Member("archive/x.bin", _EVIL),
        ]
    )
    r = scan_bytes(storage, "s.pt")
    assert [(f.rule_id, f.severity, f.message, f.location, f.evidence) for f in r.findings] == [
        ("TWS-PKL-DANGEROUS", Severity.CRITICAL, msg, "s.pt:archive/x.bin@0", ok)
    ]
    plain = _npy(np.arange(3.0))
    npys = build_zip([Member("a.npy", plain), Member("b.npy", _npy(np.array([1, "x"], object)))])
    assert [(f.rule_id, f.location) for f in scan_bytes(npys, "n.npz").findings] == [
        ("TWS-NPY-OBJECT", "n.npz:b.npy")
    ]
    unreadable = build_zip([Member("a.txt", b"hello", flags=0x1), Member("b.bin", _EVIL)])
    assert [
        (f.rule_id, f.severity, f.location) for f in scan_bytes(unreadable, "u.zip").findings
    ] == [
        ("TWS-ZIP-UNREADABLE", Severity.HIGH, "u.zip:a.txt"),
        ("TWS-PKL-DANGEROUS", Severity.CRITICAL, "u.zip:b.bin@0"),
    ]


def test_folders_are_skipped_only_when_they_hold_nothing_and_their_headers_are_checked() -> None:
    """A folder entry is skipped only when its recorded size is 0 (readers cut what they hand on
    at that size: nothing), but its local header is compared like any member's; one holding
    even a single byte is read (here it fails its CRC)."""
    data = bytearray(
        build_zip(
            [
                Member("d0/", _EVIL, deflate=True),
                Member("d1/", b"", local_name="evil.pkl"),
                Member("d2/", b"x", crc=0),
            ]
        )
    )
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<L", data, cd + 24, 0)  # d0/ records no content: nothing is handed on
    struct.pack_into("<L", data, cd + 16, 0)  # (and the CRC of nothing)
    r = scan_bytes(bytes(data), "f.zip")
    assert [(f.rule_id, f.severity, f.message, f.location, f.evidence) for f in r.findings] == [
        (
            "TWS-ZIP-MISMATCH",
            Severity.MEDIUM,
            "member 'd1/': local header names b'evil.pkl' but the central directory names b'd1/'",
            "f.zip:d1/",
            {"member": "d1/"},
        ),
        (
            "TWS-ZIP-CRC",
            Severity.MEDIUM,
            "member 'd2/' fails its CRC-32 check: zipfile-based tools refuse it while PyTorch's "
            "reader loads it",
            "f.zip:d2/",
            {"member": "d2/", "crc_recorded": 0, "crc_actual": 2363233923},
        ),
    ]


class _PidPickler(pickle.Pickler):
    def __init__(self, out: io.BytesIO, pid: object) -> None:
        super().__init__(out, protocol=2)
        self.pid = pid

    def persistent_id(self, obj: object) -> object:
        return self.pid if isinstance(obj, _Storage) else None


def _naming(pid: object) -> bytes:
    b = io.BytesIO()
    _PidPickler(b, pid).dump({"w": _Storage()})
    return b.getvalue()


@pytest.mark.parametrize(
    "pid",
    [
        ("storage", "FloatStorage", "0"),
        ("storage", "FloatStorage", "0", "cpu"),
        ("storage", "FloatStorage", "0", "cpu", 4, 1),
        ("module", "FloatStorage", "0", "cpu", 4),
        ("storage",),
        0,
        "storage",
        (),
    ],
)
def test_a_storage_is_skipped_only_for_a_persistent_id_torch_reads_as_one(pid: object) -> None:
    """torch.load's persistent_load unpacks exactly ("storage", type, key, location, numel):
    any other persistent id makes it fail before reading data/<key>, so data/0 is no tensor
    and is read like any member."""
    data = build_zip([Member("archive/data.pkl", _naming(pid)), Member("archive/data/0", _EVIL)])
    r = scan_bytes(data, "p.pt")
    assert [(f.rule_id, f.severity, f.location) for f in r.findings] == [
        ("TWS-PKL-DANGEROUS", Severity.CRITICAL, "p.pt:archive/data/0@0")
    ]


def test_a_storage_named_only_by_a_pickle_no_reader_loads_by_name_is_read() -> None:
    """Only the pickle torch.load unpickles decides which members are tensor bytes: another
    pickle in the archive naming data/0 does not make it skipped."""
    members = [
        Member("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2)),
        Member("archive/extra.pkl", _data_pkl()),
        Member("archive/data/0", _EVIL),
    ]
    r = scan_bytes(build_zip(members), "e.pt")
    assert [(f.rule_id, f.severity, f.location) for f in r.findings] == [
        ("TWS-PKL-DANGEROUS", Severity.CRITICAL, "e.pt:archive/data/0@0")
    ]


@pytest.mark.parametrize(
    "storage",
    ["other/data/0", "archive/sub/data/0", "data/0", "archive/x/archive/data/0", "archive/data/00"],
)
def test_a_storage_key_names_data_beside_its_own_pickle_only(storage: str) -> None:
    """torch.load reads data/<key> under the folder of the data.pkl that names the key: a
    member with the same key under any other folder is no tensor of this checkpoint, and is
    read like any member."""
    members = [Member("archive/data.pkl", _data_pkl()), Member(storage, _EVIL)]
    r = scan_bytes(build_zip(members), "f.pt")
    assert [(f.rule_id, f.severity, f.location) for f in r.findings] == [
        ("TWS-PKL-DANGEROUS", Severity.CRITICAL, f"f.pt:{storage}@0")
    ]


def test_a_storage_named_by_a_nested_data_pickle_is_its_own_folders() -> None:
    members = [Member("a/b/data.pkl", _data_pkl()), Member("a/b/data/0", _EVIL)]
    assert scan_bytes(build_zip(members), "n.pt").findings == ()
    members = [Member("a/b/data.pkl", _data_pkl()), Member("a/data/0", _EVIL)]
    assert _dangerous(scan_bytes(build_zip(members), "n.pt")) == ["n.pt:a/data/0@0"]


def test_a_storage_named_by_a_root_data_pickle_is_the_root_data_folder() -> None:
    members = [Member("data.pkl", _data_pkl()), Member("data/0", _EVIL)]
    assert scan_bytes(build_zip(members), "g.pt").findings == ()
    members = [Member("data.pkl", _data_pkl()), Member("archive/data/0", _EVIL)]
    assert _dangerous(scan_bytes(build_zip(members), "h.pt")) == ["h.pt:archive/data/0@0"]


def test_keys_named_by_torchscript_constants_do_not_skip_data_members() -> None:
    """torch.jit.load reads the storages of constants.pkl from constants/<key>, never from
    data/<key>: a key named only there makes no data/ member tensor bytes."""
    members = [
        Member("m/data.pkl", pickle.dumps({"a": 1}, protocol=2)),
        Member("m/code/__torch__.py", b"x = 1\n"),
        Member("m/constants.pkl", _data_pkl()),
        Member("m/data/0", _EVIL),
    ]
    r = scan_bytes(build_zip(members), "k.pt")
    assert _dangerous(r) == ["k.pt:m/data/0@0"]


def test_a_torchscript_storage_named_by_its_data_pickle_is_not_read() -> None:
    members = [
        Member("m/data.pkl", _data_pkl()),
        Member("m/code/__torch__.py", b"x = 1\n"),
        Member("m/data/0", _EVIL),
    ]
    r = scan_bytes(build_zip(members), "t.pt")
    assert [(f.rule_id, f.severity, f.location) for f in r.findings] == [
        ("TWS-TORCHSCRIPT", Severity.LOW, "t.pt")
    ]
    assert r.formats == ("zip", "torchscript", "pickle")


def _central(name: str, content: bytes, header: int) -> bytes:
    """A central-directory entry for a stored member whose local header is at ``header``."""
    crc, n = zlib.crc32(content), len(content)
    fields = (20, 20, 0, 0, 0, 0, crc, n, n, len(name), 0, 0, 0, 0, 0, header)
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", *fields) + name.encode()


def test_a_skipped_storage_another_reader_names_as_its_pickle_is_analysed() -> None:
    """A second directory that only PyTorch's reader (miniz) follows names the bytes of the
    storage TrainWarden skips as archive/data.pkl: torch.load would unpickle them."""
    version = b"3\n"
    real = build_zip(
        [
            Member("archive/data.pkl", _data_pkl()),
            Member("archive/data/0", _EVIL),
            Member("archive/version", version),
        ]
    )
    storage_at = real.find(b"PK\x03\x04", 4)
    version_at = real.find(b"PK\x03\x04", storage_at + 4)
    # the file opens with a local header (an empty member no directory lists), then the second
    # directory and its zip64 end record, then the real archive
    start = 30 + 2 * 46 + len("archive/data.pkl") + len("archive/version") + 56
    shadow = _central("archive/data.pkl", _EVIL, start + storage_at)
    shadow += _central("archive/version", version, start + version_at)
    n, size, off = struct.unpack_from("<HLL", real, len(real) - 22 + 10)
    body = bytearray(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    body += shadow
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 2, 2, len(shadow), 30)
    assert len(body) == start
    body += real[:-22]
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, off)
    body += struct.pack("<4sLQL", b"PK\x06\x07", 0, 30 + len(shadow), 1)
    body += real[-22:]
    r = scan_bytes(bytes(body), "s.pt")
    danger = [(f.severity, f.location) for f in r.findings if f.rule_id == "TWS-PKL-DANGEROUS"]
    assert danger == [(Severity.CRITICAL, f"s.pt:<{_MINIZ}>:archive/data.pkl@0")]


@pytest.mark.parametrize("name", ["archive/data.pkl", "archive/other.pkl"])
def test_an_archive_appended_to_a_pickle_member_is_scanned(name: str) -> None:
    """The member read on its own opens in zipfile-based readers as the archive appended to
    it: what they would read is reported and scanned, whether or not torch.load unpickles the
    member by name (the same as for a pickle file)."""
    member = pickle.dumps({"a": 1}, protocol=2) + stored({"archive/data.pkl": _EVIL})
    members = [Member(name, member)]
    if name != "archive/data.pkl":
        members.insert(0, Member("archive/data.pkl", pickle.dumps({"b": 2}, protocol=2)))
    data = build_zip(members)
    r = scan_bytes(data, "t.pt")
    where = f"t.pt:{name}"
    assert [(f.rule_id, f.severity, f.location) for f in r.findings] == [
        ("TWS-PKL-TRAILING", Severity.MEDIUM, f"{where}@17"),
        ("TWS-ZIP-DIFFERENTIAL", Severity.HIGH, where),
        ("TWS-PKL-DANGEROUS", Severity.CRITICAL, f"{where}:<{_ZIPFILE}>:archive/data.pkl@0"),
    ]
