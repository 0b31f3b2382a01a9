"""Small structured inputs (manifests, keys, policies, snapshots, saved checkpoints) are read
through one bounded reader: a FIFO planted in their place cannot hang a command, and a sparse file
of many gigabytes (made in an instant with ``truncate``) cannot make it allocate that much. Each
command refuses with one line naming the file, exit 2 (a manifest: the HIGH finding it always
gave for an invalid one). The commands run in real subprocesses under an address-space limit, so
a reader that tried to hold the whole file would fail here instead of exhausting the machine."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden._internal.files import FileTooLargeError, NotRegularFileError, read_limited

ROOT = Path(__file__).resolve().parents[1]
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


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("TRAINWARDEN_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "trainwarden", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited,
        check=False,
    )


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
def checkpoint(tmp_path: Path) -> Path:
    import torch

    p = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, p)
    # An unsigned manifest beside it, so that `manifest verify --pub` gets as far as the key.
    assert _cli(["manifest", "create", str(p)], tmp_path).returncode == 0
    return p


@pytest.mark.parametrize("plant", [_huge, _fifo])
def test_a_manifest_planted_as_a_huge_or_pipe_file_is_an_invalid_manifest(
    tmp_path: Path, checkpoint: Path, plant: object
) -> None:
    assert callable(plant)
    (tmp_path / "m.pt.manifest.json").unlink()
    manifest = plant(tmp_path / "m.pt.manifest.json")
    r = _cli(["manifest", "verify", str(checkpoint)], tmp_path)
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
    tmp_path: Path, checkpoint: Path, args: list[str], says: str
) -> None:
    names = {
        "huge": str(_huge(tmp_path / "huge")),
        "fifo": str(_fifo(tmp_path / "fifo")),
        "checkpoint": str(checkpoint),
        "db": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    r = _cli([a.format(**names) for a in args], tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert says in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") <= 1, r.stderr  # the error and at most a hint
