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


def _no_proto(canary: Path) -> bytes:
    """``os.system("touch CANARY")`` with protocol 4 opcodes but no PROTO header."""
    from trainwarden.drill._scan_corpus import asm as A

    return A.su("os") + A.su("system") + A.STACK_GLOBAL + A.su(f"touch {canary}") + b"\x85R."


@pytest.mark.parametrize("protocol", [0, 1, 2, "4 without PROTO"])
def test_a_pickle_hidden_in_a_storage_is_refused_whatever_its_protocol(
    protocol: int | str, tmp_path: Path, canary: Path
) -> None:
    # A layer's set_extra_state may unpickle a uint8 tensor's bytes: pickle.loads runs a
    # protocol 0 or 1 stream (or any opcodes) without a PROTO header, and the check that
    # refuses such a hidden pickle only looked at storages starting with PROTO.
    import torch

    from ._payloads import SystemPayload

    if isinstance(protocol, int):
        payload = pickle.dumps(SystemPayload(canary), protocol=protocol)
    else:
        payload = _no_proto(canary)
    src = tmp_path / "ckpt.pt"
    torch.save({"extra_state": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, src)
    with pytest.raises(UnsafeModelError, match="system"):
        trainwarden.load(src)
