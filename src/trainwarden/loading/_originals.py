"""The unpickling entry points as they were before any TrainWarden guard patched them.

Captured once, at the first import of this module, so that the safe loader and the guard always
call the real implementations even while the guard has replaced the public names.
"""

from __future__ import annotations

import _pickle
import pickle
from typing import Any

__all__ = ["ORIGINALS"]


def _capture() -> dict[str, Any]:
    return {
        "pickle.Unpickler": pickle.Unpickler,
        "pickle._Unpickler": pickle._Unpickler,
        "pickle.load": pickle.load,
        "pickle.loads": pickle.loads,
        "pickle._load": pickle._load,  # type: ignore[attr-defined]
        "pickle._loads": pickle._loads,  # type: ignore[attr-defined]
        "_pickle.Unpickler": _pickle.Unpickler,
        "_pickle.load": _pickle.load,
        "_pickle.loads": _pickle.loads,
    }


ORIGINALS: dict[str, Any] = _capture()
