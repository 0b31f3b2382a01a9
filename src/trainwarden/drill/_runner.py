"""The sabotage drill: each technique of the threat model replayed, with a benign payload, against
the drill's GPT job protected by TrainWarden, and what caught it.

A :class:`Technique` runs in its own fresh run (its own folder, model, optimizer and, when a
ledger is given, its own ledger run) and returns an :class:`Outcome`: caught or not, by which
check and rule, how many steps and seconds until detection, and the ledger index of the first
evidence. ``control`` is the same job with no sabotage; it passes only when nothing at MEDIUM or
above was raised. The CLI (``trainwarden drill``) only prints the report :func:`execute` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainwarden._internal.sink import MemorySink
from trainwarden.audit._types import Job
from trainwarden.errors import TrainWardenError
from trainwarden.findings import Severity
from trainwarden.monitor._config import MonitorConfig
from trainwarden.sink import EventSink

if TYPE_CHECKING:
    from trainwarden.drill._types import DrillReport

__all__ = [
    "NOT_RUN",
    "TECHNIQUES",
    "DrillContext",
    "DrillError",
    "DrillResult",
    "Outcome",
    "Technique",
    "check_ids",
    "execute",
    "local_ledger",
    "run_drill",
    "technique_ids",
]

STEPS = 6
BATCH = 8


@dataclass(frozen=True)
class Outcome:
    """What happened to one technique.

    ``caught`` holds when a TrainWarden check refused or flagged the technique; for the control
    run it holds when nothing at MEDIUM or above was raised. ``effective`` says whether the
    technique was shown to work without the protection (None: not shown by this technique).
    """

    caught: bool
    check: str = ""
    rule_id: str = ""
    detail: str = ""
    steps_to_detection: int | None = None
    seconds_to_detection: float | None = None
    ledger_index: int | None = None
    effective: bool | None = None
    losses: tuple[float, ...] = ()
    step_seconds: tuple[float, ...] = ()
    alert_steps: tuple[int, ...] = ()
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ledger:
    """A ledger service the drill writes to: its URL and an admin token (to create runs)."""

    url: str
    admin_token: str
    db_url: str | None = None  # set when the drill owns the storage (needed to tamper with it)
    state_dir: Path | None = None


@dataclass
class DrillContext:
    """Where a technique runs: a fresh folder, and the ledger when one is used."""

    workdir: Path
    ledger: Ledger | None = None
    steps: int = STEPS
    ranks: int = 2
    run_id: str | None = None
    _sinks: list[Any] = field(default_factory=list)

    def sink(self, name: str) -> tuple[EventSink, Callable[[], int | None]]:
        """An event sink for this technique's run and a function that, after the run, returns
        the ledger index of its first alert (None without a ledger or without an alert)."""
        mem = MemorySink()
        if self.ledger is None:
            return mem, lambda: None
        from trainwarden.ledger._client import LedgerClient, LedgerSink

        with contextlib.closing(LedgerClient(self.ledger.url, self.ledger.admin_token)) as c:
            got = c.post("/v1/runs", {"name": f"drill-{name}", "ranks": 0})
        self.run_id = str(got["run"]["run_id"])
        ledger_sink = LedgerSink(
            self.ledger.url, str(got["token"]), spool_dir=self.workdir / "spool", fsync=False
        )
        self._sinks.append(ledger_sink)
        ledger = self.ledger
        run_id = self.run_id

        def first_alert() -> int | None:
            ledger_sink.flush(timeout=30)
            with contextlib.closing(LedgerClient(ledger.url, ledger.admin_token)) as c:
                page = c.get("/v1/entries", run=run_id, kind="alert", limit=1)
            entries = page["entries"]
            return int(entries[0]["index"]) if entries else None

        return _Tee(mem, ledger_sink), first_alert

    def close(self) -> None:
        for s in self._sinks:
            s.close()


class _Tee:
    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def emit(self, kind: str, record: Any) -> None:
        for s in self.sinks:
            s.emit(kind, record)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Technique:
    """One sabotage technique: ``run(ctx)`` performs it against a fresh run and judges it."""

    id: str
    threat: str
    description: str
    run: Callable[[DrillContext], Outcome]
    control: bool = False


# Listed in the output as not run in this release; never counted as caught.
NOT_RUN: dict[str, str] = {}


# ----------------------------------------------------------------------------- training loop


def _job() -> Job:
    from trainwarden.drill.gpt import make_tiny_job

    return make_tiny_job()


Sabotage = Callable[[Job, int], None]


def _watched_run(
    ctx: DrillContext,
    name: str,
    *,
    before_step: Sabotage | None = None,
    after_step: Sabotage | None = None,
    steps: int | None = None,
    start: int | None = None,
    watch_config: dict[str, Any] | None = None,
) -> Outcome:
    """Train the drill job for ``steps`` (default ``ctx.steps``) steps under ``watch()``; judge
    by its alerts at MEDIUM or above, including those raised when the monitor is closed at the
    end. An alert raised before step ``start`` (where the sabotage begins) is a false alarm: the
    technique is then not counted as caught. ``watch_config`` adds settings to ``watch()``."""
    from trainwarden.monitor import watch

    job = _job()
    sink, first_index = ctx.sink(name)
    gen = torch.Generator().manual_seed(7)
    loader = torch.utils.data.DataLoader(job.dataset, batch_size=BATCH, shuffle=True, generator=gen)
    batches = iter(loader)
    losses: list[float] = []
    times: list[float] = []
    t0 = time.monotonic()
    detected_at: tuple[int, float] | None = None
    early: Any = None
    mon = watch(
        job.model,
        job.optimizer,
        scheduler=job.scheduler,
        max_grad_norm=job.max_grad_norm,
        sink=sink,
        **(watch_config or {}),
    )
    n_steps = steps or ctx.steps
    with mon:
        for step in range(n_steps):
            s0 = time.monotonic()
            if before_step is not None:
                before_step(job, step)
            loss = job.loss_fn(job.model, next(batches))
            # As a user's loop does: the monitor's loss checks and its step records need it (the
            # model returns logits, so the monitor cannot find the loss in its output).
            mon.observe_loss(loss)
            job.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if job.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.max_grad_norm)
            job.optimizer.step()
            if job.scheduler is not None:
                job.scheduler.step()
            if after_step is not None:
                after_step(job, step)
            losses.append(float(loss.detach()))
            times.append(time.monotonic() - s0)
            if detected_at is None and _serious(mon.alerts):
                detected_at = (step + 1, time.monotonic() - t0)
                if start is not None and step < start:
                    early = _serious(mon.alerts)[0]
    alerts = _serious(mon.alerts)
    if detected_at is None and alerts:
        detected_at = (n_steps, time.monotonic() - t0)
    index = first_index() if alerts else None
    first = alerts[0] if alerts else None
    if early is not None:
        return Outcome(
            caught=False,
            rule_id=early.rule_id,
            detail=f"false alarm before the sabotage started: {early.rule_id}: {early.message}",
            losses=tuple(losses),
            step_seconds=tuple(times),
            alert_steps=tuple(sorted({a.step for a in alerts})),
            rules=tuple(dict.fromkeys(a.rule_id for a in alerts)),
        )
    return Outcome(
        caught=first is not None,
        check="watch()" if first is not None else "",
        rule_id=first.rule_id if first is not None else "",
        detail=first.message if first is not None else "no alert at MEDIUM or above",
        steps_to_detection=detected_at[0] if detected_at else None,
        seconds_to_detection=round(detected_at[1], 3) if detected_at else None,
        ledger_index=index,
        losses=tuple(losses),
        step_seconds=tuple(times),
        alert_steps=tuple(sorted({a.step for a in alerts})),
        rules=tuple(dict.fromkeys(a.rule_id for a in alerts)),
    )


def _serious(alerts: list[Any]) -> list[Any]:
    return [a for a in alerts if a.severity >= Severity.MEDIUM]


def _control(ctx: DrillContext) -> Outcome:
    got = _watched_run(ctx, "control")
    # The control passes when clean: invert the sense of ``caught`` for reporting.
    return Outcome(
        caught=not got.caught,
        check="watch()",
        rule_id=got.rule_id,
        detail=(
            "no alert at MEDIUM or above"
            if not got.caught
            else f"false alarm: {got.rule_id}: {got.detail}"
        ),
        ledger_index=got.ledger_index,
        losses=got.losses,
        step_seconds=got.step_seconds,
        alert_steps=got.alert_steps,
    )


# ----------------------------------------------------------------------------- T3 in-loop sabotage


def _patch_optimizer_sign_flip(job: Job, step: int) -> None:
    if step != 2:
        return
    opt = job.optimizer
    original = opt.step

    def step_fn(*a: Any, **k: Any) -> Any:
        before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
        out = original(*a, **k)
        with torch.no_grad():
            params = [p for g in opt.param_groups for p in g["params"]]
            for p, b in zip(params, before, strict=True):
                p.copy_(b - (p - b))  # the same update, pointing the other way
        return out

    opt.step = step_fn


def _blind_monitor_then_flip(job: Job, step: int) -> None:
    """Adaptive: first switch the monitor off by removing every hook on the optimizer and the
    model (torch keeps them in plain dicts anyone can clear), then flip the update's sign."""
    if step != 2:
        return
    opt = job.optimizer
    for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
        getattr(opt, name).clear()
    for m in job.model.modules():
        for name in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks"):
            getattr(m, name).clear()
    _patch_optimizer_sign_flip(job, step)


