"""What ``trainwarden.load`` accepts before it reads: regular files only, safetensors, and the
formats it refuses by name (GGUF, HDF5, empty files), in the library and the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import trainwarden
from trainwarden.loading import LoadError, UnsafeModelError

Cli = Callable[..., Any]  # the in-process `cli` fixture (tests/conftest.py)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _sd() -> dict[str, torch.Tensor]:
    return {
        "w": torch.randn(4, 8),
        "b": torch.arange(5, dtype=torch.int64),
        "h": torch.randn(3).to(torch.bfloat16),
        "e": torch.empty(0, 3),
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(sorted(a)) == list(sorted(b)) and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


@pytest.mark.parametrize("mmap", [False, True])
def test_bundled_safetensors_example_loads(mmap: bool) -> None:
    from safetensors.torch import load_file

    assert _same(
        trainwarden.load(EXAMPLES / "tiny.safetensors", mmap=mmap),
        load_file(str(EXAMPLES / "tiny.safetensors")),
    )


@pytest.mark.parametrize("mmap", [False, True])
def test_safetensors_round_trip(tmp_path: Path, mmap: bool) -> None:
    sd = _sd()
    save_file(sd, str(tmp_path / "m.safetensors"))
    assert _same(trainwarden.load(tmp_path / "m.safetensors", mmap=mmap), sd)


def _overlapping_safetensors(path: Path) -> None:
    # Two tensors claim the same bytes: a loader-differential vector the library also rejects.
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 8)


@pytest.mark.parametrize("mmap", [False, True])
def test_malformed_safetensors_is_refused(tmp_path: Path, mmap: bool) -> None:
    p = tmp_path / "bad.safetensors"
    _overlapping_safetensors(p)
    with pytest.raises((LoadError, UnsafeModelError)):
        trainwarden.load(p, mmap=mmap)


def test_safetensors_suffix_on_a_pickle_still_goes_through_the_scanner(
    tmp_path: Path, payload_bytes: bytes
) -> None:
    # Decided by content: a pickle named .safetensors is unpickled only after the scan.
    p = tmp_path / "model.safetensors"
    p.write_bytes(payload_bytes)
    with pytest.raises(UnsafeModelError):
        trainwarden.load(p)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"GGUF\x03\x00\x00\x00" + bytes(40), "GGUF file: not a format trainwarden.load reads"),
        (b"\x89HDF\r\n\x1a\n" + bytes(40), "HDF5 (Keras .h5) file: not a format"),
        (b"", "the file is empty (0 bytes)"),
    ],
)
def test_unreadable_formats_are_named(
    tmp_path: Path, content: bytes, needle: str, mmap: bool
) -> None:
    p = tmp_path / "model.bin"
    p.write_bytes(content)
    with pytest.raises(LoadError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        trainwarden.load(p, mmap=mmap)


def _fifo(tmp_path: Path) -> Path:
    p = tmp_path / "pipe.pt"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("mmap", [False, True])
def test_fifo_is_refused_without_opening_it_for_a_blocking_read(tmp_path: Path, mmap: bool) -> None:
    p = _fifo(tmp_path)
    with pytest.raises(LoadError, match=r"not a regular file \(a named pipe \(FIFO\)\)"):
        trainwarden.load(p, mmap=mmap)


@pytest.mark.parametrize("mmap", [False, True])
def test_character_device_is_refused_not_read(mmap: bool) -> None:
    # /dev/zero never ends: reading it first would report a "changed size" or exhaust memory.
    with pytest.raises(LoadError, match=r"not a regular file \(a character device\)"):
        trainwarden.load("/dev/zero", mmap=mmap)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"not a regular file \(a directory\)"):
        trainwarden.load(tmp_path)


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["load"], "load"),
        (["manifest", "create"], "hash"),
        (["scan"], "scan"),
    ],
)
def test_cli_refuses_fifo_with_one_message(
    cli: Cli, tmp_path: Path, argv: list[str], verb: str
) -> None:
    p = _fifo(tmp_path)
    r = cli([*argv, str(p)])
    assert r.returncode == 2, r.stderr
    assert f"cannot {verb} {p}: not a regular file (a named pipe (FIFO))" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["pipe.pt"]


def test_cli_load_dev_zero_and_gguf_exit_2(cli: Cli, tmp_path: Path) -> None:
    r = cli(["load", "/dev/zero"])
    assert r.returncode == 2
    assert "not a regular file (a character device)" in r.stderr
    assert "changed size" not in r.stderr
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(40))
    r = cli(["load", str(g)])
    assert r.returncode == 2
    assert "not a format trainwarden.load reads" in r.stderr
    assert "safetensors" in r.stderr  # the hint lists what it does read


def test_cli_load_bundled_safetensors(cli: Cli) -> None:
    r = cli(["load", "--format", "json", str(EXAMPLES / "tiny.safetensors")])
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["format"] == "safetensors" and data["refused"] is False


def test_the_limits_of_the_policy_a_load_is_given_are_the_limits_it_judges_by(
    tmp_path: Path, cli: Cli
) -> None:
    # A policy that tightens a limit (here: opcodes) must tighten it for loading as it does for
    # scanning; the loader's static pass used to judge every pickle by the default limits.
    import pickle

    from trainwarden.scan._policy import Policy

    path = tmp_path / "long.pkl"
    path.write_bytes(pickle.dumps(list(range(100_000)), protocol=2))
    tight = tmp_path / "tight.toml"
    tight.write_text("[trainwarden]\n[limits]\nmax_opcodes = 100\n")
    assert trainwarden.load(path) == list(range(100_000))
    with pytest.raises(UnsafeModelError) as got:
        trainwarden.load(path, policy=Policy.from_file(tight))
    assert any(f.rule_id == "TWS-PKL-LIMIT" for f in got.value.findings)
    r = cli(["load", str(path), "--policy", str(tight)])
    assert r.returncode == 1 and "TWS-PKL-LIMIT" in r.stdout + r.stderr


def test_the_load_summary_shows_keys_briefly_whatever_the_file_chose(
    tmp_path: Path, cli: Cli
) -> None:
    # The keys are the file's: a megabyte-long key, an integer too long for str(), bytes.
    import pickle

    path = tmp_path / "keys.pkl"
    big = 1 << 20_000
    path.write_bytes(pickle.dumps({"k" * 1_000_000: 1, big: 2, b"\x00" * 1000: 3, 7: 4}))
    r = cli(["load", str(path)])
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) < 2000, len(r.stdout)
    assert "with 4 keys: " in r.stdout and "<an integer of 20001 bits>" in r.stdout
    assert ", 7" in r.stdout
    r = cli(["load", str(path), "--format", "json"])
    assert r.returncode == 0 and len(r.stdout) < 4000
