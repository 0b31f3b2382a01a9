"""Facts only the target interpreter knows (version, prefixes, site directories), printed as JSON.

This file is executed as a script by the interpreter being attested (``python -I -S -B
collector.py``): it imports nothing from trainwarden and runs no ``.pth`` file or
``sitecustomize``, so attesting an interpreter cannot execute the hooks being attested.

Every verify waits for it, so it imports only what it needs and starts no other program: the
platform is read from ``os.uname()`` and the C library's own version string (what the standard
``platform`` module reports, without the processor name it gets by running ``uname -p``), and
the JSON is written by :func:`dumps` (the ``json`` module and the regular expressions it
imports cost more than the rest of this script).
"""

from __future__ import annotations

import importlib.machinery
import os
import site
import sys
import sysconfig

# The short escapes json.dumps writes (every other character outside printable ASCII: \uXXXX).
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def _string(x: str) -> str:
    if x.isascii() and x.isprintable() and '"' not in x and "\\" not in x:
        return '"' + x + '"'
    out = ['"']
    for ch in x:
        o = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            o -= 0x10000
            out.append(f"\\u{0xD800 | (o >> 10):04x}\\u{0xDC00 | (o & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def dumps(obj: object) -> str:
    """JSON text of ``obj`` (dicts with string keys, lists, tuples, strings, integers, booleans,
    None), exactly as ``json.dumps`` writes it with its defaults."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        return _string(obj)
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(dumps(x) for x in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(_string(k) + ": " + dumps(v) for k, v in obj.items()) + "}"
    raise TypeError(f"not JSON: {type(obj).__name__}")


def _platform_name(uname: os.uname_result) -> str:
    """``platform.platform()`` on Linux without the processor name: system, release, machine
    and the C library (``with-glibc2.36``), cleaned as the platform module cleans it."""
    parts = [uname.sysname, uname.release, uname.machine]
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name (musl)
        libc = ""
    words = libc.split(maxsplit=1)
    parts += ["with", "".join(words) if len(words) == 2 else ""]
    text = "-".join(x.strip() for x in parts if x)
    for ch in ' /\\:;"()':
        text = text.replace(ch, "_" if ch == " " else "-")
    text = text.replace("unknown", "")
    while "--" in text:
        text = text.replace("--", "-")
    return text.rstrip("-")


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
    uname = os.uname()
    return {
        "executable": sys.executable,
        "realpath": os.path.realpath(sys.executable),
        # What platform.python_version() reads: the first word of sys.version.
        "version": sys.version.split()[0],
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
            "system": uname.sysname,
            "release": uname.release,
            "machine": uname.machine,
            "platform": _platform_name(uname),
            "sysconfig_platform": sysconfig.get_platform(),
            "node": uname.nodename,
        },
    }


if __name__ == "__main__":
    sys.stdout.write(dumps(collect()))
