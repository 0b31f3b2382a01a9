"""``trainwarden run --sandbox`` and ``trainwarden sandbox explain`` in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.conftest import ABI, needs_landlock

RunCli = Callable[..., subprocess.CompletedProcess[str]]

SRC = Path(__file__).resolve().parents[2] / "src"


def _events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _policy(tmp_path: Path, body: str = "") -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    p = tmp_path / "sandbox.toml"
    p.write_text(f'[sandbox]\nwrite = ["{run}"]\n{body}')
    return p


SCRIPT = """
import os, pickle, sys
shared = sys.argv[1]
try:
    open(os.path.join(shared, "evil.py"), "w").write("# canary")
    print("WROTE shared")
except OSError as e:
    print("DENIED shared", e.errno)
open(os.path.join(sys.argv[2], "out.txt"), "w").write("run output")
print("USER CODE RAN")
"""


OVERWRITE_CODE = """
import os, sys
try:
    with open(os.path.join(os.path.dirname(__file__), "helper.py"), "r+") as f:
        f.write("# canary")
    print("WROTE code")
except OSError as e:
    print("DENIED code", e.errno)
"""


@needs_landlock
def test_a_devices_entry_cannot_make_the_code_writable(run_cli: RunCli, tmp_path: Path) -> None:
    script = tmp_path / "code" / "train.py"
    script.parent.mkdir()
    script.write_text(OVERWRITE_CODE)
    helper = script.parent / "helper.py"
    helper.write_text("VALUE = 1\n")
    policy = _policy(tmp_path, f'devices = ["{script.parent}"]\n')
    r = run_cli(["run", "--sandbox", "--sandbox-policy", str(policy), str(script)])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "contains the read-only path" in r.stderr
    assert "WROTE code" not in r.stdout
    assert helper.read_text() == "VALUE = 1\n"


@needs_landlock
def test_run_sandbox_applies_before_user_code_and_reports(run_cli: RunCli, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    script = tmp_path / "code" / "train.py"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    policy = _policy(tmp_path, f'read = ["{shared}"]\n')
    events = tmp_path / "events.jsonl"
    r = run_cli(
        [
            "run",
            "--sandbox",
            "--sandbox-policy",
            str(policy),
            "--events",
            str(events),
            str(script),
            str(shared),
            str(tmp_path / "run"),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DENIED shared 13" in r.stdout and "USER CODE RAN" in r.stdout
    assert not (shared / "evil.py").exists()
    assert (tmp_path / "run" / "out.txt").read_text() == "run output"
    (applied,) = [e for e in _events(events) if e["kind"] == "sandbox.applied"]
    assert applied["abi"] == ABI.version and applied["enforced"] is True
    assert applied["mode"] == "enforce" and applied["not_enforced"] == []
    rules = {r["path"]: r for r in applied["fs_rules"]}  # type: ignore[attr-defined]
    assert "write_file" not in rules[str(script.parent)]["rights"]
    assert rules[str(shared)]["origin"] == "policy"
    assert "write_file" in rules[str(tmp_path / "run")]["rights"]
    assert applied["scoped"] == ["signal", "abstract_unix_socket"]
    # the job's code folder itself is read-only too
    script.write_text(SCRIPT.replace("shared = sys.argv[1]", "shared = os.path.dirname(__file__)"))
    r = run_cli(
        [
            "run",
            "--sandbox",
            "--sandbox-policy",
            str(policy),
            str(script),
            "x",
            str(tmp_path / "run"),
        ]
    )
    assert "DENIED shared 13" in r.stdout, r.stdout + r.stderr
    assert not (script.parent / "evil.py").exists()


GUARD_SCRIPT = """
import os, pickle, sys
class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[1],))
pickle.loads(pickle.dumps(Payload()))
print("payload was not stopped")
"""


@needs_landlock
def test_sandbox_composes_with_load_guard(run_cli: RunCli, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(GUARD_SCRIPT)
    canary = tmp_path / "run" / "canary"
    events = tmp_path / "events.jsonl"
    r = run_cli(
        [
            "run",
            "--sandbox=enforce",
            "--sandbox-policy",
            str(_policy(tmp_path)),
            "--events",
            str(events),
            str(script),
            str(canary),
        ]
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "blocked an unsafe load" in r.stderr
    assert not canary.exists()
    kinds = [e["kind"] for e in _events(events)]
    assert kinds[0] == "sandbox.applied" and len(kinds) > 1  # sandbox first, then the guard


WATCH_SCRIPT = """
import sys, torch
from trainwarden.monitor import watch
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
mon = watch(model, opt, sink=sys.argv[1])
for _ in range(3):
    loss = model(torch.randn(8, 4)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
mon.close()
print("TRAINED")
"""


@needs_landlock
def test_sandbox_composes_with_watch(run_cli: RunCli, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(WATCH_SCRIPT)
    monitor = tmp_path / "run" / "monitor.jsonl"
    r = run_cli(
        ["run", "--sandbox", "--sandbox-policy", str(_policy(tmp_path)), str(script), str(monitor)]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TRAINED" in r.stdout
    assert monitor.read_text().strip()


# A launcher that makes landlock_create_ruleset fail with ENOSYS (a kernel without Landlock)
# through a real seccomp filter, then execs the command line it is given.
NO_LANDLOCK = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
AUDIT_ARCH_X86_64 = 0xC000003E
prog = [
    (0x20, 0, 0, 4),                      # ld arch
    (0x15, 1, 0, AUDIT_ARCH_X86_64),      # jeq x86_64 -> next check
    (0x06, 0, 0, 0x7FFF0000),             # other arch: allow (test runs on x86_64)
    (0x20, 0, 0, 0),                      # ld nr
    (0x15, 0, 1, 444),                    # jeq landlock_create_ruleset
    (0x06, 0, 0, 0x00050000 | 38),        # errno ENOSYS
    (0x06, 0, 0, 0x7FFF0000),             # allow
]
buf = b"".join(struct.pack("HBBI", *ins) for ins in prog)
filt = ctypes.create_string_buffer(buf)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = Fprog(len(prog), ctypes.addressof(filt))
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0, ctypes.get_errno()
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _run_without_landlock(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-c", NO_LANDLOCK, "-m", "trainwarden", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is x86_64 BPF")
def test_no_landlock_refuses_unless_best_effort(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('USER CODE RAN')\n")
    events = tmp_path / "events.jsonl"
    r = _run_without_landlock(["run", "--sandbox", str(script)], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "needs Linux Landlock" in r.stderr and "CONFIG_SECURITY_LANDLOCK" in r.stderr
    assert "Traceback" not in r.stderr
    assert "USER CODE RAN" not in r.stdout
    r = _run_without_landlock(
        ["run", "--sandbox=best-effort", "--events", str(events), str(script)], tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "USER CODE RAN" in r.stdout
    assert "sandbox NOT enforced" in r.stderr
    (applied,) = _events(events)
    assert applied["enforced"] is False and applied["abi"] == 0
    r = _run_without_landlock(["sandbox", "explain"], tmp_path)
    assert r.returncode == 0 and "no Landlock" in r.stdout


WARN_SCRIPT = """
import os, socket, sys
open(sys.argv[1], "w").write("written")
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.close()
print("RAN", sys.argv[2:])
"""


def test_warn_mode_enforces_nothing_and_reports_would_be_denials(
    run_cli: RunCli, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(WARN_SCRIPT)
    outside = tmp_path / "outside.txt"
    events = tmp_path / "events.jsonl"
    r = run_cli(
        [
            "run",
            "--sandbox-policy",
            str(_policy(tmp_path)),
            "--events",
            str(events),
            str(script),
            str(outside),
            "--sandbox",
        ],
        env={"TRAINWARDEN_SANDBOX": "warn"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RAN ['--sandbox']" in r.stdout  # a flag after the script belongs to the script
    assert outside.read_text() == "written"  # nothing enforced
    ev = _events(events)
    assert ev[0]["kind"] == "sandbox.applied" and ev[0]["enforced"] is False
    denials = {(e["op"], e["target"]) for e in ev if e["kind"] == "sandbox.would_deny"}
    assert ("write", str(outside)) in denials
    assert any(op == "socket.bind" and t == "127.0.0.1:0" for op, t in denials)
    assert "would deny write" in r.stderr


@needs_landlock
def test_apply_refuses_with_a_second_thread(tmp_path: Path) -> None:
    code = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "from trainwarden.sandbox import apply, SandboxError\n"
        "try:\n"
        "    apply()\n"
        "except SandboxError as e:\n"
        "    print('REFUSED', e.message)\n"
        "open('/proc/self/status').read()\n"  # not confined: still reads outside the policy
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert "REFUSED" in r.stdout and "one thread" in r.stdout, r.stdout + r.stderr


def test_explain_default_and_policy(run_cli: RunCli, tmp_path: Path) -> None:
    r = run_cli(["sandbox", "explain"])
    assert r.returncode == 0, r.stderr
    assert "TCP bind (listen) ports: none" in r.stdout
    assert "signals to processes outside the job: denied" in r.stdout
    assert "private directory under /tmp" in r.stdout
    data = tmp_path / "data"
    data.mkdir()
    policy = _policy(
        tmp_path,
        f'read = ["{data}"]\nbind_ports = [29500]\nconnect_ports = [29500, "29510-29512"]\n',
    )
    r = run_cli(["sandbox", "explain", "--policy", str(policy)])
    assert r.returncode == 0, r.stderr
    assert f"  {data}  [policy]" in r.stdout and f"  {tmp_path / 'run'}  [policy]" in r.stdout
    assert "TCP connect ports: 29500, 29510-29512" in r.stdout
    r = run_cli(["sandbox", "explain", "--policy", str(policy), "--format", "json"])
    doc = json.loads(r.stdout)
    assert doc["bind_ports"] == ["29500"] and doc["connect_ports"] == ["29500", "29510-29512"]


def test_explain_output_is_the_sandbox_packages_explanation(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    """The command prints ``trainwarden.sandbox.explain``'s result; nothing is built in the shell
    (in-process, so that both see the same interpreter paths)."""
    from trainwarden.sandbox import explain

    policy = _policy(tmp_path, "bind_ports = [29500]\n")
    explanation = explain(str(policy))
    r = cli(["sandbox", "explain", "--policy", str(policy), "--format", "json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == explanation.to_dict()
    r = cli(["sandbox", "explain", "--policy", str(policy)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == explanation.lines()
    assert explanation.to_dict()["bind_ports"] == ["29500"]


def test_explain_bad_policy_is_one_line_exit_2(run_cli: RunCli, tmp_path: Path) -> None:
    bad = tmp_path / "sandbox.toml"
    bad.write_text("[sandbox]\nbind_ports = [0]\n")
    r = run_cli(["sandbox", "explain", "--policy", str(bad)])
    assert r.returncode == 2
    assert str(bad) in r.stderr and "port 0" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["run", "--sandbox", "--sandbox-policy", str(bad), str(bad)])
    assert r.returncode == 2 and "port 0" in r.stderr


def test_docs_claim_table_names_existing_tests() -> None:
    import re

    from trainwarden.drill.sandbox_techniques import TECHNIQUES

    root = Path(__file__).resolve().parents[2]
    table = (root / "docs" / "sandbox.md").read_text().split("## Claims and the tests", 1)[1]
    current = name = None
    seen = 0
    pattern = r"`((?:tests/[\w/]+\.py::\w+|\.\.\.|::\w+)(?:\[[\w-]+\])?)`"
    for ref in re.findall(pattern, table):
        if ref.startswith("tests/"):
            current, _, rest = ref.partition("::")
            name, _, param = rest.partition("[")
        elif ref.startswith("::"):
            name, _, param = ref[2:].partition("[")
        else:
            param = ref.partition("[")[2]
        assert current is not None and name is not None
        assert f"def {name}(" in (root / current).read_text(), ref
        if param:
            assert param.rstrip("]") in TECHNIQUES, ref
        seen += 1
    assert seen >= 18
