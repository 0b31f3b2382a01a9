"""Fixtures for the monitor tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from ._support import Run


@pytest.fixture
def make_run() -> Iterator[Callable[..., Run]]:
    """Factory for monitored runs; every monitor is closed at teardown (hooks and wrappers)."""
    runs: list[Run] = []

    def factory(model: nn.Module, opt: torch.optim.Optimizer, **kw: Any) -> Run:
        torch.manual_seed(0)
        run = Run(model, opt, **kw)
        runs.append(run)
        return run

    yield factory
    for r in runs:
        r.monitor.close()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