def _close_monitor_then_flip(job: Job, step: int) -> None:
    """Adaptive: find the monitor through the garbage collector and close it properly (no
    hook is left for the self-check to miss), then flip the update's sign."""
    if step != 2:
        return
    import gc

    from trainwarden.monitor._core import Monitor

    for obj in gc.get_objects():
        # type(), not isinstance(): some objects warn when their class is asked for.
        if type(obj) is Monitor and obj.optimizer is job.optimizer:
            obj.close()
    _patch_optimizer_sign_flip(job, step)


def _change_lr(job: Job, step: int) -> None:
    if step == 2:
        for g in job.optimizer.param_groups:
            g["lr"] = g["lr"] * 10


def _change_weight_decay(job: Job, step: int) -> None:
    if step == 2:
        for g in job.optimizer.param_groups:
            g["weight_decay"] = 0.0


def _skip_clipping(job: Job, step: int) -> None:
    if step == 2:
        job.max_grad_norm = None  # the loop stops clipping (the configured threshold is unchanged)
        for p in job.model.parameters():
            p.register_hook(lambda g: g * 1000.0)


# Sleeps start once the monitor has its timing baseline (``spike_warmup`` steps by default), as a
# saboteur who read the monitor would wait for; they come at irregular steps (four separate
# spikes are what the repeated-spike rule needs).
_SLEEP_STEPS = frozenset({18, 21, 25, 28})
SLEEP_RUN_STEPS = 30
#: Each sleep is twice the step time's median plus 12 scaled MADs, as seen by the saboteur over the
#: steps the monitor's timing window holds (its last ``spike_window`` steps, its own sleeps
#: included), and at least MIN_SLEEP_S. A sleep meant to slow the job down is long compared
#: with a step; sizing it from the step times the machine gives now keeps the verdict independent
#: of machine load (the monitor flags a step 8 scaled MADs and half a median above the median).
SLEEP_MEDIANS = 2.0
SLEEP_MADS = 12.0
MIN_SLEEP_S = 1.0


