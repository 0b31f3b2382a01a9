"""Replaying, outside the job: re-execute sampled intervals and compare with what the job recorded.

An interval is the ``audit_every`` steps between two checkpoints. The auditor loads the starting
checkpoint (manifest verified, through the safe loader), re-runs each step with the recorded batch
indices and RNG state, and compares, step by step, what the job said happened with what happens:
the batch contents, the hyperparameters, the RNG's continuity, every module's forward output,
every gradient and every state tensor, then the ending checkpoint.
"""

from __future__ import annotations

import importlib
import itertools
import json
import random
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from trainwarden._internal.files import LineTooLongError, read_limited, read_lines
from trainwarden.audit import _step
from trainwarden.audit._recorder import chain_hash, checkpoint_name, steps_name
from trainwarden.audit._types import AuditError, IntervalResult, Job, ReplayReport
from trainwarden.findings import Finding, Severity

__all__ = ["ledger_events", "load_factory", "read_chain", "read_meta", "read_record", "replay"]

Factory = Callable[[], Job]


def load_factory(spec: str) -> Factory:
    """Resolve ``module:function`` to the job factory it names."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise AuditError(f"job factory {spec!r} is not module:function", hint="e.g. mypkg.job:make")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise AuditError(f"cannot import job factory module {mod_name!r}: {e}") from e
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise AuditError(f"{spec!r} is not a callable in {mod_name!r}")
    return fn  # type: ignore[no-any-return]


class _Record:
    def __init__(self, meta: dict[str, Any], steps: dict[int, dict[str, Any]]) -> None:
        self.meta = meta
        self.steps = steps
        self.findings: list[Finding] = []


def read_record(
    run_dir: str | Path,
) -> tuple[dict[str, Any], dict[int, dict[str, Any]], list[Finding]]:
    """Read ``audit.json`` and ``steps.jsonl``; check the hash chain.

    Returns the metadata, the step records that the chain vouches for, and a finding for each
    break (a record edited, inserted, deleted or reordered after it was written).
    """
    meta = read_meta(run_dir)
    steps, findings = read_chain(Path(run_dir) / "steps.jsonl")
    return meta, steps, findings


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``audit.json``, checked for the fields the replay needs."""
    run = Path(run_dir)
    try:
        # Written by the job: read as a regular file of a sane size (a FIFO or a sparse file
        # planted there costs neither a hang nor the memory to hold it).
        meta = json.loads(read_limited(run / "audit.json", 1 << 20))
    except (OSError, ValueError, RecursionError) as e:
        raise AuditError(f"{run}: not an audit record ({e})", hint="give the run's run_dir") from e
    if not isinstance(meta, dict):
        raise AuditError(f"{run / 'audit.json'}: malformed audit metadata")
    every = meta.get("audit_every")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise AuditError(f"{run / 'audit.json'}: malformed audit metadata")
    world = meta.get("world_size", 1)
    if not isinstance(world, int) or not 1 <= world <= 4096:
        raise AuditError(f"{run / 'audit.json'}: malformed world_size {world!r}")
    threads = meta.get("threads")
    if threads is not None and (
        not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS
    ):
        # The replay runs with this many intra-op threads: a count the job made up (100,000)
        # crashes the auditor's process in its thread pool.
        raise AuditError(
            f"{run / 'audit.json'}: malformed threads {threads!r} (1-{MAX_THREADS})",
            hint="audit.json is the job's writing: a recorder writes the thread count it ran with",
        )
    return meta


# The most intra-op threads a recorded run may ask the replay for (more than any node's cores).
MAX_THREADS = 1024

# The longest step record line read (a record holds hashes and a few numbers: far shorter).
MAX_RECORD_LINE = 1 << 20


