"""Classes the closed-set decision tests name in their pickles.

``Tripwire`` stands for a class the user's policy trusts to be *constructed*: every method a
constructor could run on a value handed to it (``__repr__``, ``__str__``, ``__iter__``,
``__index__``, ``__eq__``) creates the canary named by its ``path`` attribute, so a test sees
whether the closed set ran any of them. Its hash stays ``object.__hash__`` so that building a
dict around it runs none of its code.
"""

from __future__ import annotations

import collections
import enum
from pathlib import Path
from typing import Any


class Tripwire:
    path = ""

    def _fire(self) -> str:
        Path(self.path).write_text("fired")
        return "fired"

    def __repr__(self) -> str:
        return self._fire()

    def __str__(self) -> str:
        return self._fire()

    def __iter__(self) -> Any:
        self._fire()
        return iter(())

    def __index__(self) -> int:
        self._fire()
        return 1

    def __eq__(self, other: object) -> bool:
        self._fire()
        return False

    __hash__ = object.__hash__


class Plain:
    """No ``__new__``, ``__setstate__`` or ``__setattr__`` of its own."""


class Slotted:
    __slots__ = ("a", "b")


class Stateful:
    """Its own ``__setstate__`` (run only when the user's policy trusts the class)."""

    def __setstate__(self, state: Any) -> None:
        self.seen = ("setstate", state)


class Bag(list[Any]):
    """Its own ``append`` (called only when the user's policy trusts the class)."""

    def append(self, item: Any) -> None:
        super().append(("bagged", item))


class Sized:
    """Its own ``__new__`` (called only when the user's policy trusts the class)."""

    n: int

    def __new__(cls, n: int) -> Sized:
        self = super().__new__(cls)
        self.n = n
        return self


def make() -> str:
    """A function, not a class: never allocated, trusted or not (called when trusted)."""
    return "made"


class Guarded:
    """Its own ``__setattr__`` (which slot state must not run)."""

    __slots__ = ("a",)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AssertionError("Guarded.__setattr__ ran")


Point = collections.namedtuple("Point", "x y")


class Wrapped(int):
    """A value type whose ``__new__`` is the builtin one, held in a staticmethod."""

    __new__ = staticmethod(int.__new__)  # type: ignore[assignment]


class Shape(enum.Enum):
    """An enum whose member's value is unhashable (found by comparison, not by hash)."""

    SQUARE = [4]  # noqa: RUF012 (an enum member, not a mutable class attribute)


class Tally:
    """Its own ``append`` and no ``extend`` (APPENDS then appends item by item)."""

    items: list[Any]

    def append(self, item: Any) -> None:
        # unpickling allocates without __init__
        self.__dict__.setdefault("items", []).append(("tallied", item))


class Tags(set[Any]):
    """A set subclass with its own ``add`` (ADDITEMS calls it only when trusted)."""

    def add(self, item: Any) -> None:
        super().add(("tag", item))


def mark(path: str) -> str:
    """A user-allowed function with a side effect: it creates the file at ``path``."""
    Path(path).write_text("ran")
    return "marked"
