"""Fixtures: a real ``trainwarden serve`` (uvicorn) process on 127.0.0.1 that tests may kill -9
and restart, over SQLite or a real PostgreSQL."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A ledger server subprocess; ``kill()`` is SIGKILL, ``start()`` restarts it."""

    def __init__(self, db_url: str, state: Path, port: int, extra: list[str]) -> None:
        self.db_url = db_url
        self.state = state
        self.port = port
        self.extra = extra
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state / "server.log"

    def start(self, timeout: float = 60) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trainwarden",
                    "serve",
                    "--db",
                    self.db_url,
                    "--state-dir",
                    str(self.state),
                    "--port",
                    str(self.port),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    @property
    def admin_token(self) -> str:
        return (self.state / "admin.token").read_text().strip()

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def create_run(self, **body: Any) -> tuple[str, str]:
        with self.client(self.admin_token) as c:
            r = c.post("/v1/runs", json={"name": "test", **body})
            assert r.status_code == 201, r.text
            got = r.json()
            return str(got["run"]["run_id"]), str(got["token"])


def pg_schema_url(dsn: str) -> str:
    import psycopg

    schema = "s_" + secrets.token_hex(6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: ``start_server(db_url=None, extra=[...])`` starts a server (SQLite by default)."""
    servers: list[Server] = []

    def start(db_url: str | None = None, extra: list[str] | None = None) -> Server:
        state = tmp_path / f"state{len(servers)}"
        url = db_url or f"sqlite:///{tmp_path / f'ledger{len(servers)}.db'}"
        srv = Server(url, state, free_port(), extra or [])
        servers.append(srv)
        srv.start()
        return srv

    yield start
    for s in servers:
        s.kill()
