"""Benchmark: the replay audit's cost and its detection probability, on the drill GPT (CPU).

Part 1 trains the drill GPT (default config, about 0.8M parameters) for ``--steps`` steps three
ways in one run, interleaved: a plain loop (the baseline), the same loop recorded by an
``AuditRecorder`` with and without activation digests, then replays every interval. It reports
ms per step for each, the replay cost per audited step relative to a training step, and the disk
cost of the record (checkpoints and step records).

Part 2 trains the tiny drill GPT for ``--intervals`` intervals of ``--every`` steps, tampering
(a reversed gradient hook for one step) in a random fraction ``f`` of the intervals, replays every
interval once (each replay is deterministic) and then, for each sample count ``n``, draws
``--trials`` seeds through the replay's own interval sampler and counts the draws that include a
diverged interval: the measured detection probability, next to the analytic
``1 - C(M - T, n) / C(M, n)`` (sampling without replacement) and ``1 - (1 - f)^n``.

Part 3 (``--tolerance-only``, its own section) calibrates ``--tolerance`` for replays that are
not bitwise. Runs of the tiny drill GPT are recorded with one intra-op thread and replayed with
two: on this CPU that splits reductions differently and changes low bits (the bitwise replay
flags every clean interval, shown in the table). The distance of each replayed interval from the
recorded one, relative to the interval's own movement, is measured on clean calibration runs;
the tolerance is ``--factor`` times their maximum; the false-positive rate is then measured on
held-out clean runs (other data seeds) and the detection on each of the drill's attacks.

    python bench/audit_replay.py --write
    python bench/audit_replay.py --tolerance-only --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from trainwarden.audit import AuditRecorder, _step, replay
from trainwarden.drill._replay_attacks import undo
from trainwarden.drill.gpt import GPTConfig, make_job, make_tiny_job

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- BEGIN audit_replay (written by bench/audit_replay.py) -->"
END = "<!-- END audit_replay -->"


def _plain(steps: int, batch: int) -> float:
    job = make_job()
    gen = torch.Generator().manual_seed(7)
    loader = torch.utils.data.DataLoader(
        job.dataset, batch_size=batch, shuffle=True, generator=gen, drop_last=True
    )
    it = iter(loader)
    _step.run_step(job, [next(it)])  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        _step.run_step(job, [next(it)])
    return (time.perf_counter() - start) / steps


def _recorded(run: Path, steps: int, every: int, batch: int, activation_every: int) -> float:
    job = make_job()
    with AuditRecorder(job, run, audit_every=every, activation_every=activation_every) as rec:
        it = iter(rec.loader(batch, seed=7))
        start = time.perf_counter()
        for _ in range(steps):
            rec.step([next(it)])
        elapsed = time.perf_counter() - start
    return elapsed / steps


def _watched(tmp: Path, steps: int, every: int | None, batch: int) -> float:
    """The job's own loop under ``watch()``, recording from hooks when ``every`` is given."""
    from trainwarden import watch

    job = make_job()
    gen = torch.Generator().manual_seed(7)
    loader = torch.utils.data.DataLoader(
        job.dataset, batch_size=batch, shuffle=True, generator=gen, drop_last=True
    )
    audit = {"audit_every": every, "audit_dir": tmp / "run"} if every else {}
    mon = watch(
        job.model,
        job.optimizer,
        scheduler=job.scheduler,
        max_grad_norm=job.max_grad_norm,
        sink=tmp / "events.jsonl",
        code_guard=False,
        watchdog=False,
        **audit,  # type: ignore[arg-type]
    )
    if mon.audit is not None:
        mon.audit.track(loader)
    it = iter(loader)
    assert job.max_grad_norm is not None and job.scheduler is not None

    def one() -> None:
        job.optimizer.zero_grad(set_to_none=True)
        job.loss_fn(job.model, next(it)).backward()
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.max_grad_norm)  # type: ignore[arg-type]
        job.optimizer.step()
        job.scheduler.step()  # type: ignore[union-attr]

    one()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        one()
    elapsed = time.perf_counter() - start
    mon.close()
    return elapsed / steps