class AdaptiveSleeper:
    """The sleeps sabotage: called before every step, it sleeps at :data:`_SLEEP_STEPS`."""

    def __init__(self) -> None:
        self.intervals: list[float] = []
        self.slept: list[float] = []
        self._last: float | None = None

    def sleep_for(self) -> float:
        import statistics

        # The span the monitor judges a step against: with a shorter one, a burst of load in
        # the monitor's window but not in this one made the sleeps too short to stand out.
        recent = self.intervals[-MonitorConfig().spike_window :]
        if not recent:
            return MIN_SLEEP_S
        med = statistics.median(recent)
        mad = statistics.median(abs(x - med) for x in recent) * 1.4826
        return max(MIN_SLEEP_S, SLEEP_MEDIANS * med + SLEEP_MADS * mad)

    def __call__(self, job: Job, step: int) -> None:
        now = time.monotonic()
        if self._last is not None:
            self.intervals.append(now - self._last)
        if step in _SLEEP_STEPS:
            seconds = self.sleep_for()
            self.slept.append(seconds)
            time.sleep(seconds)
        self._last = time.monotonic()


def _sleeps(ctx: DrillContext) -> Outcome:
    return _watched_run(
        ctx,
        ctx.workdir.name,
        before_step=AdaptiveSleeper(),
        steps=SLEEP_RUN_STEPS,
        start=min(_SLEEP_STEPS),
    )


def _edit_weights(job: Job, step: int) -> None:
    if step == 2:
        with torch.no_grad():
            next(iter(job.model.parameters())).mul_(0.5)


def _edit_moments(job: Job, step: int) -> None:
    if step == 2:
        for st in job.optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(100.0)
                break


def _reverse_gradients_replay(ctx: DrillContext) -> Outcome:
    """Gradient hooks that reverse one layer's gradient: the replay audit must catch it."""
    from trainwarden.drill._replay_attacks import reverse_gradients

    return _replayed(ctx, reverse_gradients(2))


def _spare_sampled_replay(ctx: DrillContext) -> Outcome:
    """An adaptive saboteur: a patched optimizer step that restores the few weight elements an
    auditor that samples would look at. The replay audit compares whole tensors."""
    from trainwarden.drill._replay_attacks import spare_sampled_update

    return _replayed(ctx, spare_sampled_update(2))


def _replayed(ctx: DrillContext, attack: Any) -> Outcome:
    from trainwarden.audit import replay
    from trainwarden.drill._replay_attacks import train
    from trainwarden.drill.gpt import make_tiny_job

    run = ctx.workdir / "audit-run"
    t0 = time.monotonic()
    losses = train(make_tiny_job(), run, steps=ctx.steps, audit_every=2, attack=attack)
    report = replay(run, make_tiny_job, seed=0)
    seconds = time.monotonic() - t0
    bad = [f for f in report.findings if f.severity >= Severity.MEDIUM]
    first = bad[0] if bad else None
    return Outcome(
        caught=first is not None,
        check="replay audit" if first else "",
        rule_id=first.rule_id if first else "",
        detail=first.message if first else "replay found no divergence",
        steps_to_detection=ctx.steps if first else None,
        seconds_to_detection=round(seconds, 3) if first else None,
        losses=tuple(losses),
    )


# ----------------------------------------------------------------------------- checkpoint payloads


