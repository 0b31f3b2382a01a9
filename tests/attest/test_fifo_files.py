"""A FIFO (or anything but a regular file) planted where verify reads never makes it wait: opening
a FIFO for reading blocks until someone writes to it, so one ``mkfifo`` in site-packages used to
hang ``attest verify`` for good. Each case runs the real CLI in a subprocess with a deadline (a
regression fails the test instead of hanging it) and expects a HIGH finding, exit 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .venvs import Venv


def _dist_info(venv: Venv) -> Path:
    return next(venv.site.glob("twdemo-*.dist-info"))


def _orphan_module(venv: Venv) -> Path:
    return venv.site / "planted.py"


def _pth(venv: Venv) -> Path:
    return venv.site / "zz-planted.pth"


def _record(venv: Venv) -> Path:
    return _dist_info(venv) / "RECORD"


def _metadata(venv: Venv) -> Path:
    return _dist_info(venv) / "METADATA"


def _installed_module(venv: Venv) -> Path:
    return venv.installed("twdemo/core.py")


def _bytecode(venv: Venv) -> Path:
    # bytecode of an orphan source, where Python would import it
    (venv.site / "loose.py").write_text("X = 1\n")
    (venv.site / "__pycache__").mkdir(exist_ok=True)
    tag = sys.implementation.cache_tag
    return venv.site / "__pycache__" / f"loose.{tag}.pyc"


_PLACES: dict[str, Callable[[Venv], Path]] = {
    "an orphan module": _orphan_module,
    "a .pth file": _pth,
    "a RECORD": _record,
    "a METADATA": _metadata,
    "an installed module": _installed_module,
    "bytecode": _bytecode,
}


@pytest.mark.parametrize("place", sorted(_PLACES))
def test_a_fifo_is_reported_without_waiting_for_a_writer(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    warm_cache_file: Path,
    tmp_path: Path,
    place: str,
) -> None:
    _verify_with_a_fifo(make_venv(), _PLACES[place], clean_env, warm_cache_file, tmp_path)


def test_a_fifo_is_reported_without_waiting_with_no_cache(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    warm_cache_file: Path,
    tmp_path: Path,
) -> None:
    # --no-cache hashes and parses everything itself: the same files, the same answer
    _verify_with_a_fifo(
        make_venv(), _orphan_module, clean_env, warm_cache_file, tmp_path, cached=False
    )


def _verify_with_a_fifo(
    venv: Venv,
    place: Callable[[Venv], Path],
    clean_env: dict[str, str],
    warm_cache_file: Path,
    tmp_path: Path,
    *,
    cached: bool = True,
) -> None:
    target = place(venv)
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    # the standard library already hashed and its bytecode compared (as on any used machine)
    shutil.copyfile(warm_cache_file, cache_dir / "attest-sha256.bin")
    argv = [
        sys.executable,
        "-m",
        "trainwarden",
        "attest",
        "verify",
        "--python",
        str(venv.python),
        "--format",
        "json",
    ] + (["--no-cache"] if not cached else [])
    env = {**clean_env, "TRAINWARDEN_CACHE_DIR": str(cache_dir)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout)
    high = [
        f
        for f in report["findings"]
        if f["severity"] in ("HIGH", "CRITICAL")
        and (f["location"] == str(target) or f["location"] == str(target.parent))
    ]
    assert high, [(f["rule_id"], f["severity"], f["location"]) for f in report["findings"]]
