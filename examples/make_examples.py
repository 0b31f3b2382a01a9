"""Regenerate the clean example files that ``trainwarden scan examples/`` checks (exit code 0).

Writes, next to this script: a tiny PyTorch state_dict (``tiny_state_dict.pt``), a safetensors
file (``tiny.safetensors``) and a tiny Hugging Face-style model folder (``tiny-gpt2/``). Every file
is written by the real library, so the scan shows what a clean result looks like.

    python examples/make_examples.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.save(net.state_dict(), HERE / "tiny_state_dict.pt")
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(HERE / "tiny.safetensors"),
        metadata={"format": "pt"},
    )
    folder = HERE / "tiny-gpt2"
    shutil.rmtree(folder, ignore_errors=True)
    cfg = GPT2Config(
        n_layer=1, n_head=2, n_embd=8, vocab_size=32, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    GPT2LMHeadModel(cfg).save_pretrained(str(folder))
    sizes = {
        p.relative_to(HERE).as_posix(): p.stat().st_size
        for p in sorted(HERE.rglob("*"))
        if p.is_file() and p.suffix != ".py" and p.name != "README.md"
    }
    print(json.dumps(sizes, indent=2))


if __name__ == "__main__":
    main()
