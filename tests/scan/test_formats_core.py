"""Compressed, archived, numpy and legacy-torch containers; clean files from the real libraries."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import random
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.findings import Severity
from trainwarden.scan import FileReport, Limits, scan_bytes, scan_path

from ._zipbuild import Member, build_zip

np = pytest.importorskip("numpy")


def rules(r: FileReport) -> set[str]:
    return {f.rule_id for f in r.findings}


def payload(canary: Path) -> bytes:
    return A.proto(2) + A.call_global("os", "system", f"touch {canary}") + A.STOP


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lambda b: lzma.compress(b, format=lzma.FORMAT_XZ),
    "lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
    "zlib": zlib.compress,
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_payload(kind: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    r = scan_bytes(COMPRESSORS[kind](payload(canary)), f"x.{kind}")
    assert kind in r.formats
    assert "TWS-PKL-DANGEROUS" in rules(r)
    (f,) = [f for f in r.findings if f.rule_id == "TWS-PKL-DANGEROUS"]
    assert f.location.startswith(f"x.{kind}:<{kind}>")
    assert not canary.exists()


def test_truncated_compressed_stream_is_reported(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = gzip.compress(payload(canary) + b"N" * 5000)
    r = scan_bytes(data[: len(data) // 2])
    assert "TWS-COMPRESSED-CORRUPT" in rules(r)
    assert "TWS-PKL-DANGEROUS" in rules(r)  # what decompressed before the damage is scanned


def test_decompression_bomb() -> None:
    bomb = gzip.compress(b"\x00" * (8 << 20))
    r = scan_bytes(bomb, limits=Limits(max_decompressed_bytes=1 << 20))
    assert "TWS-LIMIT" in rules(r)
    assert r.max_severity is Severity.HIGH


def test_plain_tar_and_nesting(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    inner_zip = build_zip([Member("ckpt/model.pkl", payload(canary))])
    nested = gzip.compress(tar_bytes({"README": b"hi\n", "weights/inner.zip": inner_zip}))
    r = scan_bytes(nested, "bundle.tar.gz")
    assert {"gzip", "tar", "zip"} <= set(r.formats)
    (f,) = [f for f in r.findings if f.rule_id == "TWS-PKL-DANGEROUS"]
    assert f.location.startswith("bundle.tar.gz:<gzip>:weights/inner.zip:ckpt/model.pkl@")
    assert not canary.exists()


def test_archive_depth_limit(tmp_path: Path) -> None:
    data = payload(tmp_path / "canary")
    for _ in range(5):
        data = gzip.compress(data)
    r = scan_bytes(data, limits=Limits(max_archive_depth=3))
    assert "TWS-LIMIT" in rules(r)
    assert r.max_severity is not None and r.max_severity >= Severity.HIGH


def test_member_limit() -> None:
    members = {f"m{i}": pickle.dumps(i) for i in range(20)}
    r = scan_bytes(tar_bytes(members), limits=Limits(max_members=5))
    assert "TWS-LIMIT" in rules(r)


def test_sevenzip(tmp_path: Path) -> None:
    py7zr = pytest.importorskip("py7zr")
    canary = tmp_path / "canary"
    src = tmp_path / "model.bin"
    src.write_bytes(payload(canary))
    archive = tmp_path / "m.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(src, "model.bin")
    src.unlink()
    r = scan_path(archive).files[0]
    assert "TWS-PKL-DANGEROUS" in rules(r)
    assert not canary.exists()


def test_sevenzip_without_py7zr_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "py7zr" else real(name, *a),
    )
    r = scan_bytes(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 32)
    assert "TWS-CANNOT-INSPECT" in rules(r)
    assert r.max_severity is Severity.HIGH


def test_lz4_without_package_fails_closed() -> None:
    pytest.importorskip("numpy")
    import importlib.util

    if importlib.util.find_spec("lz4") is not None:
        pytest.skip("lz4 installed: the fail-closed path does not apply")
    r = scan_bytes(b"\x04\x22\x4d\x18" + b"\x00" * 16)
    assert "TWS-CANNOT-INSPECT" in rules(r)


def test_npy_object_array_payload(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    buf = io.BytesIO()
    np.save(buf, np.array([1, "a"], dtype=object), allow_pickle=True)
    clean = buf.getvalue()
    r = scan_bytes(clean, "obj.npy")
    assert rules(r) == {"TWS-NPY-OBJECT"}
    assert r.max_severity is Severity.MEDIUM
    header_end = clean.index(b"\n") + 1
    evil = clean[:header_end] + payload(canary)
    r = scan_bytes(evil, "evil.npy")
    assert "TWS-PKL-DANGEROUS" in rules(r)
    assert not canary.exists()


def test_npz(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    buf = io.BytesIO()
    np.savez_compressed(buf, w=np.arange(10.0), b=np.ones(3))
    assert scan_bytes(buf.getvalue()).findings == ()
    obj = io.BytesIO()
    np.save(obj, np.array([None], dtype=object), allow_pickle=True)
    raw = obj.getvalue()
    evil = raw[: raw.index(b"\n") + 1] + payload(canary)
    r = scan_bytes(build_zip([Member("w.npy", evil, deflate=True)]), "x.npz")
    assert "npz" in r.formats
    assert "TWS-PKL-DANGEROUS" in rules(r)


def test_malformed_npy_header() -> None:
    r = scan_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}\n")
    assert "TWS-NPY-MALFORMED" in rules(r)


# -- joblib / scikit-learn ------------------------------------------------------------------


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)])
def test_clean_sklearn_joblib(compress: object, tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    ensemble = pytest.importorskip("sklearn.ensemble")
    pipeline = pytest.importorskip("sklearn.pipeline")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.RandomState(0)
    x = rng.rand(30, 4)
    y = (x[:, 0] > 0.5).astype(int)
    model = pipeline.make_pipeline(
        preprocessing.StandardScaler(), ensemble.RandomForestClassifier(n_estimators=3)
    ).fit(x, y)
    f = tmp_path / "model.joblib"
    joblib.dump(model, f, compress=compress)
    r = scan_path(f).files[0]
    assert r.findings == (), [x.to_dict() for x in r.findings]
    assert "sklearn.pipeline.Pipeline" in r.globals


def test_malicious_joblib_compressed(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    r = scan_bytes(zlib.compress(payload(canary)), "m.joblib")
    assert "TWS-PKL-DANGEROUS" in rules(r)


# -- legacy torch -------------------------------------------------------------------------


def test_legacy_torch_clean_and_trailing(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    sd = {"w": torch.ones(3), "i": torch.zeros(2, dtype=torch.int64)}
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    r = scan_bytes(data, "old.pt")
    assert r.findings == ()
    assert "pytorch-legacy" in r.formats
    canary = tmp_path / "canary"
    r = scan_bytes(data + payload(canary), "old.pt")
    assert {"TWS-PKL-TRAILING", "TWS-PKL-DANGEROUS"} <= rules(r)
    assert not canary.exists()


def test_legacy_torch_payload_in_data_pickle(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    magic = A.proto(2) + b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19" + A.STOP
    data = magic + pickle.dumps(1001, 2) + pickle.dumps({}, 2) + payload(canary)
    r = scan_bytes(data + pickle.dumps([], 2))
    assert "pytorch-legacy" in r.formats
    assert "TWS-PKL-DANGEROUS" in rules(r)


def _legacy_tar(storages_payload: bytes) -> bytes:
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, 2)
    main = pickle.dumps({"w": 1}, 2)
    tensors = pickle.dumps(0, 2)
    return tar_bytes(
        {"sys_info": sys_info, "pickle": main, "storages": storages_payload, "tensors": tensors}
    )


def test_legacy_torch_tar(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    record = (
        A.proto(2)
        + A.MARK
        + A.su("0")
        + A.su("cpu")
        + A.glob("torch", "FloatStorage")
        + A.TUPLE
        + A.STOP
    )
    storages = pickle.dumps(1, 2) + record + struct.pack("<q", 2) + b"\x00" * 8
    r = scan_bytes(_legacy_tar(storages), "old.tar")
    assert "pytorch-legacy-tar" in r.formats
    assert r.findings == (), [f.to_dict() for f in r.findings]
    evil = pickle.dumps(1, 2) + payload(canary)
    r = scan_bytes(_legacy_tar(evil), "old.tar")
    assert "TWS-PKL-DANGEROUS" in rules(r)
    assert not canary.exists()


# -- unclaimed content ----------------------------------------------------------------------


def test_headerless_pickle_without_stop_is_probed(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = A.glob("os", "system") + A.MARK + A.string(f"touch {canary}") + A.TUPLE + A.REDUCE
    r = scan_bytes(data + b"\xff garbage", "weights.bin")
    assert "TWS-PKL-DANGEROUS" in rules(r)


def test_random_bytes_are_not_reported() -> None:
    rnd = random.Random(7)  # noqa: S311 - test data, not crypto
    blob = bytes(rnd.getrandbits(8) for _ in range(4096))
    assert scan_bytes(blob, "weights.raw").findings == ()


# -- Hugging Face Trainer files, written the way the Trainer writes them -----------------------


def test_clean_hf_trainer_files(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(
        str(tmp_path / "out"), report_to=[], use_cpu=True, lr_scheduler_type="cosine"
    )
    torch.save(args, tmp_path / "training_args.bin")
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    torch.save(rng, tmp_path / "rng_state.pth")
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    torch.save(sched.state_dict(), tmp_path / "scheduler.pt")
    report = scan_path(tmp_path)
    assert len(report.files) == 4
    assert report.findings == (), [f.to_dict() for f in report.findings]


def test_large_members_spill_to_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Content over the memory threshold is decompressed into an unlinked temporary file and
    # scanned through a memory map: decompression never holds it all in memory.
    from trainwarden.scan._formats import _spill

    monkeypatch.setattr(_spill, "MEMORY_THRESHOLD", 1024)
    canary = tmp_path / "canary"
    big = A.proto(4) + (A.NONE + A.POP) * 5000 + A.call_global("os", "system", f"touch {canary}")
    big += A.STOP
    for data in (
        gzip.compress(big),
        build_zip([Member("a/data.pkl", big, deflate=True)]),
        tar_bytes({"ckpt/model.pkl": big}),
    ):
        r = scan_bytes(data)
        assert "TWS-PKL-DANGEROUS" in rules(r), r.formats
    assert not canary.exists()
