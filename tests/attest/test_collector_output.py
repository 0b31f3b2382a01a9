"""The collector writes its JSON and the platform itself (no ``json``, no ``platform`` import, no
``uname -p``): its text is what ``json.dumps`` writes, its facts are what those modules report,
and it starts no program."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from trainwarden.attest import _collector

_NASTY = [
    "",
    "plain/path/site-packages",
    'quote " and backslash \\ and slash /',
    "\n\r\t\b\f\x00\x01\x1f\x7f",
    "caf\xe9 \u20ac \U0001f600 \udce9 \ud800",
    "\u2028\u2029 line separators",
    "x" * 5000,
]


@pytest.mark.parametrize("value", _NASTY)
def test_a_string_is_written_as_json_dumps_writes_it(value: str) -> None:
    assert _collector.dumps(value) == json.dumps(value)
    assert json.loads(_collector.dumps(value)) == value


def test_the_collectors_whole_reply_is_written_as_json_dumps_writes_it() -> None:
    data = {
        "list": [*_NASTY, 0, -7, 2**70, True, False, None],
        "tuple": ("a", 1),
        "nested": {"k\xe9y": {"": []}, "empty": {}},
        "bool": True,
    }
    assert _collector.dumps(data) == json.dumps(data)
    assert _collector.dumps(_collector.collect()) == json.dumps(_collector.collect())
    with pytest.raises(TypeError):
        _collector.dumps({"x": 1.5})


def test_the_platform_is_what_the_platform_module_reports_without_the_processor() -> None:
    got = _collector.collect()
    plat = got["platform"]
    assert isinstance(plat, dict)
    u = platform.uname()
    assert (plat["system"], plat["release"], plat["machine"], plat["node"]) == (
        u.system,
        u.release,
        u.machine,
        u.node,
    )
    libc = "".join(platform.libc_ver())
    expected = platform._platform(  # type: ignore[attr-defined]
        u.system, u.release, u.machine, "", "with", libc
    )
    assert plat["platform"] == expected
    if u.processor in ("", u.machine):  # then the processor adds nothing to platform()
        assert plat["platform"] == platform.platform()
    assert got["version"] == platform.python_version()


def test_the_collector_imports_neither_json_nor_platform_and_starts_no_program(
    tmp_path: Path,
) -> None:
    # A `uname` (or anything else) first on PATH would run if the collector started a program.
    canary = tmp_path / "canary"
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("uname", "sh", "cat"):
        (fake / name).write_text(f"#!/bin/sh\ntouch {canary}\n")
        (fake / name).chmod(0o755)
    path = _collector.__file__
    probe = (
        "import sys, io\n"
        f"code = compile(open({path!r}).read(), {path!r}, 'exec')\n"
        "out = io.StringIO(); real = sys.stdout; sys.stdout = out\n"
        f"exec(code, {{'__name__': '__main__', '__file__': {path!r}}})\n"
        "sys.stdout = real\n"
        "print(sorted(m for m in ('json', 'platform', 'subprocess', 're') if m in sys.modules))\n"
        "print(out.getvalue())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", probe],
        env={"PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported, reply = proc.stdout.split("\n", 1)
    assert imported == "[]"
    assert json.loads(reply)["executable"]
    assert not canary.exists()
