"""The scanner core: content-based dispatch over the format handlers, file and directory walks.

Each file is read once (memory-mapped when large) and only those bytes are analysed; a file that
cannot be parsed yields a finding, never an exception.
"""

from __future__ import annotations

import contextlib
import fnmatch
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwarden._internal.files import (
    NOT_REGULAR_HINT,
    NotRegularFileError,
    kind_of,
    not_regular_message,
    open_regular,
)
from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats import HANDLERS
from trainwarden.scan._formats import zip as zip_format
from trainwarden.scan._formats._spill import RATIO_FLOOR
from trainwarden.scan._formats.hf_folder import folder_findings
from trainwarden.scan._formats.pickle import probe_polyglot, probe_unclaimed
from trainwarden.scan._policy import Policy
from trainwarden.scan._types import (
    FileReport,
    FormatHandler,
    Limits,
    ScanError,
    ScanReport,
    Verdict,
)

if TYPE_CHECKING:
    import hashlib

__all__ = [
    "FileScan",
    "scan_bytes",
    "scan_file",
    "scan_path",
    "scan_paths",
]

# Files at least this large are memory-mapped so that handlers touch only the pages they read
# (the pickle of a torch zip, never its storages).
_MMAP_THRESHOLD = 8 * 1024 * 1024
_SNIFF_BYTES = 1 << 16

# Handlers after which an archive appended to the content is not looked for again: the ZIP
# readers (they compare every reader's view themselves) and the containers whose every member is
# extracted and scanned by content (an archive stored inside them is scanned as that member).
_ZIP_HANDLERS = frozenset({"zip", "keras", "tar", "7z", "compressed"})

# Formats whose first bytes are free for the writer to choose (a tar header opens with a member
# name), so the same bytes can also be a pickle that pickle.load runs: probed as one as well.
_FREE_HEADER_HANDLERS = frozenset({"tar"})

Buffer = Any  # bytes, or an mmap for large files (handlers with ``accepts_buffer``)


