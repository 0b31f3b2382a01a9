"""Helpers for the monitor tests: tiny models built in code and a plain PyTorch training loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainwarden._internal.sink import MemorySink
from trainwarden.findings import Severity
from trainwarden.monitor import Alert, Monitor, watch

#: Rules that measure wall time: a loaded CI machine legitimately produces them, so clean-run
#: assertions leave them out (their own tests inject the delays they detect).
LOAD_DEPENDENT = frozenset(
    {
        "TWM-TIME-SPIKE",
        "TWM-TIME-REPEATED",
        "TWM-TIME-SHIFT",
        "TWM-TIME-SPIKES",
        "TWM-XRANK-STRAGGLER",
        "TWM-XRANK-SLOWDOWN",
    }
)

# Attacks index into the model (nn.Sequential) and the optimizer state freely.
Attack = Callable[[int, Any, Any], None]


class TinyGPT(nn.Module):
    """A 2-layer causal transformer LM (d=32) for realistic parameter/buffer layouts."""

    def __init__(self, vocab: int = 64, d: int = 32, layers: int = 2, seq: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", torch.triu(torch.full((seq, seq), float("-inf")), 1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.emb(idx) + self.pos(torch.arange(t))
        mask = self.get_buffer("mask")
        out: torch.Tensor = self.head(self.blocks(x, mask=mask[:t, :t], is_causal=True))
        return out


def mlp(dropout: float = 0.0, batchnorm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(8, 16)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1)]
    return nn.Sequential(*layers)


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, total: int) -> Any:
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


class Run:
    """One monitored training run: the loop is plain PyTorch, the monitor only hooks into it."""

    def __init__(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        *,
        sched: Any = None,
        clip: float | None = None,
        accum: int = 1,
        gpt: bool = False,
        width: int = 8,
        **config: Any,
    ) -> None:
        self.model, self.opt, self.sched, self.clip, self.accum, self.gpt = (
            model,
            opt,
            sched,
            clip,
            accum,
            gpt,
        )
        self.width = width
        self.sink = MemorySink()
        config.setdefault("watchdog", False)
        # The code guard costs seconds per watch() on a loaded machine; the clean runs and the
        # code guard test turn it on.
        config.setdefault("code_guard", False)
        self.monitor: Monitor = watch(
            model, opt, scheduler=sched, max_grad_norm=clip, sink=self.sink, **config
        )
        self.gen = torch.Generator().manual_seed(1234)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gpt:
            idx = torch.randint(0, 64, (4, 16), generator=self.gen)
            return idx, idx
        x = torch.randn(16, self.width, generator=self.gen)
        return x, x.sum(1, keepdim=True)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.gpt:
            return nn.functional.cross_entropy(out[:, :-1].reshape(-1, 64), y[:, 1:].reshape(-1))
        return nn.functional.mse_loss(out, y)

    def train(
        self,
        steps: int,
        *,
        attack: Attack | None = None,
        between_micro: Attack | None = None,
    ) -> Run:
        for step in range(steps):
            self.opt.zero_grad()
            for micro in range(self.accum):
                if micro > 0 and between_micro is not None:
                    between_micro(step, self.model, self.opt)
                loss = self.loss(*self.batch()) / self.accum
                self.monitor.observe_loss(loss)
                loss.backward()  # type: ignore[no-untyped-call]
            if self.clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
            if self.sched is not None:
                for s in self.sched if isinstance(self.sched, list) else [self.sched]:
                    s.step()
            if attack is not None:
                attack(step, self.model, self.opt)
        return self

    def rules(self, at_least: Severity = Severity.LOW) -> list[str]:
        return [a.rule_id for a in self.monitor.alerts if a.severity >= at_least]

    def first(self, rule: str) -> Alert:
        for a in self.monitor.alerts:
            if a.rule_id == rule:
                return a
        raise AssertionError(f"no {rule} alert; alerts: {self.monitor.alerts}")

    def serious(self) -> list[Alert]:
        """Alerts at MEDIUM or above, except the timing rules (see LOAD_DEPENDENT)."""
        return [
            a
            for a in self.monitor.alerts
            if a.severity >= Severity.MEDIUM and a.rule_id not in LOAD_DEPENDENT
        ]
