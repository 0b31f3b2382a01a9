"""Step-time overhead of ``trainwarden.watch`` on a small GPT trained on CPU.

Two identical models (same seed, same batches) are trained in interleaved blocks -- plain,
monitored, plain, monitored... -- so that machine load drifts hit both arms alike. The warm-up
blocks are excluded; the table reports the median step time of each arm, the median of the
per-block-pair ratios, and the time spent inside the monitor's hooks per step (measured by
timing the Monitor's hook methods, which is precise even when the machine is noisy).

    python bench/monitor_overhead.py                   # print the table
    python bench/monitor_overhead.py --write           # and put it in docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import ast
import datetime
import functools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trainwarden.monitor import _core as core  # noqa: E402 -- after the sys.path insert on purpose
from trainwarden.monitor._checks import CHECKS  # noqa: E402 -- after the sys.path insert

# The monitor's hooks: their inclusive time is the monitor's whole cost per step.
HOOKS = ("_on_forward_pre", "_on_forward_post", "_on_step_pre", "_on_step_post")


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + self.drop(a)
        out: torch.Tensor = x + self.drop(self.mlp(self.ln2(x)))
        return out


class GPT(nn.Module):
    def __init__(self, vocab: int, seq: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads, 0.1) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.register_buffer(
            "mask", torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1), persistent=False
        )

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x, self.mask)
        logits = self.head(self.ln(x))
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def make_run(args: argparse.Namespace) -> tuple[GPT, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = GPT(args.vocab, args.seq, args.d_model, args.layers, args.heads)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
    total = args.blocks * 2 * args.steps_per_block + 10

    def lr_at(i: int) -> float:
        warm = 10
        if i < warm:
            return (i + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    return model, opt, sched


def instrument() -> dict[str, float]:
    """Wrap the Monitor's hooks (class level, before watch()) to sum their inclusive time."""
    spent: dict[str, float] = defaultdict(float)

    def wrap(name: str) -> None:
        original: Callable[..., Any] = getattr(core.Monitor, name)

        @functools.wraps(original)
        def timed(self: Any, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(self, *a, **k)
            finally:
                spent[name] += time.perf_counter() - t0

        setattr(core.Monitor, name, timed)

    for name in HOOKS:
        wrap(name)
    return spent


def train_block(
    model: GPT,
    opt: torch.optim.Optimizer,
    sched: Any,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    monitor: Any | None,
) -> list[float]:
    times = []
    for x, y in batches:
        t0 = time.perf_counter()
        loss = model(x, y)
        if monitor is not None:
            monitor.observe_loss(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--blocks", type=int, default=8, help="measured (plain, monitored) block pairs")
    p.add_argument("--warmup-blocks", type=int, default=1)
    p.add_argument("--steps-per-block", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a watch() setting to measure instead of its default (repeatable; Python literal)",
    )
    args = p.parse_args()
    settings: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = ast.literal_eval(value)
    if args.threads:
        torch.set_num_threads(args.threads)

    spent = instrument()
    plain = make_run(args)
    watched = make_run(args)
    sink = Path(tempfile.mkdtemp(prefix="tw-bench-")) / "rank0.jsonl"
    monitor = core.watch(
        watched[0], watched[1], scheduler=watched[2], max_grad_norm=1.0, sink=sink, **settings
    )
    g = torch.Generator().manual_seed(1)
    a_times: list[float] = []
    b_times: list[float] = []
    ratios: list[float] = []
    hook_s = 0.0
    per_check: dict[str, float] = defaultdict(float)
    measured_b_steps = 0
    for block in range(args.warmup_blocks + args.blocks):
        batches = []
        for _ in range(args.steps_per_block):
            idx = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
            batches.append((idx[:, :-1], idx[:, 1:]))
        # Alternate which arm goes first so neither always follows the other.
        order = [(False, plain), (True, watched)]
        if block % 2:
            order.reverse()
        res: dict[bool, list[float]] = {}
        before = sum(spent[h] for h in HOOKS)
        checks_before = dict(monitor.check_seconds)
        for is_watched, (model, opt, sched) in order:
            res[is_watched] = train_block(
                model, opt, sched, batches, monitor if is_watched else None
            )
        after = sum(spent[h] for h in HOOKS)
        if block < args.warmup_blocks:
            continue
        for name, seconds in monitor.check_seconds.items():
            per_check[name] += seconds - checks_before.get(name, 0.0)
        hook_s += after - before
        measured_b_steps += len(res[True])
        a_times += res[False]
        b_times += res[True]
        ratios.append(statistics.median(res[True]) / statistics.median(res[False]))
        sys.stderr.write(f"block {block}: ratio {ratios[-1]:.4f}\n")
    monitor.close()

    med_a, med_b = statistics.median(a_times), statistics.median(b_times)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    per_step_hook = hook_s / max(measured_b_steps, 1)
    alerts = [a for a in monitor.alerts if a.severity.name in ("MEDIUM", "HIGH", "CRITICAL")]
    params = sum(p.numel() for p in plain[0].parameters())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/monitor_overhead.py " + " ".join(sys.argv[1:])
    lines = [
        "## Training monitor overhead (`trainwarden.watch`, "
        + (", ".join(f"{k}={v!r}" for k, v in settings.items()) or "default settings")
        + f") -- {now}",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {os.cpu_count()}-core CPU ({platform.machine()}, {platform.processor() or '?'})"
        f", shared with other jobs; torch {torch.__version__}, {torch.get_num_threads()} "
        "threads.  ",
        f"Model: GPT, {args.layers} layers, d_model {args.d_model}, {args.heads} heads, "
        f"seq {args.seq}, batch {args.batch}, vocab {args.vocab} ({params / 1e6:.2f} M "
        "parameters); AdamW + warmup/cosine, grad clipping 1.0, dropout 0.1.  ",
        f"Interleaved blocks: {args.blocks} measured pairs of {args.steps_per_block} steps "
        f"(plain/monitored, order alternating), {args.warmup_blocks} warm-up pair(s) excluded.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| median step, plain | {med_a * 1000:.1f} ms |",
        f"| median step, monitored | {med_b * 1000:.1f} ms |",
        f"| ratio of medians | {med_b / med_a:.4f} |",
        f"| median of per-pair ratios (IQR) | {statistics.median(ratios):.4f} "
        f"({q[0]:.4f} - {q[2]:.4f}) |",
        f"| time inside monitor hooks per step | {per_step_hook * 1000:.2f} ms "
        f"({per_step_hook / med_a * 100:.2f}% of a plain step) |",
        f"| alerts at MEDIUM+ during the run | {len(alerts)} |",
        "",
        "Time per check, per monitored step (from `Monitor.check_seconds`; `core` is the "
        "monitor's own bookkeeping and the single device-to-host transfer):",
        "",
        "| check | rules | ms/step | % of plain step | what it costs |",
        "|---|---|---|---|---|",
    ]
    costs = {c.name: c for c in CHECKS}
    for name, seconds in sorted(per_check.items(), key=lambda kv: -kv[1]):
        ms = seconds / max(measured_b_steps, 1) * 1000
        cls = costs.get(name)
        rules = ", ".join(cls.rules) if cls else "-"
        what = cls.cost if cls else "hook bookkeeping, loss/batch transfer"
        lines.append(
            f"| `{name}` | {rules} | {ms:.2f} | {ms / (med_a * 1000) * 100:.2f}% | {what} |"
        )
    table = "\n".join(lines) + "\n"
    sys.stdout.write(table)
    if args.write:
        out = ROOT / "docs" / "BENCHMARKS.md"
        text = out.read_text(encoding="utf-8")
        marker_begin = "<!-- BEGIN monitor_overhead (written by bench/monitor_overhead.py) -->"
        marker_end = "<!-- END monitor_overhead -->"
        section = f"{marker_begin}\n{table}\n{marker_end}"
        if marker_begin in text and marker_end in text:
            doc_head, doc_tail = text.split(marker_begin, 1)
            text = doc_head + section + doc_tail.split(marker_end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
