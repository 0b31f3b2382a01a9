"""Facts only the target interpreter knows (version, prefixes, site directories), printed as JSON.

This file is executed as a script by the interpreter being attested (``python -I -S -B
collector.py``): it imports nothing from trainwarden and runs no ``.pth`` file or
``sitecustomize``, so attesting an interpreter cannot execute the hooks being attested.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import platform
import site
import sys
import sysconfig


def _read_pyvenv_cfg() -> tuple[str | None, dict[str, str]]:
    # Mirrors site.venv(), which -S skips: a pyvenv.cfg next to the executable or one level up.
    exe_dir = os.path.dirname(sys.executable)
    for candidate in (
        os.path.join(exe_dir, "pyvenv.cfg"),
        os.path.join(os.path.dirname(exe_dir), "pyvenv.cfg"),
    ):
        if os.path.isfile(candidate):
            conf: dict[str, str] = {}
            with open(candidate, encoding="utf-8") as f:
                for line in f:
                    key, sep, value = line.partition("=")
                    if sep:
                        conf[key.strip().lower()] = value.strip()
            return os.path.dirname(candidate), conf
    return None, {}


def _magic_number() -> bytes:
    # importlib.util (and the contextlib and typing it imports) is a few ms of this start-up
    # that every verify waits for; the frozen loader module already holds the number.
    try:
        from importlib._bootstrap_external import MAGIC_NUMBER
    except ImportError:  # pragma: no cover - every CPython this runs on has it
        from importlib.util import MAGIC_NUMBER
    return bytes(MAGIC_NUMBER)


def collect() -> dict[str, object]:
    """Return what ``site`` would set up for a normal (non-isolated) run of this interpreter."""
    venv_dir, conf = _read_pyvenv_cfg()
    system_site = conf.get("include-system-site-packages", "true").lower() == "true"
    prefixes: list[str] = []
    if venv_dir is not None:
        prefixes.append(venv_dir)
        if system_site:
            prefixes.extend(p for p in (sys.base_prefix, sys.base_exec_prefix) if p not in prefixes)
    else:
        prefixes.extend(p for p in (sys.prefix, sys.exec_prefix) if p not in prefixes)
    venv_sites = site.getsitepackages([venv_dir]) if venv_dir is not None else []
    system_sites = (
        site.getsitepackages([p for p in prefixes if p != venv_dir])
        if (venv_dir is None or system_site)
        else []
    )
    user_site_enabled = (
        not os.environ.get("PYTHONNOUSERSITE")
        and (venv_dir is None or system_site)
        and (
            not hasattr(os, "getuid")
            or (os.getuid() == os.geteuid() and os.getgid() == os.getegid())
        )
    )
    return {
        "executable": sys.executable,
        "realpath": os.path.realpath(sys.executable),
        "version": platform.python_version(),
        "version_full": sys.version,
        "implementation": sys.implementation.name,
        "cache_tag": sys.implementation.cache_tag,
        "magic_number": _magic_number().hex(),
        "prefix": venv_dir or sys.prefix,
        "base_prefix": sys.base_prefix,
        "venv": venv_dir is not None,
        "include_system_site_packages": system_site,
        "stdlib_path": [p for p in sys.path if p],
        "stdlib_module_names": sorted(getattr(sys, "stdlib_module_names", ())),
        "extension_suffixes": list(importlib.machinery.EXTENSION_SUFFIXES),
        "venv_site_packages": venv_sites,
        "system_site_packages": system_sites,
        "user_site": site.getusersitepackages(),
        "user_site_enabled": bool(user_site_enabled),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "sysconfig_platform": sysconfig.get_platform(),
            "node": platform.node(),
        },
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(collect()))
