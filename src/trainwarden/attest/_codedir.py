"""State of a training code directory: git commit plus a hash of uncommitted work, or file hashes.

git runs with external diff drivers, textconv filters, fsmonitor and hooks disabled: the
repository config may belong to someone else and must not be able to run commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trainwarden.attest._cache import HashCache, hash_files
from trainwarden.attest._envvars import helper_environment

__all__ = ["CodeDir", "code_state"]

_GIT_SAFE = [
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "diff.external=",
    "-c",
    "core.pager=cat",
]


@dataclass(frozen=True)
class CodeDir:
    """One code directory. ``kind`` is ``"git"`` or ``"files"``; ``files`` maps a relative path
    to its sha256 (untracked files for git, every file otherwise); ``digest`` summarises it all."""

    path: str
    kind: str
    commit: str | None
    dirty: bool
    diff_sha256: str | None
    files: Mapping[str, str] = field(default_factory=dict)
    digest: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON form used inside the snapshot predicate."""
        return {
            "path": self.path,
            "kind": self.kind,
            "commit": self.commit,
            "dirty": self.dirty,
            "diff_sha256": self.diff_sha256,
            "files": dict(self.files),
            "digest": self.digest,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> CodeDir:
        """Inverse of :meth:`to_dict`."""
        files = d.get("files") or {}
        return cls(
            path=str(d["path"]),
            kind=str(d["kind"]),
            commit=None if d.get("commit") is None else str(d.get("commit")),
            dirty=bool(d.get("dirty")),
            diff_sha256=None if d.get("diff_sha256") is None else str(d.get("diff_sha256")),
            files={str(k): str(v) for k, v in files.items()} if isinstance(files, Mapping) else {},
            digest=str(d.get("digest", "")),
            note=str(d.get("note", "")),
        )


def _git(root: Path, *args: str) -> bytes | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, git from PATH is the user's git
            [git, *_GIT_SAFE, "-C", str(root), *args],
            capture_output=True,
            timeout=120,
            check=False,
            env={**helper_environment(), "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _walk_files(root: Path) -> list[tuple[str, os.stat_result]]:
    out: list[tuple[str, os.stat_result]] = []
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name != ".git":
                    stack.append(e.path)
            elif e.is_file(follow_symlinks=False):
                out.append((e.path, e.stat(follow_symlinks=False)))
    return out


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def code_state(path: Path, cache: HashCache, *, workers: int | None = None) -> CodeDir:
    """Describe ``path``: git HEAD + uncommitted diff + untracked files, or every file's hash."""
    root = path.resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    head = _git(root, "rev-parse", "--verify", "HEAD") if top is not None else None
    if top is not None and head is not None:
        commit = head.decode().strip()
        diff = _git(root, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--", ".")
        listing = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", ".")
        untracked = [p for p in (listing or b"").decode(errors="surrogateescape").split("\0") if p]
        files: list[tuple[str, os.stat_result]] = []
        for rel in untracked:
            full = root / rel
            try:
                files.append((str(full), full.lstat()))
            except OSError:
                continue
        digests, _ = hash_files(files, cache, workers=workers)
        hashed = {os.path.relpath(p, root): d.hex() for p, d in sorted(digests.items())}
        diff_sha = hashlib.sha256(diff or b"").hexdigest()
        dirty = bool(diff) or bool(untracked)
        return CodeDir(
            path=str(root),
            kind="git",
            commit=commit,
            dirty=dirty,
            diff_sha256=diff_sha,
            files=hashed,
            digest=_digest({"commit": commit, "diff": diff_sha, "untracked": hashed}),
            note="" if diff is not None else "git diff failed; uncommitted changes not hashed",
        )
    walked = _walk_files(root)
    digests, errors = hash_files(walked, cache, workers=workers)
    hashed = {os.path.relpath(p, root): d.hex() for p, d in sorted(digests.items())}
    note = f"{len(errors)} file(s) unreadable" if errors else ""
    if top is not None:
        note = (note + "; " if note else "") + "git repository without commits"
    return CodeDir(
        path=str(root),
        kind="files",
        commit=None,
        dirty=False,
        diff_sha256=None,
        files=hashed,
        digest=_digest(hashed),
        note=note,
    )
