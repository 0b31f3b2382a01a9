"""PyTorch checkpoints: torch.save zips, legacy files, TorchScript archives."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainwarden.drill._scan_corpus._base import _bytes_sample, _Clean, _evil, _Mal, _write
from trainwarden.drill._scan_corpus._common import (
    _np_random,
    _py_random,
    _sd_float,
    _tiny_net,
    _torch_evil_zip,
    _torch_save_bytes,
    _zip_bytes,
)


def _zip_patch(data: bytes, member: str, patch: Callable[[bytearray, int, int], None]) -> bytes:
    """Apply ``patch(buf, local_header_offset, central_header_offset)`` for ``member``."""
    buf = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    local = info.header_offset
    name = member.encode()
    central = -1
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        nlen = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + nlen] == name:
            central = pos
            break
        pos += 4
    if central < 0:
        raise ValueError(f"central directory entry for {member} not found")
    patch(buf, local, central)
    return bytes(buf)


def _torch_zip_member_name(data: bytes, suffix: str) -> str:
    for n in zipfile.ZipFile(io.BytesIO(data)).namelist():
        if n.endswith(suffix):
            return n
    raise ValueError(suffix)


def _flag_bits(c: Path) -> bytes:
    # Bit 5 ("compressed patched data") only in the local header: Python's zipfile refuses the
    # member, PyTorch's miniz reader trusts the central directory's flags and loads it.
    data = _torch_evil_zip(c)
    member = _torch_zip_member_name(data, "/data.pkl")

    def patch(buf: bytearray, local: int, central: int) -> None:
        flags = struct.unpack_from("<H", buf, local + 6)[0]
        struct.pack_into("<H", buf, local + 6, flags | 0x20)

    return _zip_patch(data, member, patch)


def _bad_crc(c: Path) -> bytes:
    data = _torch_evil_zip(c)
    member = _torch_zip_member_name(data, "/data.pkl")

    def patch(buf: bytearray, local: int, central: int) -> None:
        struct.pack_into("<I", buf, local + 14, 0xDEADBEEF)
        struct.pack_into("<I", buf, central + 16, 0xDEADBEEF)

    return _zip_patch(data, member, patch)


def _name_mismatch(c: Path) -> bytes:
    # The local header claims a harmless name; the central directory (what PyTorch reads) says
    # data.pkl. Python's zipfile refuses the member, miniz does not compare the two.
    data = _torch_evil_zip(c)
    member = _torch_zip_member_name(data, "/data.pkl")

    def patch(buf: bytearray, local: int, central: int) -> None:
        nlen = struct.unpack_from("<H", buf, local + 26)[0]
        old = bytes(buf[local + 30 : local + 30 + nlen])
        buf[local + 30 : local + 30 + nlen] = old[:-8] + b"notes.md"

    return _zip_patch(data, member, patch)


def _rezip(
    data: bytes, rename: Callable[[str], str], compression: int = zipfile.ZIP_STORED
) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    return _zip_bytes({rename(n): src.read(n) for n in src.namelist()}, compression)


def _different_prefix(c: Path) -> bytes:
    return _rezip(_torch_evil_zip(c), lambda n: "resnet50_finetuned/" + n.split("/", 1)[1])


def _deflated(c: Path) -> bytes:
    return _rezip(_torch_evil_zip(c), lambda n: n, zipfile.ZIP_DEFLATED)


def _renamed_member(c: Path) -> bytes:
    # data.pkl is clean; the payload sits in a member torch.load(pickle_file=...) would read.
    import torch

    data = _torch_save_bytes({"weight": torch.zeros(2)})
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {n: src.read(n) for n in src.namelist()}
    prefix = next(iter(members)).split("/", 1)[0]
    members[f"{prefix}/model_v2.pkl"] = pickle.dumps(_evil(c), protocol=2)
    return _zip_bytes(members)


def _nonpkl_member(c: Path) -> bytes:
    import torch

    data = _torch_save_bytes({"weight": torch.zeros(2)})
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {n: src.read(n) for n in src.namelist()}
    prefix = next(iter(members)).split("/", 1)[0]
    members[f"{prefix}/data/extra_state"] = pickle.dumps(_evil(c), protocol=2)
    return _zip_bytes(members)


def _torch_legacy(c: Path) -> bytes:
    import torch

    return _torch_save_bytes(
        {"weight": torch.zeros(2), "hook": _evil(c)}, _use_new_zipfile_serialization=False
    )


def _torch_legacy_header(c: Path) -> bytes:
    # The legacy reader unpickles the "magic number" header with the caller's pickle module.
    import torch

    clean = _torch_save_bytes({"weight": torch.zeros(2)}, _use_new_zipfile_serialization=False)
    first = pickle.loads(clean)  # noqa: S301 -- our own clean torch.save output, to measure its length
    magic_len = len(pickle.dumps(first, protocol=2))
    return pickle.dumps(_evil(c), protocol=2) + clean[magic_len:]


def _torchscript(c: Path) -> bytes:
    import torch

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Net()), buf)
    return buf.getvalue()


def _whole_module_tampered(c: Path) -> bytes:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    model._modules["2"] = _evil(c)  # type: ignore[assignment]
    return _torch_save_bytes(model)


def _zip_duplicate_names(c: Path) -> bytes:
    # Two central-directory entries named data.pkl, clean first, payload last: a scanner that
    # dedupes names or stops at the first match sees the clean one; PyTorch loads the last.
    import torch

    data = _torch_evil_zip(c)
    src = zipfile.ZipFile(io.BytesIO(data))
    member = _torch_zip_member_name(data, "/data.pkl")
    clean_zip = _torch_save_bytes({"weight": torch.zeros(2)})
    clean = zipfile.ZipFile(io.BytesIO(clean_zip))
    clean_pkl = clean.read(_torch_zip_member_name(clean_zip, "/data.pkl"))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we want
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(member, clean_pkl)
            for n in src.namelist():
                if n != member:
                    z.writestr(n, src.read(n))
            z.writestr(member, src.read(member))
    return buf.getvalue()


def _polyglot_pickle_zip(c: Path) -> bytes:
    # torch.load sees no zip magic at offset 0 and unpickles the prefix with the legacy reader;
    # zip tools find the end-of-central-directory record and see a clean checkpoint.
    import torch

    return pickle.dumps(_evil(c), protocol=2) + _torch_save_bytes({"weight": torch.zeros(2)})


def _tsave(obj_fn: Callable[[], Any], **kw: Any) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj_fn(), path, **kw)

    return build


def _sd_half() -> Any:
    import torch

    net = _tiny_net()
    return {"bf16": net.to(torch.bfloat16).state_dict(), "fp16": _tiny_net().half().state_dict()}


def _sd_quantized() -> Any:
    import torch

    t = torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 3, torch.qint8)
    tc = torch.quantize_per_channel(
        torch.randn(4, 4), torch.rand(4) + 0.1, torch.zeros(4, dtype=torch.long), 0, torch.quint8
    )
    return {"per_tensor": t, "per_channel": tc}


def _sd_sparse() -> Any:
    import torch

    dense = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    return {"coo": dense.to_sparse(), "csr": dense.to_sparse_csr()}


def _sd_complex() -> Any:
    import torch

    return {
        "c64": torch.randn(3, dtype=torch.complex64),
        "c128": torch.randn(2, dtype=torch.complex128),
    }


def _torch_misc() -> Any:
    import torch

    return {
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "dtype": torch.float16,
        "int": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "u8": torch.zeros(3, dtype=torch.uint8),
        "param": torch.nn.Parameter(torch.ones(2)),
        "scalar": torch.tensor(1.5),
        "view": torch.arange(10.0)[2:6],
    }


def _optim_state() -> Any:
    import torch

    net = _tiny_net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(3, 4)).sum().backward()
        opt.step()
        sched.step()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(3, 4)).sum().backward()
    sgd.step()
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sgd": sgd.state_dict(),
        "epoch": 2,
    }


def _lightning(path: Path) -> None:
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self, lr: float = 0.01) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    ds = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        default_root_dir=str(path.parent / "lightning_root"),
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(ds, batch_size=4))
    trainer.save_checkpoint(str(path))


def _torch_exotic_dtypes() -> Any:
    import torch

    return {
        "f8e4m3": torch.zeros(4).to(torch.float8_e4m3fn),
        "f8e5m2": torch.zeros(4).to(torch.float8_e5m2),
        "u16": torch.zeros(4, dtype=torch.uint16),
        "u32": torch.zeros(4, dtype=torch.uint32),
        "i8": torch.zeros(4, dtype=torch.int8),
        "strided": torch.arange(12.0).reshape(3, 4).t(),
        "channels_last": torch.zeros(1, 3, 2, 2).to(memory_format=torch.channels_last),
        "meta_generator_state": torch.Generator().manual_seed(1).get_state(),
    }


def _torch_parametrized() -> Any:
    import torch
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    lin = parametrizations.weight_norm(torch.nn.Linear(4, 2))
    return torch.nn.Sequential(
        lin, torch.nn.GELU(), torch.nn.BatchNorm1d(2), torch.nn.Embedding(5, 2)
    )


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    b = _bytes_sample
    gh = "https://github.com/mmaitre314/picklescan/security/advisories/"
    return [
        _Mal(
            "torch_zip_payload_in_data_pkl",
            ".pt",
            "torch.save zip with exec in data.pkl",
            "JFrog 2024: malicious Hugging Face models (torch.load RCE)",
            b(_torch_evil_zip),
            trigger="torch",
        ),
        _Mal(
            "torch_zip_renamed_pickle_member",
            ".pt",
            "payload in archive/model_v2.pkl",
            gh + "GHSA-769v-p64c-89pr (non-standard pickle member names)",
            b(_renamed_member),
            trigger="zip_member:model_v2.pkl",
        ),
        _Mal(
            "torch_zip_payload_in_non_pkl_member",
            ".pt",
            "payload in archive/data/extra_state",
            gh + "GHSA-769v-p64c-89pr",
            b(_nonpkl_member),
            trigger="zip_member:data/extra_state",
        ),
        _Mal(
            "torch_zip_different_prefix",
            ".pt",
            "archive prefix renamed to resnet50_finetuned/",
            "PyTorch reads any single top-level prefix",
            b(_different_prefix),
            trigger="torch",
        ),
        _Mal(
            "torch_zip_deflated_members",
            ".pt",
            "members deflate-compressed instead of stored",
            "miniz inflates members torch.save would store",
            b(_deflated),
            trigger="torch",
        ),
        _Mal(
            "zip_local_central_name_mismatch",
            ".pt",
            "local header names notes.md, central directory names data.pkl",
            "picklescan GHSA-7q5r-7gvp-wc82 (zip parser differential)",
            b(_name_mismatch),
            trigger="torch",
        ),
        _Mal(
            "zip_flag_bits_local_header",
            ".pt",
            "flag bit 5 set in the local header of data.pkl only",
            gh + "GHSA-w8jq-xcqf-f792",
            b(_flag_bits),
            trigger="torch",
        ),
        _Mal(
            "zip_bad_crc",
            ".pt",
            "wrong CRC-32 on data.pkl (torch does not check it)",
            "CVE-2025-10156 (JFrog picklescan zero-days)",
            b(_bad_crc),
            trigger="torch",
        ),
        _Mal(
            "torch_legacy_sequential",
            ".pt",
            "legacy non-zip torch.save with exec in the object pickle",
            "torch _legacy_load",
            b(_torch_legacy),
            trigger="torch",
        ),
        _Mal(
            "torch_legacy_magic_header_payload",
            ".pt",
            "legacy format whose first (magic number) pickle is the payload",
            "torch _legacy_load unpickles the header first",
            b(_torch_legacy_header),
            trigger="torch",
        ),
        _Mal(
            "torch_whole_module_tampered_reduce",
            ".pt",
            "whole pickled nn.Sequential with a submodule replaced by a __reduce__ payload",
            "Threat model T1 (tampered whole-model checkpoint)",
            b(_whole_module_tampered),
            trigger="torch",
        ),
        _Mal(
            "disguise_torch_zip_as_bin",
            ".bin",
            "torch zip named pytorch_model.bin.part",
            "CVE-2025-10155",
            b(_torch_evil_zip),
            trigger="torch",
        ),
        _Mal(
            "zip_duplicate_member_names",
            ".pt",
            "two data.pkl entries, clean first and payload last (the one torch loads)",
            "zip parser differentials (picklescan GHSA-7q5r-7gvp-wc82 class)",
            b(_zip_duplicate_names),
            trigger="torch",
        ),
        _Mal(
            "polyglot_pickle_prefix_then_torch_zip",
            ".pt",
            "payload pickle prepended to a clean torch zip (torch takes the legacy path)",
            "pickle/zip polyglots (Trail of Bits fickling polyglot research)",
            b(_polyglot_pickle_zip),
            trigger="torch",
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean(
            "torchscript_module",
            ".pt",
            "torch.jit.save(torch.jit.script(module)): code uses only side-effect-free operators",
            lambda path: _write(path, _torchscript(path)),
        ),
        _Clean(
            "torch_state_dict_float32",
            ".pt",
            "torch.save(nn.Module.state_dict())",
            _tsave(_sd_float),
        ),
        _Clean(
            "torch_state_dict_bf16_fp16",
            ".pt",
            "torch.save of bfloat16/float16 state_dicts",
            _tsave(_sd_half),
        ),
        _Clean(
            "torch_quantized_tensors",
            ".pt",
            "torch.quantize_per_tensor/per_channel",
            _tsave(_sd_quantized),
        ),
        _Clean(
            "torch_sparse_coo_csr", ".pt", "torch sparse COO and CSR tensors", _tsave(_sd_sparse)
        ),
        _Clean("torch_complex_tensors", ".pt", "torch complex64/complex128", _tsave(_sd_complex)),
        _Clean(
            "torch_misc_types",
            ".pt",
            "torch.Size/device/dtype/Parameter/views",
            _tsave(_torch_misc),
        ),
        _Clean(
            "torch_whole_module",
            ".pt",
            "torch.save(nn.Sequential) (whole module)",
            _tsave(_tiny_net),
        ),
        _Clean(
            "torch_optimizer_scheduler",
            ".pt",
            "AdamW/SGD + StepLR state_dicts after real steps",
            _tsave(_optim_state),
        ),
        _Clean(
            "torch_legacy_format_state_dict",
            ".pt",
            "torch.save(_use_new_zipfile_serialization=False)",
            _tsave(_sd_float, _use_new_zipfile_serialization=False),
        ),
        _Clean(
            "torch_plain_tensor",
            ".pt",
            "torch.save(tensor)",
            _tsave(lambda: _sd_float()["0.weight"]),
        ),
        _Clean(
            "torch_numpy_python_rng",
            ".pth",
            "torch.save of an rng_state.pth-like dict",
            _tsave(
                lambda: {
                    "python": _py_random()["python"],
                    "numpy": _np_random()["state"],
                    "cpu": __import__("torch").get_rng_state(),
                }
            ),
        ),
        _Clean(
            "lightning_checkpoint", ".ckpt", "lightning Trainer.fit + save_checkpoint", _lightning
        ),
        _Clean(
            "torch_exotic_dtypes",
            ".pt",
            "torch float8/uint16/uint32, strided views, Generator state",
            _tsave(_torch_exotic_dtypes),
        ),
        _Clean(
            "torch_parametrized_module",
            ".pt",
            "state_dict of a module with weight_norm parametrization",
            _tsave(lambda: _torch_parametrized().state_dict()),
        ),
    ]
