"""What each loader-affecting environment variable actually changes, rated by that effect.

A variable is judged by what it does on this machine, not by its name: a ``PYTHONPATH`` entry
that shadows an installed or standard module is HIGH, one that only adds new modules is MEDIUM,
one that does not exist is LOW. Cache directories that compiled code is loaded from
(TorchInductor, Triton, torch extensions, Hugging Face remote-code modules, the CUDA JIT cache,
``PYTHONPYCACHEPREFIX``) are resolved the way the library resolves them (``TMPDIR``, ``HOME``,
``XDG_CACHE_HOME``, ...) and are HIGH when another user can write or pre-create them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainwarden.attest._syspath import Shadow

__all__ = ["EnvEffect", "resolve_effects", "unsafe_reason"]

_SYSTEM_LIB_DIRS = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/lib",
)


@dataclass(frozen=True)
class EnvEffect:
    """One resolved effect: the ``variable`` that decided it (``""``: the library's default),
    the ``severity`` name, a sentence saying what changes, and the facts behind it."""

    variable: str
    severity: str
    effect: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form used in the snapshot predicate."""
        return {
            "variable": self.variable,
            "severity": self.severity,
            "effect": self.effect,
            "evidence": dict(self.evidence),
        }


def _others_write(st: os.stat_result, uid: int) -> bool:
    return st.st_uid not in (uid, 0) or bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def unsafe_reason(path: str, uid: int) -> str:
    """Why a user other than ``uid`` or root can put files at ``path`` ("" if none can): the
    path or a directory above it is theirs or group/world-writable (a sticky directory protects
    what ``uid`` or root owns in it), or the path does not exist yet and another user may create
    it first."""
    literal = os.path.abspath(path)
    real = os.path.realpath(literal)
    return _unsafe_chain(literal, uid) or (_unsafe_chain(real, uid) if real != literal else "")


def _unsafe_chain(p: str, uid: int) -> str:
    cur = p
    while not os.path.lexists(cur):
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    try:
        st = os.stat(cur)
    except OSError as e:
        return f"{cur} cannot be checked ({e.strerror or e})"
    if cur != p and _others_write(st, uid):
        return f"{p} does not exist and another user can create it first in {cur}"
    node, first, child_uid = cur, True, st.st_uid
    while True:
        try:
            st = os.stat(node)
        except OSError as e:
            return f"{node} cannot be checked ({e.strerror or e})"
        if first and _others_write(st, uid):
            mode = st.st_mode & 0o7777
            return f"{node} is writable by another user (owner uid {st.st_uid}, mode {mode:o})"
        if not first and _others_write(st, uid):
            sticky = bool(st.st_mode & stat.S_ISVTX) and child_uid in (uid, 0)
            if not sticky:
                return f"{node}, above {p}, lets another user replace what is below it"
        first, child_uid = False, st.st_uid
        parent = os.path.dirname(node)
        if parent == node:
            return ""
        node = parent


def _user(uid: int) -> tuple[str, str]:
    try:
        import pwd

        pw = pwd.getpwuid(uid)
        return pw.pw_name, pw.pw_dir
    except (ImportError, KeyError):
        return str(uid), os.path.expanduser("~")


def _tmpdir(env: Mapping[str, str]) -> tuple[str, str]:
    # tempfile.gettempdir(): the first of TMPDIR, TEMP, TMP that is a usable directory.
    for var in ("TMPDIR", "TEMP", "TMP"):
        value = env.get(var)
        if value and os.path.isdir(value):
            return os.path.abspath(value), var
    return "/tmp", ""  # noqa: S108 - the default being judged, not a file we create


def _caches(env: Mapping[str, str], uid: int) -> list[tuple[str, str, str, str]]:
    """(cache, resolved directory, deciding variable, default directory)."""
    user, home_default = _user(uid)
    home = env.get("HOME") or home_default
    home_var = "HOME" if home != home_default else ""
    tmp, tmp_var = _tmpdir(env)
    xdg_default = os.path.join(home_default, ".cache")
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    xdg_var = "XDG_CACHE_HOME" if env.get("XDG_CACHE_HOME") else home_var

    def pick(var: str, fallback: str, fallback_var: str) -> tuple[str, str]:
        value = env.get(var)
        return (os.path.abspath(value), var) if value else (fallback, fallback_var)

    out: list[tuple[str, str, str, str]] = []
    d, v = pick("TORCHINDUCTOR_CACHE_DIR", os.path.join(tmp, f"torchinductor_{user}"), tmp_var)
    default_tmp = "/tmp"  # noqa: S108 - the default being judged, not a file we create
    out.append(("TorchInductor generated code", d, v, f"{default_tmp}/torchinductor_{user}"))
    triton_home = env.get("TRITON_HOME") or home
    triton_var = "TRITON_HOME" if env.get("TRITON_HOME") else home_var
    d, v = pick("TRITON_CACHE_DIR", os.path.join(triton_home, ".triton", "cache"), triton_var)
    out.append(("Triton compiled kernels", d, v, os.path.join(home_default, ".triton", "cache")))
    d, v = pick("TORCH_EXTENSIONS_DIR", os.path.join(xdg, "torch_extensions"), xdg_var)
    out.append(("torch C++/CUDA extensions", d, v, os.path.join(xdg_default, "torch_extensions")))
    hf_home = env.get("HF_HOME") or os.path.join(xdg, "huggingface")
    hf_var = "HF_HOME" if env.get("HF_HOME") else xdg_var
    d, v = pick("HF_MODULES_CACHE", os.path.join(hf_home, "modules"), hf_var)
    out.append(
        (
            "Hugging Face remote-code modules",
            d,
            v,
            os.path.join(xdg_default, "huggingface", "modules"),
        )
    )
    d, v = pick("CUDA_CACHE_PATH", os.path.join(home, ".nv", "ComputeCache"), home_var)
    out.append(("CUDA JIT cache", d, v, os.path.join(home_default, ".nv", "ComputeCache")))
    if env.get("PYTHONPYCACHEPREFIX"):
        d = os.path.abspath(env["PYTHONPYCACHEPREFIX"])
        out.append(("Python bytecode (PYTHONPYCACHEPREFIX)", d, "PYTHONPYCACHEPREFIX", ""))
    return out


def _system_libraries() -> set[str]:
    names: set[str] = set()
    for d in _SYSTEM_LIB_DIRS:
        try:
            names.update(n for n in os.listdir(d) if ".so" in n)
        except OSError:
            continue
    return names


def _pythonpath(entries: Sequence[str], shadows: Sequence[Shadow], uid: int) -> list[EnvEffect]:
    out: list[EnvEffect] = []
    for entry in entries:
        # A namespace-package portion below the entry shadows a submodule just the same.
        won = [s for s in shadows if s.winner == entry or s.winner.startswith(entry + os.sep)]
        if won:
            names = [s.module for s in won]
            where = sorted({c for s in won for c in s.shadowed_classes})
            out.append(
                EnvEffect(
                    "PYTHONPATH",
                    "HIGH",
                    f"PYTHONPATH entry {entry} shadows {len(names)} module(s) the job would "
                    f"otherwise import from {', '.join(where)}: {', '.join(names[:10])}",
                    {"entry": entry, "shadows": {s.module: list(s.shadowed) for s in won}},
                )
            )
            continue
        reason = unsafe_reason(entry, uid)
        if reason:
            out.append(
                EnvEffect(
                    "PYTHONPATH",
                    "HIGH",
                    f"PYTHONPATH entry {entry} is searched before site-packages and {reason}",
                    {"entry": entry},
                )
            )
        elif not os.path.isdir(entry):
            out.append(
                EnvEffect(
                    "PYTHONPATH",
                    "LOW",
                    f"PYTHONPATH entry {entry} does not exist (no effect now)",
                    {"entry": entry},
                )
            )
        else:
            out.append(
                EnvEffect(
                    "PYTHONPATH",
                    "MEDIUM",
                    f"PYTHONPATH entry {entry} adds modules ahead of site-packages (none of "
                    "them shadows an installed or standard module)",
                    {"entry": entry},
                )
            )
    return out


def _ld_library_path(value: str, uid: int) -> list[EnvEffect]:
    out: list[EnvEffect] = []
    system = _system_libraries()
    for entry in [e for e in value.split(":") if e]:
        entry = os.path.abspath(entry)
        reason = unsafe_reason(entry, uid)
        try:
            libs = sorted(n for n in os.listdir(entry) if ".so" in n)
        except OSError:
            libs = []
        clash = [n for n in libs if n in system]
        if reason:
            sev, text = "HIGH", f"is searched first for every shared library and {reason}"
        elif clash:
            sev = "HIGH"
            text = f"shadows {len(clash)} system librar(ies): {', '.join(clash[:10])}"
        elif libs:
            sev, text = "MEDIUM", f"provides {len(libs)} shared librar(ies) searched first"
        else:
            sev, text = "LOW", "holds no shared library (no effect now)"
        out.append(
            EnvEffect(
                "LD_LIBRARY_PATH",
                sev,
                f"LD_LIBRARY_PATH entry {entry} {text}",
                {"entry": entry, "shadows": clash[:50]},
            )
        )
    return out


def resolve_effects(
    env: Mapping[str, str],
    *,
    pythonpath: Sequence[str],
    shadows: Sequence[Shadow],
    uid: int | None = None,
) -> list[EnvEffect]:
    """Effects of the job environment ``env`` on what code loads, for the job owner ``uid``
    (default: this process's user). Defaults that are safe produce nothing."""
    uid = os.getuid() if uid is None else uid
    out = _pythonpath(pythonpath, shadows, uid)
    if env.get("LD_LIBRARY_PATH"):
        out.extend(_ld_library_path(env["LD_LIBRARY_PATH"], uid))
    for cache, path, var, default in _caches(env, uid):
        reason = unsafe_reason(path, uid)
        redirected = bool(var) and path != default
        if redirected:
            if reason:
                out.append(
                    EnvEffect(
                        var,
                        "HIGH",
                        f"{var} puts the {cache} cache at {path}, and {reason}: code loaded "
                        "from it can be planted",
                        {"cache": cache, "path": path, "default": default},
                    )
                )
            else:
                out.append(
                    EnvEffect(
                        var,
                        "LOW",
                        f"{var} puts the {cache} cache at {path} (private to the job owner)",
                        {"cache": cache, "path": path, "default": default},
                    )
                )
        elif reason and os.path.lexists(path):
            out.append(
                EnvEffect(
                    "",
                    "HIGH",
                    f"the {cache} cache at {path} (the default location) exists and {reason}: "
                    "code loaded from it can be planted",
                    {"cache": cache, "path": path},
                )
            )
    return out
