"""A throwaway base interpreter the tests own: the real CPython binary copied next to a small
standard library (only the modules the attestation helpers import, plus ``random.py``), and a
venv on top of it. Tests edit this copy freely; the real interpreter is never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

_PROBE = """
import __future__, importlib.machinery, importlib.util, json, marshal, os, platform, site, sys
import sysconfig, typing
sysconfig.get_paths(); platform.platform(); site.getsitepackages()
print(json.dumps(sorted({getattr(m, "__file__", None) or "" for m in sys.modules.values()})))
"""


@dataclass(frozen=True)
class BasePython:
    """The copied base (``prefix``, its ``stdlib`` and ``lib-dynload``) and a venv on it."""

    prefix: Path
    stdlib: Path
    python: Path
    venv: Path
    venv_python: Path
    site: Path


def build_base_python(root: Path, site_template: Path) -> BasePython:
    """Build the base under ``root`` and a venv whose site-packages is a copy of
    ``site_template``."""
    real_stdlib = Path(sysconfig.get_paths()["stdlib"])
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    exe = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    out = subprocess.run(
        [str(exe), "-I", "-S", "-B", "-c", _PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    needed = [Path(p) for p in json.loads(out.stdout) if p]
    prefix = root / "base"
    stdlib = prefix / "lib" / ver
    (stdlib / "lib-dynload").mkdir(parents=True)
    (prefix / "bin").mkdir()
    shutil.copy2(exe, prefix / "bin" / ver)
    shutil.copytree(real_stdlib / "encodings", stdlib / "encodings", ignore=_no_pycache)
    for p in [*needed, real_stdlib / "random.py", real_stdlib / "os.py"]:
        try:
            rel = p.relative_to(real_stdlib)
        except ValueError:
            continue
        if "__pycache__" in rel.parts:
            continue
        dest = stdlib / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(prefix / "bin" / ver)
    (venv / "pyvenv.cfg").write_text(
        f"home = {prefix / 'bin'}\ninclude-system-site-packages = false\n"
        f"version = {sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}\n"
    )
    site = venv / "lib" / ver / "site-packages"
    shutil.copytree(site_template, site, symlinks=True)
    return BasePython(prefix, stdlib, prefix / "bin" / ver, venv, venv / "bin" / "python", site)


def _no_pycache(_: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]
