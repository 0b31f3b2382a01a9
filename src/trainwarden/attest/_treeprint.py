"""The metadata fingerprint of the site directories, from one serial walk or from helper processes.

A warm verify needs only to know whether any file below the site directories changed: the
memo's results stand when nothing did. That question is answered by the *tree print*: for each
site directory, the ``lstat`` key (device, inode, size, mtime_ns, ctime_ns) and path of every
file below it, the directories in ``skip`` not entered. The files are grouped in *units* (each
directory directly below a site directory, and the site directory's own files), each unit is
hashed over its files' paths and keys in walk order (a unit's subtree is walked in the same
order wherever the walk started), and the print hashes the units in path order. So the print
does not depend on which process walked which unit, nor on the order units were handed out in.

:func:`print_from_stats` computes it from a finished serial walk (what a memo miss has anyway);
:class:`ParallelPrint` computes the same value with helper processes, each walking whole units
handed out one at a time through a pipe (largest first, by the file counts of the last walk),
while the caller does other work. The helpers are this interpreter started isolated
(``-I -S``: no site hooks, no ``PYTHONPATH``, nothing of the attested environment is imported)
and only ``lstat`` and hash; any failure (no interpreter to start, a helper that exits with an
error or prints something unexpected) gives ``None``, and the caller walks serially.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["HelperPool", "ParallelPrint", "helper_count", "print_from_stats"]

_KEY = struct.Struct("<QQqqq")
_COUNT = struct.Struct("<Q")
_TOKEN = struct.Struct("<I")

# Run by each helper: read the units and skip set (marshal, on stdin), take unit numbers from the
# token pipe until it is empty, walk each unit exactly as the serial walk does (same order), print
# each unit's file count and digest. A directory is opened once and its entries are lstat'ed
# relative to that descriptor (the kernel resolves one name per file, not the whole path).
_HELPER = r"""
import hashlib, marshal, os, struct, sys
key = struct.Struct("<QQqqq").pack
units, skip, tok = marshal.loads(sys.stdin.buffer.read())
skip = frozenset(skip)
flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
out = []
while True:
    t = os.read(tok, 4)
    if len(t) != 4:
        break
    i = struct.unpack("<I", t)[0]
    paths, keys = [], []
    stack = [units[i]]
    while stack:
        d = stack.pop()
        try:
            fd = os.open(d, flags)
        except OSError:
            continue
        pre = d if d.endswith(os.sep) else d + os.sep
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        p = pre + e.name
                        if p not in skip:
                            stack.append(p)
                        continue
                    try:
                        s = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    paths.append(pre + e.name)
                    keys.append(key(s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns))
        finally:
            os.close(fd)
    h = hashlib.sha256("\0".join(paths).encode("utf-8", "surrogateescape"))
    h.update(b"".join(keys))
    out.append((i, len(paths), h.digest()))
sys.stdout.buffer.write(marshal.dumps(out))
"""


def _unit_digest(paths: list[str], keys: list[bytes]) -> bytes:
    """A unit's digest: its files' paths and metadata keys, in walk order."""
    h = hashlib.sha256("\0".join(paths).encode("utf-8", "surrogateescape"))
    h.update(b"".join(keys))
    return h.digest()


def _combine(
    site_dirs: Sequence[str],
    tops: Mapping[str, list[bytes]],
    units: Mapping[bytes, tuple[int, bytes]],
) -> bytes:
    """The print: per site directory, its own files (sorted) and its units in path order."""
    h = hashlib.sha256()
    for sd in site_dirs:
        name = os.fsencode(sd)
        top = sorted(tops.get(sd, []))
        h.update(_COUNT.pack(len(name)) + name + _COUNT.pack(len(top)))
        h.update(b"".join(top))
        prefix = name.rstrip(b"/") + b"/"
        # A unit with no files is left out: the serial walk has nothing to group under it (an
        # empty directory decides no result).
        mine = sorted(
            u
            for u, (n, _) in units.items()
            if n and u.startswith(prefix) and b"/" not in u[len(prefix) :]
        )
        h.update(_COUNT.pack(len(mine)))
        for u in mine:
            n, digest = units[u]
            h.update(_COUNT.pack(len(u)) + u + _COUNT.pack(n) + digest)
    return h.digest()


def _split(
    site_dirs: Sequence[str], stats: Mapping[str, os.stat_result]
) -> tuple[dict[str, list[bytes]], dict[str, tuple[list[str], list[bytes]]]]:
    """The walked files grouped as the helpers group them: each site directory's own files
    (name and key), and each unit's files (paths and keys, in walk order: a unit's subtree is
    walked in the same order whether the walk started at the unit or above it)."""
    key = _KEY.pack
    prefixes = sorted(((sd.rstrip(os.sep) + os.sep, sd) for sd in site_dirs), reverse=True)
    tops: dict[str, list[bytes]] = {sd: [] for sd in site_dirs}
    units: dict[str, tuple[list[str], list[bytes]]] = {}
    for path, s in stats.items():
        # The innermost site directory holding the path walked it (the outer ones skip it).
        owner = next(((p, sd) for p, sd in prefixes if path.startswith(p)), None)
        if owner is None:
            continue
        prefix, sd = owner
        rel = path[len(prefix) :]
        entry = key(s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
        head, sep, _ = rel.partition(os.sep)
        if not sep:
            tops[sd].append(os.fsencode(rel) + b"\0" + entry)
            continue
        unit = units.get(prefix + head)
        if unit is None:
            unit = units[prefix + head] = ([], [])
        unit[0].append(path)
        unit[1].append(entry)
    return tops, units


def print_from_stats(
    site_dirs: Sequence[str], stats: Mapping[str, os.stat_result]
) -> tuple[bytes, dict[str, int]]:
    """The tree print of a finished serial walk of ``site_dirs`` (``stats`` holds exactly the
    files that walk found, in walk order), and the files per unit (the order helpers take units
    in next time)."""
    tops, units = _split(site_dirs, stats)
    done = {os.fsencode(u): (len(p), _unit_digest(p, k)) for u, (p, k) in units.items()}
    return _combine(site_dirs, tops, done), {u: len(p) for u, (p, _) in units.items()}


def helper_count(cap: int | None = None) -> int:
    """Helpers worth starting here: one per CPU this process may run on, at most ``cap`` (8)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cap or 8, cpus, 8))


