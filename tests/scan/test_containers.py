"""Containers by content: PyTorch zip checkpoints (clean, tricked, TorchScript), raw pickles."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pytest

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.findings import Severity
from trainwarden.scan import FileReport, scan_bytes, scan_path

from ._zipbuild import Member, build_zip, read_zip

torch = pytest.importorskip("torch")


def rules(r: FileReport) -> set[str]:
    return {f.rule_id for f in r.findings}


def payload(canary: Path) -> bytes:
    return A.proto(2) + A.call_global("os", "system", f"touch {canary}") + A.STOP


def torch_bytes(obj: object, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=protocol)
    return buf.getvalue()


def tiny_model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )


# -- clean checkpoints written by torch --------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_clean_state_dict(protocol: int) -> None:
    r = scan_bytes(torch_bytes(tiny_model().state_dict(), protocol), "sd.pt")
    assert r.findings == (), [f.to_dict() for f in r.findings]
    assert "pytorch-zip" in r.formats
    assert "torch._utils._rebuild_tensor_v2" in r.globals


def test_clean_whole_module_optimizer_scheduler() -> None:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    model(torch.randn(2, 1, 4, 4)).sum().backward()
    opt.step()
    sched.step()
    ckpt = {
        "model": model,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": 3,
    }
    r = scan_bytes(torch_bytes(ckpt, 4), "full.pt")
    assert r.findings == (), [f.to_dict() for f in r.findings]


# torch warns that sparse CSR support is in beta; the warning is about torch, not the scanner.
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning")
# quantized dtypes are deprecated upstream, but old checkpoints contain them.
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_clean_exotic_tensors() -> None:
    tensors = {
        "q": torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8),
        "qc": torch.quantize_per_channel(
            torch.randn(2, 2), torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), 0, torch.quint8
        ),
        "coo": torch.randn(3, 3).to_sparse(),
        "csr": torch.randn(3, 3).to_sparse_csr(),
        "cplx": torch.randn(2, dtype=torch.complex64),
        "bf16": torch.randn(2, dtype=torch.bfloat16),
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "dtype": torch.float16,
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    r = scan_bytes(torch_bytes(tensors, 4), "t.pt")
    assert r.findings == (), [f.to_dict() for f in r.findings]


def test_storages_are_not_parsed(tmp_path: Path) -> None:
    # Tensor bytes that happen to look like a pickle must not be analysed: torch never
    # unpickles a storage.
    raw = bytearray(b"\x80\x02" + b"\xff" * 62)
    t = torch.frombuffer(raw, dtype=torch.uint8).clone()
    f = tmp_path / "t.pt"
    torch.save({"t": t}, f)
    report = scan_path(f)
    assert report.findings == ()


# -- malicious checkpoints -------------------------------------------------------------------


def swap_pickle(original: bytes, new_pickle: bytes, **kw: object) -> list[Member]:
    members = read_zip(original)
    for m in members:
        if m.name.endswith("data.pkl"):
            m.data = new_pickle
            for k, v in kw.items():
                setattr(m, k, v)
    return members


def test_malicious_data_pkl(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = build_zip(swap_pickle(torch_bytes({"w": torch.ones(2)}), payload(canary)))
    r = scan_bytes(data, "evil.pt")
    assert "TWS-PKL-DANGEROUS" in rules(r)
    (f,) = [f for f in r.findings if f.rule_id == "TWS-PKL-DANGEROUS"]
    assert f.location.endswith("/data.pkl@2")
    assert not canary.exists()


def test_any_prefix_and_member_name(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    members = [
        Member("innocent/version", b"3\n"),
        Member("innocent/weights.bin", payload(canary)),
        Member("innocent/data/0", b"\x00" * 16),
    ]
    r = scan_bytes(build_zip(members), "x.bin")
    assert "TWS-PKL-DANGEROUS" in rules(r)
    assert not canary.exists()


def test_local_header_name_mismatch(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    members = swap_pickle(
        torch_bytes({"w": torch.ones(2)}), payload(canary), local_name="archive/readme.txt"
    )
    r = scan_bytes(build_zip(members), "x.pt")
    assert {"TWS-ZIP-MISMATCH", "TWS-PKL-DANGEROUS"} <= rules(r)
    assert not canary.exists()


def test_crc_mismatch_member_still_scanned(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    members = swap_pickle(torch_bytes({"w": torch.ones(2)}), payload(canary), crc=0x1234)
    r = scan_bytes(build_zip(members), "x.pt")
    assert {"TWS-ZIP-CRC", "TWS-PKL-DANGEROUS"} <= rules(r)
    assert not canary.exists()


def test_flag_bits_disagree_member_still_scanned(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    members = swap_pickle(torch_bytes({"w": torch.ones(2)}), payload(canary), local_flags=0x1)
    r = scan_bytes(build_zip(members), "x.pt")
    assert {"TWS-ZIP-MISMATCH", "TWS-PKL-DANGEROUS"} <= rules(r)
    assert not canary.exists()


def test_encrypted_member_fails_closed(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    members = swap_pickle(torch_bytes({"w": torch.ones(2)}), payload(canary), flags=0x1)
    r = scan_bytes(build_zip(members), "x.pt")
    assert "TWS-ZIP-UNREADABLE" in rules(r)
    assert r.max_severity is not None and r.max_severity >= Severity.HIGH


def test_duplicate_member_names(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    members = read_zip(torch_bytes({"w": torch.ones(2)}))
    name = next(m.name for m in members if m.name.endswith("data.pkl"))
    members.append(Member(name.upper(), payload(canary)))
    r = scan_bytes(build_zip(members), "x.pt")
    assert {"TWS-ZIP-DUPLICATE", "TWS-PKL-DANGEROUS"} <= rules(r)
    assert not canary.exists()


def test_deflated_member(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    members = swap_pickle(torch_bytes({"w": torch.ones(2)}), payload(canary), deflate=True)
    r = scan_bytes(build_zip(members), "x.pt")
    assert "TWS-PKL-DANGEROUS" in rules(r)


def test_data_before_archive(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = build_zip([Member("a/data.pkl", payload(canary))], prefix=b"junk" * 4)
    r = scan_bytes(data, "x.zip")
    # Not a torch zip any more (torch checks the first bytes) and it is a raw "pickle"? No:
    # the content starts with junk, so no handler claims it; the archive is still not trusted.
    assert not canary.exists()
    assert r.findings == () or "TWS-PKL-DANGEROUS" in rules(r)


# torch.jit.script is deprecated upstream; it is still how TorchScript archives get made.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning")
def test_torchscript_archive(tmp_path: Path) -> None:
    f = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(f))
    r = scan_path(f).files[0]
    assert "TWS-TORCHSCRIPT" in rules(r)
    assert "torchscript" in r.formats
    # A clean torch.jit.save of an ordinary module is at most LOW.
    assert max(x.severity for x in r.findings) == Severity.LOW


def test_corrupt_zip_is_a_finding() -> None:
    data = torch_bytes({"w": torch.ones(2)})
    r = scan_bytes(data[:-30], "cut.pt")
    assert "TWS-ZIP-MALFORMED" in rules(r)


def test_raw_pickle_file(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    f = tmp_path / "model.bin"
    f.write_bytes(payload(canary))
    report = scan_path(f)
    assert report.failed()
    assert report.files[0].formats == ("pickle",)
    assert not canary.exists()


def test_clean_raw_pickle_file(tmp_path: Path) -> None:
    f = tmp_path / "state.pkl"
    f.write_bytes(pickle.dumps({"lr": 0.1, "steps": [1, 2]}, protocol=5))
    assert not scan_path(f).failed()


def test_directory_walk_skips_fifos_and_rejects_them_explicitly(tmp_path: Path) -> None:
    import os

    from trainwarden.scan import ScanError

    (tmp_path / "ok.pkl").write_bytes(pickle.dumps([1], protocol=4))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    report = scan_path(tmp_path)
    # not read (a FIFO would block the walk), and not a pass: a loader may still open them
    assert {Path(f.path).name: f.formats for f in report.files} == {
        "dangling": ("unscanned",),
        "ok.pkl": ("pickle",),
        "pipe": ("unscanned",),
    }
    assert sorted((Path(f.location).name, f.rule_id, f.severity.name) for f in report.findings) == [
        ("dangling", "TWS-UNSCANNED", "HIGH"),
        ("pipe", "TWS-UNSCANNED", "HIGH"),
    ]
    assert report.failed()
    with pytest.raises(ScanError, match="not a regular file"):
        scan_path(fifo)
    with pytest.raises(ScanError, match="no such file"):
        scan_path(tmp_path / "missing")


def test_entries_left_out_by_the_user_are_neither_skipped_nor_reported(tmp_path: Path) -> None:
    import os

    (tmp_path / "ok.pkl").write_bytes(pickle.dumps([1], protocol=4))
    os.mkfifo(tmp_path / "pipe")
    for report in (scan_path(tmp_path, exclude=["pipe"]), scan_path(tmp_path, include=["*.pkl"])):
        assert [Path(f.path).name for f in report.files] == ["ok.pkl"]
        assert report.skipped == ()
        assert not report.failed()


def test_folder_hook_findings_are_merged(tmp_path: Path) -> None:
    # The core calls formats.hf_folder.folder_findings for each walked directory and merges its
    # findings into the FileReport of the file they concern (creating one if the walk skipped it).
    import json

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "x", "auto_map": {"AutoModel": "modeling_x.XModel"}})
    )
    (model / "modeling_x.py").write_text("class XModel: pass\n")
    torch.save({"w": torch.ones(1)}, model / "pytorch_model.bin")
    report = scan_path(model, include=["*.bin"])
    by_name = {Path(f.path).name: f for f in report.files}
    assert by_name["pytorch_model.bin"].findings == ()
    assert {f.rule_id for f in by_name["config.json"].findings} >= {"TWS-HF-001"}
    assert report.failed()


def test_archives_back_to_back_like_dcp_shards(tmp_path: Path) -> None:
    # torch.distributed.checkpoint writes one torch.save archive per item into a shard file;
    # its loader reads each slice and unpickles it, so every archive is scanned.
    canary = tmp_path / "canary"
    clean = torch_bytes({"w": torch.ones(2)}, 4)
    evil = build_zip(swap_pickle(torch_bytes({"w": torch.ones(2)}), payload(canary)))
    r = scan_bytes(clean + evil + clean, "__0_0.distcp")
    assert "zip-sequence" in r.formats
    (f,) = [f for f in r.findings if f.rule_id == "TWS-PKL-DANGEROUS"]
    assert f.location.startswith(f"__0_0.distcp:<archive 1@{len(clean)}>:")
    r = scan_bytes(clean + payload(canary) + clean, "x.distcp")
    assert {"TWS-ZIP-MISMATCH", "TWS-PKL-DANGEROUS"} <= rules(r)
    assert not canary.exists()


# DCP warns that torch.distributed is not initialised and saves single-process, as intended.
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
def test_real_distributed_checkpoint_is_clean(tmp_path: Path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optim": opt.state_dict(), "step": 3}
    dcp.save(state, checkpoint_id=str(tmp_path / "ckpt"))
    report = scan_path(tmp_path / "ckpt")
    assert len(report.files) >= 2
    assert report.findings == (), [f.to_dict() for f in report.findings]
