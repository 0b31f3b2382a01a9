"""Small structured inputs (manifests, keys, policies, snapshots, saved checkpoints) are read
through one bounded reader: a FIFO planted in their place cannot hang a command, and a sparse file
of many gigabytes (made in an instant with ``truncate``) cannot make it allocate that much. Each
command refuses with one line naming the file, exit 2 (a manifest: the HIGH finding it always
gave for an invalid one). The commands run in real subprocesses under an address-space limit, so
a reader that tried to hold the whole file would fail here instead of exhausting the machine."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden._internal.files import FileTooLargeError, NotRegularFileError, read_limited

HUGE = 16 << 30  # sparse: no disk blocks, 16 GiB to a reader


def _huge(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(HUGE)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _limited() -> None:
    # Enough address space for the interpreter and its imports, not for a 16 GiB read.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _cli(run_cli: RunCli, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # No traceback on request: what the user sees is what is checked.
    return run_cli(args, cwd=cwd, env={"TRAINWARDEN_DEBUG": ""}, preexec_fn=_limited)


def test_read_limited_refuses_pipes_and_oversized_files_without_reading_them(
    tmp_path: Path,
) -> None:
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 100)
    assert read_limited(exact, 100) == b"x" * 100
    with pytest.raises(FileTooLargeError, match="101 bytes, over the limit of 100"):
        exact.write_bytes(b"x" * 101)
        read_limited(exact, 100)
    with pytest.raises(FileTooLargeError) as e:
        read_limited(_huge(tmp_path / "huge"), 1 << 20)
    assert e.value.size == HUGE
    with pytest.raises(NotRegularFileError, match="named pipe"):
        read_limited(_fifo(tmp_path / "fifo"), 1 << 20)
    with pytest.raises(NotRegularFileError, match="directory"):
        read_limited(tmp_path, 1 << 20)


@pytest.fixture
def checkpoint(tmp_path: Path, run_cli: RunCli) -> Path:
    import torch

    p = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, p)
    # An unsigned manifest beside it, so that `manifest verify --pub` gets as far as the key.
    assert _cli(run_cli, ["manifest", "create", str(p)], tmp_path).returncode == 0
    return p


@pytest.mark.parametrize("plant", [_huge, _fifo])
def test_a_manifest_planted_as_a_huge_or_pipe_file_is_an_invalid_manifest(
    tmp_path: Path, checkpoint: Path, plant: object, run_cli: RunCli
) -> None:
    assert callable(plant)
    (tmp_path / "m.pt.manifest.json").unlink()
    manifest = plant(tmp_path / "m.pt.manifest.json")
    r = _cli(run_cli, ["manifest", "verify", str(checkpoint)], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    if plant is _huge:
        assert f"{manifest}: {HUGE} bytes, over the limit" in r.stdout + r.stderr
        assert "TWL-MAN-INVALID" in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["attest", "diff", "{huge}", "{huge}"], "cannot read snapshot"),
        (["attest", "diff", "{fifo}", "{fifo}"], "not a regular file"),
        (["manifest", "verify", "--pub", "{huge}", "{checkpoint}"], "cannot read the Ed25519"),
        (["manifest", "verify", "--pub", "{fifo}", "{checkpoint}"], "not a regular file"),
        (["scan", "--policy", "{huge}", "{checkpoint}"], "cannot read policy file"),
        (["scan", "--policy", "{fifo}", "{checkpoint}"], "not a regular file"),
        (["sandbox", "explain", "--policy", "{huge}"], "cannot read sandbox policy"),
        (["sandbox", "explain", "--policy", "{fifo}"], "not a regular file"),
        (["ledger", "verify", "--db", "{db}", "--saved", "{huge}"], "cannot read saved checkpoint"),
        (["ledger", "verify", "--db", "{db}", "--saved", "{fifo}"], "not a regular file"),
    ],
)
def test_every_small_input_is_read_within_a_limit(
    tmp_path: Path, checkpoint: Path, args: list[str], says: str, run_cli: RunCli
) -> None:
    names = {
        "huge": str(_huge(tmp_path / "huge")),
        "fifo": str(_fifo(tmp_path / "fifo")),
        "checkpoint": str(checkpoint),
        "db": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    r = _cli(run_cli, [a.format(**names) for a in args], tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert says in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") <= 1, r.stderr  # the error and at most a hint


# The replay audit reads what the job wrote: the saboteur's files.


def _chain(n: int) -> list[str]:
    from trainwarden.audit._recorder import chain_hash

    lines, prev = [], "0" * 64
    for step in range(n):
        rec: dict[str, object] = {"step": step, "prev": prev, "loss": 1.0}
        rec["hash"] = chain_hash(rec)
        prev = str(rec["hash"])
        lines.append(json.dumps(rec))
    return lines


def _bounded(fn: Callable[[], object]) -> object:
    """Run ``fn`` in this process, in a thread that must finish within 60 s (a reader that
    waited on a FIFO would not), allocating at most 32 MiB at its peak (one that held a planted
    file whole would allocate all of it)."""
    out: dict[str, object] = {}

    def run() -> None:
        tracemalloc.start()
        try:
            out["value"] = fn()
        except BaseException as e:  # handed back to the test's thread
            out["error"] = e
        finally:
            out["peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the reader waited on a pipe"
    peak = out["peak"]
    assert isinstance(peak, int) and peak < 32 << 20, f"peak {peak} bytes"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]


# In this process a planted file is 256 MiB (sparse): enough for the allocation to show, small
# enough that a reader holding it whole would not hurt the machine running the tests.
PLANTED = 256 << 20


def _planted(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(PLANTED)
    return path


def test_a_step_record_too_long_or_a_huge_file_breaks_the_chain_without_being_held(
    tmp_path: Path,
) -> None:
    from trainwarden.audit._replay import MAX_RECORD_LINE, read_chain

    good = _chain(3)
    steps_file = tmp_path / "steps.jsonl"
    steps_file.write_text("\n".join(good) + "\n" + "x" * (MAX_RECORD_LINE + 10) + "\n")
    steps, findings = read_chain(steps_file)
    assert sorted(steps) == [0, 1, 2]
    assert [f.location for f in findings] == [f"{steps_file}:4"]
    assert findings[0].rule_id == "TWR-RECORD-TAMPERED"
    huge = _planted(tmp_path / "huge.jsonl")
    got = _bounded(lambda: read_chain(huge))
    assert isinstance(got, tuple)
    steps, findings = got
    assert steps == {} and [f.location for f in findings] == [f"{huge}:1"]
    # Records up to the limit, their newlines beyond it, are read.
    steps_file.write_text("\n".join(good) + "\n")
    assert sorted(read_chain(steps_file)[0]) == [0, 1, 2]


@pytest.mark.parametrize("which", ["audit.json", "steps.jsonl", "events.jsonl"])
@pytest.mark.parametrize("plant", ["huge", "fifo"])
def test_an_audit_input_planted_as_a_huge_or_pipe_file_is_refused(
    tmp_path: Path, which: str, plant: str
) -> None:
    from trainwarden.audit import AuditError
    from trainwarden.audit._inputs import read_event_log
    from trainwarden.audit._replay import read_record

    run = tmp_path / "run"
    run.mkdir()
    (run / "audit.json").write_text(json.dumps({"audit_every": 1, "world_size": 1}))
    (run / "steps.jsonl").write_text("\n".join(_chain(2)) + "\n")
    (run / "events.jsonl").write_text('{"kind": "k"}\n')
    (run / which).unlink()
    (_planted if plant == "huge" else _fifo)(run / which)
    if which == "events.jsonl":
        with pytest.raises(AuditError, match="cannot read the event log"):
            _bounded(lambda: read_event_log(run / which))
    elif which == "steps.jsonl" and plant == "huge":
        got = _bounded(lambda: read_record(run))
        assert isinstance(got, tuple)
        _, steps, findings = got
        assert steps == {} and findings[0].rule_id == "TWR-RECORD-TAMPERED"
    else:
        with pytest.raises(AuditError, match="not an audit record"):
            _bounded(lambda: read_record(run))
