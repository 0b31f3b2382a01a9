"""The drill's sandbox techniques: each works unconfined and is blocked under the sandbox."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox.conftest import needs_landlock
from trainwarden.drill.sandbox_techniques import (
    TECHNIQUES,
    run_job,
    run_technique,
    write_policy,
)

pytestmark = needs_landlock


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_technique_works_unconfined_and_is_blocked_sandboxed(name: str, tmp_path: Path) -> None:
    result = run_technique(name, tmp_path)
    assert result.unsandboxed_effect, f"{name} did not work even without the sandbox"
    assert not result.sandboxed_effect, f"{name} worked under the sandbox: {result.detail}"
    assert result.blocked
    assert "denied" in result.detail


def _output(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    return out


def test_sandboxed_job_keeps_what_its_policy_declares(tmp_path: Path) -> None:
    # The same kind of policy as the techniques use: the job can still do its own work.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    run = tmp_path / "run"
    run.mkdir()
    data = tmp_path / "data.txt"
    data.write_text("dataset")
    (tmp_path / "job.py").touch()
    (tmp_path / "model.ckpt").touch()
    policy = write_policy(
        tmp_path,
        f'read = ["{data}", "{tmp_path}/job.py", "{tmp_path}/model.ckpt"]\n'
        f'write = ["{run}"]\nbind_ports = [{port}]\nconnect_ports = [{port}]\n',
    )
    payload = (
        "import os, socket, subprocess, sys, tempfile, signal\n"
        f"assert open({str(data)!r}).read() == 'dataset'\n"
        f"open({str(run / 'out.txt')!r}, 'w').write('ok')\n"
        f"os.replace({str(run / 'out.txt')!r}, {str(run / 'final.txt')!r})\n"
        "with tempfile.NamedTemporaryFile() as fh: fh.write(b'x')\n"
        f"c = socket.create_connection(('127.0.0.1', {port}), timeout=10); c.close()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "os.kill(child.pid, signal.SIGTERM)\n"
        "print('child', child.wait())\n"
        "print('ALL-OK', flush=True)\n"
    )
    with server, run_job(tmp_path, payload, policy) as proc:
        out = _output(proc)
        conn, _ = server.accept()
        conn.close()
    assert "ALL-OK" in out, out
    assert f"child {-signal.SIGTERM}" in out
    assert (run / "final.txt").read_text() == "ok"


def test_sandbox_is_inherited_by_children_and_exec(tmp_path: Path) -> None:
    # A payload that starts a fresh interpreter (exec) is still confined.
    target = tmp_path / "outside.txt"
    (tmp_path / "job.py").touch()
    (tmp_path / "model.ckpt").touch()
    policy = write_policy(tmp_path, f'read = ["{tmp_path}/job.py", "{tmp_path}/model.ckpt"]\n')
    child_code = f"open({str(target)!r}, 'w').write('x')"
    payload = (
        "import subprocess, sys\n"
        f"code = {child_code!r}\n"
        "r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)\n"
        "print('child rc', r.returncode, r.stderr.strip().splitlines()[-1:])\n"
    )
    with run_job(tmp_path, payload, policy) as proc:
        out = _output(proc)
    assert "child rc 1" in out and "Permission denied" in out, out
    assert not target.exists()
    # control: the same payload unconfined writes the file
    with run_job(tmp_path, payload, None) as proc:
        out = _output(proc)
    assert target.exists(), out


def test_technique_table_names_threats() -> None:
    assert {t.threat for t in TECHNIQUES.values()} == {"T2", "T5", "T6", "T7"}
    assert all(t.summary for t in TECHNIQUES.values())
    assert sys.platform.startswith("linux")


def test_documented_limits_hold_on_this_kernel(tmp_path: Path) -> None:
    # What docs/sandbox.md says Landlock does NOT cover at this ABI, shown to be true: if a
    # kernel starts covering one, this test fails and the guide must be updated.
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(20)
    unix_path = tmp_path / "svc.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(unix_path))
    unix.listen(1)
    unix.settimeout(20)
    shared = tmp_path / "shared.py"
    shared.write_text("# shared\n")
    shared.chmod(0o644)
    (tmp_path / "job.py").touch()
    (tmp_path / "model.ckpt").touch()
    policy = write_policy(
        tmp_path, f'read = ["{tmp_path}/job.py", "{tmp_path}/model.ckpt", "{shared}"]\n'
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={"TW_VICTIM": "1"}
    )
    payload = (
        "import os, socket\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"u.sendto(b'udp out', ('127.0.0.1', {udp.getsockname()[1]}))\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.connect({str(unix_path)!r}); s.sendall(b'unix out'); s.close()\n"
        f"os.chmod({str(shared)!r}, 0o666)\n"
        f"assert open('/proc/{victim.pid}/environ', 'rb').read().count(b'TW_VICTIM=1') == 1\n"
        "print('LIMITS-OK', flush=True)\n"
    )
    with udp, unix, run_job(tmp_path, payload, policy) as proc:
        out = _output(proc)
        assert udp.recv(16) == b"udp out"
        conn, _ = unix.accept()
        with conn:
            assert conn.recv(16) == b"unix out"
    victim.kill()
    victim.wait()
    assert "LIMITS-OK" in out, out
    assert shared.stat().st_mode & 0o777 == 0o666


@pytest.mark.parametrize("declared", [False, True])
def test_device_ioctl_only_where_declared(tmp_path: Path, declared: bool) -> None:
    # /dev/null is read+write for every job (system preset) but ioctl needs a device rule,
    # as the gpu preset gives /dev/nvidia*: without it the kernel says EACCES, with it the
    # driver answers (ENOTTY: /dev/null is no terminal).
    (tmp_path / "job.py").touch()
    (tmp_path / "model.ckpt").touch()
    devices = 'devices = ["/dev/null"]\n' if declared else ""
    policy = write_policy(
        tmp_path, f'read = ["{tmp_path}/job.py", "{tmp_path}/model.ckpt"]\n{devices}'
    )
    payload = (
        "import fcntl, termios\n"
        "with open('/dev/null', 'rb') as fh:\n"
        "    try:\n"
        "        fcntl.ioctl(fh, termios.TCGETS, bytes(64))\n"
        "    except OSError as e:\n"
        "        print('ERRNO', e.errno, flush=True)\n"
    )
    with run_job(tmp_path, payload, policy) as proc:
        out = _output(proc)
    assert ("ERRNO 25" if declared else "ERRNO 13") in out, out


@pytest.mark.skipif(os.geteuid() != 0, reason="shows root's mount power; needs CAP_SYS_ADMIN")
def test_root_cannot_remount_over_read_only_code(tmp_path: Path) -> None:
    # Root keeps its capabilities inside the sandbox, but Landlock denies every mount: a payload
    # cannot bind a writable folder over the shared install in a private mount namespace.
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "job.py").touch()
    (tmp_path / "model.ckpt").touch()
    policy = write_policy(
        tmp_path, f'read = ["{tmp_path}/job.py", "{tmp_path}/model.ckpt", "{shared}"]\n'
    )
    payload = (
        "import ctypes, os, tempfile\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.unshare(0x00020000) == 0\n"  # CLONE_NEWNS
        "libc.mount(b'none', b'/', None, 0x40000 | 0x4000, None)\n"  # MS_PRIVATE | MS_REC
        "src = tempfile.mkdtemp().encode()\n"
        f"r = libc.mount(src, {str(shared).encode()!r}, None, 4096, None)\n"  # MS_BIND
        "print('MOUNT', r, ctypes.get_errno(), flush=True)\n"
    )
    with run_job(tmp_path, payload, None) as proc:
        assert "MOUNT 0 0" in _output(proc)
    with run_job(tmp_path, payload, policy) as proc:
        out = _output(proc)
    assert "MOUNT -1 1" in out, out  # EPERM
