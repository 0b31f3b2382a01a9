"""A 2-rank torchrun job (gloo, CPU) trains normally under the sandbox with declared ports."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch

from tests.sandbox.conftest import needs_landlock
from trainwarden.drill.sandbox_techniques import free_port

pytestmark = needs_landlock

RunCli = Callable[..., subprocess.CompletedProcess[str]]

TRAIN = """
import os, socket, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
gen = torch.Generator().manual_seed(100 + rank)
for step in range(20):
    x = torch.randn(16, 8, generator=gen)
    loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
    opt.step()
    if step == 0:
        first = loss.item()
print(f"rank {rank} loss {first:.4f} -> {loss.item():.4f}", flush=True)
torch.save(model.state_dict(), os.path.join(sys.argv[1], f"rank{rank}.pt"))
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[2])))
    print(f"rank {rank} backdoor bound", flush=True)
except OSError as e:
    print(f"rank {rank} backdoor denied: {e}", flush=True)
dist.destroy_process_group()
"""


def test_torchrun_gloo_trains_under_sandbox(run_cli: RunCli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    master_port, backdoor = free_port(), free_port()
    policy = tmp_path / "sandbox.toml"
    policy.write_text(
        "[sandbox]\n"
        'presets = ["python", "system", "torchrun"]\n'
        f"master_port = {master_port}\n"
        f'read = ["{script}"]\n'
        f'write = ["{run_dir}"]\n'
    )
    events = tmp_path / "events.jsonl"
    r = run_cli(
        [
            "run",
            "--sandbox",
            "--sandbox-policy",
            str(policy),
            "--events",
            str(events),
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(master_port),
            str(script),
            str(run_dir),
            str(backdoor),
        ],
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in (0, 1):
        assert f"rank {rank} backdoor denied" in r.stdout, r.stdout
    w0 = torch.load(run_dir / "rank0.pt", weights_only=True)
    w1 = torch.load(run_dir / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # gradients really were all-reduced
    # The two ranks share one stdout, so their lines may interleave: match the numbers.
    losses = re.findall(r"loss (\d+\.\d{4}) -> (\d+\.\d{4})", r.stdout)
    assert len(losses) == 2, r.stdout
    for first, last in losses:
        assert float(last) < float(first)
    assert '"sandbox.applied"' in events.read_text()
    assert f'"{master_port}"' in events.read_text()
