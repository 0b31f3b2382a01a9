"""Fixtures for the safe-loading tests: benign payload builders, a canary, the guard.

Every payload here would, at most, create the canary file under the test's tmp_path; every test
that handles one asserts the canary never appeared.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trainwarden.loading import guard as guard_mod


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def call_pickle(module: str, name: str, *args: str) -> bytes:
    """A protocol-2 pickle, written opcode by opcode, that calls ``module.name(*args)``."""
    body = b"\x80\x02" + _global(module, name) + b"(" + b"".join(_str(a) for a in args)
    return body + b"tR."


class SystemPayload:
    """Pickles to ``os.system("touch CANARY")`` (benign: it would only create the canary)."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.canary}",))


class ExecPayload:
    """Pickles to ``exec("open(CANARY, 'w').close()")``."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.canary)!r}, 'w').close()",))


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