class _Exec:
    """Pickles as ``exec(source)``: the shape of a real malicious checkpoint's payload."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (self.source,)


def _payload_checkpoint(dest: Path, source: str) -> Path:
    """A "pretrained" torch checkpoint of the drill model whose pickle also runs ``source``."""
    job = _job()
    torch.save({"model": job.model.state_dict(), "extra": _Exec(source)}, dest)
    return dest


_PLAIN_LOAD = """\
import sys, torch
torch.load(sys.argv[1], weights_only=False)
"""


def _plain_load_runs_it(path: Path, cwd: Path) -> bool:
    """Load ``path`` with plain ``torch.load(weights_only=False)`` in a child process; True when
    it succeeded (the payload ran as part of it)."""
    proc = subprocess.run(  # noqa: S603 - our own interpreter and a fixed script
        [sys.executable, "-c", _PLAIN_LOAD, str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode == 0


def _guarded_load(path: Path, sink: EventSink) -> tuple[bool, str, str]:
    """Load through trainwarden.load; (refused, rule id, message)."""
    from trainwarden.loading._loader import load
    from trainwarden.loading._types import LoadError, UnsafeModelError

    try:
        load(path, sink=sink)
    except UnsafeModelError as e:
        findings = getattr(e, "findings", ()) or ()
        rule = findings[0].rule_id if findings else type(e).__name__
        return True, rule, str(e).splitlines()[0]
    except LoadError as e:
        return True, type(e).__name__, str(e).splitlines()[0]
    return False, "", "loaded"


def _checkpoint_technique(
    ctx: DrillContext, name: str, make_source: Callable[[Path], str], fired: Callable[[Path], bool]
) -> Outcome:
    canary = ctx.workdir / "canary"
    ckpt = _payload_checkpoint(ctx.workdir / "pretrained.pt", make_source(canary))
    plain_dir = ctx.workdir / "plain"
    plain_dir.mkdir()
    # Proof the payload is live: plain torch.load runs it (in a child, in its own folder).
    plain_canary = plain_dir / "canary"
    plain_ckpt = _payload_checkpoint(plain_dir / "pretrained.pt", make_source(plain_canary))
    _plain_load_runs_it(plain_ckpt, plain_dir)
    effective = fired(plain_canary)
    sink, first_index = ctx.sink(name)
    t0 = time.monotonic()
    refused, rule, msg = _guarded_load(ckpt, sink)
    seconds = time.monotonic() - t0
    ran = fired(canary)
    if refused:
        sink.emit(
            "alert",
            {"rule_id": rule, "severity": "HIGH", "step": 0, "rank": 0, "message": msg},
        )
    caught = refused and not ran
    return Outcome(
        caught=caught,
        check="trainwarden.load" if caught else "",
        rule_id=rule,
        detail=msg if caught else f"loaded (payload ran: {ran})",
        steps_to_detection=0 if caught else None,
        seconds_to_detection=round(seconds, 3) if caught else None,
        ledger_index=first_index() if caught else None,
        effective=effective,
    )


def _optimizer_patch_source(canary: Path) -> str:
    # The real act would patch torch.optim.AdamW.step; the benign version only drops a canary
    # where the patch would go, so a plain load leaves evidence and changes nothing else.
    return f"open({str(canary)!r}, 'w').write('AdamW.step patched')\n"


def _t1_checkpoint_payload(ctx: DrillContext) -> Outcome:
    return _checkpoint_technique(ctx, "t1", _optimizer_patch_source, lambda canary: canary.exists())


_HF_PLAIN_LOAD = """\
import sys
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained(sys.argv[1], weights_only=False)
"""


def _hf_payload_checkpoint(dest: Path, source: str) -> Path:
    """A tiny "pretrained" Hugging Face GPT-2 folder (``config.json`` and a pickled
    ``pytorch_model.bin``, the format older checkpoints ship in) whose pickle also runs
    ``source``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=16,
        vocab_size=64,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(cfg)
    dest.mkdir(parents=True)
    cfg.save_pretrained(dest)
    state: dict[str, Any] = dict(model.state_dict())
    state["extra"] = _Exec(source)
    torch.save(state, dest / "pytorch_model.bin")
    return dest


def _t1_hf_payload(ctx: DrillContext) -> Outcome:
    """The shared checkpoint as a Hugging Face model folder, loaded at resume with
    ``from_pretrained(..., weights_only=False)`` (the opt-in an older checkpoint "needs"); the
    process-wide guard must refuse it."""
    import trainwarden.guard
    from trainwarden.loading._types import UnsafeModelError

    canary = ctx.workdir / "canary"
    folder = _hf_payload_checkpoint(ctx.workdir / "pretrained", _optimizer_patch_source(canary))
    plain_dir = ctx.workdir / "plain"
    plain_dir.mkdir()
    plain_canary = plain_dir / "canary"
    plain = _hf_payload_checkpoint(plain_dir / "pretrained", _optimizer_patch_source(plain_canary))
    subprocess.run(  # noqa: S603 - our own interpreter and a fixed script
        [sys.executable, "-c", _HF_PLAIN_LOAD, str(plain)],
        cwd=plain_dir,
        capture_output=True,
        timeout=300,
        check=False,
    )
    effective = plain_canary.exists()
    from transformers import AutoModelForCausalLM

    sink, first_index = ctx.sink("t1-hf")
    t0 = time.monotonic()
    refused: UnsafeModelError | None = None
    with trainwarden.guard.install(mode="block", sink=sink):
        try:
            AutoModelForCausalLM.from_pretrained(folder, weights_only=False)
        except UnsafeModelError as e:
            refused = e
    seconds = time.monotonic() - t0
    ran = canary.exists()
    if refused is None or ran:
        return Outcome(caught=False, detail=f"from_pretrained loaded it (payload ran: {ran})")
    findings = getattr(refused, "findings", ()) or ()
    rule = findings[0].rule_id if findings else type(refused).__name__
    msg = str(refused).splitlines()[0]
    sink.emit("alert", {"rule_id": rule, "severity": "HIGH", "step": 0, "rank": 0, "message": msg})
    return Outcome(
        caught=True,
        check="load guard",
        rule_id=rule,
        detail=msg,
        steps_to_detection=0,
        seconds_to_detection=round(seconds, 3),
        ledger_index=first_index(),
        effective=effective,
    )


def _listener_source(canary: Path) -> str:
    return (
        "import socket\n"
        "s = socket.socket()\n"
        "s.bind(('127.0.0.1', 0))\n"
        "s.listen(1)\n"
        f"open({str(canary)!r}, 'w').write(str(s.getsockname()[1]))\n"
        "s.close()\n"
    )


def _t7_listener_payload(ctx: DrillContext) -> Outcome:
    return _checkpoint_technique(ctx, "t7", _listener_source, lambda canary: canary.exists())


def _t7_sandbox(ctx: DrillContext) -> Outcome:
    """A payload that does run (plain pickle in a job) tries to listen; Landlock must stop it."""
    from trainwarden.drill.sandbox_techniques import run_technique
    from trainwarden.sandbox import abi_version

    abi = abi_version()
    if abi.version < 6:
        return Outcome(caught=False, detail=f"Landlock ABI {abi.version} < 6: {abi.reason}")
    t0 = time.monotonic()
    res = run_technique("listen-backdoor", ctx.workdir)
    seconds = time.monotonic() - t0
    return Outcome(
        caught=res.blocked,
        check="sandbox (Landlock)" if res.blocked else "",
        rule_id="",  # the kernel denies the bind (EACCES); there is no rule id
        detail=res.detail,
        steps_to_detection=0 if res.blocked else None,
        seconds_to_detection=round(seconds, 3) if res.blocked else None,
        effective=res.unsandboxed_effect,
    )


