"""Sandbox drill: what a checkpoint's payload can do once it runs, with and without Landlock.

Each technique builds a pickle whose payload (benign: at most it writes a canary under the
drill's folder, listens on or connects to 127.0.0.1, or signals a victim process the drill
started) is loaded with plain :mod:`pickle` inside a real job process. The job runs twice: once
unconfined, to prove the technique works, and once after :func:`trainwarden.sandbox.apply`.
Effects are observed from outside the job (the canary, the listening port, the victim's
canary), never taken from the job's own word.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TECHNIQUES",
    "Technique",
    "TechniqueResult",
    "build_payload",
    "free_port",
    "run_job",
    "run_technique",
    "write_policy",
]

_JOB = """\
import pickle, sys
if sys.argv[1] != "-":
    from trainwarden.sandbox import SandboxPolicy, apply
    apply(SandboxPolicy.from_file(sys.argv[1]))
with open(sys.argv[2], "rb") as fh:
    pickle.load(fh)
"""


class _Exec:
    """Pickles as ``exec(source)``: the shape of a real malicious checkpoint's payload."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (self.source,)


def build_payload(source: str, dest: Path) -> Path:
    """Write a pickle that runs ``source`` when loaded with plain pickle; return its path."""
    dest.write_bytes(pickle.dumps({"state_dict": {}, "extra": _Exec(source)}, protocol=2))
    return dest


@dataclass(frozen=True)
class TechniqueResult:
    """The outcome of one technique. ``blocked`` holds when the technique worked unconfined and
    failed under the sandbox; ``detail`` is what the sandboxed job reported."""

    name: str
    threat: str
    unsandboxed_effect: bool
    sandboxed_effect: bool
    detail: str

    @property
    def blocked(self) -> bool:
        return self.unsandboxed_effect and not self.sandboxed_effect


