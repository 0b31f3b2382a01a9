"""torchrun driver: the drill GPT trained data-parallel (gloo, CPU) under an AuditRecorder.

Usage: torchrun --nproc_per_node=N ddp_audit_driver.py RUN_DIR STEPS EVERY [ATTACK:RANK@STEP]
ATTACK is ``negate-share`` (a tensor hook on that rank negates one layer's local gradient from
STEP on, before DDP all-reduces it) or ``edit-replica`` (that rank alone adds a delta to one of
its weights after STEP's update, so its replica drifts from the others) or ``tamper-reduce``
(that rank patches ``torch.distributed.all_reduce`` from STEP on to negate what it sends, after
its contribution was taken). Every step has two
micro-batches (the first under ``no_sync``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainwarden.audit import AuditRecorder
from trainwarden.drill.gpt import make_tiny_job


def main() -> int:
    run = Path(sys.argv[1])
    steps, every = int(sys.argv[2]), int(sys.argv[3])
    attack, victim, start = "", -1, -1
    if len(sys.argv) > 4:
        attack, _, where = sys.argv[4].partition(":")
        who, _, when = where.partition("@")
        victim, start = int(who), int(when)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    job = make_tiny_job()
    ddp = nn.parallel.DistributedDataParallel(job.model)
    weight = next(p for n, p in job.model.named_parameters() if n.endswith("mlp.0.weight"))
    with AuditRecorder(job, run, audit_every=every, ddp=ddp, activation_every=2) as rec:
        batches = iter(rec.loader(4, seed=7))
        for s in range(steps):
            if rank == victim and s == start and attack == "negate-share":
                weight.register_hook(lambda g: -g)
            if rank == victim and s == start and attack == "tamper-reduce":
                original = dist.all_reduce

                def all_reduce(
                    tensor: torch.Tensor, *a: Any, _orig: Any = original, **k: Any
                ) -> Any:
                    tensor.neg_()
                    return _orig(tensor, *a, **k)

                dist.all_reduce = all_reduce
            rec.step([next(batches), next(batches)])
            if rank == victim and s >= start and attack == "edit-replica":
                with torch.no_grad():
                    weight.add_(1e-3)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