class FileScan:
    """The :class:`~trainwarden.scan._types.ScanContext` of one top-level input file."""

    def __init__(self, root: str, policy: Policy, limits: Limits) -> None:
        self.root = root
        self.policy = policy
        self._limits = limits
        self.findings: list[Finding] = []
        self.formats: list[str] = []
        self.globals: list[str] = []
        self.depth = 0
        self.members = 0
        self.decompressed = 0
        self.size = 0  # bytes of the top-level file, for the whole-file compression ratio
        self.deadline = time.monotonic() + limits.max_seconds_per_file
        self._seen: set[tuple[str, str, str]] = set()
        self._limit_reported: set[str] = set()

    # -- ScanContext protocol --------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._limits

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def classify(self, module: str, name: str) -> tuple[Verdict, str]:
        return self.policy.classify(module, name)

    def note_format(self, fmt: str) -> None:
        if fmt not in self.formats:
            self.formats.append(fmt)

    def scan_member(self, data: bytes, location: str) -> None:
        """Scan an embedded member (by content), one archive level deeper."""
        self.members += 1
        if self.members > self._limits.max_members:
            self.limit(
                "max_members",
                f"more than {self._limits.max_members} archive members; the rest were skipped",
                location,
            )
            return
        if self.depth >= self._limits.max_archive_depth:
            self.limit(
                "max_archive_depth",
                f"archives nested deeper than {self._limits.max_archive_depth}; "
                "inner content not inspected",
                location,
            )
            return
        self.depth += 1
        try:
            self.dispatch(data, location)
        finally:
            self.depth -= 1

    # -- extensions used by the built-in handlers ------------------------------------------

    def note_globals(self, names: Iterable[str]) -> None:
        self.globals.extend(names)

    def limit(self, which: str, message: str, location: str) -> None:
        if which in self._limit_reported:
            return
        self._limit_reported.add(which)
        self.add(Finding("TWS-LIMIT", Severity.HIGH, message, location, {"limit": which}))

    def out_of_time(self, location: str) -> bool:
        if time.monotonic() > self.deadline:
            self.limit(
                "max_seconds_per_file",
                f"scan exceeded {self._limits.max_seconds_per_file}s for this file",
                location,
            )
            return True
        return False

    def decompress_budget(self) -> int:
        """Decompressed bytes this file may still produce before a limit (total or whole-file
        ratio) is exceeded; a reader stops there instead of finding out afterwards."""
        by_ratio = max(RATIO_FLOOR, self._limits.max_compression_ratio * max(self.size, 1))
        return min(self._limits.max_decompressed_bytes, by_ratio) - self.decompressed

    def charge_decompressed(self, nbytes: int, location: str) -> bool:
        """Account decompressed bytes; False (and a finding) once the total or the whole-file
        compression ratio is exceeded."""
        self.decompressed += nbytes
        ratio = self._limits.max_compression_ratio
        if self.decompressed > RATIO_FLOOR and self.decompressed > ratio * max(self.size, 1):
            self.limit(
                "max_compression_ratio",
                f"members decompress to {self.decompressed} bytes, more than {ratio} times the "
                f"file's {self.size} bytes (decompression bomb?); the rest was not inspected",
                location,
            )
            return False
        if self.decompressed > self._limits.max_decompressed_bytes:
            self.limit(
                "max_decompressed_bytes",
                f"decompressed data exceeds {self._limits.max_decompressed_bytes} bytes "
                "(decompression bomb?)",
                location,
            )
            return False
        return True

    def dispatch(self, data: Buffer, location: str) -> None:
        """Run the first handler whose sniff accepts ``data``."""
        if self.out_of_time(location):
            return
        head: bytes = data if isinstance(data, bytes) else bytes(data[:_SNIFF_BYTES])
        for handler in HANDLERS:
            try:
                accepts = handler.sniff(head)
            except Exception as e:  # a third-party handler must not abort the scan
                self.internal(handler, location, e)
                continue
            if not accepts:
                continue
            self.note_format(handler.name)
            payload = data
            if not isinstance(data, bytes) and not getattr(handler, "accepts_buffer", False):
                payload = bytes(data)
            try:
                handler.scan(payload, location, self)
            except Exception as e:  # fail closed: report, never trust a crashed handler
                self.internal(handler, location, e)
            if handler.name in _FREE_HEADER_HANDLERS:
                probe_polyglot(data, location, self, handler.name)
            if handler.name not in _ZIP_HANDLERS:
                self._trailing_archive(data, location)
            return
        probe_unclaimed(data, location, self)
        self._trailing_archive(data, location)

    def _trailing_archive(self, data: Buffer, location: str) -> None:
        """An archive appended to other content is what zip readers see (they look for the
        directory at the end); scan it too."""
        try:
            zip_format.HANDLER.scan_trailing_archive(data, location, self)
        except Exception as e:  # fail closed: report, never trust a crashed handler
            self.internal(zip_format.HANDLER, location, e)

    def internal(self, handler: FormatHandler, location: str, exc: BaseException) -> None:
        self.add(
            Finding(
                "TWS-INTERNAL",
                Severity.HIGH,
                f"the {handler.name} handler failed on this input ({type(exc).__name__}: "
                f"{exc}); treated as unsafe",
                location,
                {"handler": handler.name, "error": f"{type(exc).__name__}: {exc}"},
            )
        )

    def report(self, size: int, sha256: str | None, started: float) -> FileReport:
        return FileReport(
            path=self.root,
            size=size,
            formats=tuple(self.formats),
            findings=tuple(self.findings),
            globals=tuple(sorted(set(self.globals))),
            sha256=sha256,
            elapsed_s=time.monotonic() - started,
        )


def _resolve(policy: Policy | None, limits: Limits | None) -> tuple[Policy, Limits]:
    policy = policy if policy is not None else Policy.default()
    if limits is None:
        limits = policy.limits if policy.limits is not None else Limits()
    return policy, limits


def scan_bytes(
    data: bytes,
    name: str = "<bytes>",
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
) -> FileReport:
    """Scan an in-memory file (dispatched by content over every format handler)."""
    policy, limits = _resolve(policy, limits)
    started = time.monotonic()
    fs = FileScan(name, policy, limits)
    fs.size = len(data)
    fs.dispatch(data, name)
    return fs.report(len(data), None, started)


def _sha256(data: bytes = b"") -> hashlib._Hash:
    # hashlib (with OpenSSL) is imported only for --hash: a noticeable share of a small scan.
    import hashlib

    return hashlib.sha256(data)


def _sha256_file(path: Path) -> str:
    h = _sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _sha256_fd(fd: int) -> str:
    """sha256 of an open file from its start, read in fixed chunks (memory does not grow with
    the file) and dropped from the page cache behind the reader."""
    h = _sha256()
    pos = 0
    chunk = 1 << 22
    while data := os.pread(fd, chunk, pos):
        h.update(data)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, pos, len(data), os.POSIX_FADV_DONTNEED)
        pos += len(data)
    return h.hexdigest()


