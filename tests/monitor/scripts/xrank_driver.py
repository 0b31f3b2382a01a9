"""torchrun driver: a tiny DDP loop on gloo/CPU with RankExchange and Watchdog attached directly.

Usage: torchrun --nproc_per_node=N xrank_driver.py OUT_DIR STEPS [EVENT ...]
EVENT is KIND:RANK@STEP with KIND one of perturb (edit a weight before the step), straggler
(sleep 0.15 s in every step from STEP on), kill (SIGKILL itself), sigterm (the other ranks' lowest
one sends SIGTERM to RANK while RANK waits in a collective), hang (sleep 7 s). No event: a clean
run. Each rank writes OUT_DIR/rank<R>.jsonl.
"""

# The signal mask must be set before torch is imported (E402 on purpose).
# ruff: noqa: E402
from __future__ import annotations

from trainwarden.monitor._watchdog import record_signals_early

# First thing, before torch and gloo create their threads: they inherit the blocked signal mask,
# so every signal's sender is known (the Watchdog started after init_process_group takes over).
record_signals_early()

import datetime
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from trainwarden._internal.sink import JsonlSink
from trainwarden.monitor._distributed import RankExchange
from trainwarden.monitor._types import Alert
from trainwarden.monitor._watchdog import Watchdog, default_store

FIELDS = ("weights_sum", "weights_sqsum", "exp_avg_sum", "lr", "weight_decay")


def digest(model: nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor:
    with torch.no_grad():
        flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
        moments = [s["exp_avg"].double().sum() for s in opt.state.values() if "exp_avg" in s]
        exp_avg = torch.stack(moments).sum() if moments else torch.zeros((), dtype=torch.float64)
        group = opt.param_groups[0]
        return torch.stack(
            [
                flat.sum(),
                (flat * flat).sum(),
                exp_avg,
                torch.tensor(float(group["lr"]), dtype=torch.float64),
                torch.tensor(float(group["weight_decay"]), dtype=torch.float64),
            ]
        )


def main() -> int:
    out = Path(sys.argv[1])
    steps = int(sys.argv[2])
    events: dict[str, tuple[int, int]] = {}
    for spec in sys.argv[3:]:
        kind, _, where = spec.partition(":")
        who, _, when = where.partition("@")
        events[kind] = (int(who), int(when))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    sink = JsonlSink(out / f"rank{rank}.jsonl")
    sink.emit("start", {"rank": rank, "pid": os.getpid(), "uid": os.getuid()})

    def emit(alert: Alert) -> None:
        sink.emit("alert", alert.to_dict())

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    dog = Watchdog(
        emit,
        rank=rank,
        world_size=world,
        min_timeout_s=2.5,
        first_step_timeout_s=90.0,
        factor=20.0,
        sink=sink,
        poll_s=0.1,
        publish_every_s=0.2,
    )
    store = default_store()
    assert store is not None
    dog.attach_store(store)
    dog.start()
    pids: list[object] = [None] * world
    dist.all_gather_object(pids, os.getpid())

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.01)
    xr = RankExchange(FIELDS, watchdog=dog)
    gen = torch.Generator().manual_seed(1000 + rank)
    last = None

    def at(kind: str, step: int, *, on_rank: int | None = None) -> bool:
        if kind not in events:
            return False
        who, when = events[kind]
        return step == when and (on_rank if on_rank is not None else who) == rank

    for step in range(steps):
        t0 = time.perf_counter()
        if "sigterm" in events:
            victim = events["sigterm"][0]
            sender = min(r for r in range(world) if r != victim)
            if at("sigterm", step, on_rank=sender):
                time.sleep(0.5)  # let the victim block inside the next all-reduce first
                os.kill(int(str(pids[victim])), signal.SIGTERM)
                sink.emit("sent_signal", {"rank": rank, "to_pid": pids[victim], "pid": os.getpid()})
        if at("kill", step):
            os.kill(os.getpid(), signal.SIGKILL)
        if at("hang", step):
            time.sleep(7.0)
        if at("perturb", step):
            first = model[0]
            assert isinstance(first, nn.Linear)
            with torch.no_grad():
                first.weight[0, 0] += 1e-3
        pre = digest(model, opt)
        if last is not None and not torch.equal(pre[:3], last[:3]):
            # The driver's stand-in for the monitor's weight-continuity check (check 1).
            xr.mark_suspect()
        x = torch.randn(16, 8, generator=gen)
        y = x.sum(dim=1, keepdim=True)
        f0 = time.perf_counter()
        if (
            "straggler" in events
            and rank == events["straggler"][0]
            and step >= events["straggler"][1]
        ):
            time.sleep(0.15)
        loss = nn.functional.mse_loss(ddp(x), y)
        f1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        b1 = time.perf_counter()
        opt.step()
        o1 = time.perf_counter()
        last = digest(model, opt)
        timings = torch.tensor([o1 - t0, f1 - f0, b1 - f1, o1 - b1], dtype=torch.float64)
        for alert in xr.exchange(step, last, timings):
            emit(alert)
        dog.beat(step, o1 - t0)
        sink.emit("step", {"rank": rank, "step": step, "loss": loss.item()})
    dog.stop()
    dist.destroy_process_group()
    sink.emit("done", {"rank": rank})
    sink.close()
    return 0


if __name__ == "__main__":
    from rank_exit import exit_before_finalization  # type: ignore[import-not-found]  # this directory

    exit_before_finalization(main())
