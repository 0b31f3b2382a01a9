"""Fixtures: one real ``trainwarden serve`` over SQLite holding a run sabotaged by the drill's
weight edit (the real monitor sending to a LedgerSink), a clean run, and a reader token."""

from __future__ import annotations

import struct
import time
import zlib
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
    from trainwarden.ledger.client import LedgerSink

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
    from trainwarden.drill.runner import TECHNIQUES, DrillContext
    from trainwarden.drill.runner import Ledger as DrillLedger

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


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes) into rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    prev = bytearray(w * bpp)
    stride = w * bpp + 1
    for y in range(h):
        f, line = raw[y * stride], bytearray(raw[y * stride + 1 : (y + 1) * stride])
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        rows.append(bytes(line))
        prev = line
    return w, bpp, rows


def pixel_variance(path: Path) -> float:
    """Variance of the grey level over a sample of pixels (0 for a blank image)."""
    w, bpp, rows = png_pixels(path.read_bytes())
    vals = []
    for row in rows[:: max(1, len(rows) // 200)]:
        for x in range(0, w, max(1, w // 200)):
            px = row[x * bpp : x * bpp + 3]
            vals.append(sum(px) / 3)
    mean = sum(vals) / len(vals)
    return sum((v - mean) ** 2 for v in vals) / len(vals)


