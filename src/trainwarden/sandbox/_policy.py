"""The sandbox policy: which paths a job may read or write, which TCP ports it may use, what is
scoped. Read from ``trainwarden.toml`` (``[sandbox]``) or ``pyproject.toml``
(``[tool.trainwarden.sandbox]``), refined by presets, and resolved to concrete kernel objects.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import site
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden._internal.files import read_limited
from trainwarden.sandbox._types import SandboxError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["PRESETS", "ResolvedPolicy", "SandboxPolicy", "compress_ports"]

# Each preset with what it is for; ``SandboxPolicy.resolve`` turns names into paths and ports.
PRESETS: Mapping[str, str] = {
    "python": "read: the interpreter, its prefixes, site-packages and every sys.path entry",
    "system": "read: /usr /lib* /bin /sbin /etc /proc /sys; read+write: /dev/null /dev/zero "
    "/dev/full /dev/random /dev/urandom",
    "gpu": "device files (read, write, ioctl): /dev/nvidia*, /dev/nvidia-caps, /dev/dri",
    "shm": "read+write /dev/shm (DataLoader workers, NCCL's shared-memory transport)",
    "torchrun": "bind+connect master_port (default 29500); bind a kernel-chosen port and connect "
    "to the kernel's ephemeral port range (gloo and NCCL bootstrap listen on such ports)",
}

_KEYS = {
    "presets",
    "read",
    "write",
    "devices",
    "bind_ports",
    "connect_ports",
    "ephemeral_ports",
    "master_port",
    "scope_signals",
    "scope_abstract_unix",
    "private_tmp",
}

_SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys")
_SYSTEM_RW = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_GPU_GLOBS = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")
_MAX_PORT = 65535


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # the kernel's default


def compress_ports(ports: Iterable[int]) -> tuple[str, ...]:
    """``[1, 2, 3, 7]`` -> ``("1-3", "7")``; port 0 reads ``"0 (kernel-chosen)"``."""
    out: list[str] = []
    items = sorted(set(ports))
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1 and items[i] != 0:
            j += 1
        if items[i] == 0:
            out.append("0 (kernel-chosen)")
        elif j == i:
            out.append(str(items[i]))
        else:
            out.append(f"{items[i]}-{items[j]}")
        i = j + 1
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    """A resolved filesystem rule: ``kind`` is read, write, rw (files only) or device."""

    path: str
    kind: str
    origin: str


@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy turned into the concrete rules :func:`trainwarden.sandbox.apply` installs."""

    rules: tuple[Rule, ...]
    bind_ports: tuple[int, ...]
    connect_ports: tuple[int, ...]
    scope_signals: bool
    scope_abstract_unix: bool
    private_tmp: bool
    source: str | None
    skipped: tuple[str, ...] = ()
    """Preset paths that do not exist on this machine (and so got no rule)."""

    def describe(self) -> list[str]:
        """Lines saying what the policy allows, for ``trainwarden sandbox explain``."""
        lines = [f"policy: {self.source or 'built-in default'}"]
        labels = {
            "read": "read (and execute), never write",
            "write": "read and write (create, remove, rename, truncate)",
            "rw": "read and write this file",
            "device": "open and ioctl this device",
        }
        for kind in ("write", "read", "rw", "device"):
            rules = [r for r in self.rules if r.kind == kind]
            if rules:
                lines.append(f"{labels[kind]}:")
                lines.extend(f"  {r.path}  [{r.origin}]" for r in rules)
        if self.private_tmp:
            lines.append("read and write: a private directory under /tmp made at start ($TMPDIR)")
        lines.append("every other path: no access (open, create, remove, rename, execute denied)")
        bind = ", ".join(compress_ports(self.bind_ports)) or "none"
        conn = ", ".join(compress_ports(self.connect_ports)) or "none"
        lines.append(f"TCP bind (listen) ports: {bind}")
        lines.append(f"TCP connect ports: {conn}")
        lines.append(
            "signals to processes outside the job: "
            + ("denied" if self.scope_signals else "allowed")
        )
        lines.append(
            "abstract Unix sockets outside the job: "
            + ("denied" if self.scope_abstract_unix else "allowed")
        )
        lines.append(
            "not covered: UDP and raw sockets, chmod/chown/xattr/utime on readable files, "
            "reads through file descriptors opened before the sandbox (see docs/sandbox.md)"
        )
        for s in self.skipped:
            lines.append(f"skipped (absent here): {s}")
        return lines


