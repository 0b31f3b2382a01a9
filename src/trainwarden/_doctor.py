"""Checks of the installation: interpreter, optional frameworks and which features they enable.

By default nothing is imported (a look-up of each package and its installed metadata, so the
report takes well under a second even with torch and transformers installed); ``deep=True``
imports every component and reports one that fails to import as broken. Only features whose
TrainWarden code is present are listed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Component", "DoctorReport", "Feature", "run_doctor"]

MIN_PYTHON = (3, 10)

# Optional components: import name -> distribution name.
_COMPONENTS: dict[str, str] = {
    "torch": "torch",
    "numpy": "numpy",
    "transformers": "transformers",
    "lightning": "lightning",
    "safetensors": "safetensors",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "cryptography": "cryptography",
    "psycopg": "psycopg",
    "py7zr": "py7zr",
}

# Features whose code ships separately: listed only when that TrainWarden module is present.
_FEATURE_MODULES: dict[str, str] = {
    "ledger service": "trainwarden.service",
    "PostgreSQL ledger backend": "trainwarden.ledger",
}

# Feature -> components it needs.
_FEATURES: dict[str, tuple[str, ...]] = {
    "scan (static model-file scanner)": (),
    "torch loading and training monitor": ("torch",),
    "Hugging Face Trainer integration": ("torch", "transformers"),
    "Lightning integration": ("torch", "lightning"),
    "signed manifests and snapshots": ("cryptography",),
    "ledger service": ("fastapi", "uvicorn", "cryptography"),
    "PostgreSQL ledger backend": ("psycopg",),
    "7z archive inspection": ("py7zr",),
}


@dataclass(frozen=True)
class Component:
    """An optional dependency: ``state`` is ``"ok"``, ``"absent"`` or ``"broken"``."""

    name: str
    state: str
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Feature:
    """A TrainWarden capability and whether the components it needs are usable."""

    name: str
    usable: bool
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DoctorReport:
    """What :func:`run_doctor` found; ``ok`` is False when anything is broken."""

    python: str
    python_executable: str
    platform: str
    trainwarden_version: str
    components: tuple[Component, ...]
    features: tuple[Feature, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``trainwarden doctor --format json``)."""
        return {
            "trainwarden": self.trainwarden_version,
            "python": self.python,
            "python_executable": self.python_executable,
            "platform": self.platform,
            "components": [
                {"name": c.name, "state": c.state, "version": c.version, "detail": c.detail}
                for c in self.components
            ],
            "features": [
                {"name": f.name, "usable": f.usable, "missing": list(f.missing)}
                for f in self.features
            ],
            "problems": list(self.problems),
            "ok": self.ok,
        }


def _probe(module: str, dist: str, deep: bool) -> Component:
    try:
        version: str | None = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if deep:
        return _import_probe(module, version)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        return Component(module, "broken", version, f"{type(e).__name__}: {e}")
    if spec is None:
        if version is None:
            return Component(module, "absent")
        return Component(module, "broken", version, "installed, but its module is not found")
    if version is None:
        return Component(module, "ok", None, "not installed as a distribution")
    where = _shadowed(spec, dist)
    if where:
        return Component(module, "broken", version, f"shadowed: {module} is imported from {where}")
    return Component(module, "ok", version)


def _shadowed(spec: importlib.machinery.ModuleSpec, dist: str) -> str | None:
    """Where ``spec`` loads from when that is outside the installed distribution, else None."""
    origin = spec.origin if spec.origin not in (None, "namespace") else None
    if origin is None and spec.submodule_search_locations:
        origin = next(iter(spec.submodule_search_locations), None)
    if origin is None:
        return None
    try:
        root = Path(str(importlib.metadata.distribution(dist).locate_file(""))).resolve()
    except (importlib.metadata.PackageNotFoundError, OSError, TypeError):
        return None
    here = Path(origin).resolve()
    return None if here.is_relative_to(root) else str(here.parent)


def _import_probe(module: str, version: str | None) -> Component:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module and version is None:
            return Component(module, "absent")
        return Component(module, "broken", version, f"{type(e).__name__}: {e}")
    except Exception as e:  # any failure to import means the install is broken
        return Component(module, "broken", version, f"{type(e).__name__}: {e}")
    return Component(module, "ok", version)


def run_doctor(*, deep: bool = False) -> DoctorReport:
    """Report the optional components and what works; never raises.

    ``deep`` imports each component (slow: seconds for torch and transformers) instead of
    only locating it.
    """
    from trainwarden._version import __version__

    problems: list[str] = []
    if sys.version_info < MIN_PYTHON:
        problems.append(
            f"Python {platform.python_version()} is too old; TrainWarden needs "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
        )
    components = tuple(_probe(mod, dist, deep) for mod, dist in _COMPONENTS.items())
    by_name = {c.name: c for c in components}
    for c in components:
        if c.state == "broken":
            problems.append(f"{c.name} is installed but cannot be imported ({c.detail})")
    features = []
    for fname, needs in _FEATURES.items():
        code = _FEATURE_MODULES.get(fname)
        if code is not None and importlib.util.find_spec(code) is None:
            continue  # not part of this installation: neither usable nor missing anything
        missing = tuple(n for n in needs if by_name[n].state != "ok")
        features.append(Feature(fname, not missing, missing))
    return DoctorReport(
        python=platform.python_version(),
        python_executable=sys.executable,
        platform=platform.platform(),
        trainwarden_version=__version__,
        components=components,
        features=tuple(features),
        problems=tuple(problems),
    )
