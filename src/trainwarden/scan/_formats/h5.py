"""HDF5 handler for legacy Keras ``.h5`` models: inspects their ``model_config`` JSON.

Keras deserialises the ``model_config``/``training_config`` root attributes on ``load_model``
(Lambda bytecode, custom objects), so they get the same analysis as a ``.keras`` config. h5py is
optional and runs in an isolated child process (the HDF5 C library crashes or hangs on crafted
files); without it, or when it fails, the JSON is recovered by scanning the raw bytes, and a config
that cannot be recovered is a fail-closed finding.
"""

from __future__ import annotations

import atexit
import json
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.scan._formats.keras import analyze_keras_config
from trainwarden.scan._types import ScanContext

__all__ = ["CONFIG_ATTRS", "HANDLER", "H5Handler", "extract_configs_from_bytes"]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Root attributes that Keras turns back into objects when loading an HDF5 model.
CONFIG_ATTRS = ("model_config", "training_config")
_MAX_USERBLOCK_PROBES = 16  # the superblock sits at 0, 512, 1024, 2048, ... (userblock sizes)


def _superblock_offset(data: bytes) -> int | None:
    offset = 0
    for _ in range(_MAX_USERBLOCK_PROBES):
        if offset + len(SIGNATURE) > len(data):
            return None
        if data[offset : offset + len(SIGNATURE)] == SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


# Runs in a child process: the HDF5 C library crashes (SIGSEGV) or loops on crafted files, which
# must cost the scanner one finding, not its own process. The child serves requests (8-byte length
# + file bytes -> 8-byte length + JSON) until its stdin closes, so h5py is imported once.
_CHILD = r"""
import io, json, resource, struct, sys
try:
    resource.setrlimit(resource.RLIMIT_AS, (@LIMIT@, @LIMIT@))
except (ValueError, OSError):
    pass
try:
    import h5py
except ImportError:
    sys.exit(3)
except BaseException:
    sys.exit(5)
inp, outp = sys.stdin.buffer, sys.stdout.buffer
outp.write(b"R")  # ready: h5py imported under the limits
outp.flush()
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    data = inp.read(struct.unpack("<Q", head)[0])
    attrs = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            for name in @NAMES@:
                if name in f.attrs:
                    value = f.attrs[name]
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    attrs[name] = str(value)
        reply = {"status": "ok", "attrs": attrs}
    except Exception as e:
        reply = {"status": "unreadable", "detail": type(e).__name__ + ": " + str(e)[:300]}
    body = json.dumps(reply).encode()
    outp.write(struct.pack("<Q", len(body)) + body)
    outp.flush()
"""
_CHILD_TIMEOUT_S = 60.0
#: Address-space cap of the reader process: enough for h5py plus a copy of the largest file it gets.
_CHILD_BASE_MEMORY = 4 * 1024**3
_STARTUP_TIMEOUT_S = 120.0
# BLAS thread pools reserve address space per core; one thread keeps the child's footprint small.
_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_SHARED_WORKER_MAX_FILE = 256 * 1024**2


@dataclass(frozen=True)
class _H5pyResult:
    """What the isolated h5py reader said: ``attrs`` on success, else ``status`` and ``detail``."""

    status: str  # ok | missing | unreadable | crashed | timeout
    attrs: dict[str, str]
    detail: str = ""


class _H5Worker:
    """One h5py reader process; replaced after a crash or timeout."""

    def __init__(self, max_file: int) -> None:
        limit = _CHILD_BASE_MEMORY + 3 * max_file
        code = _CHILD.replace("@LIMIT@", str(limit)).replace("@NAMES@", repr(CONFIG_ATTRS))
        import subprocess  # here: only an HDF5 file needs the reader process

        self.proc = subprocess.Popen(  # noqa: S603  (our own interpreter running our fixed code)
            [sys.executable, "-I", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **_CHILD_ENV},
        )
        self.ready = self._handshake()

    def _handshake(self) -> bool:
        """True once the child has imported h5py; False when h5py is unusable there."""
        try:
            ok = self._read(1, time.monotonic() + _STARTUP_TIMEOUT_S) == b"R"
        except (TimeoutError, OSError):  # OSError: no select() on pipes (Windows)
            ok = False
        if not ok:
            self.close()
        return ok

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def _read(self, n: int, deadline: float) -> bytes | None:
        stdout = self.proc.stdout
        if stdout is None:
            return None
        fd = stdout.fileno()
        import select

        chunks: list[bytes] = []
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, n - got)
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def ask(self, data: bytes, timeout_s: float) -> _H5pyResult:
        if not self.ready:
            detail = f"the h5py reader did not start (status {self.proc.returncode})"
            return _H5pyResult("missing", {}, detail)
        stdin = self.proc.stdin
        deadline = time.monotonic() + timeout_s
        try:
            if stdin is None:
                raise BrokenPipeError
            stdin.write(struct.pack("<Q", len(data)) + data)
            stdin.flush()
            head = self._read(8, deadline)
            body = None if head is None else self._read(struct.unpack("<Q", head)[0], deadline)
        except TimeoutError:
            self.close()
            return _H5pyResult("timeout", {}, f"h5py did not finish within {timeout_s:g} s")
        except (BrokenPipeError, OSError):
            body = None
        if body is None:
            self.close()
            if self.proc.returncode == 3:
                return _H5pyResult("missing", {})
            return _H5pyResult("crashed", {}, f"h5py exited with status {self.proc.returncode}")
        try:
            reply = json.loads(body)
            attrs = {str(k): str(v) for k, v in reply.get("attrs", {}).items()}
            return _H5pyResult(str(reply["status"]), attrs, str(reply.get("detail", "")))
        except (ValueError, KeyError, AttributeError):
            self.close()
            return _H5pyResult("crashed", {}, "h5py reader sent a malformed reply")