def scan_file(
    path: str | Path,
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    hash_files: bool = False,
    display: str | None = None,
) -> FileReport:
    """Scan one file; raises :class:`ScanError` when it cannot be opened or read."""
    policy, limits = _resolve(policy, limits)
    p = Path(path)
    name = display if display is not None else str(p)
    started = time.monotonic()
    try:
        try:
            fd = open_regular(p)
        except NotRegularFileError as e:
            raise ScanError(
                not_regular_message("scan", name, e.mode), hint=NOT_REGULAR_HINT
            ) from None
        with open(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            fs = FileScan(name, policy, limits)
            fs.size = size
            if size >= _MMAP_THRESHOLD:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    fs.dispatch(mm, name)
                # Hashing the map would make every page of the file resident: read in chunks.
                digest = _sha256_fd(f.fileno()) if hash_files else None
            else:
                data = f.read()
                size = len(data)
                fs.dispatch(data, name)
                digest = _sha256(data).hexdigest() if hash_files else None
    except OSError as e:
        raise ScanError(
            f"cannot read {name}: {e.strerror or e}",
            hint="check that the path exists and is readable",
        ) from e
    return fs.report(size, digest, started)


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _walk(
    root: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    skipped: list[tuple[str, str]] | None = None,
) -> tuple[list[Path], list[Path]]:
    """Files under ``root`` (sorted) and the directories visited.

    What is not analysed is appended to ``skipped`` as (path, reason).
    """
    files: list[Path] = []
    dirs: list[Path] = []
    skip = skipped if skipped is not None else []

    def unreadable(e: OSError) -> None:
        skip.append((str(e.filename or root), f"cannot list the directory: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        d = Path(dirpath)
        rel_dir = d.relative_to(root).as_posix()
        kept = []
        for n in sorted(dirnames):
            if exclude and _matches(f"{rel_dir}/{n}" if rel_dir != "." else n, exclude):
                continue
            if (d / n).is_symlink():
                # os.walk does not descend into it: say so rather than pass it over in silence.
                skip.append((str(d / n), "symlink to a directory, not followed"))
                continue
            kept.append(n)
        dirnames[:] = kept
        dirs.append(d)
        for fn in sorted(filenames):
            rel = f"{rel_dir}/{fn}" if rel_dir != "." else fn
            if exclude and _matches(rel, exclude):
                continue
            if include and not _matches(rel, include):
                continue
            fp = d / fn
            try:
                mode = fp.stat().st_mode
            except OSError as e:
                # dangling symlink, symlink loop or vanished file
                skip.append((str(fp), f"cannot stat: {e.strerror or e}"))
                continue
            if stat.S_ISREG(mode):
                files.append(fp)
            else:  # FIFOs and devices would block or never end
                skip.append((str(fp), f"not a regular file (a {kind_of(mode)})"))
    return files, dirs


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the parent reports it once, workers stay quiet
    # (no traceback per worker) and are stopped by the parent.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also discards one already pending
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    import signal
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not (
        threading.main_thread()
    ):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _scan_one(args: tuple[Path, Policy, Limits, bool]) -> FileReport | str:
    path, policy, limits, hash_files = args
    try:
        return scan_file(path, policy=policy, limits=limits, hash_files=hash_files)
    except ScanError as e:
        return e.message


# Starting a process pool costs about 0.3 s on a 2-core machine while a typical model file scans
# in about a millisecond, so a pool only pays off for many files or for many bytes to read.
_POOL_MIN_FILES = 512
_POOL_MIN_BYTES = 512 * 1024**2


def _auto_workers(targets: Sequence[Path], hash_files: bool) -> int:
    if len(targets) < 4:
        return 1
    cpus = min(os.cpu_count() or 1, 8)
    if len(targets) >= _POOL_MIN_FILES:
        return cpus
    total_bytes = 0
    for t in targets:
        try:
            total_bytes += t.stat().st_size
        except OSError:
            continue
        if total_bytes >= _POOL_MIN_BYTES:
            # Hashing reads every byte; without --hash only large raw pickles cost time.
            return cpus if hash_files or total_bytes >= 4 * _POOL_MIN_BYTES else 1
    return 1


def scan_paths(
    paths: Sequence[str | Path],
    policy: Policy | None = None,
    *,
    limits: Limits | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    workers: int | None = None,
    hash_files: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> ScanReport:
    """Scan files and directories (recursively, filtered by ``include``/``exclude`` globs).

    Missing top-level paths raise :class:`ScanError`; files that become unreadable during a
    walk are listed in ``ScanReport.errors``. ``workers`` > 1 scans in that many processes;
    ``None`` picks a pool only for large trees. ``progress(done, total, path)`` is called after
    each file.
    """
    policy, limits = _resolve(policy, limits)
    started = time.monotonic()
    targets: list[Path] = []
    folder_extra: dict[Path, list[Finding]] = {}
    folder_errors: list[str] = []
    skipped: list[tuple[str, str]] = []
    for raw in paths:
        if not os.fspath(raw):
            # Path("") would silently mean the current directory.
            raise ScanError("an empty path was given", hint="name the file or directory to scan")
        p = Path(raw)
        if not p.exists():
            raise ScanError(f"no such file or directory: {p}", hint="check the path to scan")
        if p.is_dir():
            files, dirs = _walk(p, include, exclude, skipped)
            targets.extend(files)
            for d in dirs:
                try:
                    extra = folder_findings(d)
                except Exception as e:  # a folder check must not abort the whole scan
                    folder_errors.append(f"folder checks failed for {d}: {e}")
                    continue
                for fp, found in extra.items():
                    folder_extra.setdefault(Path(fp), []).extend(found)
        else:
            mode = p.stat().st_mode
            if not stat.S_ISREG(mode):
                raise ScanError(not_regular_message("scan", p, mode), hint=NOT_REGULAR_HINT)
            if not os.access(p, os.R_OK):
                raise ScanError(f"cannot read {p}: permission denied", hint="check permissions")
            targets.append(p)
    total = len(targets)
    if workers is None:
        workers = _auto_workers(targets, hash_files)
    results: list[FileReport | str] = []
    jobs = [(t, policy, limits, hash_files) for t in targets]
    if workers > 1 and total > 1:
        # Imported here: process pools (multiprocessing) cost a small scan much of its start-up.
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint) as pool:
            # Workers start here: SIGINT stays blocked until each has set it to "ignore", so a
            # Ctrl-C during start-up cannot raise inside a half-started worker.
            with _sigint_blocked():
                results_iter = pool.map(_scan_one, jobs, chunksize=4)
            try:
                for i, res in enumerate(results_iter):
                    results.append(res)
                    if progress:
                        progress(i + 1, total, str(targets[i]))
            except BaseException:
                # Ctrl-C: drop the queued files instead of scanning them all before exiting.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    else:
        for i, job in enumerate(jobs):
            results.append(_scan_one(job))
            if progress:
                progress(i + 1, total, str(targets[i]))
    reports: list[FileReport] = []
    errors: list[str] = list(folder_errors)
    by_path: dict[Path, int] = {}
    for t, res in zip(targets, results, strict=True):
        if isinstance(res, str):
            errors.append(res)
        else:
            if folder_extra:  # resolving costs a walk of every path component: only when needed
                by_path[t.resolve()] = len(reports)
            reports.append(res)
    unscanned = {Path(path) for path, _ in skipped}
    for path, reason in skipped:
        # Not scanned is not a pass: a loader may still open what the walk could not read.
        unread = Finding(
            "TWS-UNSCANNED",
            Severity.HIGH,
            f"not scanned: {reason}; a loader may still open it (fail closed)",
            path,
            {"reason": reason},
        )
        folder_extra.setdefault(Path(path), []).append(unread)
    for fp, found in folder_extra.items():
        idx = by_path.get(fp.resolve())
        if idx is None:
            try:
                size = fp.lstat().st_size if fp in unscanned else fp.stat().st_size
            except OSError:
                size = 0
            kind = "unscanned" if fp in unscanned else "folder"
            reports.append(FileReport(str(fp), size, (kind,), tuple(found)))
        else:
            r = reports[idx]
            reports[idx] = FileReport(
                r.path, r.size, r.formats, (*r.findings, *found), r.globals, r.sha256, r.elapsed_s
            )
    return ScanReport(
        files=tuple(reports),
        elapsed_s=time.monotonic() - started,
        errors=tuple(errors),
        skipped=tuple(skipped),
    )


def scan_path(
    path: str | Path,
    policy: Policy | None = None,
    *,
    limits: Limits | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    workers: int | None = None,
    hash_files: bool = False,
) -> ScanReport:
    """Scan one file or directory; see :func:`scan_paths`."""
    return scan_paths(
        [path],
        policy,
        limits=limits,
        include=include,
        exclude=exclude,
        workers=workers,
        hash_files=hash_files,
    )
