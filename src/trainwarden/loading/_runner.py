"""Run a user's script (or module) as ``__main__`` with the load guard installed first.

Backs ``python -m trainwarden run [--guard block|warn] script.py ARGS`` (and ``torchrun ... -m
trainwarden run script.py``) for jobs whose code cannot be changed.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainwarden.loading._guard import install, uninstall
from trainwarden.loading._types import LoadError

if TYPE_CHECKING:
    from trainwarden._internal.sink import EventSink
    from trainwarden.scan._policy import Policy

__all__ = ["run_guarded"]


def run_guarded(
    target: str,
    args: list[str],
    *,
    mode: str = "block",
    module: bool = False,
    policy: Policy | None = None,
    sink: EventSink | None = None,
) -> None:
    """Install the guard, then run ``target`` (a script path, or a module with ``module=True``).

    ``sys.argv`` becomes ``[target, *args]`` and ``sys.path[0]`` the script's folder, as with
    ``python script.py``. Exceptions from the script propagate (``SystemExit`` included).
    """
    if not module:
        script = Path(target)
        if not script.is_file():
            raise LoadError(f"script {target} does not exist", hint="check the path")
    elif not target or importlib.util.find_spec(target.split(".")[0]) is None:
        # The top-level name is looked up without importing anything.
        raise LoadError(f"no module named {target!r}", hint="check the module name and sys.path")
    install(mode=mode, policy=policy, sink=sink)
    saved_argv, saved_path0 = list(sys.argv), sys.path[0] if sys.path else None
    try:
        if module:
            # Parent packages are imported here, under the guard, as runpy would import them.
            try:
                found = importlib.util.find_spec(target)
            except (ImportError, ValueError) as e:
                raise LoadError(f"cannot find module {target!r}: {e}") from e
            if found is None:
                raise LoadError(
                    f"no module named {target!r}", hint="check the module name and sys.path"
                )
            sys.argv = [target, *args]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target, *args]
            folder = os.path.dirname(os.path.abspath(target))
            if sys.path:
                sys.path[0] = folder
            else:
                sys.path.insert(0, folder)
            runpy.run_path(target, run_name="__main__")
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0
        uninstall()
