"""RNG watch: wrap the global seeding functions and fingerprint the global RNG states.

While at least one monitor is active, ``torch.manual_seed``, ``torch.random.manual_seed``,
``torch.cuda.manual_seed``, ``torch.cuda.manual_seed_all``, ``random.seed`` and
``numpy.random.seed`` are replaced by thin wrappers that call the original and then tell every
active monitor who called (a trimmed stack). ``numpy.random.default_rng(seed)`` is not wrapped:
it creates a new, independent generator and does not touch any global state.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import random
import threading
import traceback
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["SEED_TARGETS", "SeedCall", "rng_fingerprints", "seed_watch"]

SEED_TARGETS: tuple[tuple[str, str], ...] = (
    ("torch", "manual_seed"),
    ("torch.random", "manual_seed"),
    ("torch.cuda", "manual_seed"),
    ("torch.cuda", "manual_seed_all"),
    ("random", "seed"),
    ("numpy.random", "seed"),
)

SeedCall = tuple[str, tuple[Any, ...], list[str]]
Listener = Callable[[str, tuple[Any, ...], list[str]], None]

_MARK = "__trainwarden_seed_wrapper__"


def _caller_stack(limit: int = 12) -> list[str]:
    frames = traceback.extract_stack()[:-3]
    own = __name__.rsplit(".", 1)[0]
    keep = [f for f in frames if own.replace(".", "/") not in f.filename.replace("\\", "/")]
    return [f"{f.filename}:{f.lineno} in {f.name}: {f.line or ''}".strip() for f in keep[-limit:]]


class _SeedWatch:
    """Process-wide wrapper installer with reference counting over listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._originals: dict[tuple[str, str], Any] = {}
        self._wrappers: dict[tuple[str, str], Any] = {}
        self._local = threading.local()

    def _notify(self, target: str, args: tuple[Any, ...]) -> None:
        if getattr(self._local, "depth", 0) > 1:
            return  # torch.manual_seed calls torch.cuda.manual_seed_all: report the outer call
        stack = _caller_stack()
        for listener in list(self._listeners):
            listener(target, args, stack)

    def _make_wrapper(self, target: str, original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._local.depth = getattr(self._local, "depth", 0) + 1
            try:
                result = original(*args, **kwargs)
                self._notify(target, args + tuple(kwargs.values()))
                return result
            finally:
                self._local.depth -= 1

        setattr(wrapper, _MARK, True)
        return wrapper

    def add(self, listener: Listener) -> None:
        """Register ``listener(target, args, stack)``; installs the wrappers on first use."""
        with self._lock:
            self._listeners.append(listener)
            if len(self._listeners) > 1:
                return
            for mod_name, attr in SEED_TARGETS:
                try:
                    mod = importlib.import_module(mod_name)
                except ImportError:
                    continue
                original = getattr(mod, attr, None)
                if original is None:
                    continue
                key = (mod_name, attr)
                # torch.manual_seed and torch.random.manual_seed are one function: wrap it once.
                wrapper = next(
                    (w for k, w in self._wrappers.items() if self._originals[k] is original),
                    None,
                ) or self._make_wrapper(f"{mod_name}.{attr}", original)
                self._originals[key] = original
                self._wrappers[key] = wrapper
                setattr(mod, attr, wrapper)

    def remove(self, listener: Listener) -> None:
        """Unregister; the last removal restores every original still replaced by our wrapper."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
            if self._listeners:
                return
            for (mod_name, attr), wrapper in self._wrappers.items():
                mod = importlib.import_module(mod_name)
                if getattr(mod, attr, None) is wrapper:
                    setattr(mod, attr, self._originals[(mod_name, attr)])
            self._originals.clear()
            self._wrappers.clear()

    def tampered(self) -> list[str]:
        """Names of wrapped targets whose module attribute is no longer our wrapper."""
        with self._lock:
            out = []
            for (mod_name, attr), wrapper in self._wrappers.items():
                mod = importlib.import_module(mod_name)
                if getattr(mod, attr, None) is not wrapper:
                    out.append(f"{mod_name}.{attr}")
            return out


seed_watch = _SeedWatch()


def rng_fingerprints() -> dict[str, str]:
    """Short hashes of the global RNG states (torch CPU, CUDA if initialised, random, numpy).

    Cheap: the torch CPU state is a 5 KB byte tensor, the others are a few KB of integers.
    """
    out: dict[str, str] = {}
    out["torch"] = hashlib.blake2b(
        torch.random.get_rng_state().numpy().tobytes(), digest_size=8
    ).hexdigest()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        h = hashlib.blake2b(digest_size=8)
        for st in torch.cuda.get_rng_state_all():
            h.update(st.numpy().tobytes())
        out["cuda"] = h.hexdigest()
    out["random"] = hashlib.blake2b(repr(random.getstate()).encode(), digest_size=8).hexdigest()
    try:
        np_random = importlib.import_module("numpy.random")
        state = np_random.get_state(legacy=False)
        inner = state["state"]
        blob = bytes(inner["key"].tobytes()) + repr(inner.get("pos")).encode()
        out["numpy"] = hashlib.blake2b(blob, digest_size=8).hexdigest()
    except ImportError:
        pass
    return out
