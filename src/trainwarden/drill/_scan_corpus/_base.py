"""The sample records and the helpers every container family's builders share."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainwarden.drill._scan_corpus.asm import P4, STOP, call, sg, su

Kind = Literal["malicious", "clean"]


@dataclass(frozen=True)
class Sample:
    """One corpus entry (a file or a model folder) under ``dest``.

    ``reference`` names the advisory, CVE, blog post or peer issue a malicious sample reproduces,
    or the library that wrote a clean one. ``canary`` is the file the payload would create if it
    ever ran (``None`` for samples whose danger is not code run at load time, such as a path in an
    ONNX model). ``expected_rules`` are the rule ids a scan of a malicious sample must raise (the
    sample failing at HIGH by anything else is a miss). ``trigger`` says which real loader
    would execute the payload (used by ``bench/corpus_liveness.py`` to prove the samples are
    live, never by the tests).
    """

    name: str
    relpath: str
    kind: Kind
    technique: str
    reference: str
    canary: Path | None = None
    expected_rules: tuple[str, ...] | None = None
    trigger: str | None = None

    def path(self, dest: Path) -> Path:
        """The sample's absolute path inside the corpus directory ``dest``."""
        return dest / self.relpath


def canaries_fired(dest: Path) -> list[str]:
    """Names of the canary files present under ``dest/canaries`` (must always be empty)."""
    d = dest / "canaries"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def code_of(canary: Path) -> str:
    """The benign payload: Python source that only creates the canary file."""
    return f"open({str(canary)!r}, 'w').close()"


def p4(body: bytes) -> bytes:
    return P4 + body + STOP


def exec_payload(canary: Path) -> bytes:
    return call(sg("builtins", "exec"), su(code_of(canary)))


class _Reduce:
    """Pickles as ``fn(*args)``; lets the real pickler emit every protocol's own encoding."""

    def __init__(self, fn: Any, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _evil(canary: Path) -> _Reduce:
    return _Reduce(exec, (code_of(canary),))


Builder = Callable[[Path, Path], None]


@dataclass(frozen=True)
class _Mal:
    name: str
    ext: str
    technique: str
    reference: str
    build: Builder
    trigger: str | None = "pickle"
    canary: bool = True
    folder: bool = False
    expected_rules: tuple[str, ...] | None = None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _bytes_sample(fn: Callable[[Path], bytes]) -> Builder:
    def build(path: Path, canary: Path) -> None:
        _write(path, fn(canary))

    return build


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Third-party libraries warn while writing files (deprecations, tiny-dataset hints); those
    # warnings concern them, not the scanner under test, so they must not become test errors.
    # Their progress prints (training logs) would also land on the caller's stdout.
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        yield


def _select(specs: list[Any], kind: str, only: str | None) -> list[Any]:
    if only is None or only == kind:
        return specs
    if only in ("malicious", "clean"):
        return []
    return [s for s in specs if s.name == only]


@dataclass(frozen=True)
class _Clean:
    name: str
    ext: str
    reference: str
    build: Callable[[Path], None]
    folder: bool = False
