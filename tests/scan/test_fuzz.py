"""Property-based fuzzing of the scanner over mutated corpus files.

Whatever the mutation (byte flips, truncation, insertion, garbage, spliced archive members), the
scanner returns a report: no exception escapes, the report serialises, and no canary appears.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwarden.drill import Corpus, canaries_fired, sample_names
from trainwarden.findings import Severity
from trainwarden.scan import scan_bytes, scan_path
from trainwarden.scan._types import FileReport, Limits

ALL = sample_names("malicious") + sample_names("clean")
FUZZ_LIMITS = Limits(max_seconds_per_file=10.0)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _first_file(path: Path) -> Path:
    if path.is_file():
        return path
    return sorted(p for p in path.rglob("*") if p.is_file())[0]


def _bytes_of(corpus: Corpus, name: str) -> bytes:
    return _first_file(corpus.path(name)).read_bytes()


def _splice_zip(blob: bytes, donor: bytes, pick: int, add: bool) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(blob))
    names = src.namelist()
    members = {n: src.read(n) for n in names}
    target = names[pick % len(names)]
    if add:
        members[target.rsplit("/", 1)[0] + "/spliced.bin"] = donor
    else:
        members[target] = donor
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return out.getvalue()


@st.composite
def mutations(draw: st.DrawFn, blob: bytes, donor: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "garbage", "splice", "concat"]))
    n = len(blob)
    if kind == "flip":
        data = bytearray(blob)
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, max(n - 1, 0)))
            if n:
                data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "truncate":
        return blob[: draw(st.integers(0, n))]
    if kind == "insert":
        i = draw(st.integers(0, n))
        return blob[:i] + draw(st.binary(min_size=1, max_size=64)) + blob[i:]
    if kind == "garbage":
        return blob + draw(st.binary(min_size=1, max_size=256))
    if kind == "splice" and zipfile.is_zipfile(io.BytesIO(blob)):
        try:
            return _splice_zip(blob, donor, draw(st.integers(0, 1000)), draw(st.booleans()))
        except (zipfile.BadZipFile, ValueError, KeyError, OSError):
            return blob
    i = draw(st.integers(0, n))
    return blob[:i] + donor[draw(st.integers(0, len(donor))) :]


@FUZZ
@given(data=st.data())
def test_mutated_corpus_files_always_yield_a_report(corpus: Corpus, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(ALL), label="sample")
    donor = data.draw(st.sampled_from(ALL), label="donor")
    blob = data.draw(mutations(_bytes_of(corpus, name), _bytes_of(corpus, donor)), label="input")
    report = scan_bytes(blob, f"fuzz:{name}", limits=FUZZ_LIMITS)
    assert isinstance(report, FileReport)
    json.dumps(report.to_dict())
    assert canaries_fired(corpus.root) == []


PICKLE_SAMPLES = [n for n in sample_names("malicious") if n.startswith(("reduce_", "stack_"))]


@FUZZ
@given(data=st.data())
def test_garbage_after_a_payload_never_hides_it(corpus: Corpus, data: st.DataObject) -> None:
    """Python runs the payload before it trips on whatever follows, so the scan must still fail."""
    name = data.draw(st.sampled_from(PICKLE_SAMPLES), label="sample")
    tail = data.draw(st.binary(min_size=1, max_size=128), label="tail")
    report = scan_bytes(_bytes_of(corpus, name) + tail, f"fuzz:{name}", limits=FUZZ_LIMITS)
    assert report.max_severity is not None and report.max_severity >= Severity.HIGH
    assert canaries_fired(corpus.root) == []


@settings(max_examples=8, deadline=None, database=None)
@given(data=st.data())
def test_mutated_files_on_disk_scan_as_a_tree(corpus: Corpus, data: st.DataObject) -> None:
    names = data.draw(st.lists(st.sampled_from(ALL), min_size=1, max_size=6), label="samples")
    root = corpus.root.parent / "fuzz-tree"
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        old.unlink()
    for i, name in enumerate(names):
        blob = _bytes_of(corpus, name)
        cut = data.draw(st.integers(0, len(blob)), label=f"cut{i}")
        (root / f"{i}-{name}").write_bytes(blob[:cut] + b"\x00" * (i % 3))
    report = scan_path(root, limits=FUZZ_LIMITS)
    assert len(report.files) == len(names)
    json.dumps(report.to_dict())
    assert canaries_fired(corpus.root) == []
