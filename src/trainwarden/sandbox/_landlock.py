"""A small ctypes layer over the three Landlock system calls and ``PR_SET_NO_NEW_PRIVS``.

It speaks the kernel's ABI directly (``include/uapi/linux/landlock.h``): filesystem rights up to
ABI 5, TCP port rules (ABI 4), scoped signals and abstract Unix sockets (ABI 6) and the audit
logging flags of ``landlock_restrict_self`` (ABI 7). Every call checks its own return value; an
error raises :class:`LandlockError` with the errno, never a stale one.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "ACCESS_FS_BY_ABI",
    "ACCESS_NET_BY_ABI",
    "FS_DIR_ONLY",
    "SCOPE_BY_ABI",
    "AccessFs",
    "AccessNet",
    "LandlockError",
    "Scope",
    "abi_version",
    "add_net_port_rule",
    "add_net_port_rules",
    "add_path_rule",
    "create_ruleset",
    "restrict_self",
    "set_no_new_privs",
]

# Landlock's syscall numbers are the same on every architecture (the unified syscall table).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

_PR_SET_NO_NEW_PRIVS = 38

RESTRICT_SELF_LOG_SAME_EXEC_OFF = 1 << 0
RESTRICT_SELF_LOG_NEW_EXEC_ON = 1 << 1
RESTRICT_SELF_LOG_SUBDOMAINS_OFF = 1 << 2


class AccessFs:
    """``LANDLOCK_ACCESS_FS_*`` bits."""

    EXECUTE = 1 << 0
    WRITE_FILE = 1 << 1
    READ_FILE = 1 << 2
    READ_DIR = 1 << 3
    REMOVE_DIR = 1 << 4
    REMOVE_FILE = 1 << 5
    MAKE_CHAR = 1 << 6
    MAKE_DIR = 1 << 7
    MAKE_REG = 1 << 8
    MAKE_SOCK = 1 << 9
    MAKE_FIFO = 1 << 10
    MAKE_BLOCK = 1 << 11
    MAKE_SYM = 1 << 12
    REFER = 1 << 13  # ABI 2
    TRUNCATE = 1 << 14  # ABI 3
    IOCTL_DEV = 1 << 15  # ABI 5

    NAMES: ClassVar[dict[int, str]] = {
        EXECUTE: "execute",
        WRITE_FILE: "write_file",
        READ_FILE: "read_file",
        READ_DIR: "read_dir",
        REMOVE_DIR: "remove_dir",
        REMOVE_FILE: "remove_file",
        MAKE_CHAR: "make_char",
        MAKE_DIR: "make_dir",
        MAKE_REG: "make_reg",
        MAKE_SOCK: "make_sock",
        MAKE_FIFO: "make_fifo",
        MAKE_BLOCK: "make_block",
        MAKE_SYM: "make_sym",
        REFER: "refer",
        TRUNCATE: "truncate",
        IOCTL_DEV: "ioctl_dev",
    }


class AccessNet:
    """``LANDLOCK_ACCESS_NET_*`` bits (ABI 4)."""

    BIND_TCP = 1 << 0
    CONNECT_TCP = 1 << 1


class Scope:
    """``LANDLOCK_SCOPE_*`` bits (ABI 6)."""

    ABSTRACT_UNIX_SOCKET = 1 << 0
    SIGNAL = 1 << 1


# Rights that only make sense on a directory: the kernel refuses them in a rule on a file.
FS_DIR_ONLY = (
    AccessFs.READ_DIR
    | AccessFs.REMOVE_DIR
    | AccessFs.REMOVE_FILE
    | AccessFs.MAKE_CHAR
    | AccessFs.MAKE_DIR
    | AccessFs.MAKE_REG
    | AccessFs.MAKE_SOCK
    | AccessFs.MAKE_FIFO
    | AccessFs.MAKE_BLOCK
    | AccessFs.MAKE_SYM
    | AccessFs.REFER
)

_FS_ABI1 = (1 << 13) - 1


def _fs_for(abi: int) -> int:
    mask = _FS_ABI1
    if abi >= 2:
        mask |= AccessFs.REFER
    if abi >= 3:
        mask |= AccessFs.TRUNCATE
    if abi >= 5:
        mask |= AccessFs.IOCTL_DEV
    return mask


ACCESS_FS_BY_ABI = {abi: _fs_for(abi) for abi in range(1, 8)}
ACCESS_NET_BY_ABI = {
    abi: (AccessNet.BIND_TCP | AccessNet.CONNECT_TCP if abi >= 4 else 0) for abi in range(1, 8)
}
SCOPE_BY_ABI = {
    abi: (Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL if abi >= 6 else 0) for abi in range(1, 8)
}


class LandlockError(OSError):
    """A Landlock (or prctl) call failed; ``errno`` says why."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed)): 12 bytes
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


