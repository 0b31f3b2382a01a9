"""Files in site directories that the operating system's package manager (dpkg) installed.

Debian and Ubuntu ship Python packages into ``/usr/lib/python3/dist-packages`` with egg-info
metadata and no RECORD; their file lists live in ``/var/lib/dpkg/info/*.list``. Such files are
not orphans: they belong to an OS package, which its own tools (``debsums``, ``dpkg --verify``)
check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from trainwarden._internal.files import open_regular

__all__ = ["DPKG_INFO", "dpkg_owners"]

DPKG_INFO = "/var/lib/dpkg/info"


def dpkg_owners(paths: Iterable[str], info_dir: str | None = None) -> dict[str, str]:
    """Map each path in ``paths`` that a dpkg file list names to its package; {} without dpkg.

    Only the lists of packages that install into a ``*-packages`` directory are read
    (``info_dir`` default: :data:`DPKG_INFO`).
    """
    info_dir = DPKG_INFO if info_dir is None else info_dir
    wanted = set(paths)
    if not wanted or not os.path.isdir(info_dir):
        return {}
    out: dict[str, str] = {}
    try:
        names = sorted(n for n in os.listdir(info_dir) if n.endswith(".list"))
    except OSError:
        return {}
    for name in names:
        try:
            fd = open_regular(os.path.join(info_dir, name))
            with open(fd, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if "-packages/" not in text:
            continue
        package = name[: -len(".list")].split(":", 1)[0]
        for line in text.splitlines():
            if line in wanted:
                out.setdefault(line, package)
    return out
