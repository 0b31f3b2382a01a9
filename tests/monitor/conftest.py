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
def _deterministic() -> Iterator[None]:
    # One intra-op thread: the tiny models gain nothing from more, and a shared, loaded
    # machine makes multi-threaded kernels stall.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
