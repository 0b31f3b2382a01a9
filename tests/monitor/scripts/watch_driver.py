"""torchrun driver: a tiny DDP loop (gloo, CPU) monitored by ``trainwarden.watch``.

Usage: torchrun --nproc_per_node=N watch_driver.py OUT_DIR STEPS [EVENT ...]
EVENT is KIND:RANK@STEP with KIND one of perturb (edit a weight before the step), straggler
(sleep 0.15 s in the forward of every step from STEP on), slow (from STEP on, sleep before
every forward a fraction of the rank's median step time: TRAINWARDEN_TEST_SLOW, default 0.3,
of the median of its first 8 steps, at most 0.045 s), kill (SIGKILL itself), monitor_off
(close() the monitor and train on), sigterm (the
lowest other rank sends SIGTERM to RANK while RANK waits in an all-reduce), sigstop (write
OUT_DIR/stopped.pid and SIGSTOP itself before the step's forward; the test sends SIGCONT),
garbage (from STEP on, feed its own forward garbage inputs and targets), contend (every rank
pins itself to a CPU of its own and RANK shares its CPU with a busy process from the start; each
rank writes its training thread's run-queue wait at the end). No event: a
clean run (AdamW, warmup + cosine schedule, gradient clipping, dropout). Each rank's monitor
writes OUT_DIR/rank<R>.jsonl.
"""

# record_signals_early() must run before torch is imported (E402 on purpose).
# ruff: noqa: E402
from __future__ import annotations

from trainwarden.monitor._watchdog import record_signals_early

record_signals_early()  # signal senders known even though watch() starts after gloo's threads

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import trainwarden.monitor
from trainwarden.monitor._timing import runqueue_seconds


def main() -> int:
    out = Path(sys.argv[1])
    steps = int(sys.argv[2])
    events: dict[str, tuple[int, int]] = {}
    for spec in sys.argv[3:]:
        kind, _, where = spec.partition(":")
        who, _, when = where.partition("@")
        events[kind] = (int(who), int(when))
    if "sigstop" in events:
        # torchrun starts each rank in a session of its own, so the kernel may find a stopped
        # rank's process group orphaned and send it SIGHUP (then SIGCONT); the test resumes the
        # rank itself, so that hang-up is ignored here (the watchdog still records it).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 1))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=3e-3, weight_decay=0.01)
    warmup = 5

    def schedule(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    monitor = trainwarden.monitor.watch(
        ddp,
        opt,
        scheduler=sched,
        max_grad_norm=1.0,
        sink=out / f"rank{rank}.jsonl",
        watchdog_min_timeout_s=30.0,
        # A rank whose monitor goes off is waited for this long at each exchange.
        peer_timeout_s=3.0 if "monitor_off" in events else 30.0,
        # A stopped rank is named after max(this, 10 x p99 step time); the default is 30 s.
        liveness_min_s=2.0 if "sigstop" in events else 30.0,
    )
    hog: subprocess.Popen[bytes] | None = None
    if "contend" in events:
        cpus = sorted(os.sched_getaffinity(0))
        cpu = cpus[rank % len(cpus)]
        os.sched_setaffinity(0, {cpu})
        queued_at_start = runqueue_seconds()
        if events["contend"][0] == rank:
            # Spins until this rank is gone, even if the rank dies before it can kill it.
            spin = (
                f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nparent = os.getppid()\n"
                "while os.getppid() == parent: pass"
            )
            hog = subprocess.Popen([sys.executable, "-c", spin])
    pids: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(pids, os.getpid())
    gen = torch.Generator().manual_seed(1000 + rank)
    straggle = events.get("straggler")
    slow = events.get("slow")
    slow_s = 0.0
    times: list[float] = []
    for step in range(steps):
        times.append(time.perf_counter())
        if len(times) == 9 and slow is not None:
            gaps = sorted(b - a for a, b in itertools.pairwise(times))
            frac = float(os.environ.get("TRAINWARDEN_TEST_SLOW", "0.3"))
            slow_s = min(frac * gaps[len(gaps) // 2], 0.045)  # under every absolute threshold
            monitor.sink.emit("slow_sleep", {"rank": rank, "seconds": slow_s})
        if slow is not None and slow[0] == rank and step >= max(slow[1], 8):
            time.sleep(slow_s)
        if "sigterm" in events and events["sigterm"][1] == step:
            victim = events["sigterm"][0]
            if rank == min(r for r in range(len(pids)) if r != victim):
                time.sleep(0.5)  # let the victim block inside the next all-reduce first
                os.kill(int(str(pids[victim])), signal.SIGTERM)
                monitor.sink.emit("sent_signal", {"rank": rank, "pid": os.getpid()})
        if events.get("monitor_off") == (rank, step):
            monitor.close()  # switched off from the training script; training goes on
        if events.get("kill") == (rank, step):
            os.kill(os.getpid(), signal.SIGKILL)
        if events.get("perturb") == (rank, step):
            first = model[0]
            assert isinstance(first, nn.Linear)
            with torch.no_grad():
                first.weight[0, 0] += 1e-3
        if events.get("sigstop") == (rank, step):
            (out / "stopped.pid").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)
        x = torch.randn(16, 8, generator=gen)
        y = x.sum(dim=1, keepdim=True)
        garbage = events.get("garbage")
        if garbage is not None and garbage[0] == rank and step >= garbage[1]:
            x, y = x * 20.0, -y * 20.0  # this rank's own share of the gradient is garbage
        if straggle is not None and straggle[0] == rank and step >= straggle[1]:
            time.sleep(0.15)
        loss = nn.functional.mse_loss(ddp(x), y)
        monitor.observe_loss(loss)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        opt.step()
        sched.step()
    if "contend" in events:
        queued = (runqueue_seconds() or math.nan) - (queued_at_start or math.nan)
        monitor.sink.emit("runqueue", {"rank": rank, "seconds": queued, "cpu": cpu})
    if hog is not None:
        hog.kill()
        hog.wait()
    monitor.close()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from rank_exit import exit_before_finalization  # type: ignore[import-not-found]  # this directory

    exit_before_finalization(main())
