"""The static judgement covers the whole file, not just the pickle the loader reads, whatever
route the content picks: a file is read as joblib when its first 64 KiB mention
``NumpyArrayWrapper`` and ``joblib``, and that route judged only the first pickle, so the same
payload after it that a raw pickle file is refused for went unjudged."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

import trainwarden
from trainwarden.loading import UnsafeModelError, _guard
from trainwarden.loading._loader import detect_format

from ._payloads import call_pickle


@pytest.mark.parametrize("first", ["plain", "mentions joblib NumpyArrayWrapper"])
def test_a_payload_after_the_first_pickle_is_refused_on_every_route(
    first: str, tmp_path: Path, canary: Path
) -> None:
    src = tmp_path / "two.pkl"
    src.write_bytes(
        pickle.dumps({"note": first}, protocol=2) + call_pickle("os", "system", f"touch {canary}")
    )
    assert detect_format(src.read_bytes()) == ("pickle" if first == "plain" else "joblib")
    with pytest.raises(UnsafeModelError, match="system"):
        trainwarden.load(src)


def test_the_guarded_joblib_load_judges_the_whole_file(
    tmp_path: Path, canary: Path, guard: Callable[..., _guard.Guard]
) -> None:
    joblib = pytest.importorskip("joblib")
    src = tmp_path / "two.joblib"
    src.write_bytes(
        pickle.dumps({"note": "joblib NumpyArrayWrapper"}, protocol=2)
        + call_pickle("os", "system", f"touch {canary}")
    )
    guard(mode="block")
    with pytest.raises(UnsafeModelError, match="system"):
        joblib.load(src)


def test_a_payload_after_data_pkl_in_a_checkpoint_is_refused(
    tmp_path: Path, canary: Path, guard: Callable[..., _guard.Guard]
) -> None:
    # `trainwarden scan` reports the second pickle in data.pkl (CRITICAL); the loader read the
    # first only and loaded the file.
    import io
    import zipfile

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = tmp_path / "ckpt.pt"
    with (
        zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin,
        zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as zout,
    ):
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data += call_pickle("os", "system", f"touch {canary}")
            zout.writestr(info, data)
    with pytest.raises(UnsafeModelError, match="system"):
        trainwarden.load(src)
    with pytest.raises(UnsafeModelError, match="system"):
        trainwarden.load(src, mmap=True)
    guard(mode="block")
    with pytest.raises(UnsafeModelError, match="system"):
        torch.load(src, weights_only=False)