def _paths(value: Any, key: str, source: str, base: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SandboxError(
            f"{key!r} in sandbox policy {source} must be a list of paths",
            hint=f'{key} = ["/data/imagenet", "runs/"]',
        )
    out = []
    for v in value:
        p = Path(os.path.expanduser(v))
        out.append(str(p if p.is_absolute() else base / p))
    return tuple(out)


def _ports(value: Any, key: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise SandboxError(f"{key!r} in sandbox policy {source} must be a list of ports")
    out: set[int] = set()
    for v in value:
        if isinstance(v, bool):
            lo = hi = -1
        elif isinstance(v, int):
            lo = hi = v
        elif isinstance(v, str) and v.count("-") == 1:
            a, _, b = v.partition("-")
            try:
                lo, hi = int(a), int(b)
            except ValueError:
                lo = hi = -1
        else:
            lo = hi = -1
        if lo == 0 or hi == 0:
            raise SandboxError(
                f"port 0 in {key!r} of sandbox policy {source}",
                hint="a kernel-chosen port is allowed with ephemeral_ports = true",
            )
        if not (1 <= lo <= hi <= _MAX_PORT):
            raise SandboxError(
                f"invalid port {v!r} in {key!r} of sandbox policy {source}",
                hint='ports are integers 1-65535 or ranges "29500-29510"',
            )
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def _bool(section: Mapping[str, Any], key: str, default: bool, source: str) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise SandboxError(f"{key!r} in sandbox policy {source} must be true or false")
    return value


@dataclass(frozen=True)
class SandboxPolicy:
    """An immutable sandbox policy. :meth:`default` reads nothing but Python and the system,
    writes only a private /tmp, binds and connects nowhere, and scopes signals and abstract
    Unix sockets. Build others with :meth:`from_file` or ``dataclasses.replace``."""

    presets: tuple[str, ...] = ("python", "system")
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    bind_ports: tuple[int, ...] = ()
    connect_ports: tuple[int, ...] = ()
    ephemeral_ports: bool = False
    master_port: int = 29500
    scope_signals: bool = True
    scope_abstract_unix: bool = True
    private_tmp: bool = True
    source: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.presets) - set(PRESETS))
        if unknown:
            raise SandboxError(
                f"unknown sandbox preset(s) {', '.join(unknown)}"
                + (f" in {self.source}" if self.source else ""),
                hint=f"known presets: {', '.join(PRESETS)}",
            )
        if not 1 <= self.master_port <= _MAX_PORT:
            raise SandboxError(f"master_port {self.master_port} is not a port (1-65535)")

    @classmethod
    def default(cls) -> SandboxPolicy:
        return cls()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SandboxPolicy:
        """Read ``[sandbox]`` from a TOML file (``[tool.trainwarden.sandbox]`` in
        ``pyproject.toml``). Relative paths are relative to the file's folder. Raises
        :class:`SandboxError` naming the file on any problem."""
        p = Path(path)
        try:
            raw = read_limited(p, 4 << 20)
        except OSError as e:
            raise SandboxError(
                f"cannot read sandbox policy {p}: {e.strerror or e}",
                hint="check the path given to --sandbox-policy",
            ) from e
        source = str(p)
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SandboxError(f"sandbox policy {p} is not valid TOML: {e}") from e
        if p.name == "pyproject.toml" or "tool" in doc:
            tool = doc.get("tool", {})
            tw = tool.get("trainwarden", {}) if isinstance(tool, dict) else {}
            section = tw.get("sandbox") if isinstance(tw, dict) else None
            where = "[tool.trainwarden.sandbox]"
        else:
            section = doc.get("sandbox")
            where = "[sandbox]"
        if section is None:
            raise SandboxError(
                f"sandbox policy {p} has no {where} table",
                hint=f"add {where} with read/write/bind_ports/connect_ports keys",
            )
        if not isinstance(section, dict):
            raise SandboxError(f"sandbox policy {p}: {where} must be a table")
        bad = sorted(set(section) - _KEYS)
        if bad:
            raise SandboxError(
                f"unknown key(s) {', '.join(bad)} in {where} of {p}",
                hint=f"known keys: {', '.join(sorted(_KEYS))}",
            )
        base = p.resolve().parent
        presets = section.get("presets", list(cls.presets))
        if not isinstance(presets, list) or not all(isinstance(x, str) for x in presets):
            raise SandboxError(f"'presets' in sandbox policy {p} must be a list of names")
        master_port = section.get("master_port", 29500)
        if not isinstance(master_port, int) or isinstance(master_port, bool):
            raise SandboxError(f"'master_port' in sandbox policy {p} must be an integer")
        return cls(
            presets=tuple(presets),
            read=_paths(section.get("read", []), "read", source, base),
            write=_paths(section.get("write", []), "write", source, base),
            devices=_paths(section.get("devices", []), "devices", source, base),
            bind_ports=_ports(section.get("bind_ports", []), "bind_ports", source),
            connect_ports=_ports(section.get("connect_ports", []), "connect_ports", source),
            ephemeral_ports=_bool(section, "ephemeral_ports", False, source),
            master_port=master_port,
            scope_signals=_bool(section, "scope_signals", True, source),
            scope_abstract_unix=_bool(section, "scope_abstract_unix", True, source),
            private_tmp=_bool(section, "private_tmp", True, source),
            source=source,
        )

    def with_paths(self, read: Iterable[str] = (), write: Iterable[str] = ()) -> SandboxPolicy:
        """A copy with more read-only and writable paths."""
        return dataclasses.replace(
            self, read=(*self.read, *map(str, read)), write=(*self.write, *map(str, write))
        )

    # -- resolution ------------------------------------------------------------------------

    def resolve(self, code: Iterable[str] = ()) -> ResolvedPolicy:
        """Turn the policy into concrete rules. ``code`` are the job's own script or package
        folders (read-only). Raises :class:`SandboxError` when a declared path is missing or
        when a write rule would make a read-only path writable (Landlock grants the union of
        all rules on a path and its parents, so a write rule on a parent wins)."""
        rules: list[Rule] = []
        skipped: list[str] = []

        def add(path: str, kind: str, origin: str, *, required: bool) -> None:
            if not os.path.exists(path):
                if required:
                    raise SandboxError(
                        f"{kind} path {path} of sandbox policy "
                        f"{self.source or '(built-in)'} does not exist",
                        hint="create it before the run or remove it from the policy",
                    )
                skipped.append(f"{path} [{origin}]")
                return
            rules.append(Rule(os.path.realpath(path), kind, origin))

        bind: set[int] = set(self.bind_ports)
        connect: set[int] = set(self.connect_ports)
        ephemeral = self.ephemeral_ports
        for preset in self.presets:
            if preset == "python":
                for p in _python_paths():
                    add(p, "read", "python", required=False)
            elif preset == "system":
                for p in _SYSTEM_READ:
                    add(p, "read", "system", required=False)
                for p in _SYSTEM_RW:
                    add(p, "rw", "system", required=False)
            elif preset == "gpu":
                found = sorted({m for g in _GPU_GLOBS for m in glob.glob(g)})
                for p in found:
                    add(p, "device", "gpu", required=False)
                if not found:
                    skipped.append("/dev/nvidia*, /dev/dri [gpu]")
            elif preset == "shm":
                add("/dev/shm", "write", "shm", required=False)  # noqa: S108 - the shm mount
            elif preset == "torchrun":
                bind.add(self.master_port)
                connect.add(self.master_port)
                ephemeral = True
        for p in code:
            add(p, "read", "code", required=True)
        for p in self.read:
            add(p, "read", "policy", required=True)
        for p in self.devices:
            add(p, "device", "policy", required=True)
            _check_device(p, self.source)
        for p in self.write:
            add(p, "write", "policy", required=True)
        if ephemeral:
            lo, hi = _ephemeral_range()
            bind.add(0)
            connect.update(range(lo, hi + 1))
        _check_write_overlap(rules)
        return ResolvedPolicy(
            rules=tuple(_dedupe(rules)),
            bind_ports=tuple(sorted(bind)),
            connect_ports=tuple(sorted(connect)),
            scope_signals=self.scope_signals,
            scope_abstract_unix=self.scope_abstract_unix,
            private_tmp=self.private_tmp,
            source=self.source,
            skipped=tuple(skipped),
        )


