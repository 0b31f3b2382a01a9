"""Hostile containers cost bounded memory, disk and time, and what could not be analysed is HIGH.

Memory is asserted as a property independent of input size (tracemalloc peaks, a child's peak
RSS against the input size), never as a timing; the large cases live in bench/hostile_inputs.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

from trainwarden.findings import Severity
from trainwarden.scan import scan_bytes
from trainwarden.scan._formats.gguf import GGUFArray, parse_gguf
from trainwarden.scan._types import Limits

SRC = Path(__file__).resolve().parents[2] / "src"


def _gguf_with_arrays(n_ints: int, n_strings: int) -> bytes:
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("custom.ints") + struct.pack("<IIQ", 9, 4, n_ints) + b"\x01\x00\x00\x00" * n_ints,
        s("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, n_strings)
        + (struct.pack("<Q", 1) + b"a") * n_strings,
        s("tokenizer.ggml.eos_token_id") + struct.pack("<II", 4, n_strings - 1),
    ]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv)


def test_gguf_arrays_are_not_materialised() -> None:
    """Parsing a GGUF with a 2M-element int array and a 500k-token vocabulary allocates a small
    constant amount, not a Python object per element (which was ~50x the file size)."""
    data = _gguf_with_arrays(2_000_000, 500_000)
    parse_gguf(_gguf_with_arrays(1, 1))
    tracemalloc.start()
    try:
        parsed = parse_gguf(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) > 12_000_000
    assert peak < 1_000_000, peak
    ints = parsed.metadata["custom.ints"]
    tokens = parsed.metadata["tokenizer.ggml.tokens"]
    assert isinstance(ints, GGUFArray) and len(ints) == 2_000_000 and ints[-1] == 1
    assert isinstance(tokens, GGUFArray) and len(tokens) == 500_000 and tokens[499_999] == "a"


def test_gguf_special_token_lookup_walks_once_in_bounded_memory() -> None:
    data = _gguf_with_arrays(10, 300_000)
    scan_bytes(_gguf_with_arrays(1, 1), "warm-up.gguf")  # first-use imports are not the parse
    tracemalloc.start()
    try:
        report = scan_bytes(data, "big.gguf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.findings == ()
    assert peak < 1_000_000, peak


def _deflated_zeros(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(n >> 20)) + c.flush()


def test_ratio_bomb_is_high_and_stops_early() -> None:
    b = io.BytesIO()
    with (
        zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z,
        z.open("w.bin", "w", force_zip64=False) as f,
    ):
        for _ in range(200):
            f.write(b"\0" * (1 << 20))
    data = b.getvalue()
    assert len(data) < 300_000  # about 1000:1
    tracemalloc.start()
    try:
        report = scan_bytes(data, "bomb.zip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limits = [f for f in report.findings if f.rule_id == "TWS-LIMIT"]
    assert limits and limits[0].severity is Severity.HIGH
    assert limits[0].evidence["limit"] == "max_compression_ratio"
    # Never more than the in-memory spill threshold plus a chunk, whatever the member's size.
    assert peak < 80 * 1024 * 1024, peak


def test_fanout_bomb_stops_at_the_file_budget_without_inflating_every_member() -> None:
    from trainwarden.drill._samples_containers import _zip_raw

    usize = 4 << 20
    body = _deflated_zeros(usize)
    crc = zlib.crc32(b"\0" * usize)
    data = _zip_raw([("m.bin", 0)] * 5000, body, usize, crc)
    calls = 0
    original = zlib.decompressobj

    def counting(*a: object) -> object:
        nonlocal calls
        calls += 1
        return original(*a)  # type: ignore[arg-type]

    zlib.decompressobj = counting  # type: ignore[assignment]
    try:
        report = scan_bytes(data, "fanout.zip")
    finally:
        zlib.decompressobj = original
    assert any(
        f.rule_id == "TWS-LIMIT" and f.evidence["limit"] == "max_compression_ratio"
        for f in report.findings
    )
    # 5,000 members x 4 MiB would be 20 GB; the file's budget (64 MiB) ends it after a few.
    assert calls < 100, calls


def test_member_over_max_member_bytes_is_high_not_spilled() -> None:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("blob.bin", os.urandom(3 << 20))
    report = scan_bytes(b.getvalue(), "a.zip", limits=Limits(max_member_bytes=1 << 20))
    (f,) = [f for f in report.findings if f.rule_id == "TWS-LIMIT"]
    assert f.evidence["limit"] == "max_member_bytes" and f.severity is Severity.HIGH


# VmHWM is this process's own peak; ru_maxrss would include the test runner's memory at fork
# time, which Linux carries across exec.
_HASH_CHILD = r"""
import re, sys
from trainwarden.scan import scan_file
r = scan_file(sys.argv[1], hash_files=True)
status = open("/proc/self/status").read()
print(r.sha256, re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
"""


def test_hash_of_a_large_sparse_file_reads_in_bounded_chunks(tmp_path: Path) -> None:
    """A 1 GiB file hashed with --hash: the child's peak RSS stays far below the file size
    (hashing through the memory map made every page resident)."""
    big = tmp_path / "sparse.bin"
    size = 1 << 30
    with big.open("wb") as f:
        f.truncate(size)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run(
        [sys.executable, "-c", _HASH_CHILD, str(big)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    ).stdout.split()
    digest, maxrss_kib = out[0], int(out[1])
    h = hashlib.sha256()
    zero = b"\0" * (1 << 24)
    for _ in range(size >> 24):
        h.update(zero)
    assert digest == h.hexdigest()
    assert maxrss_kib * 1024 < 256 * 1024 * 1024, maxrss_kib


def test_hf_config_over_the_size_limit_is_high(tmp_path: Path, monkeypatch: object) -> None:
    from trainwarden.scan import scan_path
    from trainwarden.scan._formats import hf_folder

    setattr_ = monkeypatch.setattr  # type: ignore[attr-defined]
    setattr_(hf_folder, "_MAX_JSON_BYTES", 1024)
    (tmp_path / "config.json").write_text(
        '{"auto_map": {"AutoModel": "modeling_x.M"}, "pad": "' + "x" * 2000 + '"}'
    )
    report = scan_path(tmp_path)
    (f,) = [f for f in report.findings if f.rule_id == "TWS-HF-005"]
    assert f.severity is Severity.HIGH and "1024-byte limit" in f.message
    assert report.failed(Severity.HIGH)


def test_hf_config_nested_too_deep_is_high(tmp_path: Path) -> None:
    from trainwarden.scan import scan_path

    (tmp_path / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    report = scan_path(tmp_path)
    (f,) = [f for f in report.findings if f.rule_id == "TWS-HF-005"]
    assert f.severity is Severity.HIGH and "recursion" in f.message


def test_gguf_validation_stops_at_the_time_limit() -> None:
    """A vocabulary of millions of strings is validated under max_seconds_per_file; running out
    of time inside the walk is a HIGH limit finding, not a pass."""
    import time

    import pytest

    from trainwarden.scan._engine import FileScan
    from trainwarden.scan._formats.gguf import HANDLER, GGUFTimeout
    from trainwarden.scan._policy import Policy

    data = _gguf_with_arrays(1, 300_000)
    with pytest.raises(GGUFTimeout):
        parse_gguf(data, deadline=time.monotonic() - 1)
    fs = FileScan("slow.gguf", Policy.default(), Limits())
    fs.deadline = time.monotonic() - 1  # the handler itself runs out, not the engine before it
    HANDLER.scan(data, "slow.gguf", fs)
    assert [(f.rule_id, f.severity, f.evidence.get("limit")) for f in fs.findings] == [
        ("TWS-LIMIT", Severity.HIGH, "max_seconds_per_file")
    ]


def test_zip_member_with_invalid_lzma_properties_is_unreadable_not_a_crash() -> None:
    from tests.scan._zipbuild import Member, build_zip

    data = bytearray(build_zip([Member("m.bin", b"\x02\x00\x05\x00\xff\xff\xff\xff\xff" + b"x")]))
    # Mark the member as LZMA (method 14) in both headers.
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        pos = data.find(sig)
        off = pos + (8 if sig == b"PK\x03\x04" else 10)
        data[off : off + 2] = (14).to_bytes(2, "little")
    report = scan_bytes(bytes(data), "lzma.zip")
    rules = {f.rule_id for f in report.findings}
    assert "TWS-ZIP-UNREADABLE" in rules and "TWS-INTERNAL" not in rules, rules
