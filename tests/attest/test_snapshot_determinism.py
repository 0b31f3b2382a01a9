"""A snapshot of an unchanged environment is the same whether the hash cache is cold or warm."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from trainwarden.attest._cache import HashCache
from trainwarden.attest._snapshot import take_snapshot

from .venvs import Venv, build_wheel, pip_install


def _statement_bytes(venv: Venv, env: dict[str, str], cache: HashCache) -> bytes:
    snap = take_snapshot(str(venv.python), environ=env, cache=cache)
    # The creation time is the only field allowed to differ between two runs.
    snap = dataclasses.replace(snap, created="2000-01-01T00:00:00+00:00")
    return json.dumps(snap.to_statement(), separators=(",", ":")).encode()


def test_cold_and_warm_snapshots_are_byte_identical_with_record_owned_pth(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path
) -> None:
    venv = make_venv()
    # A distribution that ships a .pth (like setuptools' distutils-precedence.pth): its digest
    # comes from RECORD on a cold run and from the cache on a warm one.
    wheel = build_wheel(
        tmp_path,
        name="twpth",
        version="2.0",
        extra={"twpth-hook.pth": "import os\n", "sitecustomize.py": "X = 1\n"},
    )
    pip_install(venv.python, wheel)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    cold = _statement_bytes(venv, clean_env, HashCache(cache_dir / "h.bin"))
    warm = _statement_bytes(venv, clean_env, HashCache(cache_dir / "h.bin"))
    warm_again = _statement_bytes(venv, clean_env, HashCache(cache_dir / "h.bin"))
    uncached = _statement_bytes(venv, clean_env, HashCache(None))
    pth = json.loads(cold)["predicate"]["pth_files"]
    assert [p["owner"] for p in pth] == ["twpth"]
    assert pth[0]["sha256"] is not None
    assert [c["sha256"] is not None for c in json.loads(cold)["predicate"]["customize"]] == [True]
    assert cold == warm == warm_again == uncached
