"""Confine the calling process and everything it starts later with Landlock.

:func:`apply` must run before any user code or model file is loaded and while the process has a
single thread: Landlock restricts the calling thread and its future children, never threads that
already exist, so a second thread would stay unconfined.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from trainwarden.sandbox import _landlock as ll
from trainwarden.sandbox._policy import ResolvedPolicy, SandboxPolicy, compress_ports
from trainwarden.sandbox._types import (
    FsRule,
    Mode,
    SandboxError,
    SandboxReport,
    SandboxUnavailable,
)

if TYPE_CHECKING:
    from trainwarden._internal.sink import EventSink

__all__ = ["apply", "thread_count", "unenforceable"]

_log = logging.getLogger("trainwarden.sandbox")

_READ = ll.AccessFs.READ_FILE | ll.AccessFs.READ_DIR | ll.AccessFs.EXECUTE
_RW_FILE = ll.AccessFs.READ_FILE | ll.AccessFs.WRITE_FILE | ll.AccessFs.TRUNCATE
_DEVICE = (
    ll.AccessFs.READ_FILE | ll.AccessFs.WRITE_FILE | ll.AccessFs.READ_DIR | ll.AccessFs.IOCTL_DEV
)
_MAX_WARN_EVENTS = 1000


def thread_count() -> int:
    """Threads of this process as the kernel counts them (native threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _rights_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in ll.AccessFs.NAMES.items() if mask & bit)


def apply(
    policy: SandboxPolicy | None = None,
    *,
    mode: Mode | str = Mode.enforce,
    code: Iterable[str] = (),
    sink: EventSink | None = None,
) -> SandboxReport:
    """Confine this process and all its future children to ``policy``; return what was enforced.

    ``code`` are the job's own script or package folders (made read-only). The report is sent
    to ``sink`` as a ``sandbox.applied`` event. In ``enforce`` mode a kernel that cannot enforce
    every part of the policy raises :class:`SandboxUnavailable` before anything changes;
    ``best-effort`` enforces what it can and lists the rest in ``not_enforced``; ``warn``
    enforces nothing and reports what it would deny as ``sandbox.would_deny`` events, seen
    through Python audit hooks in this process only. Irreversible: nothing can lift the
    sandbox afterwards.
    """
    mode = Mode.parse(mode)
    policy = policy or SandboxPolicy.default()
    resolved = policy.resolve(code=code)
    abi = ll.abi_version()

    if mode is Mode.warn:
        tmpdir = _private_tmp() if resolved.private_tmp else None
        report = _report(resolved, mode, abi.version, False, (), tmpdir, abi.reason)
        _install_warn_hook(resolved, tmpdir, sink)
        _emit(sink, "sandbox.applied", report.to_record())
        return report

    missing = unenforceable(resolved, abi.version)
    if mode is Mode.enforce and missing:
        if abi.version == 0:
            what = f": {abi.reason}"
        else:
            what = f"; this kernel's ABI {abi.version} lacks " + ", ".join(missing)
        raise SandboxUnavailable(
            "the sandbox needs Linux Landlock" + what,
            hint="run on Linux >= 6.12 with Landlock enabled (ABI 6: TCP ports since ABI 4, "
            "signal and abstract-socket scoping since ABI 6), or pass --sandbox=best-effort to "
            "run with what this kernel enforces",
        )
    if abi.version == 0:
        report = _report(resolved, mode, 0, False, missing, None, abi.reason)
        _emit(sink, "sandbox.applied", report.to_record())
        return report

    threads = thread_count()
    if threads > 1:
        raise SandboxError(
            f"the sandbox must be applied while the process has one thread; it has {threads}",
            hint="apply it first thing in the launcher, before importing torch or starting "
            "threads (threads that exist already would stay unconfined)",
        )

    tmpdir = _private_tmp() if resolved.private_tmp else None
    fs_mask = ll.ACCESS_FS_BY_ABI[min(abi.version, 7)]
    net_mask = ll.ACCESS_NET_BY_ABI[min(abi.version, 7)]
    scope_mask = 0
    if resolved.scope_signals:
        scope_mask |= ll.Scope.SIGNAL
    if resolved.scope_abstract_unix:
        scope_mask |= ll.Scope.ABSTRACT_UNIX_SOCKET
    scope_mask &= ll.SCOPE_BY_ABI[min(abi.version, 7)]

    granted: list[FsRule] = []
    try:
        fd = ll.create_ruleset(fs_mask, net_mask, scope_mask)
    except ll.LandlockError as e:
        raise SandboxError(f"cannot create the Landlock ruleset: {e}") from e
    try:
        kinds = {"read": _READ, "write": fs_mask, "rw": _RW_FILE, "device": _DEVICE}
        fs_rules = [(r.path, kinds[r.kind], r.origin) for r in resolved.rules]
        if tmpdir is not None:
            fs_rules.append((tmpdir, fs_mask, "private tmp"))
        for path, access, origin in fs_rules:
            try:
                got = ll.add_path_rule(fd, path, access & fs_mask)
            except OSError as e:
                raise SandboxError(f"cannot add a Landlock rule for {path}: {e}") from e
            if got:
                granted.append(FsRule(path, _rights_names(got), origin))
        if net_mask:
            ll.add_net_port_rules(fd, resolved.bind_ports, ll.AccessNet.BIND_TCP)
            ll.add_net_port_rules(fd, resolved.connect_ports, ll.AccessNet.CONNECT_TCP)
        ll.set_no_new_privs()
        # ABI 7: also log denials after exec (torchrun's workers, subprocesses) to the audit log.
        flags = ll.RESTRICT_SELF_LOG_NEW_EXEC_ON if abi.version >= 7 else 0
        ll.restrict_self(fd, flags)
    except ll.LandlockError as e:
        raise SandboxError(f"cannot enforce the sandbox: {e}") from e
    finally:
        os.close(fd)
    report = _report(resolved, mode, abi.version, True, missing, tmpdir, None, granted)
    _emit(sink, "sandbox.applied", report.to_record())
    return report


