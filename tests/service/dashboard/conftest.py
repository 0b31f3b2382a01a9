"""Fixtures: one real ``trainwarden serve`` over SQLite holding a run sabotaged by the drill's
weight edit (the real monitor sending to a LedgerSink), a clean run, and a reader token."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import Server, free_port


@dataclass
class Site:
    server: Server
    reader: str
    tamper_run: str
    clean_run: str

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self) -> httpx.Client:
        return self.server.client(self.server.admin_token)


def send(server: Server, name: str, events: list[tuple[str, dict[str, Any]]], **meta: Any) -> str:
    """Create a run and ship ``events`` through a real LedgerSink; return the run id."""
    from trainwarden.ledger._client import LedgerSink

    run_id, token = server.create_run(name=name, ranks=0, meta=meta)
    sink = LedgerSink(server.url, token, spool_dir=server.state / "spool" / name, fsync=False)
    try:
        for kind, rec in events:
            sink.emit(kind, rec)
        assert sink.flush(timeout=60), sink.last_error
    finally:
        sink.close()
    return run_id


def wait_checkpoint(server: Server) -> int:
    """Wait until the latest signed checkpoint covers the whole log; return its size."""
    with server.client(server.admin_token) as c:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            size = int(c.post("/v1/checkpoint").json()["size"])
            got = c.get("/v1/entries", params={"after": size - 1, "limit": 1}).json()
            if not got["entries"]:
                return size
            time.sleep(0.1)
    raise AssertionError("no checkpoint covering the log")


def step_events(ranks: int, steps: int, diverge: tuple[int, int] | None = None) -> list[Any]:
    out: list[tuple[str, dict[str, Any]]] = []
    for s in range(1, steps + 1):
        for r in range(ranks):
            h = f"{s:016x}"
            if diverge is not None and r == diverge[0] and s >= diverge[1]:
                h = f"{s + 10**6:016x}"
            rec = {
                "step": s,
                "rank": r,
                "loss": 2.0 / s + 0.01 * r,
                "grad_norm": 1.0 + 0.1 * r,
                "timing": {"step": 0.1, "forward": 0.04, "backward": 0.05, "optimizer": 0.01},
                "weights_hash": h,
            }
            out.append(("step", rec))
    return out


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from trainwarden.drill._runner import TECHNIQUES, DrillContext
    from trainwarden.drill._runner import Ledger as DrillLedger

    root = tmp_path_factory.mktemp("dashboard")
    srv = Server(f"sqlite:///{root / 'ledger.db'}", root / "state", free_port(), ["--no-deadman"])
    srv.start()
    try:
        work = root / "weight-edit"
        work.mkdir()
        ctx = DrillContext(work, ledger=DrillLedger(srv.url, srv.admin_token))
        tech = next(t for t in TECHNIQUES if t.id == "T6-weight-edit")
        try:
            outcome = tech.run(ctx)
        finally:
            ctx.close()
        assert outcome.caught, outcome.detail
        assert ctx.run_id is not None
        clean = send(srv, "clean-run", step_events(2, 20), owner="alice")
        with srv.client(srv.admin_token) as c:
            reader = str(c.post("/v1/tokens", json={"role": "reader"}).json()["token"])
        wait_checkpoint(srv)
        yield Site(srv, reader, ctx.run_id, clean)
    finally:
        srv.kill()


def pixel_variance(browser: Any, path: Path) -> float:
    """Variance of the grey level of the PNG at ``path`` (0 for a blank image), decoded by a
    fresh Chromium page from the saved file's bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    page = browser.new_page()
    try:
        got = page.evaluate(
            """async (b64) => {
                const img = new Image();
                img.src = "data:image/png;base64," + b64;
                await img.decode();
                const c = document.createElement("canvas");
                c.width = img.width; c.height = img.height;
                const ctx = c.getContext("2d");
                ctx.drawImage(img, 0, 0);
                const d = ctx.getImageData(0, 0, c.width, c.height).data;
                let n = 0, s = 0, s2 = 0;
                for (let i = 0; i < d.length; i += 4) {
                    const g = (d[i] + d[i + 1] + d[i + 2]) / 3;
                    n++; s += g; s2 += g * g;
                }
                return s2 / n - (s / n) ** 2;
            }""",
            base64.b64encode(data).decode(),
        )
    finally:
        page.close()
    return float(got)