def read_chain(path: Path) -> tuple[dict[int, dict[str, Any]], list[Finding]]:
    """The step records of one file that its hash chain vouches for, and a finding per break."""
    steps: dict[int, dict[str, Any]] = {}
    findings: list[Finding] = []
    prev = "0" * 64
    # One line at a time, each at most MAX_RECORD_LINE bytes: a longer one is no record the
    # recorder wrote (it breaks the chain like any other edit).
    lines = read_lines(path, MAX_RECORD_LINE)
    n = 0
    while True:
        try:
            line: bytes | None = next(lines, None)
        except LineTooLongError:
            line = b""
        except OSError as e:
            if n:
                raise AuditError(f"{path}: cannot read line {n + 1} ({e})") from e
            raise AuditError(
                f"{path.parent}: not an audit record ({e})", hint="give the run's run_dir"
            ) from e
        if line is None:
            break
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and rec.get("hash") == chain_hash(rec)
        except (ValueError, TypeError, RecursionError):
            ok = False
        if not ok or rec.get("prev") != prev or rec.get("step") != n:
            findings.append(
                Finding(
                    "TWR-RECORD-TAMPERED",
                    Severity.CRITICAL,
                    f"step record on line {n + 1} was altered, inserted, removed or reordered "
                    "after it was written (hash chain broken); later records are not trusted",
                    f"{path}:{n + 1}",
                    {"line": n + 1},
                )
            )
            break
        steps[n] = rec
        prev = rec["hash"]
        n += 1
    return steps, findings


def _ledger_findings(
    run: Path,
    steps: Mapping[int, dict[str, Any]],
    events: Iterable[Mapping[str, Any]],
    run_id: Any = None,
    rank: int | None = None,
) -> list[Finding]:
    """Compare the chain hashes the job sent to its sink with the records on disk."""
    sent = _logged_steps(events, run_id, rank)
    out: list[Finding] = []
    on = f" on rank {rank}" if rank is not None else ""
    for s, rec in sorted(steps.items()):
        h = sent.get(s)
        if h is None:
            out.append(
                Finding(
                    "TWR-RECORD-UNANCHORED",
                    Severity.HIGH,
                    f"step {s}'s record{on} never reached the event log",
                    f"{run}@{s}",
                )
            )
            break
        if h != rec["hash"]:
            out.append(
                Finding(
                    "TWR-RECORD-TAMPERED",
                    Severity.CRITICAL,
                    f"step {s}'s record{on} differs from the one the job sent to the event log "
                    "(records were rewritten after the fact)",
                    f"{run}@{s}",
                    {"recorded": rec["hash"], "logged": h},
                )
            )
            break
    gone = sorted(s for s in sent if s not in steps)
    if gone and not out:
        # The recorder writes a record to disk before it sends its hash: a logged step with no
        # trusted record on disk was removed (or rewritten) afterwards, e.g. the records and
        # checkpoints after a sabotaged step deleted so that no interval covers it.
        out.append(
            Finding(
                "TWR-RECORD-TAMPERED",
                Severity.CRITICAL,
                f"step {gone[0]}'s record{on} reached the event log but is not among the trusted "
                f"records on disk ({len(gone)} logged step(s) missing: records were removed "
                "after the fact)",
                f"{run}@{gone[0]}",
                {"missing": len(gone), "first": gone[0], "last": gone[-1]},
            )
        )
    return out


def _logged_steps(
    events: Iterable[Mapping[str, Any]], run_id: Any = None, rank: int | None = None
) -> dict[int, str]:
    """Step -> chain hash of every ``audit.step`` event of this run (and rank)."""
    sent: dict[int, str] = {}
    for ev in events:
        # A JSONL sink line is flat ({"kind", "ts", **record}); a ledger entry nests the record.
        rec = ev.get("record") if isinstance(ev.get("record"), dict) else ev
        if (
            ev.get("kind") == "audit.step"
            and isinstance(rec, Mapping)
            and isinstance(rec.get("step"), int)
            and not isinstance(rec.get("step"), bool)
            and rec["step"] >= 0
            and rec.get("run_id") in (None, run_id)
            and (rank is None or rec.get("rank", 0) == rank)
        ):
            sent.setdefault(int(rec["step"]), str(rec.get("hash")))
    return sent