class HelperPool:
    """``n`` copies of this interpreter started isolated (``-I -S``) running ``program``: each
    reads ``payload`` (marshal, on stdin), then takes the 4-byte task numbers written to a
    pipe whose read end is the payload's ``tok`` until the pipe is empty, and prints one marshal
    blob. Every number is written before any helper starts (the pipe holds them all), so a read
    of 4 bytes gets one whole number or the end."""

    def __init__(self, program: str, payload_of: Any, tasks: Sequence[int], n: int) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        exe = sys.executable
        if not exe or n < 1:
            raise ValueError("no interpreter to start helpers with")
        tok_r, tok_w = os.pipe()
        try:
            payload = marshal.dumps(payload_of(tok_r))
            tokens = b"".join(_TOKEN.pack(i) for i in tasks)
            os.set_blocking(tok_w, False)
            if tokens and os.write(tok_w, tokens) != len(tokens):
                raise ValueError("the pipe took only part of the task numbers")
            os.close(tok_w)
            tok_w = -1
            for _ in range(n):
                proc = subprocess.Popen(  # noqa: S603 - this interpreter, isolated
                    [exe, "-I", "-S", "-c", program],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(tok_r,),
                )
                self._procs.append(proc)
                if proc.stdin is None:  # pragma: no cover - stdin=PIPE always gives one
                    raise ValueError("no pipe to the helper")
                proc.stdin.write(payload)
                proc.stdin.close()
        except BaseException:
            self.close()
            raise
        finally:
            os.close(tok_r)
            if tok_w >= 0:
                os.close(tok_w)

    def outputs(self) -> list[Any] | None:
        """Wait for every helper: what each printed (unmarshalled), or ``None`` if any failed."""
        out: list[Any] = []
        try:
            for proc in self._procs:
                if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives one
                    return None
                data = proc.stdout.read()
                if proc.wait() != 0:
                    return None
                out.append(marshal.loads(data))  # noqa: S302 - our own helper's plain output
        except (OSError, ValueError, EOFError, TypeError, subprocess.SubprocessError):
            return None
        finally:
            self.close()
        return out

    def close(self) -> None:
        """Kill helpers still running."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._procs = []


class ParallelPrint:
    """The tree print of ``site_dirs`` computed by ``helpers`` processes; :meth:`result` waits
    for it (``None`` on any failure). Use as a context manager: helpers still running on exit
    are killed."""

    def __init__(
        self,
        site_dirs: Sequence[str],
        skip: Mapping[str, set[str]],
        helpers: int,
        weights: Mapping[str, int] | None = None,
    ) -> None:
        self.site_dirs = list(site_dirs)
        self._pool: HelperPool | None = None
        self._units: list[str] = []
        self._tops: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}
        try:
            self._start(skip, helpers, weights or {})
        except (OSError, ValueError, subprocess.SubprocessError):
            self._pool = None

    def _start(
        self, skip: Mapping[str, set[str]], helpers: int, weights: Mapping[str, int]
    ) -> None:
        key = _KEY.pack
        skip_all: set[str] = set()
        for sd in self.site_dirs:
            skip_sd = skip.get(sd, set())
            skip_all.update(skip_sd)
            top: list[bytes] = []
            prefix = sd.rstrip(os.sep) + os.sep
            with os.scandir(sd) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        if e.path not in skip_sd:
                            self._units.append(prefix + e.name)
                        continue
                    try:
                        s = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    top.append(
                        os.fsencode(e.name)
                        + b"\0"
                        + key(s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                    )
            self._tops[sd] = top
        order = sorted(
            range(len(self._units)),
            key=lambda i: -weights.get(self._units[i], 1 << 40),
        )
        if len(order) * _TOKEN.size > 65536:
            raise ValueError("too many units for one pipe")
        units, skipped = self._units, sorted(skip_all)
        self._pool = HelperPool(_HELPER, lambda tok: (units, skipped, tok), order, helpers)

    def result(self) -> bytes | None:
        """Wait for the helpers; the print, or ``None`` if any of them failed."""
        if self._pool is None:
            return None
        outputs = self._pool.outputs()
        if outputs is None:
            return None
        done: dict[bytes, tuple[int, bytes]] = {}
        counts: dict[str, int] = {}
        try:
            for rows in outputs:
                for i, n, digest in rows:
                    done[os.fsencode(self._units[i])] = (n, digest)
                    if n:
                        counts[self._units[i]] = n
        except (ValueError, TypeError, IndexError):
            return None
        if len(done) != len(self._units):
            return None
        self.counts = counts
        return _combine(self.site_dirs, self._tops, done)

    def close(self) -> None:
        """Kill helpers still running."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> ParallelPrint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