def _du(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.glob(pattern))


def cost(steps: int, every: int, batch: int, reps: int) -> list[str]:
    plain, rec_full, rec_default, rec_noact, rep = [], [], [], [], []
    mon_only: list[float] = []
    mon_audit: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tw-audit-") as tmp:
        for r in range(reps):
            plain.append(_plain(steps, batch))
            mon_only.append(_watched(Path(tmp) / f"mon{r}", steps, None, batch))
            mon_audit.append(_watched(Path(tmp) / f"monaudit{r}", steps, every, batch))
            run = Path(tmp) / f"full{r}"
            rec_full.append(_recorded(run, steps, every, batch, 1))
            rec_default.append(_recorded(Path(tmp) / f"default{r}", steps, every, batch, 10))
            rec_noact.append(_recorded(Path(tmp) / f"noact{r}", steps, every, batch, 0))
            start = time.perf_counter()
            report = replay(run, make_job, seed=0)
            rep.append((time.perf_counter() - start) / steps)
            assert all(i.status == "reproduced" for i in report.intervals), report.to_dict()
        run = Path(tmp) / "full0"
        ck = _du(run / "checkpoints", "step_*.pt")
        n_ck = len(list((run / "checkpoints").glob("step_*.pt")))
        per_step = (run / "steps.jsonl").stat().st_size / steps
        per_step_default = (Path(tmp) / "default0" / "steps.jsonl").stat().st_size / steps
        full_ck = (run / "checkpoints" / f"step_{every:08d}.pt").stat().st_size
        first_ck = (run / "checkpoints" / "step_00000000.pt").stat().st_size
        hooks = Path(tmp) / "monaudit0" / "run"
        hooks_full_ck = (hooks / "checkpoints" / f"step_{every:08d}.pt").stat().st_size
        hooks_per_step = (hooks / "steps.jsonl").stat().st_size / (steps + 1)
    params = sum(p.numel() for p in make_job().model.parameters())
    w, w_a = (statistics.median(x) * 1000 for x in (mon_only, mon_audit))
    p, f, d, n, rp = (
        statistics.median(x) * 1000 for x in (plain, rec_full, rec_default, rec_noact, rep)
    )
    return [
        f"Drill GPT, {params:,} parameters, batch {batch} x {GPTConfig().block_size} characters, "
        f"{steps} steps, audit_every={every}, median of {reps} interleaved runs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "| loop | ms per step | vs plain |",
        "|---|---:|---:|",
        f"| plain training step (baseline) | {p:.1f} | 1.00x |",
        f"| recorded, activation digests every step | {f:.1f} | {f / p:.2f}x |",
        f"| recorded, activation digests every 10th step (default) | {d:.1f} | {d / p:.2f}x |",
        f"| recorded, no activation digests | {n:.1f} | {n / p:.2f}x |",
        f"| replay (per replayed step, all intervals) | {rp:.1f} | {rp / p:.2f}x |",
        f"| own loop under `watch()` (monitor only) | {w:.1f} | {w / p:.2f}x |",
        f"| own loop under `watch(audit_every={every})` (monitor + hook recording, "
        f"activation digests every 10th step) | {w_a:.1f} | {w_a / p:.2f}x |",
        "",
        f"Disk: {ck / max(1, n_ck) / 1e6:.2f} MB per checkpoint on average over the run's "
        f"{n_ck} (model + AdamW moments + manifest); a checkpoint after the first step is "
        f"{full_ck:,} bytes = {full_ck / params:.2f} bytes per parameter (the formula "
        f"12 x {params:,} = {12 * params:,} bytes for float32 weights and two AdamW moments, "
        f"plus {full_ck - 12 * params:,} bytes of pickle framing, step counters and "
        f"scheduler), the one at step 0 {first_ck:,} bytes (no moments yet). "
        f"{per_step / 1e3:.1f} KB per step record with activation digests every step, "
        f"{per_step_default / 1e3:.1f} KB on average at the default. Recorded from hooks "
        f"under `watch()`: {hooks_full_ck:,} bytes per checkpoint, "
        f"{hooks_per_step / 1e3:.1f} KB per step record.",
    ]


