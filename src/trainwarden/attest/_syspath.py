"""Files on the job's ``sys.path`` outside site-packages (the standard library, ``lib-dynload``,
``PYTHONPATH`` and ``.pth`` path entries), what vouches for them, and which modules shadow others.

A package manager vouches for a file when it recorded the file's hash at install time: Debian's
``/var/lib/dpkg/info/*.md5sums`` (md5, the only hash dpkg keeps) and conda's
``conda-meta/*.json`` (sha256). A file no package manager knows is ``unvouched``: only a
baseline covers it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from trainwarden._internal.files import open_regular

__all__ = [
    "DPKG_INFO_DIR",
    "DPKG_PREFIXES",
    "MAX_PATH_FILES",
    "RPM_BINARY",
    "RPM_DBPATHS",
    "RPM_PREFIXES",
    "PathFile",
    "Shadow",
    "conda_hashes",
    "dpkg_md5sums",
    "find_shadows",
    "rpm_digests",
    "top_level_modules",
    "walk_roots",
]

# A PYTHONPATH of "/" must not walk the whole machine unnoticed: past this many files the walk
# stops and the snapshot says which roots were cut (a HIGH finding, never a quiet pass).
MAX_PATH_FILES = 400_000
_MAX_CONDA_JSON = 64 * 1024 * 1024
DPKG_INFO_DIR = "/var/lib/dpkg/info"
# Where rpm keeps its database (rpm >= 4.16 on Fedora/RHEL 9: /usr/lib/sysimage/rpm) and the
# files that make one: sqlite, ndb or Berkeley DB.
RPM_DBPATHS: tuple[str, ...] = ("/usr/lib/sysimage/rpm", "/var/lib/rpm")
_RPM_DB_FILES = ("rpmdb.sqlite", "Packages.db", "Packages")
RPM_PREFIXES: tuple[str, ...] = ("/usr/", "/lib", "/opt/", "/etc/", "/bin/", "/sbin/")
RPM_BINARY = "/usr/bin/rpm"
# rpm's PGPHASHALGO numbers for FILEDIGESTALGO.
_RPM_ALGOS = {"1": "md5", "2": "sha1", "8": "sha256", "9": "sha384", "10": "sha512", "11": "sha224"}
# %{=TAG} repeats a package-wide value on every file row.
_RPM_QF = "[%{FILENAMES}\t%{=FILEDIGESTALGO}\t%{FILEDIGESTS}\t%{=NAME}\n]"
DPKG_PREFIXES: tuple[str, ...] = ("/usr/", "/lib", "/opt/", "/etc/", "/bin/", "/sbin/")


class PathFile(NamedTuple):
    """One file on ``sys.path`` outside site-packages.

    ``status``: ``ok`` (matches what ``source`` recorded), ``modified`` (differs from it),
    ``unvouched`` (no package manager recorded it), ``symlink`` (``detail`` is the target) or
    ``unreadable``. For ``modified`` files ``detail`` is the recorded ``algorithm:hex``.
    """

    path: str
    sha256: str | None
    size: int
    status: str
    source: str | None
    detail: str | None


@dataclass(frozen=True)
class Shadow:
    """A top-level module name importable from more than one ``sys.path`` entry: Python imports
    the one in ``winner`` (the first entry, of class ``winner_class``), never those in
    ``shadowed``. ``standard`` says whether the name is one of the interpreter's own standard
    modules (``sys.stdlib_module_names``)."""

    module: str
    winner: str
    winner_class: str
    shadowed: tuple[str, ...]
    shadowed_classes: tuple[str, ...]
    standard: bool


# How a walk opens a directory to list it and lstat its entries relative to it.
DIR_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def walk_tree(
    root: str,
    out: dict[str, os.stat_result],
    skip: Collection[str],
    *,
    skip_names: Collection[str] = (),
    limit: int | None = None,
) -> bool:
    """lstat every file below the directory ``root`` into ``out``, in walk order; directories in
    ``skip`` (paths) or named in ``skip_names`` are not entered, links are not followed. Each
    directory is opened once and its entries lstat'ed relative to it (fewer kernel lookups than
    by path; the same files in the same order). True when it stopped because ``out`` held
    ``limit`` files."""
    stack = [root]
    while stack:
        if limit is not None and len(out) >= limit:
            return True
        d = stack.pop()
        try:
            fd = os.open(d, DIR_OPEN_FLAGS)
        except OSError:
            continue
        pre = d if d.endswith(os.sep) else d + os.sep
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        p = pre + e.name
                        if p not in skip and e.name not in skip_names:
                            stack.append(p)
                        continue
                    try:
                        out[pre + e.name] = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
        finally:
            os.close(fd)
    return False


def walk_roots(
    roots: Sequence[str], skip: set[str], limit: int = MAX_PATH_FILES
) -> tuple[dict[str, os.stat_result], list[str]]:
    """lstat every file below ``roots`` (directories in ``skip`` are not entered, nor git
    directories: a code checkout on PYTHONPATH, not importable); a root that is a file (a stdlib
    zip) is included itself. Returns the stats and the roots cut at ``limit``."""
    out: dict[str, os.stat_result] = {}
    cut: list[str] = []
    for root in roots:
        try:
            st = os.lstat(root)
        except OSError:
            continue
        if not os.path.isdir(root):
            out[root] = st
            continue
        if walk_tree(root, out, skip, skip_names=(".git",), limit=limit):
            cut.append(root)
    return out, cut


def dpkg_md5sums(paths: Iterable[str], info_dir: str | None = None) -> dict[str, tuple[str, str]]:
    """``{path: (package, md5 hex)}`` for each of ``paths`` that a dpkg ``*.md5sums`` lists
    (``info_dir`` default: :data:`DPKG_INFO_DIR`)."""
    info_dir = DPKG_INFO_DIR if info_dir is None else info_dir
    # dpkg installs below these directories only; a pyenv or conda interpreter elsewhere does
    # not pay for reading every package's md5sums.
    wanted = {p for p in paths if p.startswith(DPKG_PREFIXES)}
    if not wanted or not os.path.isdir(info_dir):
        return {}
    # md5sums name files relative to / without the leading slash; a package whose file does not
    # mention any walked directory is skipped without splitting its lines.
    tops = {"/".join(p.lstrip("/").split("/")[:3]) for p in wanted}
    out: dict[str, tuple[str, str]] = {}
    try:
        names = sorted(n for n in os.listdir(info_dir) if n.endswith(".md5sums"))
    except OSError:
        return {}
    for name in names:
        try:
            full = os.path.join(info_dir, name)
            with open(open_regular(full), encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError:
            continue
        if not any(t in text for t in tops):
            continue
        package = name[: -len(".md5sums")].split(":", 1)[0]
        for line in text.splitlines():
            digest, sep, rel = line.partition("  ")
            if not sep:
                continue
            path = "/" + rel
            if path in wanted:
                out.setdefault(path, (package, digest.strip().lower()))
    return out


def rpm_digests(
    paths: Iterable[str], dbpath: str | None = None
) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """``({path: (package, algorithm, hex)}, problems)`` for each of ``paths`` that an installed
    RPM package lists with a digest. ``dbpath`` default: the first of :data:`RPM_DBPATHS`
    holding a database. ``problems`` maps a database that exists but could not be read to why
    (the caller reports it: a database it cannot read vouches for nothing)."""
    wanted = {p for p in paths if p.startswith(RPM_PREFIXES)}
    if not wanted:
        return {}, {}
    if dbpath is None:
        dbpath = next(
            (
                d
                for d in RPM_DBPATHS
                if any(os.path.isfile(os.path.join(d, n)) for n in _RPM_DB_FILES)
            ),
            None,
        )
        if dbpath is None:
            return {}, {}
    if not os.access(RPM_BINARY, os.X_OK):
        return {}, {dbpath: f"an RPM database, but {RPM_BINARY} is not there to read it"}
    try:
        proc = subprocess.run(  # noqa: S603 - fixed binary, fixed arguments, no shell
            [RPM_BINARY, "--dbpath", dbpath, "-qa", "--qf", _RPM_QF],
            capture_output=True,
            timeout=120,
            check=False,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, {dbpath: f"an RPM database rpm could not read: {e}"}
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        return {}, {dbpath: f"an RPM database rpm could not read (exit {proc.returncode}: {err})"}
    out: dict[str, tuple[str, str, str]] = {}
    for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        path, algo, digest, package = fields
        alg = _RPM_ALGOS.get(algo.strip())
        if path in wanted and alg is not None and digest and digest != "(none)":
            out.setdefault(path, (package, alg, digest.strip().lower()))
    return out, {}


def conda_hashes(prefixes: Iterable[str], paths: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{path: (package, sha256 hex)}`` from ``PREFIX/conda-meta/*.json`` ``paths_data``."""
    candidates = list(paths)
    wanted: set[str] = set()
    out: dict[str, tuple[str, str]] = {}
    for prefix in dict.fromkeys(prefixes):
        meta = os.path.join(prefix, "conda-meta")
        try:
            names = sorted(n for n in os.listdir(meta) if n.endswith(".json"))
        except OSError:
            continue
        # Built only where a conda prefix is: every other interpreter pays nothing here.
        wanted = wanted or set(candidates)
        for name in names:
            full = os.path.join(meta, name)
            try:
                if os.path.getsize(full) > _MAX_CONDA_JSON:
                    continue
                with open(open_regular(full), encoding="utf-8") as f:
                    doc = json.load(f)
            except (OSError, ValueError, RecursionError):
                continue
            if not isinstance(doc, dict):
                continue
            package = str(doc.get("name") or name.rsplit("-", 2)[0])
            data = doc.get("paths_data")
            rows = data.get("paths") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                continue
            for row in rows:
                if not isinstance(row, dict):
                    continue
                rel, sha = row.get("_path"), row.get("sha256")
                if not isinstance(rel, str) or not isinstance(sha, str):
                    continue
                path = os.path.normpath(os.path.join(prefix, rel))
                if path in wanted:
                    out.setdefault(path, (package, sha.lower()))
    return out