def _python_paths() -> list[str]:
    paths = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *site.getsitepackages(),
    ]
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        paths.append(user_site)
    paths.extend(p for p in sys.path if p)
    return paths


def _dedupe(rules: list[Rule]) -> list[Rule]:
    seen: set[tuple[str, str]] = set()
    out = []
    for r in rules:
        if (r.path, r.kind) not in seen:
            seen.add((r.path, r.kind))
            out.append(r)
    return out


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# Rule kinds that grant writing everything beneath the path they name (a device rule grants
# WRITE_FILE on every file under it, as a write rule grants all rights).
_WRITERS = ("write", "device")


def _check_device(path: str, source: str | None) -> None:
    """A ``devices`` entry is a device file, or a folder of them (``/dev/dri``), decided on
    the object: a regular file named there would be writable with no ``write`` rule."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # a missing path was refused already
    if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode)):
        raise SandboxError(
            f"devices path {path} of sandbox policy {source or '(built-in)'} is not a device "
            "file or a folder of device files",
            hint="list files the job writes under write = [...]",
        )


def _check_write_overlap(rules: list[Rule]) -> None:
    # Compared on (device, inode) of each narrower path and of all its parents, so that a
    # symlink or a second mount of the same folder is caught as well as the same spelling.
    writers: dict[tuple[int, int], list[Rule]] = {}
    for r in rules:
        if r.kind in _WRITERS:
            ident = _identity(r.path)
            if ident is not None:
                writers.setdefault(ident, []).append(r)
    if not writers:
        return
    for r in rules:
        if r.kind == "write":
            continue
        here = r.path
        while True:
            for w in writers.get(_identity(here) or (-1, -1), ()):
                if w is r or (here == r.path and r.kind in ("rw", "device")):
                    continue  # itself, or the same file declared writable twice
                raise SandboxError(
                    f"{w.kind} path {w.path} [{w.origin}] contains the read-only path {r.path} "
                    f"[{r.origin}]: Landlock would let the job write it",
                    hint="declare a narrower write folder (the run or checkpoint directory)",
                )
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
