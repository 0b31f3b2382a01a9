"""Container members are classified by what each reader a victim runs does with them.

A member a reader unpickles because of its *name* (torch.load's ``data.pkl``) is analysed as a
pickle whatever its content sniffs as, and a disagreement between name and content is HIGH; a
member no reader interprets (text, JSON, raw bytes) stays quiet; content another format claims
but whose free first bytes also make a pickle is analysed as that pickle too.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwarden.drill._samples_containers import tar_pickle_polyglot
from trainwarden.scan import FileReport, scan_bytes
from trainwarden.scan._formats.zip import unpickled_by


def rules(r: FileReport) -> set[str]:
    return {f.rule_id for f in r.findings}


def _torch_zip(
    replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None
) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            tail = info.filename.split("/", 1)[-1]
            z.writestr(info.filename, (replace or {}).get(tail, src.read(info)))
        for name, data in (add or {}).items():
            z.writestr(name, data)
    return out.getvalue()


def _live(path: Path, code: str) -> None:
    subprocess.run([sys.executable, "-c", code, str(path)], check=False, timeout=300)


def test_data_pkl_is_unpickled_by_name_whatever_its_content_sniffs_as(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    data = _torch_zip({"data.pkl": tar_pickle_polyglot(canary)})
    report = scan_bytes(data, "poly.pt")
    assert {"TWS-ZIP-MEMBER-KIND", "TWS-PKL-DANGEROUS"} <= rules(report), rules(report)
    kind = next(f for f in report.findings if f.rule_id == "TWS-ZIP-MEMBER-KIND")
    assert kind.evidence["reader"] == "torch.load"
    assert kind.location.endswith("data.pkl")
    assert not canary.exists()
    # and the sample is live: torch.load runs it (in a child process)
    path = tmp_path / "poly.pt"
    path.write_bytes(data)
    _live(path, "import sys, torch; torch.load(sys.argv[1], weights_only=False)")
    assert canary.exists()
    canary.unlink()


def test_tar_whose_header_is_a_pickle_is_analysed_as_one(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    data = tar_pickle_polyglot(canary)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert tf.getmembers()  # a valid tar
    report = scan_bytes(data, "poly.tar")
    assert {"TWS-PKL-POLYGLOT", "TWS-PKL-DANGEROUS"} <= rules(report), rules(report)
    path = tmp_path / "poly.tar"
    path.write_bytes(data)
    _live(path, "import sys, pickle; pickle.load(open(sys.argv[1], 'rb'))")
    assert canary.exists()
    canary.unlink()


@pytest.mark.parametrize(
    "name", ["checkpoint/model.bin", "cfg.json", "(paren", "d", "a/b/c.txt", "p0", "S'x'"]
)
def test_clean_tars_whose_names_start_with_opcode_bytes_stay_quiet(name: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    assert scan_bytes(buf.getvalue(), "clean.tar").findings == ()


def test_members_no_reader_interprets_stay_quiet() -> None:
    """Text, JSON and raw bytes beside a checkpoint's pickle: torch.load reads none of them,
    numpy.load hands non-.npy members back as bytes."""
    extra = {
        "archive/extra/notes.txt": b"trained on 2024-05-01\n",
        "archive/config.json": json.dumps({"lr": 0.1, "auto_map": "x"}).encode(),
        "archive/blob.bin": bytes(range(256)) * 4,
    }
    assert scan_bytes(_torch_zip(add=extra), "ok.pt").findings == ()
    npz = io.BytesIO()
    np.savez(npz, a=np.arange(3))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(npz.getvalue())) as src, zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info))
        z.writestr("README.txt", b"plain text")
    assert scan_bytes(out.getvalue(), "ok.npz").findings == ()


@pytest.mark.parametrize(
    ("kind", "name", "reader"),
    [
        ("pytorch-zip", "archive/data.pkl", "torch.load"),
        ("pytorch-zip", "data.pkl", "torch.load"),
        ("torchscript", "m/data.pkl", "torch.load"),
        ("torchscript", "m/constants.pkl", "torch.jit.load"),
        ("torchscript", "m/code/__torch__.py.debug_pkl", "torch.jit.load"),
        ("pytorch-zip", "archive/constants.pkl", None),
        ("pytorch-zip", "archive/data/0", None),
        ("pytorch-zip", "archive/xdata.pkl", None),
        ("zip", "data.pkl", None),
        ("npz", "a.npy", None),
    ],
)
def test_which_reader_unpickles_a_member_by_name(kind: str, name: str, reader: str | None) -> None:
    assert unpickled_by(kind, name) == reader


def test_clean_checkpoint_data_pkl_has_no_member_kind_finding() -> None:
    assert scan_bytes(_torch_zip(), "ok.pt").findings == ()
