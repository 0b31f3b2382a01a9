"""Model folders: Hugging Face, Trainer and accelerate checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from trainwarden.drill._scan_corpus._base import Builder, _Clean, _evil, _Mal, _write, code_of
from trainwarden.drill._scan_corpus._common import (
    _onnx_graph,
    _sd_float,
    _tiny_net,
    _torch_save_bytes,
)


def _hf_auto_map(path: Path, c: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architectures": ["EvilModel"],
        "model_type": "evil",
        "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModel": "modeling_evil.EvilModel",
        },
    }
    _write(path / "config.json", json.dumps(cfg, indent=2).encode())
    _write(path / "modeling_evil.py", f"{code_of(c)}\n".encode())
    _write(path / "configuration_evil.py", b"EvilConfig = dict\n")


def _trainer_ckpt(member: str) -> Builder:
    def build(path: Path, c: Path) -> None:
        import torch

        path.mkdir(parents=True, exist_ok=True)
        _write(
            path / "trainer_state.json", json.dumps({"global_step": 2, "log_history": []}).encode()
        )
        _write(path / "config.json", json.dumps({"model_type": "gpt2", "n_layer": 1}).encode())
        clean = {
            "rng_state.pth": {"python": ("x",), "cpu": torch.zeros(2, dtype=torch.uint8)},
            "optimizer.pt": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            "scheduler.pt": {"last_epoch": 2, "_step_count": 3},
        }
        for fname, obj in clean.items():
            if fname != member:
                _write(path / fname, _torch_save_bytes(obj))
        _write(path / member, _torch_save_bytes({"state": {}, "payload": _evil(c)}))

    return build


def _hf_tokenizer_auto_map(path: Path, c: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "config.json", json.dumps({"model_type": "gpt2", "n_layer": 1}).encode())
    tok = {
        "tokenizer_class": "EvilTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
    }
    _write(path / "tokenizer_config.json", json.dumps(tok).encode())
    _write(path / "tokenization_evil.py", f"{code_of(c)}\n".encode())


def _hf_gpt2(safe: bool) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32)
        model = GPT2LMHeadModel(cfg)
        model.save_pretrained(str(path), safe_serialization=safe)

    return build


def _hf_trainer(path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32)
    model = GPT2LMHeadModel(cfg)
    data = [
        {"input_ids": torch.randint(0, 64, (8,)), "labels": torch.randint(0, 64, (8,))}
        for _ in range(4)
    ]
    out = path.parent / (path.name + "_run")
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=2,
        save_steps=2,
        save_strategy="steps",
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    os.replace(out / "checkpoint-2", path)
    shutil.rmtree(out)


def _onnx_external(path: Path) -> None:
    import onnx

    path.mkdir(parents=True, exist_ok=True)
    onnx.save(
        _onnx_graph(),
        str(path / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )


def _dcp_checkpoint(path: Path) -> None:
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    path.mkdir(parents=True, exist_ok=True)
    dcp_save({"model": _sd_float()}, checkpoint_id=str(path))


def _accelerate_state(path: Path) -> None:
    import torch
    from accelerate import Accelerator  # type: ignore[import-untyped]

    acc = Accelerator(cpu=True)
    net = _tiny_net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net, opt = acc.prepare(net, opt)
    acc.backward(net(torch.randn(3, 4)).sum())
    opt.step()
    acc.save_state(str(path))


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    return [
        _Mal(
            "hf_folder_auto_map_remote_code",
            "",
            "config.json auto_map + modeling_evil.py",
            "Hugging Face trust_remote_code (JFrog 2024)",
            _hf_auto_map,
            trigger="python_file:modeling_evil.py",
            folder=True,
        ),
        _Mal(
            "hf_trainer_checkpoint_rng_state",
            "",
            "Trainer checkpoint, payload in rng_state.pth",
            "Threat model T1 (shared checkpoint resumed by a colleague)",
            _trainer_ckpt("rng_state.pth"),
            trigger="torch_file:rng_state.pth",
            folder=True,
        ),
        _Mal(
            "hf_trainer_checkpoint_optimizer",
            "",
            "Trainer checkpoint, payload in optimizer.pt",
            "Threat model T1",
            _trainer_ckpt("optimizer.pt"),
            trigger="torch_file:optimizer.pt",
            folder=True,
        ),
        _Mal(
            "hf_trainer_checkpoint_training_args",
            "",
            "Trainer checkpoint, payload in training_args.bin",
            "Threat model T1; transformers loads training_args.bin with weights_only=False",
            _trainer_ckpt("training_args.bin"),
            trigger="torch_file:training_args.bin",
            folder=True,
        ),
        _Mal(
            "hf_folder_tokenizer_auto_map",
            "",
            "tokenizer_config.json auto_map + tokenization_evil.py",
            "Hugging Face trust_remote_code via AutoTokenizer",
            _hf_tokenizer_auto_map,
            trigger="python_file:tokenization_evil.py",
            folder=True,
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean(
            "hf_gpt2_safetensors",
            "",
            "transformers save_pretrained (safetensors)",
            _hf_gpt2(True),
            folder=True,
        ),
        _Clean(
            "hf_gpt2_pytorch_model_bin",
            "",
            "transformers save_pretrained(safe_serialization=False)",
            _hf_gpt2(False),
            folder=True,
        ),
        _Clean(
            "hf_trainer_checkpoint",
            "",
            "transformers Trainer, 2 real steps, checkpoint-2",
            _hf_trainer,
            folder=True,
        ),
        _Clean(
            "onnx_external_data",
            "",
            "onnx.save(save_as_external_data=True)",
            _onnx_external,
            folder=True,
        ),
        _Clean(
            "torch_distributed_checkpoint",
            "",
            "torch.distributed.checkpoint.save (DCP folder)",
            _dcp_checkpoint,
            folder=True,
        ),
        _Clean(
            "accelerate_save_state",
            "",
            "accelerate.Accelerator.save_state after one step",
            _accelerate_state,
            folder=True,
        ),
    ]
