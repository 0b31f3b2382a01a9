"""Compressed inputs are inflated by the loader within one limit: 200 times the file, at least
256 MiB, at most the policy's ``max_decompressed_bytes``. A deflated ``.npz`` member inflates
about 1000 times, so without the limit a 1 MB file held 2 GB (and ``trainwarden scan`` already
called it unsafe).

The loads run in real subprocesses under an address-space limit: a loader that inflated the
whole member would fail there instead of exhausting the machine."""

from __future__ import annotations

import io
import resource
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import trainwarden
from trainwarden.loading import UnsafeModelError

RunCli = Callable[..., subprocess.CompletedProcess[str]]

INFLATED = 1 << 30  # 1 GiB of zeros, about 1 MB deflated


def _limited() -> None:
    # Room for the interpreter, torch and numpy, not for the inflated gigabyte and its copy.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def _zeros_npz(path: Path, members: int = 1) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (INFLATED,)}
    )
    chunk = bytes(16 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for i in range(members):
            with z.open(f"a{i}.npy", "w", force_zip64=True) as f:
                f.write(header.getvalue())
                for _ in range(INFLATED // len(chunk)):
                    f.write(chunk)
    return path


def test_a_deflated_npz_bomb_is_refused_within_the_limit(tmp_path: Path, run_cli: RunCli) -> None:
    src = _zeros_npz(tmp_path / "bomb.npz")
    assert src.stat().st_size < 2 << 20
    r = run_cli(["load", str(src)], cwd=tmp_path, preexec_fn=_limited)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "decompresses to more than 268435456 bytes" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_npz_limit_counts_every_member_of_the_file(tmp_path: Path) -> None:
    # Two members of 160 MiB each: each under the limit, together over it.
    header = io.BytesIO()
    size = 160 << 20
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (size,)}
    )
    src = tmp_path / "two.npz"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("a.npy", "b.npy"):
            z.writestr(name, header.getvalue() + bytes(size))
    with pytest.raises(UnsafeModelError, match="decompresses to more than"):
        trainwarden.load(src)


def test_a_compressed_npz_within_the_limit_loads_like_numpy(tmp_path: Path) -> None:
    src = tmp_path / "ok.npz"
    arrays = {"zeros": np.zeros(1 << 20), "ramp": np.arange(1000.0)}
    np.savez_compressed(src, zeros=arrays["zeros"], ramp=arrays["ramp"])
    loaded = trainwarden.load(src)
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        assert np.array_equal(loaded[k], v)


def test_a_joblib_zlib_bomb_is_refused_within_the_limit(tmp_path: Path) -> None:
    # The same limit, for joblib's zlib files: one compressed stream of zeros.
    src = tmp_path / "bomb.joblib"
    comp = zlib.compressobj(9)
    chunk = bytes(16 << 20)
    with open(src, "wb") as f:
        for _ in range(INFLATED // len(chunk)):
            f.write(comp.compress(chunk))
        f.write(comp.flush())
    with pytest.raises(UnsafeModelError, match="decompresses to more than 268435456 bytes"):
        trainwarden.load(src)


def _deflated_checkpoint(path: Path) -> Path:
    """A torch zip whose ``data.pkl`` is a valid pickle of a 1 GiB string, deflated to 1 MB
    (torch's reader inflates compressed records)."""
    chunk = b"a" * (16 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(b"\x80\x02X" + INFLATED.to_bytes(4, "little"))
            for _ in range(INFLATED // len(chunk)):
                f.write(chunk)
            f.write(b".")
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    return path


@pytest.mark.parametrize("how", ["read", "mmap", "guarded-torch-load"])
def test_a_deflated_data_pkl_in_a_torch_zip_is_refused_within_the_limit(
    how: str, tmp_path: Path
) -> None:
    # trainwarden.load held 3.4 GB for this 1 MB file (the record inflated three times);
    # `trainwarden scan` already called it unsafe.
    src = _deflated_checkpoint(tmp_path / "bomb.pt")
    assert src.stat().st_size < 2 << 20
    code = (
        "import sys, trainwarden\n"
        "from trainwarden.loading import UnsafeModelError\n"
        "how, path = sys.argv[1], sys.argv[2]\n"
        "try:\n"
        "    if how == 'guarded-torch-load':\n"
        "        import torch\n"
        "        from trainwarden.loading import _guard\n"
        "        _guard.install()\n"
        "        torch.load(path, weights_only=False)\n"
        "    else:\n"
        "        trainwarden.load(path, mmap=how == 'mmap')\n"
        "    print('loaded')\n"
        "except UnsafeModelError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, how, str(src)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
        preexec_fn=_limited,
        check=False,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "decompresses to more than 268435456 bytes" in proc.stdout
