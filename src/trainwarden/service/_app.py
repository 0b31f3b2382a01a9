"""The HTTP face of the ledger service (FastAPI). Routes translate requests to
:class:`LedgerService` calls and results to JSON; every refusal is a JSON error with a stable
code, counted in /metrics."""

from __future__ import annotations

import base64
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from trainwarden.ledger._types import Role, RunInfo, StoredEntry
from trainwarden.service._core import LedgerService, Principal, ServiceError
from trainwarden.service._parse import parse_events

__all__ = ["ServiceLimits", "create_app"]

# Routes read the bearer token themselves so that every refusal has our JSON shape.
Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]

_WRITER = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$"


def _no_nul(value: str) -> str:
    # PostgreSQL's text cannot hold NUL: refused here (422) on both databases, never a 500.
    if "\x00" in value:
        raise ValueError("must not hold a NUL character")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


def _query_text(name: str, value: str | None) -> str | None:
    """A text query or path parameter, refused (422) when it holds a NUL character."""
    if value is not None and "\x00" in value:
        raise ServiceError(422, "invalid", f"{name}: must not hold a NUL character")
    return value


class ServiceLimits(BaseModel):
    """Request bounds; a request over one is refused whole with 413."""

    max_body_bytes: int = 8 * 1024 * 1024
    checkpoint_interval_s: float = 0.5
    deadman_interval_s: float = 1.0


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seq: int = Field(ge=1, lt=2**53)
    kind: str = Field(min_length=1, max_length=128)
    record: dict[str, Any]
    ts: float | None = None
    rank: int | None = Field(default=None, ge=0, lt=2**31)
    host: str | None = Field(default=None, max_length=256)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class AppendIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    writer: str = Field(pattern=_WRITER)
    events: list[EventIn] = Field(min_length=1, max_length=5000)


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text = Field(min_length=1, max_length=200)
    interval_s: float = Field(default=60.0, gt=0, le=86400)
    ranks: int = Field(default=1, ge=0, le=1_000_000)
    meta: dict[str, Any] = Field(default_factory=dict)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    run_id: Text | None = Field(default=None, max_length=64)
    # [first, last]: a writer token that may write only events of these ranks.
    ranks: list[Annotated[int, Field(ge=0, lt=2**31)]] | None = Field(
        default=None, min_length=2, max_length=2
    )


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _run_json(r: RunInfo) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "name": r.name,
        "created": r.created,
        "interval_s": r.interval_s,
        "ranks": r.ranks,
        "status": r.status,
        "meta": r.meta,
    }


def _entry_json(e: StoredEntry) -> dict[str, Any]:
    return {
        "index": e.index,
        "run": e.run,
        "writer": e.writer,
        "seq": e.seq,
        "kind": e.kind,
        "entry": e.entry.decode(),
        "leaf_hash": _b64(e.leaf_hash),
    }


# Indices and sizes are 64-bit signed in both databases: a larger number is refused (422), not
# handed to the driver.
_MAX_INT = 2**63


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"status": status, "code": code, "message": message}}
    )