_worker_lock = threading.Lock()
_worker: _H5Worker | None = None
_h5py_missing = False


def _close_worker() -> None:
    global _worker
    with _worker_lock:
        if _worker is not None:
            _worker.close()
            _worker = None


atexit.register(_close_worker)

_inherited: list[_H5Worker] = []


def _reset_after_fork() -> None:
    # A forked scanner process (the engine's process pool) must not talk to its parent's reader
    # through the inherited pipes: replies would interleave. Keep the inherited object alive
    # (closing it would kill the parent's reader) and start afresh.
    global _worker, _worker_lock
    if _worker is not None:
        _inherited.append(_worker)
    _worker = None
    _worker_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX; there is no fork elsewhere
    os.register_at_fork(after_in_child=_reset_after_fork)


def _read_with_h5py(data: bytes, timeout_s: float) -> _H5pyResult:
    """Root config attributes read by h5py in an isolated, memory- and time-limited process."""
    global _worker, _h5py_missing
    if _h5py_missing:
        return _H5pyResult("missing", {})
    with _worker_lock:
        if len(data) > _SHARED_WORKER_MAX_FILE:
            one_off = _H5Worker(len(data))
            try:
                result = one_off.ask(data, timeout_s)
            finally:
                one_off.close()
        else:
            if _worker is None or _worker.proc.poll() is not None:
                _worker = _H5Worker(_SHARED_WORKER_MAX_FILE)
            result = _worker.ask(data, timeout_s)
            if result.status in ("crashed", "timeout", "missing"):
                _worker = None
    if result.status == "missing":
        _h5py_missing = True
    return result


def extract_configs_from_bytes(data: bytes) -> tuple[list[Any], bool]:
    """Recover Keras JSON configs stored as HDF5 attributes by scanning the raw bytes.

    Returns the parsed configs and whether any config attribute *name* occurs in the file (an
    attribute whose name is absent cannot exist, so no name means nothing for Keras to load).
    HDF5 stores small attribute values contiguously, so each ``{"class_name"`` / ``{"module"`` start
    is tried with a JSON decoder.
    """
    named = any(name.encode() in data for name in CONFIG_ATTRS)
    if not named:
        return [], False
    decoder = json.JSONDecoder()
    configs: list[Any] = []
    text = data.decode("latin-1")
    pos = 0
    while True:
        hits = [i for i in (text.find('{"class_name"', pos), text.find('{"module"', pos)) if i >= 0]
        if not hits:
            break
        start = min(hits)
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        configs.append(obj)
        pos = end
    return configs, True


class H5Handler:
    """HDF5 files (Keras ``.h5`` models and weights), recognised by the HDF5 signature."""

    name = "hdf5"

    def sniff(self, data: bytes) -> bool:
        return _superblock_offset(data) is not None

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format(self.name)
        result = _read_with_h5py(data, min(ctx.limits.max_seconds_per_file, _CHILD_TIMEOUT_S))
        if result.status == "ok":
            for name, text in result.attrs.items():
                try:
                    config = json.loads(text)
                except (ValueError, RecursionError) as e:
                    ctx.add(
                        Finding(
                            "TWS-H5-002",
                            Severity.HIGH,
                            f"HDF5 attribute {name!r} is not valid JSON, so the Keras config "
                            f"cannot be inspected: {str(e)[:200]}",
                            location,
                            {"attribute": name},
                        )
                    )
                    continue
                analyze_keras_config(config, location, ctx, where=name)
            return
        if result.status in ("crashed", "timeout"):
            ctx.add(
                Finding(
                    "TWS-H5-003",
                    Severity.HIGH,
                    f"the HDF5 library crashed or hung on this file ({result.detail}): crafted "
                    "HDF5 structures are a memory-corruption vector",
                    location,
                    {"status": result.status},
                )
            )
        self.scan_fallback(
            data, location, ctx, h5py_failed=result.status == "unreadable", detail=result.detail
        )

    def scan_fallback(
        self, data: bytes, location: str, ctx: ScanContext, *, h5py_failed: bool, detail: str = ""
    ) -> None:
        """Inspect ``data`` without h5py (also used when h5py could not open it)."""
        if h5py_failed:
            ctx.add(
                Finding(
                    "TWS-H5-001",
                    Severity.MEDIUM,
                    "HDF5 file cannot be opened by h5py (truncated or malformed); its Keras "
                    f"config was searched for in the raw bytes instead ({detail[:200]})",
                    location,
                )
            )
        configs, named = extract_configs_from_bytes(data)
        if not named:
            return
        if not configs:
            ctx.add(
                Finding(
                    "TWS-H5-002",
                    Severity.HIGH,
                    "HDF5 file has a Keras config attribute that cannot be inspected "
                    "(stored compressed, split or malformed): cannot vouch for it",
                    location,
                )
            )
            return
        for i, config in enumerate(configs):
            analyze_keras_config(config, location, ctx, where=f"attribute#{i}")


HANDLER = H5Handler()
