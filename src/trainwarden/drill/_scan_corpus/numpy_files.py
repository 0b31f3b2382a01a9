"""NumPy .npy and .npz files."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

from trainwarden.drill._scan_corpus._base import _bytes_sample, _Clean, _evil, _Mal
from trainwarden.drill._scan_corpus._common import _npy_object_bytes


def _npz_object(c: Path) -> bytes:
    import numpy as np

    arr = np.empty(1, dtype=object)
    arr[0] = _evil(c)
    buf = io.BytesIO()
    np.savez(buf, weights=np.arange(4, dtype=np.float32), meta=arr)
    return buf.getvalue()


def _npy_v3(c: Path) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * ((64 - (12 + len(header) + 1) % 64) % 64) + "\n"
    body = pickle.dumps([_evil(c)], protocol=3)
    return b"\x93NUMPY\x03\x00" + struct.pack("<I", len(header)) + header.encode() + body


def _npy(path: Path) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.arange(12, dtype=np.float64).reshape(3, 4))


def _npz(path: Path) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, a=np.arange(4), b=np.eye(3, dtype=np.float32), c=np.array(["x", "y"]))


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    b = _bytes_sample
    return [
        _Mal(
            "npy_object_dtype_pickle",
            ".npy",
            "numpy .npy with object dtype (pickle payload)",
            "CVE-2019-6446 (numpy.load allow_pickle)",
            b(_npy_object_bytes),
            trigger="numpy",
        ),
        _Mal(
            "npz_object_member",
            ".npz",
            "npz with a clean array and an object array payload",
            "CVE-2019-6446",
            b(_npz_object),
            trigger="numpy_npz",
        ),
        _Mal(
            "npy_v3_header_object",
            ".npy",
            "npy format 3.0 header, object dtype pickle body",
            "numpy format spec 3.0; CVE-2019-6446",
            b(_npy_v3),
            trigger="numpy",
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean("numpy_npy", ".npy", "numpy.save", _npy),
        _Clean("numpy_npz_compressed", ".npz", "numpy.savez_compressed", _npz),
    ]