@functools.lru_cache(1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(name: str, *args: object) -> int:
    fn = _libc().syscall
    fn.restype = ctypes.c_long
    ctypes.set_errno(0)
    ret = int(fn(*args))
    if ret < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"{name}: {os.strerror(err)}")
    return ret


@dataclass(frozen=True)
class Abi:
    """What ``landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`` said."""

    version: int
    """The ABI version, or 0 when the kernel has no usable Landlock."""
    reason: str | None = None
    """Why there is no Landlock (``version == 0``): the errno in words."""


def abi_version() -> Abi:
    """Ask the running kernel which Landlock ABI it offers (0 with a reason when none)."""
    try:
        version = _syscall(
            "landlock_create_ruleset",
            ctypes.c_long(_SYS_CREATE_RULESET),
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(_CREATE_RULESET_VERSION),
        )
    except LandlockError as e:
        if e.errno == errno.ENOSYS:
            why = (
                "the kernel has no Landlock system calls "
                "(needs Linux >= 5.13 with CONFIG_SECURITY_LANDLOCK=y)"
            )
        elif e.errno == errno.EOPNOTSUPP:
            why = (
                "Landlock is built in but disabled at boot "
                "(add landlock to the lsm= kernel parameter)"
            )
        else:
            why = f"landlock_create_ruleset failed: {os.strerror(e.errno or 0)}"
        return Abi(0, why)
    except OSError as e:  # pragma: no cover - no libc syscall(): not Linux
        return Abi(0, f"no syscall() in libc: {e}")
    return Abi(version)


def create_ruleset(handled_fs: int, handled_net: int, scoped: int) -> int:
    """Create a ruleset handling those rights; return its file descriptor.

    The attribute size passed matches the newest field used, so an older kernel that would not
    understand a field refuses (``EINVAL``/``E2BIG``) instead of silently ignoring it.
    """
    attr = _RulesetAttr(handled_fs, handled_net, scoped)
    if scoped:
        size = ctypes.sizeof(_RulesetAttr)
    elif handled_net:
        size = 16
    else:
        size = 8
    return _syscall(
        "landlock_create_ruleset",
        ctypes.c_long(_SYS_CREATE_RULESET),
        ctypes.c_void_p(ctypes.addressof(attr)),
        ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )


def add_path_rule(ruleset_fd: int, path: str, access: int) -> int:
    """Allow ``access`` beneath ``path`` (opened ``O_PATH``; symlinks followed, as the kernel
    resolves the object, not the spelling). Directory-only rights are dropped for a non-directory.
    Returns the access actually granted."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            access &= ~FS_DIR_ONLY
        if not access:
            return 0
        attr = _PathBeneathAttr(access, fd)
        _syscall(
            "landlock_add_rule",
            ctypes.c_long(_SYS_ADD_RULE),
            ctypes.c_long(ruleset_fd),
            ctypes.c_long(_RULE_PATH_BENEATH),
            ctypes.c_void_p(ctypes.addressof(attr)),
            ctypes.c_uint32(0),
        )
    finally:
        os.close(fd)
    return access


def add_net_port_rule(ruleset_fd: int, port: int, access: int) -> None:
    """Allow ``access`` (``AccessNet`` bits) on TCP ``port`` (0 means a kernel-chosen port)."""
    add_net_port_rules(ruleset_fd, (port,), access)


def add_net_port_rules(ruleset_fd: int, ports: Iterable[int], access: int) -> None:
    """:func:`add_net_port_rule` for many ports (one system call each: Landlock has no range)."""
    attr = _NetPortAttr(access, 0)
    args = (
        ctypes.c_long(_SYS_ADD_RULE),
        ctypes.c_long(ruleset_fd),
        ctypes.c_long(_RULE_NET_PORT),
        ctypes.c_void_p(ctypes.addressof(attr)),
        ctypes.c_uint32(0),
    )
    fn = _libc().syscall
    fn.restype = ctypes.c_long
    for port in ports:
        attr.port = port
        if fn(*args) < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_add_rule(port {port}): {os.strerror(err)}")


def set_no_new_privs() -> None:
    """``prctl(PR_SET_NO_NEW_PRIVS, 1)``: exec can never grant privileges again (setuid, caps)."""
    fn = _libc().prctl
    fn.restype = ctypes.c_int
    ctypes.set_errno(0)
    if fn(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0),
          ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:  # fmt: skip
        err = ctypes.get_errno()
        raise LandlockError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def restrict_self(ruleset_fd: int, flags: int = 0) -> None:
    """Enforce the ruleset on the calling thread and every process or thread it creates later."""
    _syscall(
        "landlock_restrict_self",
        ctypes.c_long(_SYS_RESTRICT_SELF),
        ctypes.c_long(ruleset_fd),
        ctypes.c_uint32(flags),
    )