def _boundaries(disk: Iterable[int], every: int, recorded: int) -> list[int]:
    """The steps at which the run has (or should have) a checkpoint.

    The checkpoints on disk are the job's to delete, so the intervals are not taken from them
    alone: the recorder checkpoints step 0, every ``every``-th step and the last recorded step,
    and each of those up to the ``recorded`` steps that the records (or the event log) vouch
    for is a boundary whether its file is there or not (a missing one makes its intervals
    not replayable). Bounded by the records, not by the names of files someone planted.
    """
    points = set(disk)
    if recorded > 0:
        points.update(range(0, recorded, every))
        if recorded > max(points):
            points.add(recorded)
    return sorted(points)


def _monitor_count_findings(
    run: Path, steps: Mapping[int, dict[str, Any]], events: Iterable[Mapping[str, Any]]
) -> list[Finding]:
    """A run recorded under ``watch()``: the monitor's own count of optimizer steps (its
    ``monitor_stop`` event in the same sink) against the steps the record covers."""
    events = list(events)
    # Rank 0's count, paired with rank 0's record: a ledger run holds every rank's events (a
    # JSONL line carries its record's rank at the top, a ledger entry the rank that sent it).
    stops = [
        ev.get("record") if isinstance(ev.get("record"), dict) else ev
        for ev in events
        if ev.get("kind") == "monitor_stop" and ev.get("rank") in (None, 0)
    ]
    counts = [
        int(r["step"]) for r in stops if isinstance(r, Mapping) and type(r.get("step")) is int
    ]
    if not counts:
        return []  # no monitor: nothing to pair the record with
    # Several counts (a log that two runs wrote, or one someone added): the largest decides,
    # so an extra, smaller count cannot hide steps the monitor saw go unrecorded.
    seen = max(counts)
    if seen <= len(steps):
        return []
    return [
        Finding(
            "TWR-NOT-REPLAYABLE",
            Severity.HIGH,
            f"the monitor counted {seen} optimizer steps but the audit record covers "
            f"{len(steps)}: steps {len(steps)}-{seen - 1} were never recorded (the recorder "
            "was stopped or its hooks removed)",
            f"{run}@{len(steps)}",
            {"recorded": len(steps), "monitor_steps": seen},
        )
    ]


# The kinds of entry the replay reads from a ledger run: the step hashes, and the monitor's own
# count of steps (which shows a recorder stopped while training went on).
LEDGER_KINDS = ("audit.step", "monitor_stop")


def ledger_events(url: str, token: str, run: str) -> list[dict[str, Any]]:
    """Every entry of ledger run ``run`` of the :data:`LEDGER_KINDS`, read with a reader token."""
    from trainwarden.ledger._client import LedgerClient

    out: list[dict[str, Any]] = []
    client = LedgerClient(url, token)
    where = f"{client.url}/v1/entries"
    try:
        for kind in LEDGER_KINDS:
            after = -1
            while True:
                page = client.get("/v1/entries", run=run, kind=kind, after=after, limit=1000)
                rows = page.get("entries") if isinstance(page, dict) else None
                nxt = page.get("next_after") if isinstance(page, dict) else None
                if not isinstance(rows, list):
                    raise AuditError(f"{where}: the server's answer has no list of entries")
                for e in rows:
                    text = e.get("entry") if isinstance(e, dict) else None
                    try:
                        ev = json.loads(text) if isinstance(text, str) else None
                    except (ValueError, RecursionError):
                        ev = None
                    if not isinstance(ev, dict):
                        raise AuditError(
                            f"{where}: the server sent an entry that is not a JSON object"
                        )
                    out.append(ev)
                if nxt is None:
                    break
                # A page must move on, or a hostile server keeps this loop going for ever.
                if not isinstance(nxt, int) or isinstance(nxt, bool) or nxt <= after or not rows:
                    raise AuditError(f"{where}: the server's pages do not advance")
                after = nxt
    finally:
        client.close()
    return out


def _rng_state_bytes(blob: str) -> bytes:
    return _step.rng_state_bytes(blob)