# ----------------------------------------------------------------------------- T6 on disk


def _t6_checkpoint_edit(ctx: DrillContext) -> Outcome:
    """A checkpoint saved with its manifest is edited on disk before the resume."""
    from trainwarden.loading._loader import load, save
    from trainwarden.loading._types import ManifestError

    job = _job()
    path = ctx.workdir / "step_000003.pt"
    save({"model": job.model.state_dict()}, path)
    # The saboteur rewrites the weights with plain torch (a valid checkpoint, other values).
    state = torch.load(path, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] * 0.0
    torch.save(state, path)
    sink, first_index = ctx.sink("t6-disk")
    t0 = time.monotonic()
    try:
        load(path, sink=sink)
    except ManifestError as e:
        findings = getattr(e, "findings", ()) or ()
        rule = findings[0].rule_id if findings else "ManifestError"
        msg = str(e).splitlines()[0]
        sink.emit("alert", {"rule_id": rule, "severity": "HIGH", "step": 3, "message": msg})
        return Outcome(
            caught=True,
            check="manifest verification",
            rule_id=rule,
            detail=msg,
            steps_to_detection=0,
            seconds_to_detection=round(time.monotonic() - t0, 3),
            ledger_index=first_index(),
        )
    return Outcome(caught=False, detail="the edited checkpoint loaded")


# ----------------------------------------------------------------------------- T2 framework edit


def _t2_framework_edit(
    edit_name: str, rewrite_record: bool = False
) -> Callable[[DrillContext], Outcome]:
    """``attest snapshot`` of a throwaway environment, the saboteur's edit of an installed
    framework file, then ``attest verify`` against that baseline at job start must flag it."""

    def run(ctx: DrillContext) -> Outcome:
        from trainwarden.attest._cache import HashCache
        from trainwarden.attest._signing import LoadedSnapshot
        from trainwarden.attest._snapshot import take_snapshot
        from trainwarden.attest._verify import verify_environment
        from trainwarden.drill import _framework_edit as fe

        edit = fe.EDITS[edit_name]
        env = ctx.workdir / "env"
        python = fe.make_env(env)
        before = fe.probe(python)
        job_env = fe.job_environ()
        # The operator's baseline, taken before the job (what `attest snapshot -o` writes).
        snap = take_snapshot(str(python), environ=job_env, cache=HashCache(None))
        baseline_file = ctx.workdir / "baseline.json"
        baseline_file.write_text(json.dumps(snap.to_statement()))
        edited = fe.apply_edit(env, edit, rewrite_record=rewrite_record)
        after = fe.probe(python)
        effective = before[edit.probe_key] != after[edit.probe_key]
        sink, first_index = ctx.sink(f"t2-{edit_name}")
        t0 = time.monotonic()
        # At job start: `attest verify --baseline` (a fresh snapshot, no hash cache).
        report = verify_environment(
            str(python),
            baseline=LoadedSnapshot(snap, str(baseline_file), False, None),
            environ=job_env,
            cache=HashCache(None),
        )
        seconds = time.monotonic() - t0
        named = [
            f
            for f in report.findings
            if f.severity >= Severity.HIGH
            and (str(edited) == f.location or f.location.endswith(f"{fe.PACKAGE}/{edit.module}"))
        ]
        if not named:
            return Outcome(
                caught=False,
                detail=f"attest verify did not name {edited} ({edit.effect})",
                effective=effective,
            )
        first = named[0]
        sink.emit(
            "alert",
            {
                "rule_id": first.rule_id,
                "severity": first.severity.name,
                "step": 0,
                "message": first.message,
                "evidence": {"location": first.location},
            },
        )
        return Outcome(
            caught=True,
            check="attest verify",
            rule_id=first.rule_id,
            detail=f"{first.message} ({edit.effect})",
            steps_to_detection=0,
            seconds_to_detection=round(seconds, 3),
            ledger_index=first_index(),
            effective=effective,
            rules=tuple(dict.fromkeys(f.rule_id for f in named)),
        )

    return run


# ------------------------------------------------------------------------ T4, T5 under torchrun

#: The longest a multi-rank technique may take before it counts as missed.
TORCHRUN_TIMEOUT_S = 150.0


@dataclass(frozen=True)
class RankRun:
    """What a torchrun of :mod:`trainwarden.drill._ranks` left: each rank's sink records."""

    records: dict[int, list[dict[str, Any]]]
    returncode: int | None
    detected: dict[str, Any] | None
    seconds: float

    def alerts(self, rank: int) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records.get(rank, [])
            if r.get("kind") == "alert" and Severity[str(r["severity"])] >= Severity.MEDIUM
        ]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:

    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed rank
        if isinstance(rec, dict):
            out.append(rec)
    return out


