"""Archives and compressed streams: zip, tar, gzip, 7z."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

from trainwarden.drill._scan_corpus._base import _bytes_sample, _Clean, _evil, _Mal, _write
from trainwarden.drill._scan_corpus._common import _zip_bytes


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1_700_000_000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _torch_legacy_tar(c: Path) -> bytes:
    return _tar_bytes(
        {
            "sys_info": pickle.dumps({"protocol_version": 1000, "little_endian": True}, protocol=2),
            "storages": pickle.dumps(_evil(c), protocol=2),
            "tensors": pickle.dumps(0, protocol=2),
            "pickle": pickle.dumps({}, protocol=2),
        }
    )


def _nested_archive(c: Path) -> bytes:
    inner_zip = _zip_bytes({"model/weights.pkl": pickle.dumps(_evil(c), protocol=4)})
    tar = _tar_bytes({"bundle/model.zip": inner_zip, "bundle/README": b"checkpoint bundle\n"})
    return gzip.compress(tar, mtime=0)


def _gzip_pickle(c: Path) -> bytes:
    return gzip.compress(pickle.dumps(_evil(c), protocol=4), mtime=0)


def _plain_zip(c: Path) -> bytes:
    return _zip_bytes({"model.pkl": pickle.dumps(_evil(c), protocol=4), "README.txt": b"hi\n"})


def _plain_tar(c: Path) -> bytes:
    return _tar_bytes({"ckpt/model.pkl": pickle.dumps(_evil(c), protocol=4)})


def _sevenzip(path: Path, c: Path) -> None:
    import py7zr

    path.parent.mkdir(parents=True, exist_ok=True)
    with py7zr.SevenZipFile(path, "w") as z:
        z.writestr(pickle.dumps(_evil(c), protocol=4), "model.pkl")


def _gzip_multimember(c: Path) -> bytes:
    raw = pickle.dumps(_evil(c), protocol=4)
    return gzip.compress(raw[:2], mtime=0) + gzip.compress(raw[2:], mtime=0)


def _archive_of_clean(kind: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import numpy as np
        import torch
        from safetensors.numpy import save as st_save

        npy = io.BytesIO()
        np.save(npy, np.arange(4))
        pt = io.BytesIO()
        torch.save({"w": torch.ones(2)}, pt)
        members = {
            "bundle/a.npy": npy.getvalue(),
            "bundle/w.pt": pt.getvalue(),
            "bundle/t.safetensors": st_save({"x": np.zeros(2, np.float32)}),
            "bundle/README.md": b"tiny bundle\n",
        }
        data = _zip_bytes(members) if kind == "zip" else _tar_bytes(members)
        if kind == "tar.gz":
            data = gzip.compress(data, mtime=0)
        _write(path, data)

    return build


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    b = _bytes_sample
    return [
        _Mal(
            "torch_legacy_tar",
            ".tar",
            "pre-1.0 torch tar format, payload in 'storages'",
            "torch legacy_load tar branch",
            b(_torch_legacy_tar),
            trigger="torch",
        ),
        _Mal(
            "nested_zip_in_tar_in_gzip",
            ".tar.gz",
            "pickle in zip in tar in gzip",
            "aisbom/ModelAudit nested archive scanning",
            b(_nested_archive),
            trigger=None,
        ),
        _Mal(
            "gzip_raw_pickle",
            ".gz",
            "gzip-compressed raw pickle",
            "nested archives",
            b(_gzip_pickle),
            trigger=None,
        ),
        _Mal(
            "plain_zip_pickle",
            ".zip",
            "pickle inside a plain zip",
            "nested archives",
            b(_plain_zip),
            trigger=None,
        ),
        _Mal(
            "plain_tar_pickle",
            ".tar",
            "pickle inside a plain tar",
            "nested archives",
            b(_plain_tar),
            trigger=None,
        ),
        _Mal(
            "sevenzip_pickle",
            ".7z",
            "pickle inside a 7z archive",
            "aisbom CHANGELOG (non-standard containers)",
            _sevenzip,
            trigger=None,
        ),
        _Mal(
            "gzip_multimember_split_pickle",
            ".gz",
            "payload pickle split across two gzip members",
            "RFC 1952 multi-member streams (gzip.decompress reads all members)",
            b(_gzip_multimember),
            trigger="gzip_pickle",
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean(
            "zip_of_clean_files", ".zip", "zipfile of npy/pt/safetensors", _archive_of_clean("zip")
        ),
        _Clean(
            "tar_of_clean_files", ".tar", "tarfile of npy/pt/safetensors", _archive_of_clean("tar")
        ),
        _Clean(
            "targz_of_clean_files",
            ".tar.gz",
            "gzip tarfile of npy/pt/safetensors",
            _archive_of_clean("tar.gz"),
        ),
    ]
