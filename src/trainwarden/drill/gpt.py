"""The drill's training job: a small character-level GPT trained on a text shipped in the package.

:func:`make_job` is the job factory that both the training loop and an outside replay use, so the
replaying auditor rebuilds exactly what the job built: model, AdamW, warmup + cosine schedule,
gradient clipping, dataset and loss. Everything runs on the CPU; nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from trainwarden.audit._types import Job

__all__ = ["CharDataset", "CharGPT", "GPTConfig", "corpus_text", "make_job"]


def corpus_text() -> str:
    """The training text shipped with the package (plain ASCII prose)."""
    return resources.files("trainwarden.drill").joinpath("data/corpus.txt").read_text("ascii")


@dataclass(frozen=True)
class GPTConfig:
    """Model and optimisation settings; the defaults give about 0.8M parameters."""

    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 10
    total_steps: int = 200
    max_grad_norm: float = 1.0
    seed: int = 1234

    @classmethod
    def tiny(cls, **overrides: Any) -> GPTConfig:
        """A few thousand parameters: what the tests train in a fraction of a second per step."""
        base: dict[str, Any] = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
        base.update(overrides)
        return cls(**base)


class CharDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Windows of ``block_size + 1`` characters: item ``i`` is (text[i:i+b], text[i+1:i+b+1])."""

    def __init__(self, text: str, block_size: int) -> None:
        chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)
        self.block_size = block_size
        self.data = torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    def __len__(self) -> int:
        return int(self.data.numel()) - self.block_size - 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.data[i : i + self.block_size + 1]
        return chunk[:-1].clone(), chunk[1:].clone()


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = nn.MultiheadAttention(
            cfg.n_embd, cfg.n_head, dropout=cfg.dropout, batch_first=True
        )
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd),
            nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + a
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class CharGPT(nn.Module):
    """A decoder-only transformer over characters (pre-norm blocks, learned positions)."""

    def __init__(self, vocab_size: int, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        mask = torch.triu(torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool), 1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.drop(self.tok(idx) + self.pos(torch.arange(t, device=idx.device)))
        mask = self.get_buffer("mask")[:t, :t]
        for block in self.blocks:
            x = block(x, mask)
        logits: torch.Tensor = self.head(self.ln_f(x))
        return logits


def lm_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Next-character cross-entropy of ``model`` on a collated ``(x, y)`` batch."""
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _schedule(cfg: GPTConfig) -> Any:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_job(cfg: GPTConfig | None = None) -> Job:
    """Build the drill job: seeded model, AdamW, warmup + cosine LambdaLR, clipping, dataset."""
    cfg = cfg or GPTConfig()
    torch.manual_seed(cfg.seed)
    dataset = CharDataset(corpus_text(), cfg.block_size)
    model = CharGPT(dataset.vocab_size, cfg)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    return Job(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        dataset=dataset,
        loss_fn=lm_loss,
        max_grad_norm=cfg.max_grad_norm,
    )


def make_tiny_job() -> Job:
    """:func:`make_job` with :meth:`GPTConfig.tiny` (the tests' and the fast drill's factory)."""
    return make_job(GPTConfig.tiny())
