"""One rank of the drill's multi-rank job, started by ``torchrun`` (gloo, CPU).

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node=N -m
trainwarden.drill._ranks OUT_DIR TECHNIQUE STEPS``. Every rank trains the drill GPT (tiny
configuration) under DistributedDataParallel and ``watch()``, writing its monitor's records to
``OUT_DIR/rank<R>.jsonl``. ``TECHNIQUE`` is ``clean``, ``rank1-payload`` (a payload that fires
only when ``world_size >= 2`` and only on rank 1), ``kill`` (rank 1 SIGKILLs itself, as the OOM
killer or a saboteur would) or ``stop`` (rank 1 SIGSTOPs itself). The sabotage happens before
step :data:`SABOTAGE_STEP`.
"""

# The signal recorder must start before torch creates its threads, and only
# in a rank: a process that imports this module (the drill's runner) keeps its own signals.
from __future__ import annotations

from trainwarden.monitor._watchdog import record_signals_early

if __name__ == "__main__":
    record_signals_early()

import datetime
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["SABOTAGE_STEP", "TECHNIQUES", "WATCHDOG_MIN_TIMEOUT_S", "main", "rank1_payload"]

TECHNIQUES = ("clean", "rank1-payload", "kill", "stop")
#: The step before which the sabotage happens (after the monitor has seen a few clean steps).
SABOTAGE_STEP = 4
#: The watchdog's lower bound in the drill: short, so that a stopped rank is named within seconds
#: (the default, 300 s, suits real jobs whose steps can take minutes).
WATCHDOG_MIN_TIMEOUT_S = 3.0
#: How long a rank waits at the cross-rank exchange for a peer's monitor.
PEER_TIMEOUT_S = 10.0


def rank1_payload(model: torch.nn.Module) -> bool:
    """The act of a payload that hides from single-process tests: it fires only in a multi-rank
    run and only on rank 1, where it nudges one weight (a replica that silently drifts).
    Returns whether it fired."""
    if dist.is_initialized() and dist.get_world_size() >= 2 and dist.get_rank() == 1:
        with torch.no_grad():
            next(iter(model.parameters())).view(-1)[0] += 1e-3
        return True
    return False


def main(argv: list[str]) -> int:
    out, technique, steps = Path(argv[0]), argv[1], int(argv[2])
    if technique not in TECHNIQUES:
        raise SystemExit(f"unknown technique {technique!r}")
    from trainwarden.drill.gpt import make_tiny_job
    from trainwarden.monitor import watch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    job = make_tiny_job()  # seeded: every rank starts from the same weights
    ddp = torch.nn.parallel.DistributedDataParallel(job.model)
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own batches
    loader = torch.utils.data.DataLoader(job.dataset, batch_size=8, shuffle=True, generator=gen)
    batches = iter(loader)
    mon = watch(
        ddp,
        job.optimizer,
        scheduler=job.scheduler,
        max_grad_norm=job.max_grad_norm,
        sink=out / f"rank{rank}.jsonl",
        watchdog_min_timeout_s=WATCHDOG_MIN_TIMEOUT_S,
        peer_timeout_s=PEER_TIMEOUT_S,
    )
    mon.sink.emit("drill_rank", {"rank": rank, "pid": os.getpid()})
    with mon:
        for step in range(steps):
            if step == SABOTAGE_STEP:
                if technique == "rank1-payload" and rank1_payload(job.model):
                    mon.sink.emit("drill_sabotage", {"rank": rank, "step": step})
                elif technique in ("kill", "stop") and rank == 1:
                    mon.sink.emit("drill_sabotage", {"rank": rank, "step": step})
                    sig = signal.SIGKILL if technique == "kill" else signal.SIGSTOP
                    os.kill(os.getpid(), sig)
            loss = job.loss_fn(ddp, next(batches))
            mon.observe_loss(loss)
            job.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), job.max_grad_norm or 1.0)
            job.optimizer.step()
            if job.scheduler is not None:
                job.scheduler.step()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
