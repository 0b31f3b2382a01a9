"""Our ZIP reading against the readers a victim runs: PyTorch's reader (miniz, through
``torch._C.PyTorchFileReader``) and Python's ``zipfile``, over 10,000 mutated real archives."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.scan import _zipdiff
from tests.scan._zipbuild import zip64_shadowed
from trainwarden.findings import Severity
from trainwarden.scan._engine import scan_bytes

pytest.importorskip("torch")


def test_ten_thousand_mutants_every_reader_member_is_scanned_and_disagreement_is_high() -> None:
    n, opened, failures = _zipdiff.run(10_000, seed=0)
    assert n == 10_000
    # The mutations must keep most archives readable, or the test would prove nothing.
    assert opened > 5_000
    assert failures == [], [(i, p) for i, _, p in failures[:5]]


def test_checker_catches_a_reader_member_we_never_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: with the extra reader views switched off, a prepended archive that
    only zipfile reads is reported as a failure."""
    mutant = _zip64_shadow()
    assert _zipdiff.check(mutant)[0] == []
    monkeypatch.setattr(_zipdiff, "_reader_views", lambda data, n: [])
    problems, opened = _zipdiff.check(mutant)
    assert opened and problems


def _torch_bytes() -> bytes:
    import torch

    b = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, b)
    return b.getvalue()


def _high(data: bytes) -> list[str]:
    return [f.rule_id for f in scan_bytes(data).findings if f.severity >= Severity.HIGH]


def test_clean_torch_and_npz_files_show_no_differential() -> None:
    import numpy as np

    b = io.BytesIO()
    np.savez_compressed(b, a=np.arange(10))
    for data in (_torch_bytes(), b.getvalue()):
        assert _high(data) == []


def test_central_directory_offset_read_absolute_by_miniz_and_relative_by_zipfile(
    tmp_path: Path,
) -> None:
    """Two archives back to back whose second directory offset is relative: torch (miniz)
    reads the first archive's directory, zipfile the second's. Both are scanned; HIGH."""
    evil = b"cos\nsystem\n(S'echo'\ntR."
    first = io.BytesIO()
    with zipfile.ZipFile(first, "w") as z:
        z.writestr("archive/data.pkl", evil)
    second = io.BytesIO()
    with zipfile.ZipFile(second, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x04K\x01.")
    data = first.getvalue() + second.getvalue()
    report = scan_bytes(data)
    rules = {f.rule_id for f in report.findings}
    assert "TWS-PKL-DANGEROUS" in rules
    assert any(f.severity >= Severity.HIGH for f in report.findings)


def _zip64_shadow() -> bytes:
    """miniz follows the zip64 locator's offset; zipfile and our primary reading take the record
    just before the locator. The locator points at a record describing a shadow directory."""
    evil = b"cos\nsystem\n(S'echo'\ntR."
    return zip64_shadowed(
        {"archive/data.pkl": evil, "archive/version": b"3\n"},
        {"archive/data.pkl": b"\x80\x04K\x01.", "archive/version": b"3\n"},
    )


def test_zip64_locator_pointing_at_another_directory_is_high() -> None:
    data = _zip64_shadow()
    tv = _zipdiff.torch_view(data)
    zv = _zipdiff.zipfile_read(data)
    # The two real readers really disagree on this file.
    assert tv is not None and zv is not None
    assert tv["data.pkl"] != zv["archive/data.pkl"]
    report = scan_bytes(data)
    rules = {f.rule_id for f in report.findings}
    assert "TWS-PKL-DANGEROUS" in rules, rules
    assert "TWS-ZIP-DIFFERENTIAL" in rules, rules
