"""HTTP routes of the dashboard: login and logout forms (CSRF-checked), the runs list, the run
page, and three read-only JSON endpoints the page's script uses to check proofs."""

from __future__ import annotations

import base64
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from trainwarden.ledger._types import Role
from trainwarden.service._core import AuthError, LedgerService, ServiceError, hash_token
from trainwarden.service._dashboard.model import SEVERITIES, RunIndex, RunsModel, attest_diff
from trainwarden.service._dashboard.sessions import (
    COOKIE,
    LOGIN_COOKIE,
    Session,
    SessionStore,
    csrf_ok,
)

__all__ = ["DashboardConfig", "install_dashboard", "render_run_page", "run_page_context"]

_HERE = Path(__file__).parent
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_MAX_FORM = 4096
_SORTS = ("started", "name", "status", "latest_step", "alerts", "owner")
_STATUS_ORDER = {"clean": 0, "warnings": 1, "tampering detected": 2}


def _env_ttl() -> float:
    try:
        return float(os.environ.get("TRAINWARDEN_DASHBOARD_SESSION_TTL", "3600"))
    except ValueError:
        return 3600.0


@dataclass(frozen=True)
class DashboardConfig:
    """``session_ttl_s``: how long a login lasts (absolute, not renewed by activity);
    ``secure_cookies``: mark cookies Secure (set when serving over TLS)."""

    session_ttl_s: float = 3600.0
    secure_cookies: bool = False
    buckets: int = 200

    @classmethod
    def from_env(cls, secure_cookies: bool = False) -> DashboardConfig:
        return cls(session_ttl_s=_env_ttl(), secure_cookies=secure_cookies)


def _fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"


_ENV.filters["utc"] = _fmt_time


def _page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return HTMLResponse(_ENV.get_template(name).render(**ctx), status_code=status)


def run_page_context(idx: RunIndex, a: str, b: str, buckets: int) -> dict[str, Any]:
    """What the run page shows of ``idx``; ``a`` and ``b`` name two nodes to diff."""
    plots, plots_json = idx.plots(buckets)
    nodes: dict[str, dict[str, Any]] = {}
    for rec in idx.attest:
        nodes[rec["host"] or "?"] = rec
    diff = None
    if a in nodes and b in nodes:
        diff = attest_diff(nodes[a]["record"], nodes[b]["record"])
    return {
        "summary": idx.summary(),
        "summary_after": idx.after,
        "timeline": sorted(idx.timeline, key=lambda t: t.index),
        "plots": plots,
        "plots_json": plots_json,
        "attest": idx.attest,
        "nodes": sorted(nodes),
        "a": a,
        "b": b,
        "diff": diff,
        "artifacts": idx.artifacts,
        "severities": SEVERITIES,
    }


def render_run_page(idx: RunIndex, buckets: int = 200) -> str:
    """The run page's HTML for ``idx`` (used by the benchmark to time the view alone)."""
    return _ENV.get_template("run.html").render(
        **run_page_context(idx, "", "", buckets), session=None
    )


