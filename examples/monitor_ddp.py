"""DDP training under torchrun, monitored by trainwarden.watch (cross-rank checks + watchdog).

    torchrun --standalone --nproc_per_node=4 examples/monitor_ddp.py OUT_DIR [TAMPER_RANK]

With TAMPER_RANK, that rank edits one weight before step 5 (a stand-in for sabotage that only
triggers on some ranks). Each rank's alerts and per-step records go to OUT_DIR/rank<R>.jsonl.
"""

# record_signals_early() must run before torch is imported (E402 on purpose).
# ruff: noqa: E402
from __future__ import annotations

from trainwarden.monitor import record_signals_early

record_signals_early()  # signal senders known even though watch() starts after gloo's threads

import sys

import torch
import torch.distributed as dist
from torch import nn

import trainwarden.monitor

dist.init_process_group("gloo")
rank = dist.get_rank()
tamper = int(sys.argv[2]) if len(sys.argv) > 2 else -1

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 1))
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.AdamW(ddp.parameters(), lr=3e-3)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
monitor = trainwarden.monitor.watch(
    ddp, opt, scheduler=sched, max_grad_norm=1.0, sink=f"{sys.argv[1]}/rank{rank}.jsonl"
)
gen = torch.Generator().manual_seed(rank)
for step in range(10):
    if rank == tamper and step == 4:
        with torch.no_grad():
            model[0].weight[0, 0] += 1e-3  # outside the optimizer, on one rank only
    x = torch.randn(16, 8, generator=gen)
    loss = nn.functional.mse_loss(ddp(x), x.sum(dim=1, keepdim=True))
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
    opt.step()
    sched.step()
monitor.close()
for alert in monitor.alerts:
    if alert.severity.name != "INFO":
        where = f"rank {rank}: {alert.rule_id} [{alert.severity.name}] step {alert.step}"
        print(f"{where}: {alert.message}")
dist.destroy_process_group()