def torchrun_ranks(
    out: Path,
    technique: str,
    *,
    ranks: int,
    steps: int,
    until: Callable[[list[dict[str, Any]]], dict[str, Any] | None],
    timeout: float = TORCHRUN_TIMEOUT_S,
) -> RankRun:
    """Run ``trainwarden.drill._ranks`` under torchrun (gloo, ``ranks`` processes), watching rank
    0's sink; stop as soon as ``until(rank 0 records)`` returns the alert that caught the
    technique (or when the run ends or ``timeout`` passes). Every rank process is killed at the
    end, stopped ones included."""
    import signal as _signal

    import trainwarden

    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    src = str(Path(trainwarden.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    log = (out / "torchrun.log").open("ab")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={ranks}",
        "-m",
        "trainwarden.drill._ranks",
        str(out),
        technique,
        str(steps),
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    detected: dict[str, Any] | None = None
    try:
        while True:
            detected = until(_read_jsonl(out / "rank0.jsonl"))
            if detected is not None or proc.poll() is not None:
                break
            if time.monotonic() - t0 > timeout:
                break
            time.sleep(0.2)
        if detected is None and proc.poll() is not None:
            detected = until(_read_jsonl(out / "rank0.jsonl"))
    finally:
        seconds = time.monotonic() - t0
        # torchrun starts each worker in its own session: kill them by pid (a stopped one too).
        for r in range(ranks):
            for rec in _read_jsonl(out / f"rank{r}.jsonl"):
                if rec.get("kind") == "drill_rank":
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(rec["pid"]), _signal.SIGKILL)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, _signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    records = {r: _read_jsonl(out / f"rank{r}.jsonl") for r in range(ranks)}
    return RankRun(records, proc.returncode, detected, seconds)


def _names_rank1(rule: str, test: Callable[[dict[str, Any]], bool]) -> Any:
    def until(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
        for r in recs:
            if r.get("kind") == "alert" and r.get("rule_id") == rule and test(r["evidence"]):
                return r
        return None

    return until


def _rank_technique(
    ctx: DrillContext,
    name: str,
    technique: str,
    check: str,
    until: Callable[[list[dict[str, Any]]], dict[str, Any] | None],
) -> Outcome:
    from trainwarden.drill._ranks import SABOTAGE_STEP

    if ctx.ranks < 2:
        return Outcome(caught=False, detail=f"needs --ranks >= 2 (got {ctx.ranks})")
    run = torchrun_ranks(
        ctx.workdir / "ranks", technique, ranks=ctx.ranks, steps=SABOTAGE_STEP + 5, until=until
    )
    sink, first_index = ctx.sink(name)
    rank0 = run.alerts(0)
    early = [a for a in rank0 if int(a.get("step", 0)) < SABOTAGE_STEP]
    # Rank 0 is the honest rank: its evidence goes to the ledger.
    for a in rank0:
        sink.emit("alert", {k: v for k, v in a.items() if k not in ("kind", "ts", "seq")})
    steps = [
        float(r["loss"]) for r in run.records.get(0, []) if r.get("kind") == "step" and "loss" in r
    ]
    times = [
        float(r["timing"]["step"])
        for r in run.records.get(0, [])
        if r.get("kind") == "step" and isinstance(r.get("timing"), dict) and "step" in r["timing"]
    ]
    series = Outcome(
        caught=False,
        losses=tuple(steps),
        step_seconds=tuple(times),
        alert_steps=tuple(sorted({int(a.get("step", 0)) for a in rank0})),
        rules=tuple(dict.fromkeys(str(a["rule_id"]) for a in rank0)),
    )
    if early:
        e = early[0]
        return dataclasses.replace(
            series,
            rule_id=str(e["rule_id"]),
            detail=f"false alarm before the sabotage started: {e['rule_id']}: {e['message']}",
        )
    got = run.detected
    if got is None:
        tail = (ctx.workdir / "ranks" / "torchrun.log").read_text(errors="replace")[-400:]
        return dataclasses.replace(
            series,
            detail=f"rank 0 named no culprit within {run.seconds:.0f}s "
            f"(exit {run.returncode}); torchrun log tail: {tail!r}",
        )
    sabotaged = [r for r in run.records.get(1, []) if r.get("kind") == "drill_sabotage"]
    t_from = float(sabotaged[0]["ts"]) if sabotaged else None
    seconds = float(got["ts"]) - t_from if t_from is not None else run.seconds
    return dataclasses.replace(
        series,
        caught=True,
        check=check,
        rule_id=str(got["rule_id"]),
        detail=str(got["message"]),
        steps_to_detection=int(got.get("step", 0)),
        seconds_to_detection=round(max(seconds, 0.0), 3),
        ledger_index=first_index(),
    )


def _t4_rank1_payload(ctx: DrillContext) -> Outcome:
    """A payload that fires only on rank 1 of a multi-rank run; rank 0's cross-rank check must
    name rank 1."""

    def culprit(ev: dict[str, Any]) -> bool:
        return bool(ev.get("likely_culprit") == 1 or ev.get("ranks") == [1])

    return _rank_technique(
        ctx,
        "t4",
        "rank1-payload",
        "cross-rank check (rank 0)",
        _names_rank1("TWM-XRANK-DIVERGED", culprit),
    )


def _t5_kill(ctx: DrillContext) -> Outcome:
    """Rank 1 SIGKILLed mid-run; rank 0's watchdog must name it lost."""
    return _rank_technique(
        ctx,
        "t5-kill",
        "kill",
        "watchdog heartbeats (rank 0)",
        _names_rank1(
            "TWM-LOST-RANK",
            lambda ev: ev.get("first_lost") == 1 or 1 in (ev.get("lost") or []),
        ),
    )


def _t5_stop(ctx: DrillContext) -> Outcome:
    """Rank 1 SIGSTOPped mid-run (alive, silent); rank 0's watchdog must name it."""

    def named(ev: dict[str, Any]) -> bool:
        return bool(
            ev.get("first_lost") == 1
            or ev.get("most_behind") == 1
            or 1 in (ev.get("stuck_outside_collective") or [])
        )

    return _rank_technique(
        ctx,
        "t5-stop",
        "stop",
        "watchdog heartbeats (rank 0)",
        _names_rank1("TWM-LOST-RANK", named),
    )


# ----------------------------------------------------------------------------- T8 ledger storage


def _t8_ledger_edit(ctx: DrillContext) -> Outcome:
    """Rewrite a stored ledger row after the run; ``ledger verify`` must name its index."""
    ledger = ctx.ledger
    if ledger is None or ledger.db_url is None or not ledger.db_url.startswith("sqlite:///"):
        return Outcome(caught=False, detail="needs the drill's own SQLite ledger (no --ledger)")
    from trainwarden.service._tools import verify_db

    got = _watched_run(
        ctx, "t8", after_step=_edit_weights, start=2
    )  # a run with evidence worth erasing
    target = got.ledger_index
    if target is None:
        return Outcome(caught=False, detail="no alert reached the ledger to erase")
    db = Path(ledger.db_url[len("sqlite:///") :])
    t0 = time.monotonic()
    conn = sqlite3.connect(db)
    try:
        with conn:
            (body,) = conn.execute(
                "SELECT entry FROM tw_entries WHERE idx = ?", (target,)
            ).fetchone()
            raw = bytes(body)
            # Hide the alert: rename its rule, keeping the row valid JSON of the same shape.
            edited = raw.replace(b"TWM-", b"TWX-", 1)
            conn.execute("UPDATE tw_entries SET entry = ? WHERE idx = ?", (edited, target))
    finally:
        conn.close()
    report = verify_db(ledger.db_url, key=None, state_dir=ledger.state_dir, saved=[])
    seconds = time.monotonic() - t0
    first = report.first_bad
    caught = not report.ok and first is not None and first.index == target
    return Outcome(
        caught=caught,
        check="ledger verify" if caught else "",
        rule_id="",  # ledger verify names the entry; it has no rule ids
        detail=str(first) if first is not None else "ledger verified OK after the edit",
        seconds_to_detection=round(seconds, 3) if caught else None,
        ledger_index=first.index if first is not None else None,
    )


# ----------------------------------------------------------------------------- the catalogue


def _watched(
    before: Sabotage | None = None,
    after: Sabotage | None = None,
    steps: int | None = None,
    start: int = 2,
) -> Callable[[DrillContext], Outcome]:
    def run(ctx: DrillContext) -> Outcome:
        return _watched_run(
            ctx,
            ctx.workdir.name,
            before_step=before,
            after_step=after,
            steps=steps,
            start=start,
        )

    return run


TECHNIQUES: tuple[Technique, ...] = (
    Technique("control", "-", "the same job with no sabotage (must raise nothing)", _control, True),
    Technique(
        "T1-checkpoint-payload",
        "T1",
        "shared pretrained checkpoint whose pickle patches the optimizer, loaded at resume",
        _t1_checkpoint_payload,
    ),
    Technique(
        "T1-hf-checkpoint-payload",
        "T1",
        "the same payload in a Hugging Face model folder, loaded with from_pretrained at resume",
        _t1_hf_payload,
    ),
    Technique(
        "T2-optimizer-edit",
        "T2",
        "installed optimizer file edited to flip the update's sign (throwaway environment)",
        _t2_framework_edit("optimizer"),
    ),
    Technique(
        "T2-seeding-edit",
        "T2",
        "installed seeding function edited to ignore the seed (throwaway environment)",
        _t2_framework_edit("seeding"),
    ),
    Technique(
        "T2-loader-edit",
        "T2",
        "installed data loader edited to drop the last batch (throwaway environment)",
        _t2_framework_edit("data-loader"),
    ),
    Technique(
        "T2-edit-with-record",
        "T2",
        "optimizer file edited and its RECORD hash rewritten to match (throwaway environment)",
        _t2_framework_edit("optimizer", rewrite_record=True),
    ),
    Technique(
        "T3-sign-flip",
        "T3",
        "patched optimizer step applies the update with its sign flipped",
        _watched(before=_patch_optimizer_sign_flip),
    ),
    Technique(
        "T3-monitor-blinded",
        "T3",
        "adaptive: the monitor's hooks removed first, then the update's sign flipped",
        _watched(before=_blind_monitor_then_flip),
    ),
    Technique(
        "T3-monitor-closed",
        "T3",
        "adaptive: the monitor found through the garbage collector and closed, then the sign "
        "flipped",
        _watched(before=_close_monitor_then_flip),
    ),
    Technique("T3-lr-change", "T3", "learning rate multiplied by 10 mid-run", _watched(_change_lr)),
    Technique(
        "T3-weight-decay", "T3", "weight decay zeroed mid-run", _watched(_change_weight_decay)
    ),
    Technique(
        "T3-no-clipping",
        "T3",
        "gradient clipping silently dropped, gradients inflated by hooks",
        _watched(_skip_clipping),
    ),
    Technique(
        "T3-sleeps",
        "T3",
        "sleeps injected at irregular steps",
        _sleeps,
    ),
    Technique(
        "T3-reverse-gradients",
        "T3",
        "gradient hook reverses one layer's gradient (replay audit)",
        _reverse_gradients_replay,
    ),
    Technique(
        "T3-spare-sampled",
        "T3",
        "adaptive: a patched step restores the weight elements a sampling auditor would check",
        _spare_sampled_replay,
    ),
    Technique(
        "T4-rank1-payload",
        "T4",
        "a payload that fires only when world_size >= 2 and only on rank 1 (torchrun)",
        _t4_rank1_payload,
    ),
    Technique(
        "T5-rank-killed",
        "T5",
        "rank 1 SIGKILLed mid-run (torchrun)",
        _t5_kill,
    ),
    Technique(
        "T5-rank-stopped",
        "T5",
        "rank 1 SIGSTOPped mid-run: alive but silent (torchrun)",
        _t5_stop,
    ),
    Technique(
        "T6-checkpoint-edit",
        "T6",
        "checkpoint edited on disk between save and resume",
        _t6_checkpoint_edit,
    ),
    Technique(
        "T6-weight-edit",
        "T6",
        "weights edited in memory between two steps",
        _watched(after=_edit_weights),
    ),
    Technique(
        "T6-moment-edit",
        "T6",
        "AdamW second moments edited in memory between two steps",
        _watched(after=_edit_moments),
    ),
    Technique(
        "T7-listener-payload",
        "T7",
        "checkpoint whose pickle opens a listening socket on 127.0.0.1",
        _t7_listener_payload,
    ),
    Technique(
        "T7-sandbox-listener",
        "T7",
        "a payload that did run tries to listen; the Landlock sandbox must deny it",
        _t7_sandbox,
    ),
    Technique(
        "T8-ledger-edit",
        "T8",
        "a stored ledger row rewritten after the run",
        _t8_ledger_edit,
    ),
)


def technique_ids() -> list[str]:
    return [t.id for t in TECHNIQUES]


@dataclass(frozen=True)
class DrillResult:
    """One technique's outcome, with its catalogue entry and how long it took."""

    technique: Technique
    outcome: Outcome
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.outcome.caught


def run_technique(
    tech: Technique, workdir: Path, ledger: Ledger | None = None, ranks: int = 2
) -> DrillResult:
    """Run ``tech`` in a fresh folder under ``workdir``; errors become a failed result.
    ``ranks`` is the world size of the multi-rank techniques (at least 2)."""
    folder = workdir / tech.id
    folder.mkdir(parents=True, exist_ok=False)
    ctx = DrillContext(folder, ledger, ranks=ranks)
    t0 = time.monotonic()
    try:
        outcome = tech.run(ctx)
        error = None
    except Exception as e:  # a technique that crashed is reported, never counted as caught
        outcome = Outcome(caught=False, detail=f"error: {e!r}")
        error = repr(e)
    finally:
        ctx.close()
    return DrillResult(tech, outcome, round(time.monotonic() - t0, 3), error)


def run_drill(
    workdir: Path,
    ids: list[str] | None = None,
    ledger: Ledger | None = None,
    progress: Callable[[str], None] | None = None,
    ranks: int = 2,
) -> Iterator[DrillResult]:
    """Run the chosen techniques (all by default, the control first), yielding each result."""
    chosen = [t for t in TECHNIQUES if ids is None or t.id in ids or t.threat in ids]
    for tech in chosen:
        if progress is not None:
            progress(tech.id)
        yield run_technique(tech, workdir, ledger, ranks)


def check_ids(ids: Iterable[str]) -> None:
    """Raise :class:`DrillError` naming the first id that is neither a technique nor a threat."""
    known = {t.id for t in TECHNIQUES} | {t.threat for t in TECHNIQUES} | set(NOT_RUN)
    for t in ids:
        if t not in known:
            raise DrillError(
                f"unknown technique {t!r}", hint="known: " + ", ".join(sorted(known - {"-"}))
            )


def execute(
    ids: list[str] | None = None,
    *,
    ledger_url: str | None = None,
    ledger_token: str | None = None,
    ranks: int = 2,
    progress: Callable[[str], None] | None = None,
) -> DrillReport:
    """Run the chosen techniques (all by default) in a temporary folder, against the ledger at
    ``ledger_url`` (with its admin token) or a local one started for the drill, and return the
    :class:`~trainwarden.drill._types.DrillReport`."""
    import tempfile

    from trainwarden.drill._types import DrillReport

    check_ids(ids or [])
    if ledger_url is not None and not ledger_token:
        raise DrillError("--ledger needs --ledger-token (an admin token of that service)")
    results: list[DrillResult] = []
    with tempfile.TemporaryDirectory(prefix="trainwarden-drill-") as tmp:
        work = Path(tmp)
        if ledger_url is not None:
            results.extend(
                run_drill(work, ids, Ledger(ledger_url, ledger_token or ""), progress, ranks)
            )
        else:
            with local_ledger(work) as led:
                results.extend(run_drill(work, ids, led, progress, ranks))
    not_run = [(k, v) for k, v in NOT_RUN.items() if ids is None or k in ids]
    return DrillReport.of(results, not_run)


@contextlib.contextmanager
def local_ledger(workdir: Path, timeout: float = 60.0) -> Iterator[Ledger]:
    """Start ``trainwarden serve`` over a fresh SQLite file on 127.0.0.1 (a free port), yield
    it, and stop it on exit."""
    import httpx

    from trainwarden.drill.sandbox_techniques import free_port

    state = workdir / "ledger-state"
    db_url = f"sqlite:///{workdir / 'ledger.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    import trainwarden

    src = str(Path(trainwarden.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    log = (workdir / "ledger-server.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "trainwarden",
            "serve",
            "--db",
            db_url,
            "--state-dir",
            str(state),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-deadman",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise DrillError(f"the local ledger server exited (log: {log.name})")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise DrillError(f"the local ledger server did not start (log: {log.name})")
            time.sleep(0.1)
        token = (state / "admin.token").read_text().strip()
        yield Ledger(url, token, db_url=db_url, state_dir=state)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


class DrillError(TrainWardenError):
    """The drill could not set itself up (ledger server, work folder)."""
