"""The sandbox policy file: loader errors name the file, and no write rule may cover a
read-only path (Landlock grants the union of the rules on a path and its parents)."""

from __future__ import annotations

import os
import site
from pathlib import Path

import pytest

from trainwarden.sandbox import SandboxError, SandboxPolicy
from trainwarden.sandbox._landlock import _PathBeneathAttr, _RulesetAttr
from trainwarden.sandbox._policy import compress_ports


def _write(tmp_path: Path, body: str, name: str = "trainwarden.toml") -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


def test_loads_sandbox_table_with_relative_paths_and_ranges(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    p = _write(
        tmp_path,
        '[scan]\nfail_on = "high"\n[sandbox]\nread = ["data"]\nwrite = ["/tmp/x"]\n'
        'presets = ["python", "gpu"]\nbind_ports = [29500]\nconnect_ports = ["29500-29502", 80]\n',
    )
    pol = SandboxPolicy.from_file(p)
    assert pol.read == (str(tmp_path / "data"),)
    assert pol.presets == ("python", "gpu")
    assert pol.connect_ports == (80, 29500, 29501, 29502)
    assert pol.source == str(p)


def test_pyproject_table(tmp_path: Path) -> None:
    p = _write(tmp_path, "[tool.trainwarden.sandbox]\nbind_ports = [1234]\n", "pyproject.toml")
    assert SandboxPolicy.from_file(p).bind_ports == (1234,)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[scan]\n", "has no [sandbox] table"),
        ("[sandbox]\nwrites = []\n", "unknown key(s) writes"),
        ("[sandbox]\nbind_ports = [0]\n", "port 0"),
        ("[sandbox]\nbind_ports = [70000]\n", "invalid port 70000"),
        ('[sandbox]\nbind_ports = ["10-5"]\n', "invalid port '10-5'"),
        ("[sandbox]\nbind_ports = [true]\n", "invalid port True"),
        ('[sandbox]\nread = "/data"\n', "must be a list of paths"),
        ('[sandbox]\npresets = ["python", "everything"]\n', "unknown sandbox preset(s) everything"),
        ("[sandbox]\nscope_signals = 1\n", "must be true or false"),
        ("[sandbox\n", "not valid TOML"),
    ],
)
def test_bad_policy_names_file_and_problem(tmp_path: Path, body: str, message: str) -> None:
    p = _write(tmp_path, body)
    with pytest.raises(SandboxError) as e:
        SandboxPolicy.from_file(p)
    assert message in e.value.message and str(p) in e.value.message


def test_missing_declared_path_is_an_error(tmp_path: Path) -> None:
    pol = SandboxPolicy(read=(str(tmp_path / "nope"),))
    with pytest.raises(SandboxError, match="does not exist"):
        pol.resolve()


def test_write_over_site_packages_is_refused() -> None:
    sp = site.getsitepackages()[0]
    with pytest.raises(SandboxError, match="contains the read-only path"):
        SandboxPolicy(write=(os.path.dirname(sp),)).resolve()


def test_write_over_code_through_a_symlink_is_refused(tmp_path: Path) -> None:
    # The attacker's spelling differs (a symlink to a parent of the code); the object is the same.
    code = tmp_path / "project" / "code"
    code.mkdir(parents=True)
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "project")
    with pytest.raises(SandboxError, match="contains the read-only path"):
        SandboxPolicy(presets=(), write=(str(alias),)).resolve(code=[str(code)])


def test_write_beneath_read_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    resolved = SandboxPolicy(presets=(), read=(str(tmp_path),), write=(str(tmp_path / "runs"),))
    kinds = {r.path: r.kind for r in resolved.resolve().rules}
    assert kinds == {str(tmp_path): "read", str(tmp_path / "runs"): "write"}


def test_torchrun_preset_declares_master_port_and_ephemeral_range() -> None:
    r = SandboxPolicy(presets=("torchrun",), master_port=29600).resolve()
    lo, hi = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert r.bind_ports == (0, 29600)
    assert set(r.connect_ports) == {29600, *range(lo, hi + 1)}
    assert compress_ports(r.bind_ports) == ("0 (kernel-chosen)", "29600")


def test_kernel_structs_match_uapi_sizes() -> None:
    # struct landlock_path_beneath_attr is packed (12 bytes); the ruleset attr has 3 u64 (ABI 6).
    import ctypes

    assert ctypes.sizeof(_PathBeneathAttr) == 12
    assert ctypes.sizeof(_RulesetAttr) == 24


def test_older_abis_name_what_they_cannot_enforce() -> None:
    # enforce mode refuses on these lists; best-effort reports them as not enforced
    from trainwarden.sandbox._apply import unenforceable

    r = SandboxPolicy(presets=()).resolve()
    assert unenforceable(r, 7) == ()
    assert unenforceable(r, 6) == ()
    assert unenforceable(r, 5) == (
        "signal scoping (ABI 6)",
        "abstract Unix socket scoping (ABI 6)",
    )
    assert "TCP bind/connect port rules (ABI 4)" in unenforceable(r, 3)
    assert unenforceable(r, 0) == ("filesystem rules (ABI 1)",)
    unscoped = SandboxPolicy(presets=(), scope_signals=False, scope_abstract_unix=False)
    assert unenforceable(unscoped.resolve(), 5) == ()


def test_a_devices_entry_over_code_is_refused_like_a_write_rule(tmp_path: Path) -> None:
    # A device rule grants write on everything beneath the path it names, as a write rule does;
    # here through a symlinked spelling of the code's parent.
    code = tmp_path / "project" / "code"
    code.mkdir(parents=True)
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "project")
    with pytest.raises(SandboxError, match=r"device path .* contains the read-only path"):
        SandboxPolicy(presets=(), devices=(str(alias),)).resolve(code=[str(code)])


def test_a_devices_entry_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "weights.pt"
    f.write_bytes(b"")
    with pytest.raises(SandboxError, match="is not a device file"):
        SandboxPolicy(presets=(), devices=(str(f),)).resolve()
    # A real character device is what the entry is for.
    kinds = {
        r.path: r.kind for r in SandboxPolicy(presets=(), devices=("/dev/null",)).resolve().rules
    }
    assert kinds == {"/dev/null": "device"}


def test_a_device_declared_twice_is_allowed_but_a_write_over_the_system_files_is_not() -> None:
    # /dev/null is the system preset's read+write file and a declared device: the same file
    # writable twice, nothing widened. A write rule over /dev would widen it (and every device).
    kinds = {r.kind for r in SandboxPolicy(devices=("/dev/null",)).resolve().rules}
    assert {"rw", "device"} <= kinds
    with pytest.raises(SandboxError, match="contains the read-only path /dev/null"):
        SandboxPolicy(write=("/dev",)).resolve()