class _Held:
    """A checkpoint's state as the records describe it, computed once however many ranks'
    records it is compared with (and only when one is)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._digests: dict[str, str] | None = None
        self._sched: str | None = None

    def unlike(self, record: Mapping[str, Any]) -> list[str]:
        """The first differing tensors, and ``schedule`` when the record carries a schedule
        digest that differs."""
        if self._digests is None:
            self._digests = _step.state_digests(self.job)
        bad = _first_diff(self._digests, record["state"])
        if "sched" in record:
            if self._sched is None:
                self._sched = _step.schedule_digest(self.job)
            if self._sched != record["sched"]:
                bad.append("schedule")
        return bad


def _first_diff(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _load_checkpoint(run: Path, step: int, manifest_key: Any) -> dict[str, Any]:
    from trainwarden.loading import load

    obj = load(
        run / "checkpoints" / checkpoint_name(step),
        manifest_key=manifest_key,
        require_manifest=True,
    )
    if not isinstance(obj, dict) or "model" not in obj or "optimizer" not in obj:
        raise AuditError(f"checkpoint of step {step} has no model/optimizer state")
    return obj


def _restore(job: Job, ck: Mapping[str, Any]) -> None:
    job.model.load_state_dict(ck["model"])
    job.optimizer.load_state_dict(ck["optimizer"])
    if job.scheduler is not None and "scheduler" in ck:
        job.scheduler.load_state_dict(ck["scheduler"])


def _relative_distance(job: Job, start: Mapping[str, Any], end: Mapping[str, Any]) -> float:
    """max over the replayed model's float tensors of |replayed - recorded end| /
    |recorded end - start| (every one of them, whatever the checkpoints hold)."""
    worst = 0.0
    for k, replayed in job.model.state_dict().items():
        if not replayed.is_floating_point():
            continue
        rec_end = end[k]
        rep = replayed.double()
        moved = float((rec_end.double() - start[k].double()).norm())
        err = float((rep - rec_end.double()).norm())
        worst = max(worst, err / (moved + 1e-12) if moved > 0 else (0.0 if err == 0 else 1e9))
    return worst


def _digests_of(grads: Mapping[str, torch.Tensor]) -> dict[str, str]:
    return {n: _step.tensor_digest(g) for n, g in grads.items()}


def _replay_interval(
    run: Path,
    factory: Factory,
    ranks: Sequence[Mapping[int, dict[str, Any]]],
    start: int,
    end: int,
    *,
    activations: bool,
    tolerance: float | None,
    manifest_key: Any,
    rng_continuity: bool = True,
) -> IntervalResult:
    """Replay steps ``[start, end)``; ``ranks[r]`` holds rank ``r``'s step records.

    With more than one rank, each rank's micro-batches are back-propagated from the same
    weights with that rank's RNG state, its local gradient is compared with the contribution the
    rank recorded, and the contributions are combined as the all-reduce does (each divided by
    the world size, then summed in rank order) before clipping and the update.
    """
    world = len(ranks)

    def diverged(
        step: int,
        where: str,
        tensors: Iterable[str] = (),
        detail: str = "",
        rank: int | None = None,
    ) -> IntervalResult:
        return IntervalResult(
            start, end, "diverged", step, where, tuple(tensors), detail, rank=rank
        )

    for r, steps in enumerate(ranks):
        missing = [s for s in range(start, end) if s not in steps]
        unrecorded = [s for s in range(start, end) if s in steps and steps[s].get("micro") is None]
        if unrecorded and not missing:
            s = unrecorded[0]
            return IntervalResult(
                start,
                end,
                "not-replayable",
                detail=f"step {s} has no record of its batches ("
                + str(steps[s].get("unrecorded") or "not recorded")
                + ")",
            )
        if missing:
            who = f" of rank {r}" if world > 1 else ""
            return IntervalResult(
                start,
                end,
                "not-replayable",
                detail=f"no trusted record{who} of step {missing[0]}",
                rank=r if world > 1 else None,
            )
    try:
        ck_start = _load_checkpoint(run, start, manifest_key)
        ck_end = _load_checkpoint(run, end, manifest_key)
    except Exception as e:  # any load failure makes the interval unreplayable
        detail = getattr(e, "message", None) or str(e)
        return IntervalResult(start, end, "not-replayable", detail=f"checkpoint: {detail}")
    job = factory()
    end_job = factory()
    try:
        _restore(job, ck_start)
        _restore(end_job, ck_end)
    except Exception as e:  # a checkpoint that does not fit the job is no state of this run
        return IntervalResult(
            start,
            end,
            "not-replayable",
            detail=f"checkpoint: cannot be restored into the job ({type(e).__name__}: {e})",
        )
    start_model = {k: v.detach().clone() for k, v in job.model.state_dict().items()}
    # Both checkpoints against the records, in every mode: the job wrote both, so they agree
    # to the bit whatever machine replays (a tolerance is for recomputation, not for this).
    if start > 0:
        held = _Held(job)
        for r, steps in enumerate(ranks):
            if start - 1 not in steps:
                continue
            bad = held.unlike(steps[start - 1])
            if bad:
                return diverged(
                    start,
                    "checkpoint",
                    bad,
                    f"the checkpoint of step {start} is not the state step {start - 1} recorded"
                    + (f" on rank {r}" if world > 1 else ""),
                    r if world > 1 else None,
                )
    specs = _rank_specs(job, world)
    tap = _step.ActivationTap(job.model) if activations else None

    def rank_of(r: int) -> int | None:
        return r if world > 1 else None

    rng_after: list[bytes | None] = [None] * world
    try:
        for s in range(start, end):
            contributions: list[dict[str, torch.Tensor]] = []
            for r, steps in enumerate(ranks):
                rec = steps[s]
                on = f" on rank {r}" if world > 1 else ""
                prev_rng = rng_after[r]
                if (
                    rng_continuity
                    and prev_rng is not None
                    and prev_rng != _rng_state_bytes(rec["rng"])
                ):
                    return diverged(
                        s,
                        "rng",
                        (),
                        f"the global RNG{on} was changed between step {s - 1} and step {s}",
                        rank_of(r),
                    )
                _step.set_rng_blob(rec["rng"])
                hp = _step.hyperparameters(job)
                if json.loads(json.dumps(hp)) != rec["hparams"]:
                    keys = sorted(
                        {
                            f"group{i}.{k}"
                            for i, (g, h) in enumerate(zip(hp, rec["hparams"], strict=False))
                            for k in set(g) | set(h)
                            if g.get(k) != h.get(k)
                        }
                    )
                    return diverged(
                        s,
                        "hyperparameters",
                        keys,
                        f"the job's schedule gives other values{on}",
                        rank_of(r),
                    )
                if specs is not None:
                    problem = _declared_data(specs[r], steps, s)
                    if problem is not None:
                        return diverged(s, "data", problem[0], f"{problem[1]}{on}", rank_of(r))
                batches = [
                    _step.collate(job, [job.dataset[i] for i in idx]) for idx in rec["micro"]
                ]
                for m, b in enumerate(batches):
                    if _step.batch_digest(b) != rec["batch"][m]:
                        return diverged(
                            s,
                            "data",
                            (f"micro-batch {m}",),
                            f"the batch the job trained on{on} is not the dataset's items at "
                            "the recorded indices (altered, reordered or substituted samples)",
                            rank_of(r),
                        )
                if tap is not None:
                    with tap.recording() as acts:
                        _step.accumulate(job, batches)
                else:
                    acts = []
                    _step.accumulate(job, batches)
                rng_after[r] = _rng_state_bytes(_step.rng_blob())
                if world == 1 and tolerance is None and tap is not None and "acts" in rec:
                    bad_act = _first_act_diff(acts, rec["acts"])
                    if bad_act is not None:
                        return diverged(s, "forward", *bad_act)
                local = {
                    n: p.grad.detach().clone()
                    for n, p in job.model.named_parameters()
                    if p.grad is not None
                }
                if world > 1 and tolerance is None:
                    if tap is not None and "acts" in rec:
                        bad_act = _first_act_diff(acts, rec["acts"])
                        if bad_act is not None:
                            names, detail = bad_act
                            return diverged(s, "forward", names, f"rank {r}: {detail}", r)
                    bad = _first_diff(_digests_of(local), rec.get("local", {}))
                    if bad:
                        return diverged(
                            s,
                            "backward",
                            bad,
                            f"rank {r}'s gradient contribution is not the gradient of its "
                            "recorded batch",
                            r,
                        )
                contributions.append(local)
            if world > 1:
                # What the all-reduce hands every rank: each contribution divided by the world
                # size, summed in rank order (exact for two ranks, where the sum commutes).
                for n, p in job.model.named_parameters():
                    if n in contributions[0]:
                        acc = contributions[0][n] / world
                        for c in contributions[1:]:
                            acc = acc + c[n] / world
                        p.grad = acc
            grads: dict[str, str] = {}

            def after_backward(g: dict[str, str] = grads) -> None:
                g.update(_step.grad_digests(job))

            _step.finish(job, after_backward)
            if tolerance is not None:
                continue
            state = _step.state_digests(job)
            off = {r: _first_diff(grads, steps[s]["grads"]) for r, steps in enumerate(ranks)}
            off = {r: bad for r, bad in off.items() if bad}
            if off and world == 1:
                return diverged(s, "backward", off[0], "gradients differ")
            if off:
                first = min(off)
                if len(off) == world:
                    # Every rank received the same wrong mean: the reduction itself was changed
                    # after the contributions were taken, and no record says on which rank.
                    return diverged(
                        s,
                        "all-reduce",
                        off[first],
                        "every rank's contribution reproduces, but the gradient all ranks "
                        "updated with is not their mean (the reduction was tampered with)",
                    )
                return diverged(
                    s,
                    "all-reduce",
                    off[first],
                    f"rank {first} updated with another gradient than the all-reduced mean of "
                    "the ranks' contributions",
                    first,
                )
            for r, steps in enumerate(ranks):
                bad = _first_diff(state, steps[s]["state"])
                if bad:
                    on = f" on rank {r}" if world > 1 else ""
                    return diverged(
                        s, "update", bad, f"the optimizer's update differs{on}", rank_of(r)
                    )
    finally:
        if tap is not None:
            tap.remove()
    if rng_continuity:
        # Across the checkpoint too: the next interval starts from its own record's RNG state,
        # so a reseed between this interval's last step and the next one is seen only here.
        for r, steps in enumerate(ranks):
            after = rng_after[r]
            nxt = steps.get(end)
            if after is not None and nxt is not None and after != _rng_state_bytes(nxt["rng"]):
                on = f" on rank {r}" if world > 1 else ""
                return diverged(
                    end,
                    "rng",
                    (),
                    f"the global RNG{on} was changed between step {end - 1} and step {end}",
                    rank_of(r),
                )
    # The schedule (hyperparameters, scheduler state) that the steps produced, and the one
    # the ending checkpoint and the last record hold: exact in every mode.
    if _step.schedule_digest(job) != _step.schedule_digest(end_job):
        return diverged(
            end,
            "checkpoint",
            ("schedule",),
            f"the checkpoint of step {end} holds another schedule (hyperparameters or "
            "scheduler state) than the steps produced",
        )
    held = _Held(end_job)
    for r, steps in enumerate(ranks):
        bad = held.unlike(steps[end - 1])
        if bad:
            return diverged(
                end,
                "checkpoint",
                bad,
                f"the checkpoint of step {end} is not the state step {end - 1} recorded"
                + (f" on rank {r}" if world > 1 else ""),
                r if world > 1 else None,
            )
    if tolerance is not None:
        dist = _relative_distance(job, start_model, end_job.model.state_dict())
        if dist > tolerance:
            return IntervalResult(
                start,
                end,
                "diverged",
                end - 1,
                "interval",
                (),
                f"replayed weights are {dist:.3g} of the interval's own movement away from "
                f"the recorded ones (tolerance {tolerance:g})",
                dist,
            )
        return IntervalResult(start, end, "reproduced", distance=dist)
    final = _step.state_digests(job)
    bad = _first_diff(final, _step.state_digests(end_job))
    if bad:
        return diverged(
            end, "checkpoint", bad, f"the checkpoint of step {end} is not what the steps produced"
        )
    return IntervalResult(start, end, "reproduced", distance=0.0)


def _recorded_by_hooks(meta: Mapping[str, Any], ranks: Sequence[Mapping[int, Any]]) -> bool:
    """Whether the run was recorded from hooks (each step then restarts from its own RNG
    state: no continuity check between steps).

    Decided by the chained records, which mark who wrote them: ``audit.json`` is the job's to
    rewrite, and claiming ``"recorded_by": "hooks"`` there must not switch the check off for
    a run that ``AuditRecorder.step`` recorded. Only records that carry no mark (written before
    records were marked) fall back to ``audit.json``.
    """
    marks = {rec.get("by") for steps in ranks for rec in steps.values()}
    if marks == {"hooks"}:
        return True
    if marks <= {None}:
        return meta.get("recorded_by") == "hooks"
    return False  # the recorder's mark, or a mix: keep every check


def _replay_guarded(
    run: Path,
    factory: Factory,
    ranks: Sequence[Mapping[int, dict[str, Any]]],
    start: int,
    end: int,
    **kw: Any,
) -> IntervalResult:
    """:func:`_replay_interval`, where a record the replay cannot use is the interval's result.

    The records are the job's writing: a field of the wrong type or shape (the chain vouches
    only for their order) must cost the interval, never the report of every other interval.
    """
    try:
        return _replay_interval(run, factory, ranks, start, end, **kw)
    except AuditError:
        raise  # the job factory or its declared data cannot be used: the whole replay stops
    except Exception as e:
        return IntervalResult(
            start,
            end,
            "not-replayable",
            detail=f"the records cannot be replayed ({type(e).__name__}: {e})"[:500],
        )


def _rank_specs(job: Job, world: int) -> list[Any] | None:
    """The job's declared data for every rank, or ``None`` when it declares none."""
    if job.data is None:
        return None
    from trainwarden.data._verify import DataSpec, for_rank

    if not isinstance(job.data, DataSpec):
        raise AuditError(f"Job.data must be a trainwarden.data.DataSpec, not {type(job.data)}")
    return [for_rank(job.data, r, world) for r in range(world)]


