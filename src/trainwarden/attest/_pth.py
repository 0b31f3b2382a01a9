"""Static reading of ``.pth`` files and of the ``sys.path`` that ``site`` would build from them.

``site`` executes any ``.pth`` line that starts with ``import`` followed by a space or tab, at
every interpreter start, and appends every other non-comment line that names an existing
directory to ``sys.path``. Nothing here executes a line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from trainwarden._internal.files import open_regular

__all__ = ["PthContent", "read_pth", "site_path_order"]


@dataclass(frozen=True)
class PthContent:
    """What a ``.pth`` file would do: code it runs and directories it adds."""

    path: str
    import_lines: tuple[str, ...]
    path_entries: tuple[str, ...]
    error: str = ""


def read_pth(path: str) -> PthContent:
    """Parse one ``.pth`` file exactly as ``site.addpackage`` reads it (without executing)."""
    sitedir = os.path.dirname(path)
    try:
        with open(open_regular(path), "rb") as f:
            raw = f.read()
    except OSError as e:
        return PthContent(path, (), (), error=f"cannot read: {e}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # site falls back to the locale encoding; latin-1 never fails and keeps import lines.
        text = raw.decode("latin-1")
    imports: list[str] = []
    entries: list[str] = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith(("import ", "import\t")):
            imports.append(line.rstrip())
            continue
        entry = os.path.join(sitedir, line.rstrip())
        if os.path.exists(entry):
            entries.append(os.path.abspath(entry))
    return PthContent(path, tuple(imports), tuple(entries))


def site_path_order(
    site_dirs: list[str],
) -> tuple[list[str], list[PthContent]]:
    """The path entries ``site`` appends for ``site_dirs``, in order, and every ``.pth`` read."""
    path: list[str] = []
    pths: list[PthContent] = []
    for sitedir in site_dirs:
        if not os.path.isdir(sitedir):
            continue
        if sitedir not in path:
            path.append(sitedir)
        try:
            names = sorted(n for n in os.listdir(sitedir) if n.endswith(".pth"))
        except OSError:
            continue
        for name in names:
            # site skips hidden .pth files since 3.13 (and some distributions hide them); list
            # them anyway, they are still suspicious.
            content = read_pth(os.path.join(sitedir, name))
            pths.append(content)
            for entry in content.path_entries:
                if entry not in path:
                    path.append(entry)
    return path, pths
