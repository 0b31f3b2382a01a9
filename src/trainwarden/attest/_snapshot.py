"""Snapshots of what a job will run, as in-toto Statements (v1) with a TrainWarden predicate.

:func:`take_snapshot` asks the target interpreter where its site directories are (a script run
with ``-I -S -B``, so no hook executes), then walks them once, checks every installed file
against its distribution's RECORD hash and lists what no distribution owns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import operator
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISLNK
from typing import Any, NamedTuple

from trainwarden._version import __version__
from trainwarden.attest import AttestationError, _syspath
from trainwarden.attest._bytecode import BytecodeResult, Vouched, bytecode_pairs, verify_bytecode
from trainwarden.attest._cache import (
    HashCache,
    PycHead,
    cache_key_packer,
    hash_files,
    hash_other,
)
from trainwarden.attest._codedir import CodeDir, code_state
from trainwarden.attest._effects import EnvEffect, resolve_effects
from trainwarden.attest._envvars import helper_environment, loader_environment
from trainwarden.attest._memo import SnapshotMemo, lstat_keys, walk_fingerprint
from trainwarden.attest._ospkg import dpkg_owners
from trainwarden.attest._prefetch import Prefetch
from trainwarden.attest._pth import PthContent, site_path_order
from trainwarden.attest._record import ACCEPTED_ALGORITHMS, FileStatus, find_distributions
from trainwarden.attest._syspath import (
    PathFile,
    Shadow,
    conda_hashes,
    dpkg_md5sums,
    find_shadows,
    rpm_digests,
    walk_roots,
)
from trainwarden.attest._treeprint import (
    ParallelPrint,
    helper_count,
    print_from_stats,
)
from trainwarden.findings import Severity

__all__ = [
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "CustomizeModule",
    "DistFile",
    "Distribution",
    "Interpreter",
    "Orphan",
    "PthFile",
    "Snapshot",
    "canonical_name",
    "job_sys_path",
    "take_snapshot",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://trainwarden.dev/attestation/python-environment/v1"
_COLLECTOR = Path(__file__).with_name("_collector.py")
_CUSTOMIZE = ("sitecustomize", "usercustomize")


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


class DistFile(NamedTuple):
    """One installed file: ``path`` as written in RECORD, status, actual sha256 (hex) and the
    expected ``algorithm:hex`` from RECORD (None when RECORD has no hash, and for ``ok`` sha256
    files, where it equals the actual digest).

    A NamedTuple rather than a frozen dataclass: a torch environment has ~50k of them and
    tuple construction is several times cheaper (both are immutable).
    """

    path: str
    status: FileStatus
    sha256: str | None
    expected: str | None


@dataclass(frozen=True)
class Distribution:
    """An installed distribution and the verification status of each of its files."""

    name: str
    version: str
    installer: str | None
    direct_url: Mapping[str, Any] | None
    metadata_dir: str
    location: str
    kind: str
    record_problem: str
    files: tuple[DistFile, ...] = field(repr=False)
    os_package: str | None = None

    @property
    def key(self) -> str:
        """Canonical name used to match distributions across snapshots."""
        return canonical_name(self.name)

    def counts(self) -> dict[str, int]:
        """Number of files per status."""
        out = {s.value: 0 for s in FileStatus}
        for f in self.files:
            out[f.status._value_] += 1
        return out


@dataclass(frozen=True)
class Orphan:
    """A file inside a site directory that no distribution's RECORD lists."""

    path: str
    sha256: str | None
    size: int


@dataclass(frozen=True)
class PthFile:
    """A ``.pth`` file ``site`` reads at start-up: its owner (None: orphan) and what it does."""

    path: str
    owner: str | None
    sha256: str | None
    import_lines: tuple[str, ...]
    path_entries: tuple[str, ...]


@dataclass(frozen=True)
class CustomizeModule:
    """A ``sitecustomize``/``usercustomize`` found on the job's path; ``active`` is the one
    Python imports (the first on ``sys.path``); ``where`` is stdlib, site-packages or pythonpath."""

    module: str
    path: str
    owner: str | None
    sha256: str | None
    where: str
    active: bool


@dataclass(frozen=True)
class Interpreter:
    """The interpreter a job runs and where it looks for code."""

    path: str
    realpath: str
    version: str
    implementation: str
    sha256: str | None
    prefix: str
    base_prefix: str
    venv: bool
    include_system_site_packages: bool
    user_site: str
    user_site_enabled: bool