def unenforceable(resolved: ResolvedPolicy, abi: int) -> tuple[str, ...]:
    if abi == 0:
        return ("filesystem rules (ABI 1)",)
    missing = []
    if abi < 2:
        missing.append("rename/link across folders (ABI 2)")
    if abi < 3:
        missing.append("truncate (ABI 3)")
    if abi < 4:
        missing.append("TCP bind/connect port rules (ABI 4)")
    if abi < 5 and any(r.kind == "device" for r in resolved.rules):
        missing.append("device ioctl rules (ABI 5)")
    if abi < 6 and resolved.scope_signals:
        missing.append("signal scoping (ABI 6)")
    if abi < 6 and resolved.scope_abstract_unix:
        missing.append("abstract Unix socket scoping (ABI 6)")
    return tuple(missing)


def _report(
    resolved: ResolvedPolicy,
    mode: Mode,
    abi: int,
    enforced: bool,
    missing: tuple[str, ...],
    tmpdir: str | None,
    reason: str | None,
    granted: list[FsRule] | None = None,
) -> SandboxReport:
    scoped = []
    if resolved.scope_signals:
        scoped.append("signal")
    if resolved.scope_abstract_unix:
        scoped.append("abstract_unix_socket")
    if granted is None:
        granted = [FsRule(r.path, (r.kind,), r.origin) for r in resolved.rules]
    return SandboxReport(
        mode=mode,
        abi=abi,
        enforced=enforced,
        fs_rules=tuple(granted),
        bind_ports=compress_ports(resolved.bind_ports),
        connect_ports=compress_ports(resolved.connect_ports),
        scoped=tuple(scoped),
        not_enforced=missing,
        tmpdir=tmpdir,
        policy_source=resolved.source,
        kernel_reason=reason,
    )


def _private_tmp() -> str:
    path = tempfile.mkdtemp(prefix="trainwarden-job-")
    os.environ["TMPDIR"] = path
    tempfile.tempdir = None  # recomputed from $TMPDIR on next use
    return path


def _emit(sink: EventSink | None, kind: str, record: dict[str, Any]) -> None:
    if sink is not None:
        sink.emit(kind, record)


# -- warn mode ------------------------------------------------------------------------------


def _beneath(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _in_job(pid: int, root: int) -> bool:
    # A process belongs to the job when it is the job or descends from it.
    seen = 0
    while pid > 1 and seen < 4096:
        if pid == root:
            return True
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
            pid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        seen += 1
    return pid == root


def _install_warn_hook(
    resolved: ResolvedPolicy, tmpdir: str | None, sink: EventSink | None
) -> None:
    read_roots = [r.path for r in resolved.rules]
    write_roots = [r.path for r in resolved.rules if r.kind in ("write", "rw", "device")]
    if tmpdir:
        read_roots.append(tmpdir)
        write_roots.append(tmpdir)
    bind = set(resolved.bind_ports)
    connect = set(resolved.connect_ports)
    root_pid = os.getpid()
    seen: set[tuple[str, str]] = set()
    busy = threading.local()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def deny(op: str, target: str) -> None:
        key = (op, target)
        if key in seen or len(seen) >= _MAX_WARN_EVENTS:
            return
        seen.add(key)
        record = {"op": op, "target": target, "pid": os.getpid()}
        if len(seen) == _MAX_WARN_EVENTS:
            record["note"] = f"later would-be denials are not reported (limit {_MAX_WARN_EVENTS})"
        _log.warning("sandbox (warn): would deny %s %s", op, target)
        _emit(sink, "sandbox.would_deny", record)

    def fs(path: Any, write: bool, op: str) -> None:
        if isinstance(path, int) or path is None:
            return
        p = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
        real = os.path.realpath(p)
        if not _beneath(real, write_roots if write else read_roots):
            deny(op, real)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if getattr(busy, "on", False):
            return
        busy.on = True
        try:
            if event == "open":
                path, m, flags = args
                write = bool(flags & write_flags) if isinstance(flags, int) else False
                write = write or (isinstance(m, str) and any(c in m for c in "wax+"))
                fs(path, write, "write" if write else "read")
            elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.symlink"):
                fs(args[1] if event == "os.symlink" else args[0], True, event)
            elif event in ("os.rename", "os.link"):
                fs(args[0], True, event)
                fs(args[1], True, event)
            elif event in ("socket.bind", "socket.connect"):
                sock, addr = args
                if sock.family in (socket.AF_INET, socket.AF_INET6) and (
                    sock.type == socket.SOCK_STREAM
                ):
                    port = int(addr[1])
                    allowed = bind if event == "socket.bind" else connect
                    if port not in allowed:
                        deny(event, f"{addr[0]}:{port}")
                elif (
                    sock.family == socket.AF_UNIX
                    and resolved.scope_abstract_unix
                    and event == "socket.connect"
                    and isinstance(addr, (str, bytes))
                    and addr[:1] in ("\0", b"\0")
                ):
                    deny(event, f"abstract unix socket {addr!r}")
            elif event in ("os.kill", "os.killpg") and resolved.scope_signals:
                pid, sig = int(args[0]), int(args[1])
                if sig != 0 and pid > 0 and not _in_job(pid, root_pid):
                    deny(event, f"signal {sig} to pid {pid}")
        except Exception:  # noqa: S110 - an audit hook must never break the job it watches
            pass
        finally:
            busy.on = False

    sys.addaudithook(hook)
