"""Fixtures for the safe-loading tests: a canary, a payload pickle, the guard.

Every payload here would, at most, create the canary file under the test's tmp_path; every test
that handles one asserts the canary never appeared.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trainwarden.loading import _guard as guard_mod

from ._payloads import SystemPayload


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """Path of the canary file; the fixture itself also checks it never appeared."""
    path = tmp_path / "CANARY"
    yield path
    assert not path.exists(), "a payload ran: the canary file was created"


@pytest.fixture
def payload_bytes(canary: Path) -> bytes:
    """A raw pickle that would create the canary via os.system."""
    return pickle.dumps(SystemPayload(canary), protocol=2)


@pytest.fixture
def guard() -> Iterator[Callable[..., guard_mod.Guard]]:
    """Factory installing the process-wide guard; always uninstalled after the test."""

    def install(**kw: Any) -> guard_mod.Guard:
        return guard_mod.install(**kw)

    try:
        yield install
    finally:
        guard_mod.uninstall()