def _declared_data(
    spec: Any, steps: Mapping[int, dict[str, Any]], s: int
) -> tuple[tuple[str, ...], str] | None:
    """Why step ``s``'s recorded batches are not the declared ones (``None`` if they are).

    The step's batches are the declared sampler's batches numbered from the count of
    micro-batches all earlier steps consumed; every item must match the manifest.
    """
    from trainwarden.data._manifest import FileDataset, item_digest

    if any(t not in steps for t in range(s)):
        return (
            (),
            "earlier records are missing, so the step's place in the declared order is unknown",
        )
    k = sum(len(steps[t]["micro"] or ()) for t in range(s))
    for m, idx in enumerate(steps[s]["micro"]):
        declared = spec.batch_indices(k + m)
        if [int(i) for i in idx] != declared:
            return (
                (f"micro-batch {m}",),
                f"the batch indices are not the declared sampler's batch {k + m} "
                "(reordered, dropped, duplicated or substituted samples)",
            )
        for i in declared:
            ds = spec.dataset
            try:
                ok = (
                    ds.trusted_item(i, spec.manifest) is not None
                    if isinstance(ds, FileDataset)
                    else item_digest(ds[i]) == spec.manifest.digests[i]
                )
            except Exception:  # an unreadable or unhashable item is not a verified one
                ok = False
            if not ok:
                return (f"item {i}",), f"dataset item {i} does not match the data manifest"
    return None