def detection(intervals: int, every: int, fractions: list[float], trials: int) -> list[str]:
    from trainwarden.drill._replay_attacks import reverse_gradients_at, train

    rows = [
        "| tampered fraction f | samples n | measured P(detect) | analytic, no replacement "
        "| 1-(1-f)^n |",
        "|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="tw-audit-det-") as tmp:
        for f in fractions:
            rng = random.Random(f"{f}")  # noqa: S311 - which intervals the attacker picks
            tampered = set(rng.sample(range(intervals), max(1, round(f * intervals))))
            flips = {i * every + every // 2 for i in tampered}
            run = Path(tmp) / f"f{f}"
            attack = reverse_gradients_at(flips)
            train(make_tiny_job(), run, steps=intervals * every, audit_every=every, attack=attack)
            full = replay(run, make_tiny_job, seed=0)
            caught = {r.start for r in full.intervals if r.status != "reproduced"}
            starts = [r.start for r in full.intervals]
            t = len(caught)
            for n in (1, 2, 4, 8):
                hits = 0
                for seed in range(trials):
                    chosen = random.Random(seed).sample(starts, n)  # noqa: S311 - as replay() does
                    hits += any(s in caught for s in chosen)
                exact = 1 - math.comb(intervals - t, n) / math.comb(intervals, n)
                rows.append(
                    f"| {t}/{intervals} = {t / intervals:.2f} | {n} | {hits / trials:.3f} "
                    f"| {exact:.3f} | {1 - (1 - t / intervals) ** n:.3f} |"
                )
    return rows


TBEGIN = "<!-- BEGIN audit_tolerance (written by bench/audit_replay.py --tolerance-only) -->"
TEND = "<!-- END audit_tolerance -->"


def _record_tiny(run: Path, steps: int, every: int, seed: int, attack: object = None) -> None:
    job = make_tiny_job()
    with AuditRecorder(job, run, audit_every=every, activation_every=0) as rec:
        it = iter(rec.loader(8, seed=seed))
        try:
            for s in range(steps):
                if attack is not None:
                    attack(job, s)  # type: ignore[operator]
                rec.step([next(it)])
        finally:
            undo(attack)  # type: ignore[arg-type]


def tolerance(runs: int, steps: int, every: int, factor: float) -> list[str]:
    from trainwarden.drill._replay_attacks import ATTACKS

    torch.set_num_threads(1)  # recording: one thread; replaying: two (a different numeric path)
    calib: list[float] = []
    held: list[float] = []
    bitwise_flagged = bitwise_total = 0
    attack_rows: list[tuple[str, str, float | None, str]] = []
    with tempfile.TemporaryDirectory(prefix="tw-audit-tol-") as tmp:
        for i in range(2 * runs):
            run = Path(tmp) / f"clean{i}"
            _record_tiny(run, steps, every, seed=i if i < runs else 1000 + i)
            rep = replay(run, make_tiny_job, seed=0, tolerance=math.inf, threads=2)
            (calib if i < runs else held).extend(
                r.distance for r in rep.intervals if r.distance is not None
            )
            if i < 2:
                bit = replay(run, make_tiny_job, seed=0, threads=2)
                bitwise_total += len(bit.intervals)
                bitwise_flagged += sum(r.status != "reproduced" for r in bit.intervals)
        tol = factor * max(calib)
        for name, spec in sorted(ATTACKS.items()):
            run = Path(tmp) / f"attack-{name}"
            _record_tiny(run, steps, every, seed=3, attack=spec.build(every + 1))
            rep = replay(run, make_tiny_job, seed=0, tolerance=tol, threads=2)
            hit = next((r for r in rep.intervals if r.status == "diverged"), None)
            if hit is None:
                attack_rows.append(
                    (name, "missed", max(r.distance or 0 for r in rep.intervals), "")
                )
            elif hit.where == "interval":
                attack_rows.append((name, "caught by distance", hit.distance, f"step {hit.step}"))
            else:
                attack_rows.append(
                    (name, f"caught exactly ({hit.where})", None, f"step {hit.step}")
                )
    fp = sum(d > tol for d in held)
    rows = [
        f"Tiny drill GPT, {steps} steps per run, intervals of {every} steps, recorded with 1 "
        f"thread, replayed with 2 (torch {torch.__version__}, CPU).",
        "",
        f"- Bitwise replay with 2 threads: {bitwise_flagged} of {bitwise_total} clean intervals "
        "flagged (the thread count really changes bits here).",
        f"- Clean calibration: {len(calib)} intervals of {runs} runs; relative distance median "
        f"{statistics.median(calib):.2e}, max {max(calib):.2e}.",
        f"- Tolerance: {factor:g} x max = **{tol:.2e}**.",
        f"- Held-out clean runs: {len(held)} intervals of {runs} runs, max {max(held):.2e}; "
        f"false positives at the tolerance: **{fp} of {len(held)}**.",
        "",
        f"| attack (from step {every + 1}) | verdict at the tolerance | relative distance "
        "| where |",
        "|---|---|---:|---|",
    ]
    for name, verdict, dist, where in attack_rows:
        rows.append(f"| {name} | {verdict} | {'' if dist is None else f'{dist:.2e}'} | {where} |")
    return rows


def _write(begin: str, end: str, text: str) -> None:
    doc = DOC.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    doc = (
        pattern.sub(lambda _m: text, doc)
        if pattern.search(doc)
        else doc.rstrip("\n") + "\n\n" + text
    )
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--intervals", type=int, default=20)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    ap.add_argument("--tolerance-only", action="store_true", help="only part 3 (calibration)")
    ap.add_argument("--runs", type=int, default=8, help="clean runs for calibration (and held out)")
    ap.add_argument("--factor", type=float, default=10.0, help="tolerance = factor x max clean")
    ns = ap.parse_args(argv)
    if ns.tolerance_only:
        text = (
            "\n".join(
                [
                    TBEGIN,
                    "## Replay audit: tolerance for replays that are not bitwise (CPU only)",
                    "",
                    "Command: `python bench/audit_replay.py --tolerance-only --write` "
                    f"({dt.date.today()}, {platform.machine()}, {os.cpu_count()} cores). "
                    "No GPU was available: this calibrates a CPU thread-count change only, "
                    "not GPU kernels or other builds.",
                    "",
                    *tolerance(ns.runs, 12, 4, ns.factor),
                    TEND,
                ]
            )
            + "\n"
        )
        sys.stdout.write(text)
        if ns.write:
            _write(TBEGIN, TEND, text)
        return 0
    torch.set_num_threads(int(os.environ.get("TW_BENCH_THREADS", "1")))
    lines = [
        BEGIN,
        "## Replay audit: recording cost, replay cost, detection probability",
        "",
        "Command: `python bench/audit_replay.py --write` "
        f"({dt.date.today()}, {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}).",
        "",
        *cost(ns.steps, ns.every, ns.batch, ns.reps),
        "",
        f"Detection: tiny drill GPT, {ns.intervals} intervals of 2 steps, one reversed-gradient "
        f"step in each tampered interval; measured over {ns.trials} sampling seeds drawn through "
        "the replay's own sampler, each interval replayed once (replays are deterministic).",
        "",
        *detection(ns.intervals, 2, [0.05, 0.1, 0.25], ns.trials),
        END,
    ]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if ns.write:
        doc = DOC.read_text()
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
        doc = (
            pattern.sub(lambda _m: text, doc)
            if pattern.search(doc)
            else doc.rstrip("\n") + "\n\n" + text
        )
        DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