def top_level_modules(entry: str, extension_suffixes: Sequence[str]) -> dict[str, str]:
    """Top-level names ``entry`` provides, as ``{name: kind}`` with kind ``package``,
    ``extension``, ``source``, ``bytecode`` or ``namespace`` (a directory without
    ``__init__``, which any regular module of the same name anywhere on the path beats)."""
    out: dict[str, str] = {}
    try:
        it = os.scandir(entry)
    except OSError:
        return out
    suffixes = sorted(extension_suffixes, key=len, reverse=True)
    with it:
        for e in it:
            name = e.name
            if e.is_dir():
                if not name.isidentifier() or name == "__pycache__":
                    continue
                init = any(
                    os.path.exists(os.path.join(e.path, "__init__" + s))
                    for s in (".py", ".pyc", *suffixes)
                )
                out.setdefault(name, "package" if init else "namespace")
                if init:
                    out[name] = "package"
                continue
            for suffix in suffixes:
                if name.endswith(suffix) and name[: -len(suffix)].isidentifier():
                    out[name[: -len(suffix)]] = "extension"
                    break
            else:
                stem, dot, ext = name.rpartition(".")
                if not dot or not stem.isidentifier():
                    continue
                if ext == "py":
                    if out.get(stem) in (None, "namespace", "bytecode"):
                        out[stem] = "source"
                elif ext == "pyc" and out.get(stem) in (None, "namespace"):
                    out[stem] = "bytecode"
    return out