def install_dashboard(
    app: FastAPI, service: LedgerService, config: DashboardConfig | None = None
) -> RunsModel:
    """Add the dashboard's routes under ``/ui/`` to ``app``; returns its run model."""
    cfg = config or DashboardConfig.from_env()
    storage = service.ledger.storage
    sessions = SessionStore(storage, cfg.session_ttl_s)
    model = RunsModel(storage)
    # Compile the templates now, so that no page pays for it.
    for name in ("base.html", "login.html", "notfound.html", "run.html", "runs.html"):
        _ENV.get_template(name)

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        resp = await call_next(request)
        if request.url.path == "/ui" or request.url.path.startswith("/ui/"):
            resp.headers["Content-Security-Policy"] = _CSP
            resp.headers["X-Frame-Options"] = "DENY"
            resp.headers["X-Content-Type-Options"] = "nosniff"
            resp.headers["Referrer-Policy"] = "no-referrer"
            if not request.url.path.startswith("/ui/static/"):
                resp.headers["Cache-Control"] = "no-store"
        return resp

    app.mount("/ui/static", StaticFiles(directory=_HERE / "static"), name="ui-static")

    def cookie(request: Request, resp: Response, name: str, value: str, max_age: int) -> None:
        resp.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=cfg.secure_cookies or request.url.scheme == "https",
        )

    def session(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def to_login() -> Response:
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/ui")
        return resp

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > _MAX_FORM:
            raise ServiceError(413, "too_large", "form too large")
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError) as e:
            raise ServiceError(400, "bad_form", "malformed form") from e
        return dict(pairs)

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> Response:
        return RedirectResponse("/ui/runs", status_code=303)

    def login_page(request: Request, error: str | None, status: int = 200) -> Response:
        nonce = base64.urlsafe_b64encode(os.urandom(24)).decode()
        resp = _page("login.html", status, csrf=nonce, error=error, session=None)
        cookie(request, resp, LOGIN_COOKIE, nonce, 600)
        return resp

    @app.get("/ui/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return login_page(request, None)

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        data = await form(request)
        if not csrf_ok(request.cookies.get(LOGIN_COOKIE, ""), data.get("csrf")):
            return login_page(request, "The form expired; please try again.", 403)
        token = data.get("token", "").strip()
        try:
            p = service.authenticate("Bearer " + token)
        except AuthError:
            return login_page(request, "Unknown or revoked token.", 401)
        if p.role not in (Role.reader, Role.admin):
            return login_page(
                request, "Use a reader token: a writer token cannot open the dashboard.", 403
            )
        sid, _ = sessions.open(hash_token(token), p.token_id, p.role)
        resp = RedirectResponse("/ui/runs", status_code=303)
        cookie(request, resp, COOKIE, sid, int(cfg.session_ttl_s))
        resp.delete_cookie(LOGIN_COOKIE, path="/ui")
        return resp

    @app.post("/ui/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        s = session(request)
        if s is None:
            return to_login()
        data = await form(request)
        if not csrf_ok(s.csrf, data.get("csrf")):
            return HTMLResponse("CSRF check failed", status_code=403)
        sessions.close(request.cookies.get(COOKIE))
        return to_login()

    @app.get("/ui/runs", include_in_schema=False)
    def runs(
        request: Request,
        q: str = "",
        status: str = "",
        sort: str = "started",
        order: str = "desc",
    ) -> Response:
        s = session(request)
        if s is None:
            return to_login()
        rows = model.summaries()
        if q:
            ql = q.lower()
            rows = [
                r
                for r in rows
                if ql in r.run.name.lower()
                or ql in r.owner.lower()
                or ql in r.run.run_id
                or any(ql in h.lower() for h in r.hosts)
            ]
        if status:
            rows = [r for r in rows if r.status == status]
        sort = sort if sort in _SORTS else "started"
        keys: dict[str, Callable[[Any], Any]] = {
            "started": lambda r: r.started,
            "name": lambda r: r.run.name.lower(),
            "owner": lambda r: r.owner.lower(),
            "status": lambda r: _STATUS_ORDER.get(r.status, 0),
            "latest_step": lambda r: -1 if r.latest_step is None else r.latest_step,
            "alerts": lambda r: tuple(r.counts[x] for x in reversed(SEVERITIES)),
        }
        rows.sort(key=keys[sort], reverse=order != "asc")
        return _page(
            "runs.html",
            rows=rows,
            q=q,
            status_filter=status,
            sort=sort,
            order=order,
            sorts=_SORTS,
            severities=SEVERITIES,
            session=s,
        )

    @app.get("/ui/runs/{run_id}", include_in_schema=False)
    def run_page(request: Request, run_id: str, a: str = "", b: str = "") -> Response:
        s = session(request)
        if s is None:
            return to_login()
        info = storage.get_run(run_id)
        if info is None:
            return _page("notfound.html", 404, session=s, what=run_id)
        idx = model.index(info)
        return _page("run.html", **run_page_context(idx, a, b, cfg.buckets), session=s)

    def api_session(request: Request) -> Session:
        s = session(request)
        if s is None:
            raise ServiceError(401, "no_session", "log in to the dashboard first")
        return s

    @app.get("/ui/api/checkpoint", include_in_schema=False)
    def api_checkpoint(request: Request) -> JSONResponse:
        api_session(request)
        cp = service.checkpoint()
        return JSONResponse(
            {
                "origin": service.ledger.origin,
                "vkey": service.ledger.signer.vkey(),
                "size": cp.size,
                "note": cp.note,
            }
        )

    @app.get("/ui/api/proof", include_in_schema=False)
    def api_proof(request: Request, index: int, size: int) -> JSONResponse:
        api_session(request)
        if not 0 <= index < size:
            raise ServiceError(404, "no_such_entry", "index outside the tree")
        rows = storage.entries(index, index + 1)
        if not rows:
            raise ServiceError(404, "no_such_entry", f"no entry {index}")
        n, _, proof = service.inclusion(index, size)
        return JSONResponse(
            {
                "index": index,
                "size": n,
                "entry": base64.b64encode(rows[0].entry).decode(),
                "proof": [base64.b64encode(h).decode() for h in proof],
            }
        )

    @app.get("/ui/api/consistency", include_in_schema=False)
    def api_consistency(request: Request, first: int, second: int) -> JSONResponse:
        api_session(request)
        proof = service.consistency(first, second)
        return JSONResponse(
            {
                "first": first,
                "second": second,
                "proof": [base64.b64encode(h).decode() for h in proof],
            }
        )

    return model
