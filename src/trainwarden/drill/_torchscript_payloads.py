"""TorchScript modules whose ``__setstate__`` creates the canary file at ``torch.jit.load``.

Kept in their own module (imported only when a drill sample is built) because TorchScript
compiles a class from its source file. The only side effect of loading an archive written here
is creating the canary file it was given.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

__all__ = ["archive"]


def _open_canary(path: str) -> torch.Tensor:
    return torch.from_file(path, True, 4, dtype=torch.uint8)


class _SetState(torch.nn.Module):
    def __init__(self, canary: str) -> None:
        super().__init__()
        self.path = canary
        self.buf = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.buf = torch.from_file(state[0], True, 4, dtype=torch.uint8)


class _Helper(torch.nn.Module):
    def __init__(self, canary: str) -> None:
        super().__init__()
        self.path = canary
        self.buf = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.buf = _open_canary(state[0])


class _Outer(torch.nn.Module):
    def __init__(self, canary: str) -> None:
        super().__init__()
        self.inner = _SetState(canary)
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(self.linear(x))
        return out


def archive(kind: str, canary: Path) -> bytes:
    """The bytes ``torch.jit.save`` writes for the payload module ``kind``."""
    module: torch.nn.Module
    if kind == "setstate":
        module = _SetState(str(canary))
    elif kind == "helper":
        module = _Helper(str(canary))
    elif kind == "submodule":
        module = _Outer(str(canary))
    else:
        raise ValueError(kind)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()