@dataclass(frozen=True)
class Snapshot:
    """Everything :func:`take_snapshot` recorded; :meth:`to_statement` gives the in-toto form."""

    created: str
    host: str
    uid: int
    trainwarden_version: str
    interpreter: Interpreter
    platform: Mapping[str, str]
    sys_path: tuple[str, ...]
    site_packages: tuple[str, ...]
    distributions: tuple[Distribution, ...]
    orphans: tuple[Orphan, ...]
    pth_files: tuple[PthFile, ...]
    customize: tuple[CustomizeModule, ...]
    environment: Mapping[str, str]
    code: tuple[CodeDir, ...]
    unreadable: Mapping[str, str] = field(default_factory=dict)
    os_packages: Mapping[str, int] = field(default_factory=dict)
    # sys.path outside site-packages: {directory: stdlib | pythonpath | path}, every file there,
    # the roots whose walk was cut at the file limit, and modules found in several entries.
    path_roots: Mapping[str, str] = field(default_factory=dict)
    path_files: tuple[PathFile, ...] = ()
    path_cut: tuple[str, ...] = ()
    shadows: tuple[Shadow, ...] = ()
    env_effects: tuple[EnvEffect, ...] = ()
    # Bytecode Python would import from code directories and non-site path entries, compared
    # with its source; only results other than "match" and "ignored" are kept.
    bytecode: tuple[BytecodeResult, ...] = ()
    bytecode_checked: int = 0
    # Content keys of every bytecode file found to match its source (sorted hex; see
    # trainwarden.attest._bytecode.content_key): what a node verifying against this snapshot,
    # signed, need not compile again.
    bytecode_matches: tuple[str, ...] = ()

    # ---- in-toto ------------------------------------------------------------------------

    def predicate(self) -> dict[str, Any]:
        """The TrainWarden predicate (JSON-serialisable)."""
        core = self._core(summaries=True)
        return {
            "trainwarden_version": self.trainwarden_version,
            "created": self.created,
            "host": self.host,
            "uid": self.uid,
            "interpreter": dict(self.interpreter.__dict__),
            "platform": dict(self.platform),
            "sys_path": list(self.sys_path),
            "site_packages": list(self.site_packages),
            "distributions": core["distributions"],
            "orphans": core["orphans"],
            "pth_files": core["pth_files"],
            "customize": core["customize"],
            "environment": core["environment"],
            "code": [c.to_dict() for c in self.code],
            "unreadable": dict(self.unreadable),
            "os_packages": dict(self.os_packages),
            "path_roots": dict(self.path_roots),
            "path_files": core["path_files"],
            "path_cut": list(self.path_cut),
            "shadows": core["shadows"],
            "env_effects": [e.to_dict() for e in self.env_effects],
            "bytecode": [list(b) for b in self.bytecode],
            "bytecode_checked": self.bytecode_checked,
            "bytecode_matches": list(self.bytecode_matches),
        }

    def _core(self, *, summaries: bool) -> dict[str, Any]:
        """The predicate's parts the environment digest covers (per-distribution summaries only
        with ``summaries``)."""
        dists: list[dict[str, Any]] = []
        for d in self.distributions:
            entry: dict[str, Any] = {
                "name": d.name,
                "version": d.version,
                "installer": d.installer,
                "direct_url": dict(d.direct_url) if d.direct_url is not None else None,
                "metadata_dir": d.metadata_dir,
                "location": d.location,
                "kind": d.kind,
                "record_problem": d.record_problem,
                "os_package": d.os_package,
            }
            if summaries:
                entry["summary"] = d.counts()
            # ``_value_``: a plain attribute, where ``.value`` is a descriptor call per file.
            entry["files"] = [[f.path, f.status._value_, f.sha256, f.expected] for f in d.files]
            dists.append(entry)
        return {
            "distributions": dists,
            "orphans": [[o.path, o.sha256, o.size] for o in self.orphans],
            "pth_files": [
                {
                    "path": p.path,
                    "owner": p.owner,
                    "sha256": p.sha256,
                    "import_lines": list(p.import_lines),
                    "path_entries": list(p.path_entries),
                }
                for p in self.pth_files
            ],
            "customize": [dict(c.__dict__) for c in self.customize],
            "environment": dict(self.environment),
            "path_files": [list(f) for f in self.path_files],
            "shadows": [
                {
                    "module": x.module,
                    "winner": x.winner,
                    "winner_class": x.winner_class,
                    "shadowed": list(x.shadowed),
                    "shadowed_classes": list(x.shadowed_classes),
                    "standard": x.standard,
                }
                for x in self.shadows
            ],
        }

    def summary(self) -> dict[str, Any]:
        """A short JSON-serialisable overview: interpreter, file counts, hooks, code states."""
        totals: dict[str, int] = {}
        for d in self.distributions:
            for k, v in d.counts().items():
                totals[k] = totals.get(k, 0) + v
        path_files: dict[str, int] = {}
        for f in self.path_files:
            by = f.source.split(":", 1)[0] if f.source else f.status
            path_files[by] = path_files.get(by, 0) + 1
        return {
            "interpreter": self.interpreter.path,
            "version": self.interpreter.version,
            "prefix": self.interpreter.prefix,
            "distributions": len(self.distributions),
            "files": totals,
            "orphans": len(self.orphans),
            "pth_files": len(self.pth_files),
            "customize": [c.path for c in self.customize],
            "environment": sorted(self.environment),
            "path_files": dict(sorted(path_files.items())),
            "bytecode_checked": self.bytecode_checked,
            "code": [
                {"path": c.path, "kind": c.kind, "commit": c.commit, "dirty": c.dirty}
                for c in self.code
            ],
        }

    def environment_digest(self) -> str:
        """sha256 over the distributions, orphans, hooks and loader variables (subject digest):
        the canonical JSON (sorted keys) of those parts of :meth:`predicate`, without the
        per-distribution summaries. Computed once per snapshot (it covers every file)."""
        cached = self.__dict__.get("_environment_digest")
        if cached is None:
            core = json.dumps(self._core(summaries=False), sort_keys=True)
            cached = hashlib.sha256(core.encode()).hexdigest()
            # A frozen dataclass: the digest is kept beside the fields, not as one.
            object.__setattr__(self, "_environment_digest", cached)
        return str(cached)

    def subjects(self) -> list[dict[str, Any]]:
        """The in-toto subjects: the interpreter, the environment and each code directory."""
        subject: list[dict[str, Any]] = [
            {
                "name": f"python:{self.interpreter.path}",
                "digest": {"sha256": self.interpreter.sha256 or ""},
            },
            {
                "name": f"environment:{self.interpreter.prefix}",
                "digest": {"sha256": self.environment_digest()},
            },
        ]
        subject.extend(
            {"name": f"code:{c.path}", "digest": {"sha256": c.digest}} for c in self.code
        )
        return subject

    def to_statement(self) -> dict[str, Any]:
        """The in-toto Statement v1: subjects are the interpreter, the environment, code dirs."""
        return {
            "_type": STATEMENT_TYPE,
            "subject": self.subjects(),
            "predicateType": PREDICATE_TYPE,
            "predicate": self.predicate(),
        }

    @classmethod
    def from_statement(cls, st: Mapping[str, Any], source: str = "<snapshot>") -> Snapshot:
        """Rebuild a snapshot from :meth:`to_statement` output; raises AttestationError."""
        if st.get("_type") != STATEMENT_TYPE or st.get("predicateType") != PREDICATE_TYPE:
            raise AttestationError(
                f"{source} is not a TrainWarden environment attestation "
                f"(_type={st.get('_type')!r}, predicateType={st.get('predicateType')!r})",
                hint="create one with `trainwarden attest snapshot -o FILE`",
            )
        # A status lookup and tuple.__new__ per file, not an Enum call and a NamedTuple's Python
        # __new__: a torch baseline has ~50k files (an unknown status is a KeyError, below).
        status, new = _STATUS, tuple.__new__
        try:
            p = st["predicate"]
            dists = tuple(
                Distribution(
                    name=d["name"],
                    version=d["version"],
                    installer=d.get("installer"),
                    direct_url=d.get("direct_url"),
                    metadata_dir=d["metadata_dir"],
                    location=d["location"],
                    kind=d.get("kind", "dist-info"),
                    record_problem=d.get("record_problem", ""),
                    os_package=d.get("os_package"),
                    files=tuple(
                        [
                            new(DistFile, (path, status[state], sha, expected))
                            for path, state, sha, expected in d["files"]
                        ]
                    ),
                )
                for d in p["distributions"]
            )
            return cls(
                created=str(p["created"]),
                host=str(p["host"]),
                uid=int(p["uid"]),
                trainwarden_version=str(p.get("trainwarden_version", "?")),
                interpreter=Interpreter(**p["interpreter"]),
                platform=dict(p["platform"]),
                sys_path=tuple(p["sys_path"]),
                site_packages=tuple(p["site_packages"]),
                distributions=dists,
                orphans=tuple(Orphan(a, b, int(c)) for a, b, c in p["orphans"]),
                pth_files=tuple(
                    PthFile(
                        x["path"],
                        x.get("owner"),
                        x.get("sha256"),
                        tuple(x.get("import_lines", ())),
                        tuple(x.get("path_entries", ())),
                    )
                    for x in p["pth_files"]
                ),
                customize=tuple(CustomizeModule(**c) for c in p["customize"]),
                environment=dict(p["environment"]),
                code=tuple(CodeDir.from_dict(c) for c in p["code"]),
                unreadable=dict(p.get("unreadable", {})),
                os_packages={str(k): int(v) for k, v in dict(p.get("os_packages", {})).items()},
                path_roots={str(k): str(v) for k, v in dict(p.get("path_roots", {})).items()},
                path_files=tuple(
                    PathFile(str(a), b, int(c), str(d), e, f)
                    for a, b, c, d, e, f in p.get("path_files", [])
                ),
                path_cut=tuple(str(x) for x in p.get("path_cut", [])),
                shadows=tuple(
                    Shadow(
                        str(x["module"]),
                        str(x["winner"]),
                        str(x["winner_class"]),
                        tuple(x["shadowed"]),
                        tuple(x["shadowed_classes"]),
                        bool(x["standard"]),
                    )
                    for x in p.get("shadows", [])
                ),
                env_effects=tuple(
                    EnvEffect(
                        str(x["variable"]),
                        Severity[str(x["severity"])].name,
                        str(x["effect"]),
                        dict(x.get("evidence", {})),
                    )
                    for x in p.get("env_effects", [])
                ),
                bytecode=tuple(BytecodeResult(*map(_opt_str, b)) for b in p.get("bytecode", [])),
                bytecode_checked=int(p.get("bytecode_checked", 0)),
                bytecode_matches=_content_keys(p.get("bytecode_matches", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise AttestationError(
                f"{source}: malformed snapshot predicate ({type(e).__name__}: {e})",
                hint="re-create the snapshot with this version of trainwarden",
            ) from e


# --------------------------------------------------------------------------------------------
# collection
# --------------------------------------------------------------------------------------------


_COLLECTOR_TIMEOUT = 60.0
# What the collector always reports (the snapshot is built from these).
_COLLECTOR_KEYS = (
    "executable",
    "version",
    "implementation",
    "prefix",
    "base_prefix",
    "venv",
    "include_system_site_packages",
    "user_site",
    "user_site_enabled",
)


class _Collector:
    """The interpreter under attestation describing itself (``python -I -S -B collector.py``),
    started at once and read with :meth:`result`, so that this process walks while it runs.

    It runs in a process group of its own: on timeout, Ctrl-C or :meth:`close` the whole group
    is killed, not just the child (an interpreter that hangs may have started children of its
    own, which keep our pipes open and outlive a plain ``kill``).
    """

    def __init__(self, python: str | None, env: Mapping[str, str]) -> None:
        self.exe = python or sys.executable
        self._proc: subprocess.Popen[str] | None = None
        self._error: OSError | None = None
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - the interpreter under attestation, isolated
                [self.exe, "-I", "-S", "-B", str(_COLLECTOR)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=dict(helper_environment(env)),
                start_new_session=True,
            )
        except OSError as e:
            self._error = e

    def _kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Kill the interpreter (and its group) if :meth:`result` was never read, and reap it."""
        if self._proc is not None:
            self._kill()
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                self._proc.communicate()
            self._proc = None

    def result(self) -> dict[str, Any]:
        """What the interpreter printed, checked; :class:`AttestationError` if it could not
        be run, failed, timed out or printed something else."""
        proc = self._proc
        if proc is None:
            raise AttestationError(
                f"cannot run interpreter {self.exe}: {self._error or 'not started'}",
                hint="pass --python with a Python executable",
            )
        try:
            out, err = proc.communicate(timeout=_COLLECTOR_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            self.close()
            raise AttestationError(
                f"cannot run interpreter {self.exe}: {e}",
                hint="pass --python with a Python executable",
            ) from e
        except BaseException:
            # Ctrl-C: the child is not reaped yet, so its pid still names this group.
            self.close()
            raise
        self._proc = None
        return _collector_output(self.exe, proc.returncode, out, err)


def _collector_output(exe: str, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    if returncode != 0:
        raise AttestationError(
            f"interpreter {exe} failed to describe itself (exit {returncode}): "
            f"{stderr.strip()[-500:]}",
            hint="is it a CPython >= 3.8 executable?",
        )
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as e:
        raise AttestationError(f"interpreter {exe} printed unexpected output: {e}") from e
    if not isinstance(data, dict):
        raise AttestationError(f"interpreter {exe} printed unexpected output")
    missing = [k for k in _COLLECTOR_KEYS if k not in data]
    wrong = [
        k
        for k in ("venv_site_packages", "system_site_packages", "stdlib_path")
        if k in data and not isinstance(data[k], list)
    ]
    if missing or wrong:
        raise AttestationError(
            f"interpreter {exe} printed unexpected output: "
            + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"not a list: {', '.join(wrong)}"] if wrong else [])
            ),
            hint="is it a CPython >= 3.8 executable?",
        )
    return data


def _walk(root: str, out: dict[str, os.stat_result], skip: set[str]) -> None:
    """The serial walk of one site directory (as the tree print's helpers walk it)."""
    _syspath.walk_tree(root, out, skip)


def _walk_sites(
    site_dirs: Sequence[str], out: dict[str, os.stat_result], skip: Mapping[str, set[str]]
) -> None:
    """The serial walk of every site directory, each without entering the others."""
    for sd in site_dirs:
        _walk(sd, out, skip[sd])


def _unique_dirs(dirs: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for d in dirs:
        norm = os.path.normpath(d)
        real = os.path.realpath(norm)
        if real in seen or not os.path.isdir(norm):
            continue
        seen.add(real)
        out.append(norm)
    return out


def _customize_modules(
    sys_path: Sequence[str], classify: Mapping[str, str]
) -> list[tuple[str, str, str, bool]]:
    found: list[tuple[str, str, str, bool]] = []
    active: set[str] = set()
    for entry in sys_path:
        try:
            names = set(os.listdir(entry))
        except OSError:
            continue
        for module in _CUSTOMIZE:
            # FileFinder's order within one directory: package, extension module, source,
            # sourceless bytecode.
            candidates = sorted(
                n for n in names if n.startswith(f"{module}.") and n.endswith((".so", ".pyd"))
            )
            candidates += [f"{module}.py", f"{module}.pyc"]
            hits = [os.path.join(entry, n) for n in candidates if n in names]
            if module in names and os.path.isfile(os.path.join(entry, module, "__init__.py")):
                hits.insert(0, os.path.join(entry, module, "__init__.py"))
            for hit in hits:
                found.append((module, hit, classify.get(entry, "path"), module not in active))
                active.add(module)
    return found


@dataclass(frozen=True)
class _Layout:
    info: Mapping[str, Any]
    site_dirs: list[str]
    stdlib: list[str]
    pythonpath: list[str]
    site_path: list[str]
    pths: list[PthContent]
    sys_path: list[str]


def _layout(
    python: str | None, env: Mapping[str, str], collector: _Collector | None = None
) -> _Layout:
    run = collector if collector is not None else _Collector(python, env)
    try:
        info = run.result()
    finally:
        run.close()
    venv_sites = [str(s) for s in info.get("venv_site_packages", [])]
    user_sites = [str(info["user_site"])] if info.get("user_site_enabled") else []
    system_sites = [str(s) for s in info.get("system_site_packages", [])]
    site_dirs = _unique_dirs([*venv_sites, *user_sites, *system_sites])
    stdlib = [str(p) for p in info.get("stdlib_path", [])]
    pythonpath = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    site_path, pths = site_path_order(site_dirs)
    sys_path = list(dict.fromkeys([*pythonpath, *stdlib, *site_path]))
    return _Layout(info, site_dirs, stdlib, pythonpath, site_path, pths, sys_path)


def job_sys_path(python: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The ``sys.path`` a script run by ``python`` would get (PYTHONPATH, stdlib, site, .pth
    entries), computed without running any start-up hook; the script's own directory is not
    included."""
    return _layout(python, dict(os.environ if environ is None else environ)).sys_path


def take_snapshot(
    python: str | None = None,
    *,
    code_dirs: Sequence[Path] = (),
    environ: Mapping[str, str] | None = None,
    cache: HashCache | None = None,
    workers: int | None = None,
    vouched_bytecode: Collection[str] = (),
) -> Snapshot:
    """Describe the interpreter ``python`` (default: this one) and the code directories.

    ``environ`` is the environment the job will run with (default: this process's); it decides
    the loader variables recorded and the ``PYTHONPATH`` entries searched for ``sitecustomize``.
    ``cache`` defaults to :meth:`HashCache.default`; the cache file is updated at the end.
    ``vouched_bytecode`` is the ``bytecode_matches`` of a baseline whose signature was verified
    (never of any other): bytecode with one of these content keys is not compiled again.
    """
    env = dict(os.environ if environ is None else environ)
    for c in code_dirs:
        if not Path(c).is_dir():
            raise AttestationError(
                f"code directory {c} does not exist or is not a directory",
                hint="pass --code with the directory the job's scripts live in",
            )
    cache = cache if cache is not None else HashCache.default()
    memo = SnapshotMemo.beside(cache)
    helpers = helper_count(workers)
    # The interpreter describes itself in a process of its own; meanwhile helpers start on the
    # site directories of the last walk, and this process walks the last walk's roots outside
    # them. Each is used only if it is what the description calls for (the same directories,
    # in the same order, skipping the same ones); otherwise it is done again.
    collector = _Collector(python, env)
    early: ParallelPrint | None = None
    # Helper processes still running when the snapshot ends (used up, or an error) are killed.
    running: list[ParallelPrint | Prefetch] = []
    try:
        if _parallel_worth_it(memo, helpers) and memo.sites:
            early = ParallelPrint(memo.sites, _skips(memo.sites), helpers, memo.weights)
            running.append(early)
        roots, skip = memo.path_walk
        guess = (roots, set(skip), *walk_roots(roots, set(skip))) if roots else None
        walk = _site_walk(python, env, memo, helpers, running, collector, guess)
        return _take_snapshot(python, code_dirs, env, cache, workers, vouched_bytecode, walk)
    finally:
        collector.close()
        for helpers_left in running:
            helpers_left.close()


# A walk outside the site directories done before the layout was known: its roots, the
# directories it did not enter, the files it found and the roots it cut.
_PathGuess = tuple[list[str], set[str], dict[str, os.stat_result], list[str]]

# The layout, the memo (none for dpkg's interpreters), this process's walk of the site
# directories (empty when helpers print them), the walk's skip sets, those helpers, every
# helper still running, and the walk outside the site directories done early (if any).
_Walk = tuple[
    _Layout,
    SnapshotMemo,
    dict[str, os.stat_result],
    Mapping[str, set[str]],
    ParallelPrint | None,
    list[ParallelPrint | Prefetch],
    _PathGuess | None,
]


def _site_walk(
    python: str | None,
    env: dict[str, str],
    memo: SnapshotMemo,
    helpers: int,
    running: list[ParallelPrint | Prefetch],
    collector: _Collector | None = None,
    guess: _PathGuess | None = None,
) -> _Walk:
    """The interpreter's layout and the walk of its site directories (or the helpers that
    fingerprint them): what :func:`_take_snapshot` starts from."""
    early = next((p for p in running if isinstance(p, ParallelPrint)), None)
    layout = _layout(python, env, collector)
    site_dirs = layout.site_dirs
    # dpkg's database lives outside everything walked, so interpreters it manages are always
    # computed file by file.
    if any(sd.startswith("/usr/") for sd in site_dirs):
        memo = SnapshotMemo(None)
    # One walk of every site directory: each file is lstat'ed exactly once. Where the memo may
    # hold the results, helper processes compute only the walk's fingerprint (the tree print)
    # while this process does the rest; a miss walks again here, serially.
    stats: dict[str, os.stat_result] = {}
    skip = _skips(site_dirs)
    parallel: ParallelPrint | None = None
    if _parallel_worth_it(memo, helpers):
        if early is not None and early.site_dirs == list(site_dirs):
            parallel, early = early, None
        else:
            parallel = ParallelPrint(site_dirs, skip, helpers, memo.weights)
    else:
        _walk_sites(site_dirs, stats, skip)
    if early is not None:
        early.close()
    if parallel is not None:
        running.append(parallel)
    return layout, memo, stats, skip, parallel, running, guess


def _take_snapshot(
    python: str | None,
    code_dirs: Sequence[Path],
    env: dict[str, str],
    cache: HashCache,
    workers: int | None,
    vouched_bytecode: Collection[str],
    walk: _Walk,
) -> Snapshot:
    layout, memo, stats, skip, parallel, running, guess = walk
    # Whether ``stats`` holds this process's own walk of the site directories (without it, only
    # the helpers' fingerprint of them exists: a memo hit needs nothing more).
    walked_here = parallel is None
    info, site_dirs, stdlib, pythonpath = (
        layout.info,
        layout.site_dirs,
        layout.stdlib,
        layout.pythonpath,
    )
    site_path, pths, sys_path = layout.site_path, layout.pths, layout.sys_path
    site_set = set(site_dirs)
    path_roots = _path_roots(sys_path, site_dirs, stdlib, pythonpath)
    # A stdlib directory may hold the base interpreter's own site-packages, which is not on
    # this job's path (a hyphenated name is not importable) and is not walked.
    nested_sites = {
        os.path.join(r, n) for r in path_roots for n in ("site-packages", "dist-packages")
    }
    path_skip = site_set | set(path_roots) | nested_sites
    if guess is not None and guess[0] == list(path_roots) and guess[1] == path_skip:
        path_stats, path_cut = guess[2], guess[3]
    else:
        path_stats, path_cut = walk_roots(list(path_roots), path_skip)
    memo.set_path_walk(list(path_roots), sorted(path_skip))
    # Without a memo every file is computed: hash in helper processes from now on.
    prefetch = (
        _prefetch(stats, path_stats, cache, workers, bool(vouched_bytecode))
        if memo.path is None
        else None
    )
    if prefetch is not None:
        running.append(prefetch)

    sys_path_class = {p: "pythonpath" for p in pythonpath}
    sys_path_class.update({p: "stdlib" for p in stdlib})
    sys_path_class.update({p: "site-packages" for p in site_path})
    customize = _customize_modules(sys_path, sys_path_class)
    # Distributions link sitecustomize to /etc (Debian): hash what the link points to.
    customize_real = {path: os.path.realpath(path) for _, path, _, _ in customize}
    interp_real = str(info.get("realpath") or info.get("executable"))
    tag = str(info.get("cache_tag") or "")

    slot = fingerprint = hooks = b""
    plain: Any = None
    db_roots = [str(info["base_prefix"]), str(info["prefix"])]
    early_vouch: tuple[_FileState, tuple[tuple[PathFile, ...], dict[str, str]]] | None = None
    if memo.path is not None:
        layout_text = json.dumps(
            [info, site_dirs, sys_path, pythonpath, stdlib, path_roots, path_cut],
            sort_keys=True,
            default=str,
        )
        slot = hashlib.sha256(layout_text.encode()).digest()
        hooks_text = json.dumps(
            [customize, customize_real, [(p.path, p.import_lines, p.path_entries) for p in pths]],
            default=list,
        )
        hooks = hooks_text.encode()
        # Unpacked while the helpers walk, with what is computed from it (what the package
        # managers vouch for outside site-packages) and the digest of the walk outside the site
        # directories; each stands only if the fingerprint matches.
        candidate = memo.peek(slot)
        early: _FileState | None = None
        if candidate is not None and parallel is not None:
            early = _FileState.from_plain(candidate[1])
            vouched_early = _vouch(path_stats, early.path_digests, early.unreadable, db_roots)
            early_vouch = (early, vouched_early)
        path_print = walk_fingerprint([], path_stats)
        tree = parallel.result() if parallel is not None else None
        counts: dict[str, int] = {}
        if tree is not None and parallel is not None:
            counts = parallel.counts
        else:
            if parallel is not None:  # the helpers failed: walk here
                _walk_sites(site_dirs, stats, skip)
                walked_here = True
            tree, counts = print_from_stats(site_dirs, stats)
        version = [_MEMO_FORMAT, __version__.encode(), hooks]
        fingerprint = walk_fingerprint([*version, tree, path_print])
        if candidate is not None and candidate[0] == fingerprint:
            memo.hit = True
            plain = candidate[1] if early is None else early
        elif not walked_here:
            # A miss after the helpers' walk: walk here, and remember the results under the
            # fingerprint of the walk they are computed from.
            _walk_sites(site_dirs, stats, skip)
            walked_here = True
            tree, counts = print_from_stats(site_dirs, stats)
            fingerprint = walk_fingerprint([*version, tree, path_print])
        memo.set_weights(counts, list(site_dirs))
    magic = str(info.get("magic_number") or "")
    heads: dict[str, PycHead] | None = None
    vouched: Vouched | None = None
    if vouched_bytecode and re.fullmatch(r"(?:[0-9a-f]{2})+", magic):
        heads = {}
        vouched = Vouched(frozenset(vouched_bytecode), bytes.fromhex(magic), heads)
    if plain is not None:
        state = plain if isinstance(plain, _FileState) else _FileState.from_plain(plain)
        cache.hits += state.checked
    else:
        if prefetch is None:
            prefetch = _prefetch(stats, path_stats, cache, workers, bool(vouched_bytecode))
            if prefetch is not None:
                running.append(prefetch)
        before = cache.hits + cache.misses
        state, outside, consistent = _file_state(
            site_dirs,
            stats,
            path_stats,
            info,
            pths,
            customize,
            customize_real,
            interp_real,
            cache,
            workers,
            heads,
            prefetch,
        )
        state = dataclasses.replace(state, checked=cache.hits + cache.misses - before)
        # Bytecode on the walked path (site-packages, the standard library, every other entry).
        walked = {**stats, **path_stats}
        pairs = bytecode_pairs(walked, tag)
        results, same, matches = verify_bytecode(
            pairs,
            walked,
            _compiler_id(state.interp_digest, tag),
            python,
            env,
            cache,
            workers=workers,
            vouched=vouched,
        )
        consistent = consistent and same
        # The memo's fingerprint holds a link's own metadata; what Python reads through it is
        # checked on every memo hit as a file read outside the walk.
        for pyc, source in pairs:
            for f in (pyc, source):
                if f is not None and S_ISLNK(walked[f].st_mode):
                    outside.update(lstat_keys([os.path.realpath(f)]))
        state = dataclasses.replace(
            state,
            bytecode=tuple(r for r in results if r.status not in ("match", "ignored")),
            bytecode_checked=len(results),
            bytecode_matches=tuple(sorted(matches)),
        )
        if memo.path is not None and consistent:
            memo.put(slot, fingerprint, tuple(sorted(outside.items())), state.to_plain())
    distributions, orphans = state.distributions, state.orphans
    pth_files, customize_mods = state.pth_files, state.customize
    errors, os_packages = state.unreadable, state.os_packages
    code = tuple(code_state(Path(c), cache, workers=workers) for c in code_dirs)
    if early_vouch is not None and early_vouch[0] is state:
        path_files, db_problems = early_vouch[1]
    else:
        path_files, db_problems = _vouch(path_stats, state.path_digests, errors, db_roots)
    if db_problems:
        errors = dict(sorted({**errors, **db_problems}.items()))
    shadows = find_shadows(
        sys_path,
        sys_path_class,
        [str(x) for x in info.get("extension_suffixes", [".so"])],
        [str(x) for x in info.get("stdlib_module_names", [])],
    )
    effects = resolve_effects(env, pythonpath=pythonpath, shadows=shadows)
    # Bytecode in the code directories, ignored by git or not (outside every walk above).
    code_stats, _ = walk_roots([str(Path(c).resolve()) for c in code_dirs], set())
    # Bytecode the site walk covered was compared above (on a memo hit, its results are the
    # memo's: the helpers' walk kept no per-file list, only the fingerprint).
    site_prefixes = tuple(sd.rstrip(os.sep) + os.sep for sd in site_dirs)
    code_pairs = [
        p
        for p in bytecode_pairs(code_stats, tag)
        if p[0] not in stats and (walked_here or not p[0].startswith(site_prefixes))
    ]
    code_pairs = [p for p in code_pairs if p[0] not in path_stats]
    code_checked, _, code_matches = verify_bytecode(
        code_pairs,
        code_stats,
        _compiler_id(state.interp_digest, tag),
        python,
        env,
        cache,
        workers=workers,
        vouched=vouched,
    )
    cache.save()
    memo.save()
    interp_digest = state.interp_digest
    return Snapshot(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        uid=os.getuid() if hasattr(os, "getuid") else -1,
        trainwarden_version=__version__,
        interpreter=Interpreter(
            path=str(info["executable"]),
            realpath=interp_real,
            version=str(info["version"]),
            implementation=str(info["implementation"]),
            sha256=interp_digest.hex() if interp_digest is not None else None,
            prefix=str(info["prefix"]),
            base_prefix=str(info["base_prefix"]),
            venv=bool(info["venv"]),
            include_system_site_packages=bool(info["include_system_site_packages"]),
            user_site=str(info["user_site"]),
            user_site_enabled=bool(info["user_site_enabled"]),
        ),
        platform={str(k): str(v) for k, v in dict(info.get("platform", {})).items()},
        sys_path=tuple(sys_path),
        site_packages=tuple(site_dirs),
        distributions=distributions,
        orphans=orphans,
        pth_files=pth_files,
        customize=customize_mods,
        environment=loader_environment(env),
        code=code,
        unreadable=errors,
        os_packages=os_packages,
        path_roots=path_roots,
        path_files=path_files,
        path_cut=tuple(path_cut),
        shadows=tuple(shadows),
        env_effects=tuple(effects),
        bytecode=tuple(
            sorted(
                (
                    *state.bytecode,
                    *(b for b in code_checked if b.status not in ("match", "ignored")),
                )
            )
        ),
        bytecode_checked=state.bytecode_checked + len(code_checked),
        bytecode_matches=tuple(sorted({*state.bytecode_matches, *code_matches})),
    )


def _skips(site_dirs: Sequence[str]) -> dict[str, set[str]]:
    """Per site directory, the directories its walk does not enter: the other site directories
    (each is walked on its own)."""
    site_set = set(site_dirs)
    return {sd: site_set - {sd} for sd in site_dirs}


def _parallel_worth_it(memo: SnapshotMemo, helpers: int) -> bool:
    """Whether to fingerprint the site directories in helpers: the memo may hold the results,
    there are CPUs for two helpers or more, and the last walk found enough files."""
    return (
        memo.path is not None and helpers >= 2 and sum(memo.weights.values()) >= PARALLEL_MIN_FILES
    )


def _prefetch(
    stats: Mapping[str, os.stat_result],
    path_stats: Mapping[str, os.stat_result],
    cache: HashCache,
    workers: int | None,
    heads: bool,
) -> Prefetch | None:
    """Helpers hashing every walked file the cache does not hold, when there are enough of them
    (and CPUs) to be worth starting processes for."""
    helpers = helper_count(workers)
    if helpers < 2 or not cache.trusted:
        return None
    table, pack = cache.lookup_table(), cache_key_packer()
    todo = [
        (p, st)
        for walk in (stats, path_stats)
        for p, st in walk.items()
        if not S_ISLNK(st.st_mode)
        and pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) not in table
    ]
    if not todo or len(todo) < PREFETCH_MIN_FILES:
        return None
    return Prefetch(todo, helpers, heads=heads)


def _compiler_id(interp_digest: bytes | None, cache_tag: str) -> bytes | None:
    """What a bytecode verdict depends on besides the two files: the compiler."""
    if interp_digest is None or not cache_tag:
        return None
    return hashlib.sha256(interp_digest + cache_tag.encode()).digest()


_MEMO_FORMAT = b"files-v5"
# Site directories holding fewer files (at the last walk) are walked here: starting helper
# processes costs more than it saves.
PARALLEL_MIN_FILES = 4000
# Fewer files to hash than this are hashed here (threads).
PREFETCH_MIN_FILES = 2000
_STATUS = {s.value: s for s in FileStatus}


@dataclass(frozen=True)
class _FileState:
    """What :func:`_file_state` computes from the walked files (the memo's payload)."""

    distributions: tuple[Distribution, ...]
    orphans: tuple[Orphan, ...]
    pth_files: tuple[PthFile, ...]
    customize: tuple[CustomizeModule, ...]
    os_packages: dict[str, int]
    unreadable: dict[str, str]
    path_digests: dict[str, bytes]
    interp_digest: bytes | None
    # Files settled by a digest (from the cache or read): counted as cache hits on a memo hit.
    checked: int = 0
    # Bytecode on the walked path other than "match" and "ignored", and how many were compared.
    bytecode: tuple[BytecodeResult, ...] = ()
    bytecode_checked: int = 0
    bytecode_matches: tuple[str, ...] = ()

    def to_plain(self) -> Any:
        """Plain tuples, dicts and strings (marshal-able)."""
        return (
            tuple(
                (
                    d.name,
                    d.version,
                    d.installer,
                    dict(d.direct_url) if d.direct_url is not None else None,
                    d.metadata_dir,
                    d.location,
                    d.kind,
                    d.record_problem,
                    tuple((f.path, f.status.value, f.sha256, f.expected) for f in d.files),
                    d.os_package,
                )
                for d in self.distributions
            ),
            tuple((o.path, o.sha256, o.size) for o in self.orphans),
            tuple(
                (p.path, p.owner, p.sha256, p.import_lines, p.path_entries) for p in self.pth_files
            ),
            tuple((c.module, c.path, c.owner, c.sha256, c.where, c.active) for c in self.customize),
            self.os_packages,
            self.unreadable,
            self.path_digests,
            self.interp_digest,
            self.checked,
            tuple(tuple(b) for b in self.bytecode),
            self.bytecode_checked,
            self.bytecode_matches,
        )

    @classmethod
    def from_plain(cls, plain: Any) -> _FileState:
        """The inverse of :meth:`to_plain`."""
        dists, orphans, pths, customize, os_packages, unreadable, path_digests, interp, n = plain[
            :9
        ]
        bytecode, bytecode_checked, bytecode_matches = plain[9:]
        status = _STATUS
        # tuple.__new__ straight away: a NamedTuple's own __new__ is a Python function, one
        # call per installed file on every memo hit.
        new = tuple.__new__
        return cls(
            distributions=tuple(
                Distribution(
                    name=n,
                    version=v,
                    installer=inst,
                    direct_url=du,
                    metadata_dir=md,
                    location=loc,
                    kind=kind,
                    record_problem=rp,
                    files=tuple([new(DistFile, (p, status[st], h, e)) for p, st, h, e in files]),
                    os_package=osp,
                )
                for n, v, inst, du, md, loc, kind, rp, files, osp in dists
            ),
            orphans=tuple(Orphan(*o) for o in orphans),
            pth_files=tuple(PthFile(*p) for p in pths),
            customize=tuple(CustomizeModule(*c) for c in customize),
            os_packages=dict(os_packages),
            unreadable=dict(unreadable),
            path_digests=dict(path_digests),
            interp_digest=interp,
            checked=n,
            bytecode=tuple(BytecodeResult(*b) for b in bytecode),
            bytecode_checked=bytecode_checked,
            bytecode_matches=tuple(bytecode_matches),
        )


def _stat_key(st: os.stat_result) -> bytes:
    return cache_key_packer()(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _file_state(
    site_dirs: list[str],
    stats: dict[str, os.stat_result],
    path_stats: Mapping[str, os.stat_result],
    info: Mapping[str, Any],
    pths: Sequence[PthContent],
    customize: Sequence[tuple[str, str, str, bool]],
    customize_real: Mapping[str, str],
    interp_real: str,
    cache: HashCache,
    workers: int | None,
    pyc_heads: dict[str, PycHead] | None = None,
    prefetch: Prefetch | None = None,
) -> tuple[_FileState, dict[str, bytes], bool]:
    """Every installed, orphan, hook and path file checked against RECORD or hashed; also the
    files read outside the walk with their metadata keys, and whether every file hashed still
    had the metadata the walk saw. ``pyc_heads`` collects what the hash pass read of bytecode."""
    outside: dict[str, bytes] = {}
    dists_raw = list(find_distributions(site_dirs, cache))
    ok, modified, missing, no_hash = (
        FileStatus.OK,
        FileStatus.MODIFIED,
        FileStatus.MISSING,
        FileStatus.NO_HASH,
    )
    owner_idx: dict[str, int] = {}
    per_dist: list[list[DistFile]] = [[] for _ in dists_raw]
    # RECORD rows not settled by a cache hit: (dist index, RECORD path, full path, alg, digest).
    deferred: list[tuple[int, str, str, str | None, bytes | None]] = []
    to_hash: dict[str, os.stat_result] = {}
    cached, pack, sget = cache.lookup_table(), cache_key_packer(), stats.get
    settled = 0
    # Hot loop, one pass per installed file: on a warm run almost every row is settled here by a
    # cache hit whose digest equals RECORD's, without touching the file.
    for i, d in enumerate(dists_raw):
        base = d.location + os.sep
        done = per_dist[i]
        for rel, alg, expected, _ in d.entries:
            if rel.startswith(("/", "./")) or ".." in rel or "//" in rel or "/./" in rel:
                full = os.path.normpath(os.path.join(d.location, rel))
            else:
                full = base + rel
            if full not in owner_idx:
                owner_idx[full] = i
            st = sget(full)
            if st is None:
                try:
                    st = os.lstat(full)  # outside the site directories (scripts in bin/)
                except OSError:
                    outside[full] = b""
                    exp = f"{alg}:{expected.hex()}" if alg and expected is not None else None
                    done.append(DistFile(rel, missing, None, exp))
                    continue
                stats[full] = st
                outside[full] = _stat_key(st)
            if S_ISLNK(st.st_mode):
                deferred.append((i, rel, full, alg, expected))
                continue
            hit = cached.get(pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            if hit is not None:
                if alg == "sha256" and hit == expected:
                    done.append(DistFile(rel, ok, hit.hex(), None))
                    settled += 1
                    continue
                if alg is None or expected is None:  # bytecode listed without a hash
                    done.append(DistFile(rel, no_hash, hit.hex(), None))
                    settled += 1
                    continue
            deferred.append((i, rel, full, alg, expected))
            to_hash[full] = st
    cache.hits += settled
    # Bytecode that Python or the installer generated for an owned source file belongs to it.
    tag = str(info.get("cache_tag") or "")
    extra_owned: dict[str, int] = {}
    for path in stats:
        if path in owner_idx or not path.endswith(".pyc"):
            continue
        parent = os.path.dirname(path)
        if os.path.basename(parent) != "__pycache__":
            continue
        stem = os.path.basename(path).split(".", 1)[0]
        source = os.path.join(os.path.dirname(parent), stem + ".py")
        if source in owner_idx and (not tag or f".{tag}" in os.path.basename(path)):
            extra_owned[path] = owner_idx[source]

    os_owned: dict[str, str] = {}

    def owner(path: str) -> str | None:
        i = owner_idx.get(path)
        if i is not None:
            return dists_raw[i].name
        pkg = os_owned.get(path)
        return f"dpkg:{pkg}" if pkg is not None else None

    orphan_paths = [p for p in stats if p not in owner_idx and p not in extra_owned]
    # On Debian-style system interpreters, apt-installed packages have no RECORD; files dpkg
    # lists belong to an OS package rather than to nobody.
    meta_dirs = [d.metadata_dir for d in dists_raw]
    pth_paths = [p.path for p in pths]
    if any(sd.startswith("/usr/") for sd in site_dirs):  # dpkg installs only below /usr
        os_owned.update(dpkg_owners([*orphan_paths, *meta_dirs, *pth_paths]))
    dpkg_meta = {d: os_owned.pop(d) for d in meta_dirs if d in os_owned}
    if os_owned:
        # Debian compiles bytecode at install time (py3compile); it belongs to the same package.
        for path in orphan_paths:
            if path.endswith(".pyc") and path not in os_owned:
                parent = os.path.dirname(path)
                stem = os.path.basename(path).split(".", 1)[0]
                source = os.path.join(os.path.dirname(parent), stem + ".py")
                if os.path.basename(parent) == "__pycache__" and source in os_owned:
                    os_owned[path] = os_owned[source]
        orphan_paths = [p for p in orphan_paths if p not in os_owned]
    os_packages: dict[str, int] = {}
    for pkg in os_owned.values():
        os_packages[pkg] = os_packages.get(pkg, 0) + 1
    for p in (*orphan_paths, *extra_owned):
        if not S_ISLNK(stats[p].st_mode):
            to_hash[p] = stats[p]
    # Hooks are reported with their own digest whatever settled their RECORD row: a row settled
    # by a cache hit in the loop above never reaches ``digests``, and a snapshot must not depend
    # on whether the cache was warm.
    for pth in pths:
        pst = stats.get(pth.path)
        if pst is not None and not S_ISLNK(pst.st_mode):
            to_hash[pth.path] = pst
    for p, st in path_stats.items():
        if not S_ISLNK(st.st_mode):
            to_hash[p] = st
    for extra in (interp_real, *customize_real.values()):
        if extra in to_hash:
            continue
        try:
            to_hash[extra] = os.lstat(extra)
        except OSError:
            outside[extra] = b""
            continue
        outside[extra] = _stat_key(to_hash[extra])

    prefetched = prefetch.store(cache, pyc_heads) if prefetch is not None else set()
    digests, errors = hash_files(list(to_hash.items()), cache, workers=workers, pyc_heads=pyc_heads)
    if prefetched:
        # The helpers read these files: they count as read (misses), not as cache hits.
        read = sum(
            pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) in prefetched
            for st in to_hash.values()
        )
        cache.hits -= read
        cache.misses += read
    # Results computed from a file that changed between the walk and the read are right for
    # this run but must not be remembered under the walk's metadata.
    consistent = cache.holds_all(to_hash.items(), errors)
    other_algs: dict[str, set[str]] = {}
    for _, _, full, alg, _ in deferred:
        if alg and alg != "sha256" and alg in ACCEPTED_ALGORITHMS:
            other_algs.setdefault(alg, set()).add(full)
    other = {alg: hash_other(sorted(paths), alg) for alg, paths in other_algs.items()}

    for i, rel, full, alg, expected in deferred:
        actual = digests.get(full)
        fst = stats.get(full)
        link = _is_link(fst)
        hexd = actual.hex() if actual is not None and not link else None
        if alg == "sha256" and actual is not None and actual == expected:
            per_dist[i].append(DistFile(rel, ok, hexd, None))
            continue
        exp_text = f"{alg}:{expected.hex()}" if alg and expected is not None else None
        if alg is None or expected is None or alg not in ACCEPTED_ALGORITHMS:
            status = no_hash
        else:
            got = actual if alg == "sha256" else other.get(alg, {}).get(full)
            status = ok if got == expected else modified
        per_dist[i].append(DistFile(rel, status, hexd, exp_text))
    for path, i in extra_owned.items():
        d = dists_raw[i]
        prefix = d.location + os.sep
        rel = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, d.location)
        got = digests.get(path)
        per_dist[i].append(DistFile(rel, no_hash, got.hex() if got is not None else None, None))

    distributions = tuple(
        Distribution(
            name=d.name,
            version=d.version,
            installer=d.installer,
            os_package=dpkg_meta.get(d.metadata_dir),
            direct_url=d.direct_url,
            metadata_dir=d.metadata_dir,
            location=d.location,
            kind=d.kind,
            record_problem=d.record_problem,
            files=tuple(sorted(per_dist[i], key=_path_key)),
        )
        for i, d in enumerate(dists_raw)
    )
    orphans = tuple(
        Orphan(p, (digests[p].hex() if p in digests else None), stats[p].st_size)
        for p in sorted(orphan_paths)
    )
    pth_files = tuple(
        PthFile(
            path=p.path,
            owner=owner(p.path),
            sha256=digests[p.path].hex() if p.path in digests else None,
            import_lines=p.import_lines,
            path_entries=p.path_entries,
        )
        for p in pths
    )
    customize_mods = tuple(
        CustomizeModule(
            module=m,
            path=path,
            owner=owner(path),
            sha256=(
                digests[customize_real[path]].hex() if customize_real[path] in digests else None
            ),
            where=where,
            active=active,
        )
        for m, path, where, active in customize
    )
    state = _FileState(
        distributions=distributions,
        orphans=orphans,
        pth_files=pth_files,
        customize=customize_mods,
        os_packages=dict(sorted(os_packages.items())),
        unreadable=dict(sorted(errors.items())),
        path_digests={p: digests[p] for p in path_stats if p in digests},
        interp_digest=digests.get(interp_real),
    )
    return state, outside, consistent


def _path_roots(
    sys_path: Sequence[str],
    site_dirs: Sequence[str],
    stdlib: Sequence[str],
    pythonpath: Sequence[str],
) -> dict[str, str]:
    """sys.path entries outside the site directories, classified stdlib, pythonpath or path."""
    stdlib_set = {os.path.normpath(p) for p in stdlib}
    pythonpath_set = {os.path.normpath(p) for p in pythonpath}
    roots: dict[str, str] = {}
    for entry in sys_path:
        norm = os.path.normpath(entry)
        if norm in roots or not os.path.exists(norm):
            continue
        if any(norm == sd or norm.startswith(sd + os.sep) for sd in site_dirs):
            continue
        roots[norm] = (
            "pythonpath" if norm in pythonpath_set else "stdlib" if norm in stdlib_set else "path"
        )
    return roots


def _vouch(
    stats: Mapping[str, os.stat_result],
    digests: Mapping[str, bytes],
    errors: Mapping[str, str],
    prefixes: Sequence[str],
) -> tuple[tuple[PathFile, ...], dict[str, str]]:
    """Each file with what its package manager recorded (conda sha256, dpkg md5, RPM's file
    digests), and package databases that exist but could not be read."""
    paths = sorted(stats)
    conda = conda_hashes(prefixes, paths)
    # dpkg and RPM install only below these (each also checks its own prefixes).
    os_prefixes = (*_syspath.DPKG_PREFIXES, *_syspath.RPM_PREFIXES)
    os_paths = [p for p in paths if p.startswith(os_prefixes)]
    dpkg = dpkg_md5sums(p for p in os_paths if p not in conda)
    md5s = hash_other(sorted(dpkg), "md5") if dpkg else {}
    rpm, problems = rpm_digests(
        p for p in os_paths if p not in conda and p not in dpkg and not S_ISLNK(stats[p].st_mode)
    )
    rpm_other: dict[str, dict[str, bytes]] = {}
    for alg in {a for _, a, _ in rpm.values() if a != "sha256"}:
        rpm_other[alg] = hash_other(sorted(p for p, (_, a, _) in rpm.items() if a == alg), alg)
    out: list[PathFile] = []
    for path in paths:
        st = stats[path]
        if S_ISLNK(st.st_mode):
            try:
                target: str | None = os.readlink(path)
            except OSError:
                target = None
            out.append(PathFile(path, None, st.st_size, "symlink", None, target))
            continue
        d = digests.get(path)
        if d is None:
            out.append(PathFile(path, None, st.st_size, "unreadable", None, errors.get(path)))
            continue
        hexd = d.hex()
        if path in conda:
            pkg, want = conda[path]
            status = "ok" if want == hexd else "modified"
            detail = None if status == "ok" else f"sha256:{want}"
            out.append(PathFile(path, hexd, st.st_size, status, f"conda:{pkg}", detail))
        elif path in dpkg:
            pkg, want = dpkg[path]
            got = md5s.get(path)
            status = "ok" if got is not None and got.hex() == want else "modified"
            detail = None if status == "ok" else f"md5:{want}"
            out.append(PathFile(path, hexd, st.st_size, status, f"dpkg:{pkg}", detail))
        elif path in rpm:
            pkg, alg, want = rpm[path]
            got_rpm = d if alg == "sha256" else rpm_other.get(alg, {}).get(path)
            status = "ok" if got_rpm is not None and got_rpm.hex() == want else "modified"
            detail = None if status == "ok" else f"{alg}:{want}"
            out.append(PathFile(path, hexd, st.st_size, status, f"rpm:{pkg}", detail))
        else:
            out.append(PathFile(path, hexd, st.st_size, "unvouched", None, None))
    return tuple(out), problems


_path_key = operator.itemgetter(0)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _content_keys(x: object) -> tuple[str, ...]:
    if not isinstance(x, list) or not all(isinstance(k, str) and _HEX64.fullmatch(k) for k in x):
        raise ValueError("bytecode_matches is not a list of sha256 hex digests")
    return tuple(x)


def _opt_str(x: object) -> Any:
    return None if x is None else str(x)


def _is_link(st: os.stat_result | None) -> bool:
    return st is not None and (st.st_mode & 0o170000) == 0o120000
