"""A plain PyTorch loop under trainwarden.watch(); an 'insider' tampers with it at step 20.

python examples/monitor_quickstart.py
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from torch import nn

import trainwarden

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * min(s, 100) / 100))
)
sink = Path(tempfile.mkdtemp()) / "rank0.jsonl"

with trainwarden.watch(model, opt, scheduler=sched, max_grad_norm=1.0, sink=sink) as monitor:
    for step in range(30):
        x = torch.randn(32, 8)
        loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
        monitor.observe_loss(loss)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step == 20:  # the insider strikes between two steps
            opt.param_groups[0]["lr"] *= 10
            with torch.no_grad():
                model[3].weight[0, 5] += 0.05
            torch.manual_seed(1234)

for alert in monitor.alerts:
    print(f"{alert.severity.name:8} {alert.rule_id:18} step {alert.step}: {alert.message}")

kinds: dict[str, int] = {}
for line in sink.read_text().splitlines():
    kind = json.loads(line)["kind"]
    kinds[kind] = kinds.get(kind, 0) + 1
print("sink records:", kinds)
step_21 = next(
    r
    for r in map(json.loads, sink.read_text().splitlines())
    if r["kind"] == "step" and r["step"] == 21
)
print(
    "step record:",
    json.dumps({k: step_21[k] for k in ("step", "lr", "loss", "grad_norm", "timing")}),
)
