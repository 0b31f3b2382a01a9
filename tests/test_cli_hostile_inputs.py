"""Every command fed random, truncated and deeply nested inputs: exit 0, 1 or 2, never a traceback.

The Typer app runs in-process (fast); each example writes its input to a fresh temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainwarden
from trainwarden.cli import main

FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _torch_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "step": 3}, buf)
    return buf.getvalue()


TORCH = _torch_bytes()
PICKLE = pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=4)
MANIFEST = {
    "payloadType": "application/vnd.in-toto+json",
    "payload": base64.b64encode(
        json.dumps(
            {
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": "m.pt", "digest": {"sha256": "0" * 64}}],
                "predicateType": "https://trainwarden.dev/checkpoint-manifest/v1",
                "predicate": {},
            }
        ).encode()
    ).decode(),
    "signatures": [{"keyid": "ab" * 32, "sig": "AAAA"}],
}


def _nested_pickle(depth: int) -> bytes:
    # PROTO 2, then `depth` EMPTY_LIST opcodes each appended into the one before, STOP.
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def _nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _file_inputs(real: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=4096),
        st.integers(0, len(real)).map(lambda n: real[:n]),
        st.tuples(st.integers(0, len(real) - 1), st.binary(min_size=1, max_size=8)).map(
            lambda t: real[: t[0]] + t[1] + real[t[0] + len(t[1]) :]
        ),
        st.integers(1, 200_000).map(_nested_pickle),
        st.integers(1, 200_000).map(_nested_json),
    )


def run(args: list[str], cwd: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            else:
                code = 0
    finally:
        os.chdir(old)
    return code, out.getvalue() + err.getvalue()


def _check(args: Callable[[Path], list[str]], files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in files.items():
            (root / name).write_bytes(data)
        code, output = run(args(root), root)
        assert code in (0, 1, 2), (code, output[-2000:])
        assert "Traceback" not in output, output[-2000:]
        # An "internal error" is a crash with a polite face: hostile input gets a named problem.
        assert "internal error" not in output, output[-2000:]


@FUZZ
@given(_file_inputs(TORCH))
def test_scan_hostile_file(data: bytes) -> None:
    _check(lambda r: ["scan", str(r / "m.pt")], {"m.pt": data})


@FUZZ
@given(_file_inputs(TORCH), st.sampled_from(["text", "json", "sarif"]))
def test_scan_hostile_file_every_format(data: bytes, fmt: str) -> None:
    _check(lambda r: ["scan", "--format", fmt, str(r)], {"m.bin": data})


@FUZZ
@given(st.one_of(_file_inputs(TORCH), _file_inputs(PICKLE)), st.booleans())
def test_load_hostile_file(data: bytes, mmap: bool) -> None:
    # `load` of random bytes goes through the restricted unpickler only after the scan.
    _check(lambda r: ["load", "--format", "json", str(r / "m.pt")], {"m.pt": data})
    if mmap:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "m.pt"
            p.write_bytes(data)
            with contextlib.suppress(trainwarden.TrainWardenError):
                trainwarden.load(p, mmap=True)


@FUZZ
@given(_file_inputs(json.dumps(MANIFEST).encode()))
def test_manifest_verify_and_load_with_hostile_manifest(manifest: bytes) -> None:
    files = {"m.pt": TORCH, "m.pt.manifest.json": manifest}
    _check(lambda r: ["manifest", "verify", str(r / "m.pt")], files)
    _check(lambda r: ["load", str(r / "m.pt")], files)


@FUZZ
@given(_file_inputs(TORCH))
def test_convert_hostile_file(data: bytes) -> None:
    _check(
        lambda r: ["convert", str(r / "m.pt"), "--to", "safetensors", "-o", str(r / "o.st")],
        {"m.pt": data},
    )


_SNAPSHOT_LIKE = json.dumps(
    {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [],
        "predicateType": "https://trainwarden.dev/environment/v1",
        "predicate": {"interpreter": {}, "distributions": []},
    }
).encode()


@FUZZ
@given(_file_inputs(_SNAPSHOT_LIKE), _file_inputs(json.dumps(MANIFEST).encode()))
def test_attest_diff_hostile_snapshots(a: bytes, b: bytes) -> None:
    _check(
        lambda r: ["attest", "diff", str(r / "a.json"), str(r / "b.json")],
        {"a.json": a, "b.json": b},
    )


def test_ctrl_c_in_a_parallel_scan_exits_2_without_worker_tracebacks(tmp_path: Path) -> None:
    # SIGINT to the whole process group, as a terminal's Ctrl-C sends it.
    # About 7 s of scanning on one core: the signal lands while the workers are busy.
    for i in range(128):
        (tmp_path / f"m{i}.pkl").write_bytes(PICKLE * 2000)
    src = Path(trainwarden.__file__).resolve().parents[1]
    code = textwrap.dedent(
        f"""
        import os, signal, subprocess, sys, time
        def as_from_a_terminal():
            # A shell starts a command with SIGINT unblocked and at its default; the test
            # process may have inherited other settings from earlier tests (a watchdog blocks
            # SIGINT in the thread that starts it), and exec keeps both.
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        p = subprocess.Popen(
            [sys.executable, "-m", "trainwarden", "scan", "--workers", "2", {str(tmp_path)!r}],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
        children = f"/proc/{{p.pid}}/task/{{p.pid}}/children"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not open(children).read().split():
            time.sleep(0.05)  # wait until the worker processes exist
        time.sleep(0.5)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=120)
        sys.stdout.write(str(p.returncode) + "\\n" + err.decode(errors="replace"))
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(src)),
    )
    rc, _, err = r.stdout.partition("\n")
    assert rc == "2", r.stdout
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip() == "interrupted"