def _env() -> dict[str, str]:
    import trainwarden

    src = str(Path(trainwarden.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def write_policy(workdir: Path, body: str) -> Path:
    """Write a sandbox policy file (``[sandbox]`` + ``body``) into ``workdir``."""
    path = workdir / "sandbox.toml"
    path.write_text("[sandbox]\n" + body, encoding="utf-8")
    return path


@contextlib.contextmanager
def run_job(
    workdir: Path, payload: str, policy: Path | None, *, timeout: float = 60.0
) -> Iterator[subprocess.Popen[str]]:
    """Start a job that loads a checkpoint carrying ``payload`` (under ``policy`` unless None).

    Yields the running process (stdout piped, text); it is waited for (or killed) on exit.
    """
    job = workdir / "job.py"
    job.write_text(_JOB, encoding="utf-8")
    ckpt = build_payload(payload, workdir / "model.ckpt")
    env = _env()
    # The job's private /tmp is made under TMPDIR: keep it inside the drill's folder.
    (workdir / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(workdir / "tmp")
    proc = subprocess.Popen(  # noqa: S603 - our interpreter on a job script written above
        [sys.executable, str(job), str(policy) if policy else "-", str(ckpt)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out.strip().splitlines()[-1] if out.strip() else f"exit {proc.returncode}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range (so that no
    ``ephemeral_ports`` rule can cover it)."""
    rnd = random.Random(secrets.randbits(32))  # noqa: S311 - picking a test port, not a secret
    for _ in range(200):
        port = rnd.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and 32000")


_REPORT = """
def _tw_report(msg):
    print("TW-RESULT " + msg, flush=True)
"""


# -- the techniques -----------------------------------------------------------------------------


def _write_shared_code(workdir: Path, sandboxed: bool) -> tuple[bool, str]:
    shared = workdir / "shared-site-packages" / "torch"
    shared.mkdir(parents=True, exist_ok=True)
    init = shared / "__init__.py"
    init.write_text("# the shared framework install\n", encoding="utf-8")
    canary = shared / "_tw_canary.py"
    canary.unlink(missing_ok=True)
    payload = _REPORT + (
        "try:\n"
        f"    open({str(canary)!r}, 'w').write('# canary\\n')\n"
        f"    open({str(init)!r}, 'a').write('# canary\\n')\n"
        "    _tw_report('wrote')\n"
        "except OSError as e:\n"
        "    _tw_report('denied: ' + str(e))\n"
    )
    policy = _policy(workdir, read=[shared.parent]) if sandboxed else None
    with run_job(workdir, payload, policy) as proc:
        detail = _finish(proc)
    changed = canary.exists() or "canary" in init.read_text(encoding="utf-8")
    return changed, detail


def _overwrite_checkpoint(workdir: Path, sandboxed: bool) -> tuple[bool, str]:
    other = workdir / "other-user"
    other.mkdir(exist_ok=True)
    ckpt = other / "model.pt"
    original = b"another user's weights\n"
    ckpt.write_bytes(original)
    payload = _REPORT + (
        "import os, tempfile\n"
        "done = []\n"
        "try:\n"
        f"    open({str(ckpt)!r}, 'r+b').write(b'X')\n"
        "    done.append('write')\n"
        "except OSError as e:\n"
        "    done.append('write denied: ' + str(e))\n"
        "try:\n"
        "    fd, tmp = tempfile.mkstemp()\n"
        "    os.write(fd, b'poisoned weights\\n'); os.close(fd)\n"
        f"    os.replace(tmp, {str(ckpt)!r})\n"
        "    done.append('replace')\n"
        "except OSError as e:\n"
        "    done.append('replace denied: ' + str(e))\n"
        "_tw_report('; '.join(done))\n"
    )
    policy = _policy(workdir, read=[other]) if sandboxed else None
    with run_job(workdir, payload, policy) as proc:
        detail = _finish(proc)
    return ckpt.read_bytes() != original, detail


def _listen_backdoor(workdir: Path, sandboxed: bool) -> tuple[bool, str]:
    port = free_port()
    payload = _REPORT + (
        "import socket\n"
        "s = socket.socket()\n"
        "try:\n"
        f"    s.bind(('127.0.0.1', {port})); s.listen(1)\n"
        "except OSError as e:\n"
        "    _tw_report('denied: ' + str(e))\n"
        "else:\n"
        "    _tw_report('listening')\n"
        "    s.settimeout(20)\n"
        "    try:\n"
        "        c, _ = s.accept(); c.sendall(b'backdoor'); c.close()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    policy = _policy(workdir) if sandboxed else None
    effect = False
    with run_job(workdir, payload, policy) as proc:
        if proc.stdout is None:  # pragma: no cover - run_job always pipes stdout
            raise RuntimeError("job stdout is not piped")
        line = proc.stdout.readline().strip()
        if line == "TW-RESULT listening":
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=10) as c,
            ):
                effect = c.recv(16) == b"backdoor"
        rest = proc.stdout.read()
    return effect, (line + rest).strip().splitlines()[-1] if line or rest else "no output"


def _connect_out(workdir: Path, sandboxed: bool) -> tuple[bool, str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    payload = _REPORT + (
        "import socket\n"
        "try:\n"
        f"    c = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n"
        "    c.sendall(b'exfiltrated'); c.close()\n"
        "    _tw_report('connected')\n"
        "except OSError as e:\n"
        "    _tw_report('denied: ' + str(e))\n"
    )
    policy = _policy(workdir) if sandboxed else None
    got = b""
    with server, run_job(workdir, payload, policy) as proc:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not got:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                if proc.poll() is not None:
                    with contextlib.suppress(TimeoutError):
                        conn, _ = server.accept()
                        with conn:
                            got = conn.recv(64)
                    break
                continue
            with conn:
                conn.settimeout(10)
                got = conn.recv(64)
        detail = _finish(proc)
    return got == b"exfiltrated", detail


_VICTIM = """\
import signal, sys, time
from pathlib import Path
canary = Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *_: canary.write_text("signalled"))
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not canary.exists():
    time.sleep(0.05)
"""


def _signal_other_job(workdir: Path, sandboxed: bool) -> tuple[bool, str]:
    canary = workdir / "victim-canary"
    canary.unlink(missing_ok=True)
    victim = subprocess.Popen(  # noqa: S603 - our interpreter on a constant script
        [sys.executable, "-c", _VICTIM, str(canary)], stdout=subprocess.PIPE, text=True
    )
    try:
        if victim.stdout is None:  # pragma: no cover - piped above
            raise RuntimeError("victim stdout is not piped")
        victim.stdout.readline()
        payload = _REPORT + (
            "import os, signal\n"
            "try:\n"
            f"    os.kill({victim.pid}, signal.SIGUSR1)\n"
            "    _tw_report('signalled')\n"
            "except OSError as e:\n"
            "    _tw_report('denied: ' + str(e))\n"
        )
        policy = _policy(workdir) if sandboxed else None
        with run_job(workdir, payload, policy) as proc:
            detail = _finish(proc)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not canary.exists() and "signalled" in detail:
            time.sleep(0.05)
        return canary.exists(), detail
    finally:
        victim.kill()
        victim.wait()
        if victim.stdout is not None:
            victim.stdout.close()


def _abstract_socket(workdir: Path, sandboxed: bool) -> tuple[bool, str]:
    name = "\0trainwarden-drill-" + secrets.token_hex(8)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(1)
    server.settimeout(0.2)
    payload = _REPORT + (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "try:\n"
        f"    s.connect({name!r}); s.sendall(b'hello other job'); s.close()\n"
        "    _tw_report('connected')\n"
        "except OSError as e:\n"
        "    _tw_report('denied: ' + str(e))\n"
    )
    policy = _policy(workdir) if sandboxed else None
    got = b""
    with server, run_job(workdir, payload, policy) as proc:
        detail = _finish(proc)
        with contextlib.suppress(TimeoutError):
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                got = conn.recv(64)
    return got == b"hello other job", detail


def _policy(workdir: Path, read: list[Path] | None = None) -> Path:
    # A realistic job policy: its run directory writable, ports declared for its own use, the
    # trees under attack readable only. The attacked port is never one of the declared ones.
    run = workdir / "run"
    run.mkdir(exist_ok=True)
    reads = [str(workdir / "job.py"), str(workdir / "model.ckpt"), *map(str, read or [])]
    for r in reads:
        Path(r).touch(exist_ok=True)
    return write_policy(
        workdir,
        f"read = {reads!r}\nwrite = [{str(run)!r}]\n"
        "bind_ports = [29500]\nconnect_ports = [29500]\n".replace("'", '"'),
    )


@dataclass(frozen=True)
class Technique:
    """A post-exploitation technique the sandbox must block, with the threat it serves."""

    name: str
    threat: str
    summary: str
    run: Callable[[Path, bool], tuple[bool, str]]


TECHNIQUES: dict[str, Technique] = {
    t.name: t
    for t in (
        Technique(
            "write-shared-site-packages",
            "T2",
            "append to a shared framework install and drop a module into it",
            _write_shared_code,
        ),
        Technique(
            "overwrite-other-checkpoint",
            "T6",
            "overwrite another user's checkpoint in place and by rename",
            _overwrite_checkpoint,
        ),
        Technique(
            "listen-backdoor",
            "T7",
            "listen on an undeclared TCP port on 127.0.0.1 and answer a connection",
            _listen_backdoor,
        ),
        Technique(
            "connect-undeclared-port",
            "T7",
            "connect to an undeclared TCP port on 127.0.0.1 and send data",
            _connect_out,
        ),
        Technique(
            "signal-other-job",
            "T5",
            "send a signal to a process outside the job",
            _signal_other_job,
        ),
        Technique(
            "abstract-socket-other-job",
            "T5",
            "connect to another job's abstract Unix socket",
            _abstract_socket,
        ),
    )
}


def run_technique(name: str, workdir: Path) -> TechniqueResult:
    """Run technique ``name`` unconfined then sandboxed, each in a fresh subfolder of
    ``workdir``."""
    t = TECHNIQUES[name]
    plain_dir = workdir / f"{name}-plain"
    boxed_dir = workdir / f"{name}-sandboxed"
    plain_dir.mkdir(parents=True, exist_ok=True)
    boxed_dir.mkdir(parents=True, exist_ok=True)
    plain, _ = t.run(plain_dir, False)
    boxed, detail = t.run(boxed_dir, True)
    return TechniqueResult(t.name, t.threat, plain, boxed, detail)