def find_shadows(
    sys_path: Sequence[str],
    classes: Mapping[str, str],
    extension_suffixes: Sequence[str],
    standard_names: Iterable[str],
) -> list[Shadow]:
    """Every top-level module that more than one ``sys.path`` entry provides (namespace
    portions aside), with the entry Python imports it from."""
    standard = set(standard_names)
    out: list[Shadow] = []
    _shadows_in(list(dict.fromkeys(sys_path)), "", classes, extension_suffixes, standard, out, 0)
    return sorted(out, key=lambda x: x.module)


def _shadows_in(
    entries: Sequence[str],
    prefix: str,
    classes: Mapping[str, str],
    extension_suffixes: Sequence[str],
    standard: set[str],
    out: list[Shadow],
    depth: int,
) -> None:
    # ``entries`` are directories searched in order; for a namespace package they are its
    # portions, and a submodule is taken from the first portion that has it.
    seen: dict[str, list[str]] = {}
    namespaces: dict[str, list[str]] = {}
    for entry in entries:
        for name, kind in top_level_modules(entry, extension_suffixes).items():
            if kind == "namespace":
                namespaces.setdefault(name, []).append(entry)
            else:
                seen.setdefault(name, []).append(entry)
    for name, where in seen.items():
        if len(where) < 2:
            continue
        out.append(
            Shadow(
                module=prefix + name,
                winner=where[0],
                winner_class=classes.get(where[0], "path"),
                shadowed=tuple(where[1:]),
                shadowed_classes=tuple(classes.get(e, "path") for e in where[1:]),
                standard=not prefix and name in standard,
            )
        )
    if depth >= 4:
        return
    for name, where in namespaces.items():
        if name in seen or len(where) < 2:
            continue  # a regular package anywhere beats every namespace portion
        portions = [os.path.join(e, name) for e in where]
        sub_classes = {os.path.join(e, name): classes.get(e, "path") for e in where}
        _shadows_in(
            portions, f"{prefix}{name}.", sub_classes, extension_suffixes, standard, out, depth + 1
        )
