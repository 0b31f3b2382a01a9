"""Manifests of a directory of files: the CLI, the FileDataset order, and what is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainwarden.data import (
    BatchVerifier,
    DataError,
    DataManifest,
    DataSpec,
    FileDataset,
    directory_manifest,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def make_dataset(root: Path, n: int = 12) -> Path:
    """``n`` small files (a label byte then three feature bytes), some in a subdirectory."""
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}.bin").write_bytes(bytes([i % 3, i, 2 * i, 3 * i]))
    return root


def decode(raw: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor(list(raw), dtype=torch.long)
    return t[1:], t[0]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainwarden", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


def test_cli_writes_a_manifest_in_the_datasets_order(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    proc = cli("data", "manifest", str(root), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    dest = Path(json.loads(proc.stdout)["manifest"])
    assert dest == tmp_path / "ds.manifest.json"
    m = DataManifest.load(dest)
    assert m == directory_manifest(root)
    assert len(m) == 12 and m.paths[0] == "a/001.bin" and m.paths[-1] == "b/010.bin"
    ds = FileDataset(root, decode)
    assert [p.relative_to(root).as_posix() for p in ds.paths] == list(m.paths)


def test_a_file_edited_after_the_manifest_is_caught(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    ds = FileDataset(root, decode)
    spec = DataSpec(ds, directory_manifest(root), batch_size=4, seed=1)
    assert BatchVerifier(spec).check_batch(next(iter(spec.loader()))) == []
    # Relabel every file after the manifest was written: the loader serves the new labels.
    for p in ds.paths:
        raw = bytearray(p.read_bytes())
        raw[0] = (raw[0] + 1) % 3
        p.write_bytes(bytes(raw))
    (f,) = BatchVerifier(spec).check_batch(next(iter(spec.loader())))
    assert f.rule_id == "TWD-ITEM-TAMPERED" and "differs from the manifest" in f.message


def test_a_file_added_after_the_manifest_is_refused(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    m = directory_manifest(root)
    (root / "a" / "999.bin").write_bytes(b"\\x00abc")
    with pytest.raises(DataError, match="13 items, its manifest 12"):
        DataSpec(FileDataset(root, decode), m, batch_size=4, seed=1)


def test_symlink_in_the_dataset_is_an_error_exit_2(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (tmp_path / "outside").write_bytes(b"secret")
    (root / "link.bin").symlink_to(tmp_path / "outside")
    proc = cli("data", "manifest", str(root))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "link.bin: is a symbolic link" in proc.stderr.replace("\\n", "")
    assert not (tmp_path / "ds.manifest.json").exists()


def test_manifest_inside_the_dataset_is_refused(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    proc = cli("data", "manifest", str(root), "-o", str(root / "m.json"))
    assert proc.returncode == 2
    assert not (root / "m.json").exists()


def test_malformed_manifest_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"format": 1, "kind": "files", "items": [{"path": "x"}]}))
    with pytest.raises(DataError, match="item 0 has no valid sha256"):
        DataManifest.load(bad)


@pytest.mark.parametrize("swap", ["fifo", "link"])
def test_an_item_swapped_for_a_pipe_or_a_link_after_the_walk_is_refused_not_read(
    tmp_path: Path, swap: str
) -> None:
    # The dataset's walk refused links and pipes; one swapped in afterwards must not hang the
    # loader (a FIFO waits for a writer) nor serve another file's bytes (a link).
    root = make_dataset(tmp_path / "ds")
    ds = FileDataset(root, decode)
    victim = ds.paths[3]
    victim.unlink()
    if swap == "fifo":
        os.mkfifo(victim)
    else:
        (tmp_path / "other").write_bytes(bytes([0, 9, 9, 9]))
        victim.symlink_to(tmp_path / "other")
    done: list[BaseException] = []

    def read() -> None:
        try:
            ds[3]
        except BaseException as e:  # handed back to the test
            done.append(e)

    import threading

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the dataset waited on a pipe"
    assert len(done) == 1 and isinstance(done[0], DataError), done
    assert str(victim) in str(done[0]) and "cannot read item 3" in str(done[0])


@pytest.mark.parametrize("plant", ["fifo", "huge"])
def test_a_manifest_planted_as_a_pipe_or_a_huge_file_is_a_data_error(
    tmp_path: Path, plant: str
) -> None:
    from trainwarden.data._manifest import DataLimits

    m = tmp_path / "m.json"
    if plant == "fifo":
        os.mkfifo(m)
    else:
        with open(m, "wb") as f:
            f.truncate(1 << 20)
    with pytest.raises(DataError, match=r"cannot read the data manifest|manifest larger than"):
        DataManifest.load(m, DataLimits(max_manifest_bytes=1000))
