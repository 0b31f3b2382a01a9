"""``attest verify --report-to``: a node's statement digest, signature and findings reach a real
ledger service (uvicorn on 127.0.0.1) and can be checked there."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from trainwarden.attest import AttestationError
from trainwarden.attest._cache import HashCache
from trainwarden.attest._report import report_to_ledger, statement_payload
from trainwarden.attest._signing import PAYLOAD_TYPE, generate_key, verify_envelope
from trainwarden.attest._verify import verify_environment
from trainwarden.ledger._client import LedgerClient

from .venvs import Venv

SRC = Path(__file__).resolve().parents[2] / "src"


class Server:
    """A real ``trainwarden serve`` (uvicorn) on 127.0.0.1 over SQLite."""

    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = tmp_path / "state"
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainwarden",
                "serve",
                "--db",
                f"sqlite:///{tmp_path / 'ledger.db'}",
                "--state-dir",
                str(self.state),
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        end = time.monotonic() + 120
        while time.monotonic() < end:
            assert self.proc.poll() is None, "the ledger server exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError("the ledger server did not start")

    @property
    def admin_token(self) -> str:
        return (self.state / "admin.token").read_text().strip()

    def create_run(self) -> tuple[str, str]:
        r = httpx.post(
            self.url + "/v1/runs",
            json={"name": "attest"},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["run"]["run_id"]), str(r.json()["token"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


def _entries(srv: Server, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    client = LedgerClient(srv.url, srv.admin_token)
    try:
        page = client.get("/v1/entries", run=run_id, limit=1000)
    finally:
        client.close()
    return [(e["kind"], json.loads(e["entry"])["record"]) for e in page["entries"]]


def _tamper(venv: Venv) -> Path:
    target = venv.installed("twdemo/core.py")
    target.write_text("def step(x):\n    return x - 1\n")
    return target


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainwarden", "attest", "verify", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def _cli_env(tmp_path: Path, clean_env: dict[str, str]) -> dict[str, str]:
    return {
        **clean_env,
        "PYTHONPATH": str(SRC),
        "HOME": str(tmp_path / "home"),
        "TRAINWARDEN_CACHE_DIR": str(tmp_path / "cache"),
        "TRAINWARDEN_LEDGER_SPOOL": str(tmp_path / "spool"),
    }


def test_cli_report_to_sends_the_signed_statement_digest_and_every_finding(
    make_venv: Callable[[], Venv],
    clean_env: dict[str, str],
    tmp_path: Path,
    ledger: Server,
    warm_cache_file: Path,
) -> None:
    venv = make_venv()
    # The child process starts from the session's hash cache (standard-library digests and
    # bytecode verdicts), as a node that verified before would.
    (tmp_path / "cache").mkdir(mode=0o700)
    shutil.copyfile(warm_cache_file, tmp_path / "cache" / "attest-sha256.bin")
    target = _tamper(venv)
    run_id, token = ledger.create_run()
    _pub, keyid = generate_key(tmp_path / "node.key")
    proc = _cli(
        [
            "--python",
            str(venv.python),
            "--report-to",
            ledger.url,
            "--ledger-token",
            token,
            "--sign",
            str(tmp_path / "node.key"),
            "--format",
            "json",
        ],
        _cli_env(tmp_path, clean_env),
    )
    assert proc.returncode == 1, proc.stderr
    printed = json.loads(proc.stdout)
    entries = _entries(ledger, run_id)
    kinds = [k for k, _ in entries]
    assert kinds == ["attest.verify.finding"] * len(printed["findings"]) + ["attest.verify"]
    sent = [r for k, r in entries if k == "attest.verify.finding"]
    assert sent == printed["findings"]
    assert any(f["rule_id"] == "TWA-REC-001" and f["location"] == str(target) for f in sent)
    summary = entries[-1][1]
    assert summary["subject"] == printed["subject"]
    assert summary["findings"] == len(sent)
    assert summary["signature"]["keyid"] == keyid
    assert summary["signature"]["payloadType"] == PAYLOAD_TYPE
    assert len(summary["statement_sha256"]) == 64


def test_the_reported_digest_and_signature_check_against_the_statement(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path, ledger: Server
) -> None:
    import hashlib

    venv = make_venv()
    _tamper(venv)
    run_id, token = ledger.create_run()
    pub, _ = generate_key(tmp_path / "node.key")
    report = verify_environment(str(venv.python), environ=clean_env, cache=HashCache(None))
    receipt = report_to_ledger(
        report, ledger.url, token, sign_key=tmp_path / "node.key", spool_dir=str(tmp_path / "s")
    )
    assert receipt.run_id == run_id
    summary = _entries(ledger, run_id)[-1][1]
    payload = statement_payload(report)
    assert summary["statement_sha256"] == hashlib.sha256(payload).hexdigest()
    sig = summary["signature"]
    envelope = {
        "payloadType": sig["payloadType"],
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": sig["keyid"], "sig": sig["sig"]}],
    }
    assert verify_envelope(envelope, pub)
    # A statement other than the one reported does not verify under the reported signature.
    other = payload.replace(b"twdemo", b"twdemX", 1)
    assert other != payload
    envelope["payload"] = base64.b64encode(other).decode()
    assert not verify_envelope(envelope, pub)


def test_a_token_that_cannot_write_is_an_error_not_a_silent_loss(
    make_venv: Callable[[], Venv], clean_env: dict[str, str], tmp_path: Path, ledger: Server
) -> None:
    venv = make_venv()
    ledger.create_run()
    report = verify_environment(str(venv.python), environ=clean_env, cache=HashCache(None))
    with pytest.raises(AttestationError, match="did not acknowledge"):
        report_to_ledger(
            report, ledger.url, "not-a-token", spool_dir=str(tmp_path / "s"), timeout=3
        )


def test_report_to_without_a_token_is_a_usage_error_before_any_work(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    env = _cli_env(tmp_path, clean_env)
    env.pop("TRAINWARDEN_LEDGER_TOKEN", None)
    # An interpreter that does not exist: reaching the snapshot would fail differently.
    proc = _cli(["--python", str(tmp_path / "nope"), "--report-to", "http://127.0.0.1:9"], env)
    assert proc.returncode == 2
    assert "--report-to needs a ledger token" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "cache")
