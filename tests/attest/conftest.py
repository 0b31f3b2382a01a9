"""Fixtures: a real virtual environment with a small wheel the tests build and install.

The template venv is built once per session (``python -m venv --without-pip`` plus ``pip
--python``) and copied for each test, so a test may damage its copy freely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from trainwarden.attest._cache import HashCache

from .basepy import BasePython, build_base_python
from .venvs import Venv, build_wheel, pip_install


@pytest.fixture(scope="session")
def template_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("venv-template")
    root = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    python = root / "bin" / "python"
    pip_install(python, build_wheel(base))
    site = next((root / "lib").glob("python*/site-packages"))
    return Venv(root, python, site)


@pytest.fixture
def make_venv(template_venv: Venv, tmp_path: Path) -> Callable[[], Venv]:
    """Factory: a fresh copy of the template venv for this test."""
    counter = [0]

    def make() -> Venv:
        counter[0] += 1
        root = tmp_path / f"venv{counter[0]}"
        shutil.copytree(template_venv.root, root, symlinks=True)
        site = next((root / "lib").glob("python*/site-packages"))
        return Venv(root, root / "bin" / "python", site)

    return make


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The job environment for a clean run: no loader variables but PATH."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


@pytest.fixture(scope="session")
def warm_cache_file(template_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hash cache that already holds the digests of the real interpreter's standard library
    (hashed once per session; entries are keyed on inode metadata, so an edited file misses)."""
    from trainwarden.attest._snapshot import take_snapshot

    d = tmp_path_factory.mktemp("warm-cache")
    d.chmod(0o700)
    take_snapshot(str(template_venv.python), environ={}, cache=HashCache(d / "hashes.bin"))
    return d / "hashes.bin"


@pytest.fixture
def cache(tmp_path: Path, warm_cache_file: Path) -> HashCache:
    """A private on-disk hash cache for this test, pre-filled with the standard library."""
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    shutil.copyfile(warm_cache_file, d / "hashes.bin")
    return HashCache(d / "hashes.bin")


@pytest.fixture
def base_python(template_venv: Venv, tmp_path: Path) -> BasePython:
    """A throwaway base interpreter (copied binary + small stdlib) with a venv holding the demo
    wheel; the test may edit its standard library."""
    return build_base_python(tmp_path / "py", template_venv.site)