def _first_act_diff(
    acts: list[tuple[str, str]], recorded_acts: list[list[str]]
) -> tuple[tuple[str, ...], str] | None:
    recorded = [tuple(a) for a in recorded_acts]
    for i, (mine, theirs) in enumerate(zip(acts, recorded, strict=False)):
        if mine != theirs:
            return (theirs[0],), f"call {i} of the forward"
    if len(acts) != len(recorded):
        return (), "a different number of module calls"
    return None


def replay(
    run_dir: str | Path,
    factory: Factory | str,
    *,
    samples: int | None = None,
    seed: int | None = None,
    tolerance: float | None = None,
    events: Iterable[Mapping[str, Any]] | None = None,
    manifest_key: Any | None = None,
    threads: int | None = None,
) -> ReplayReport:
    """Replay ``samples`` intervals (all when ``None``) of a recorded run, chosen with ``seed``.

    ``tolerance`` switches from bitwise comparison (same build, CPU) to the relative distance
    of the replayed weights from the recorded ones at the interval's end. ``events`` are the
    records the job sent to its event sink (e.g. read back from the ledger), used to check that
    the step records on disk are the ones that were logged. The replay runs with the intra-op
    thread count the job recorded (on the CPU, a different count changes how reductions are
    split and so the low bits); ``threads`` overrides it.
    """
    run = Path(run_dir)
    fac = load_factory(factory) if isinstance(factory, str) else factory
    meta = read_meta(run)
    world = int(meta.get("world_size", 1))
    ranks: list[dict[int, dict[str, Any]]] = []
    findings: list[Finding] = []
    recorded = 0
    if events is not None:
        events = list(events)
    for r in range(world):
        steps, broken = read_chain(run / steps_name(r, world))
        findings += broken
        recorded = max(recorded, len(steps))
        if events is not None:
            who = r if world > 1 else None
            findings += _ledger_findings(run, steps, events, meta.get("run_id"), who)
            # Steps logged without a gap from step 0: a count the log's size bounds, so a
            # forged step number cannot make the list of boundaries huge.
            logged = _logged_steps(events, meta.get("run_id"), who)
            recorded = max(recorded, next(s for s in itertools.count() if s not in logged))
        ranks.append(steps)
    hooks = _recorded_by_hooks(meta, ranks)
    if events is not None and hooks:
        findings += _monitor_count_findings(run, ranks[0], events)
    ck_dir = run / "checkpoints"
    ck_steps = sorted(
        int(p.name[5:13])
        for p in ck_dir.glob("step_*.pt")
        if p.name[5:13].isdigit() and len(p.name) == 16
    )
    intervals = list(itertools.pairwise(_boundaries(ck_steps, meta["audit_every"], recorded)))
    if not intervals:
        raise AuditError(f"{run}: fewer than two checkpoints, nothing to replay")
    if seed is None:
        seed = secrets.randbelow(2**31)
    chosen = intervals
    if samples is not None and samples < len(intervals):
        chosen = sorted(
            random.Random(seed).sample(  # noqa: S311 - reproducible; the seed is chosen after the run
                intervals, samples
            )
        )
    recorded_threads = meta.get("threads")
    use = threads if threads is not None else recorded_threads
    before = torch.get_num_threads()
    if isinstance(use, int) and use >= 1:
        torch.set_num_threads(use)
    try:
        results = tuple(
            _replay_guarded(
                run,
                fac,
                ranks,
                a,
                b,
                activations=bool(meta.get("activation_every")),
                tolerance=tolerance,
                manifest_key=manifest_key,
                # A loop recorded from hooks may draw from the RNG between steps (a sampler
                # seeding itself at an epoch's start): each step restarts from its own record.
                rng_continuity=not hooks,
            )
            for a, b in chosen
        )
    finally:
        torch.set_num_threads(before)
    return ReplayReport(
        str(run),
        seed,
        results,
        tuple(findings),
        {
            "run_id": meta.get("run_id"),
            "intervals_total": len(intervals),
            "steps": min(len(st) for st in ranks),
            "world_size": world,
        },
    )