class _BodyLimit:
    """ASGI middleware: refuse bodies over the limit before any route runs (413)."""

    def __init__(self, app: Any, limit: int, service: LedgerService) -> None:
        self.app = app
        self.limit = limit
        self.service = service

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        self.service.reject("too_large")
        resp = _error(413, "too_large", f"request body exceeds {self.limit} bytes")
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(
    service: LedgerService, limits: ServiceLimits | None = None, *, dashboard: bool = True
) -> FastAPI:
    """The ASGI app; background checkpointing and the dead-man switch run while it is served.
    ``dashboard`` adds the investigator dashboard under ``/ui/``."""
    lim = limits or ServiceLimits()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_every,
                args=(stop, lim.checkpoint_interval_s, service.tick_checkpoint),
                name="ledger-checkpoints",
                daemon=True,
            ),
            threading.Thread(
                target=_every,
                args=(stop, lim.deadman_interval_s, service.check_liveness),
                name="ledger-deadman",
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)

    app = FastAPI(
        title="TrainWarden ledger",
        summary="Tamper-evident evidence log for training runs",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(_BodyLimit, limit=lim.max_body_bytes, service=service)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, e: ServiceError) -> JSONResponse:
        service.reject(e.code)
        resp = _error(e.status, e.code, e.message)
        if e.retry_after is not None:
            resp.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
        return resp

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        # No such route, method or body the framework could read: the same JSON shape.
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            e.status_code, "http_error"
        )
        service.reject(code)
        resp = _error(e.status_code, code, str(e.detail))
        resp.headers.update(e.headers or {})
        return resp

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        # Still a JSON error for the client; the server's own log keeps the traceback.
        service.reject("internal")
        return _error(500, "internal", "internal server error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        service.reject("invalid")
        errs = e.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(422, "invalid", f"{where}: {first.get('msg', 'invalid request')}")

    def who(authorization: str | None, *roles: Role) -> Principal:
        p = service.authenticate(authorization)
        if roles:
            service.require(p, *roles)
        return p

    readers = (Role.reader, Role.admin)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/v1/key", tags=["log"])
    def key() -> dict[str, str]:
        """The log's origin and its note verifier key (pin it out of band)."""
        return {"origin": service.ledger.origin, "vkey": service.ledger.signer.vkey()}

    @app.get("/v1/whoami", tags=["tokens"])
    def whoami(authorization: Auth = None) -> dict[str, Any]:
        """The calling token's id, role and run (any valid token)."""
        p = who(authorization)
        return {
            "token_id": p.token_id,
            "role": p.role.value,
            "run_id": p.run_id,
            "ranks": None if p.ranks is None else list(p.ranks),
        }

    @app.post("/v1/runs", status_code=201, tags=["runs"])
    def create_run(body: RunIn, authorization: Auth = None) -> dict[str, Any]:
        """Create a run (admin); returns the run and its writer token (shown once)."""
        who(authorization, Role.admin)
        run, token = service.create_run(body.name, body.interval_s, body.ranks, body.meta)
        return {"run": _run_json(run), "token": token}

    @app.get("/v1/runs", tags=["runs"])
    def list_runs(authorization: Auth = None) -> dict[str, Any]:
        who(authorization, *readers)
        return {"runs": [_run_json(r) for r in service.ledger.storage.list_runs()]}

    @app.get("/v1/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, authorization: Auth = None) -> dict[str, Any]:
        who(authorization, *readers)
        return _run_json(service.get_run(_query_text("path.run_id", run_id) or ""))

    @app.post(
        "/v1/runs/{run_id}/events",
        tags=["runs"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": AppendIn.model_json_schema()}},
            }
        },
    )
    async def append(run_id: str, request: Request, authorization: Auth = None) -> Any:
        """Append a batch to the caller's own run (writer). Resent events (same writer and
        seq) are acknowledged with their existing index. The body is the AppendIn schema."""
        p = who(authorization, Role.writer)
        _query_text("path.run_id", run_id)
        # Parsed and checked by hand: the hot path, where a model per event costs more than
        # the append itself. parse_events enforces the same schema as AppendIn.
        writer, events = parse_events(await request.body())
        res = await run_in_threadpool(service.append, p, run_id, writer, events)
        return {
            "indices": res.indices,
            "new": res.new,
            "duplicates": res.duplicates,
            "size": res.size,
        }

    @app.get("/v1/entries", tags=["log"])
    def entries(
        authorization: Auth = None,
        run: str | None = None,
        kind: str | None = None,
        writer: str | None = None,
        after: Annotated[int, Query(ge=-1, lt=_MAX_INT)] = -1,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Entries in index order after index ``after``, filtered; page with ``next_after``."""
        who(authorization, *readers)
        run, kind, writer = (
            _query_text(f"query.{n}", v)
            for n, v in (("run", run), ("kind", kind), ("writer", writer))
        )
        rows = service.entries(run=run, kind=kind, writer=writer, after=after, limit=limit)
        return {
            "entries": [_entry_json(e) for e in rows],
            "next_after": rows[-1].index if len(rows) == limit else None,
        }

    @app.get("/v1/checkpoint", tags=["log"])
    def checkpoint(authorization: Auth = None) -> dict[str, Any]:
        """The latest signed checkpoint (a C2SP signed note)."""
        who(authorization, *readers)
        cp = service.checkpoint()
        return {"size": cp.size, "root": _b64(cp.root), "note": cp.note}

    @app.post("/v1/checkpoint", tags=["log"])
    def checkpoint_now(authorization: Auth = None) -> dict[str, Any]:
        """Sign a checkpoint for the current head now (admin)."""
        who(authorization, Role.admin)
        cp = service.checkpoint(fresh=True)
        return {"size": cp.size, "root": _b64(cp.root), "note": cp.note}

    @app.get("/v1/checkpoints", tags=["log"])
    def checkpoints(
        authorization: Auth = None,
        after: Annotated[int, Query(ge=0, lt=_MAX_INT)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> dict[str, Any]:
        """Every stored checkpoint, in the order stored (for auditors)."""
        who(authorization, *readers)
        rows = service.ledger.storage.checkpoints(after=after, limit=limit)
        return {
            "checkpoints": [{"seq": r.seq, "size": r.size, "note": r.note} for r in rows],
            "next_after": rows[-1].seq if len(rows) == limit else None,
        }

    @app.get("/v1/proof/inclusion", tags=["log"])
    def inclusion(
        index: Annotated[int, Query(ge=0, lt=_MAX_INT)],
        authorization: Auth = None,
        size: Annotated[int | None, Query(ge=1, lt=_MAX_INT)] = None,
    ) -> dict[str, Any]:
        who(authorization, *readers)
        n, leaf, proof = service.inclusion(index, size)
        return {
            "index": index,
            "size": n,
            "leaf_hash": _b64(leaf),
            "proof": [_b64(h) for h in proof],
        }

    @app.get("/v1/proof/consistency", tags=["log"])
    def consistency(
        first: Annotated[int, Query(ge=0, lt=_MAX_INT)],
        second: Annotated[int, Query(ge=0, lt=_MAX_INT)],
        authorization: Auth = None,
    ) -> dict[str, Any]:
        who(authorization, *readers)
        proof = service.consistency(first, second)
        return {"first": first, "second": second, "proof": [_b64(h) for h in proof]}

    @app.post("/v1/tokens", status_code=201, tags=["tokens"])
    def create_token(body: TokenIn, authorization: Auth = None) -> dict[str, Any]:
        """Issue a token (admin); the token is shown once and stored only as a hash."""
        who(authorization, Role.admin)
        ranks = None if body.ranks is None else (body.ranks[0], body.ranks[1])
        token, info = service.issue_token(body.role, body.run_id, ranks)
        return {
            "token": token,
            "token_id": info.token_id,
            "role": info.role.value,
            "ranks": body.ranks,
        }

    @app.get("/v1/tokens", tags=["tokens"])
    def list_tokens(authorization: Auth = None) -> dict[str, Any]:
        who(authorization, Role.admin)
        return {
            "tokens": [
                {
                    "token_id": t.token_id,
                    "role": t.role.value,
                    "run_id": t.run_id,
                    "created": t.created,
                    "revoked": t.revoked,
                    "ranks": None if t.ranks is None else list(t.ranks),
                }
                for t in service.ledger.storage.list_tokens()
            ]
        }

    @app.delete("/v1/tokens/{token_id}", tags=["tokens"])
    def revoke_token(token_id: str, authorization: Auth = None) -> dict[str, Any]:
        who(authorization, Role.admin)
        service.revoke(_query_text("path.token_id", token_id) or "")
        return {"revoked": token_id}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus text format: ingest rate, log size, rejected requests by reason."""
        return PlainTextResponse(
            service.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    if dashboard:
        from trainwarden.service._dashboard import install_dashboard

        install_dashboard(app, service)
    return app


def _every(stop: threading.Event, interval: float, fn: Callable[[], object]) -> None:
    while not stop.wait(interval):
        try:
            fn()
        except Exception:
            time.sleep(interval)
