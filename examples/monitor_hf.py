"""Hugging Face Trainer with the TrainWarden callback (tiny GPT-2 built in code, CPU).

    python examples/monitor_hf.py OUT_DIR [--tamper]

With --tamper, another callback edits a weight between two optimizer steps.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from trainwarden.integrations.hf import TrainWardenCallback


class Tamper(TrainerCallback):
    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == 3:
            with torch.no_grad():
                kw["model"].transformer.h[0].attn.c_attn.weight[0, 0] += 0.5


ids = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(0))
data = [{"input_ids": row, "labels": row} for row in ids]
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2))
args = TrainingArguments(
    output_dir=sys.argv[1],
    max_steps=6,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    lr_scheduler_type="cosine",
    warmup_steps=2,
    report_to="none",
    use_cpu=True,
    save_strategy="no",
    disable_tqdm=True,
)
guard = TrainWardenCallback()  # sink: OUT_DIR/trainwarden/rank0.jsonl
callbacks: list[TrainerCallback] = [guard] + ([Tamper()] if "--tamper" in sys.argv else [])
Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks).train()
print(f"monitored steps: {guard.monitor.step}")
for alert in guard.alerts:
    if alert.severity.name != "INFO":
        print(f"{alert.rule_id} [{alert.severity.name}] step {alert.step}: {alert.message}")
