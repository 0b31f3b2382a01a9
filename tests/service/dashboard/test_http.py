"""The dashboard's HTTP surface without a browser: what an unauthenticated or cross-site
request gets, against a real ``trainwarden serve``."""

from __future__ import annotations

import re

import httpx

from tests.service.dashboard.conftest import Site


def test_nothing_without_a_session(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        for path in ("/ui", "/ui/runs", f"/ui/runs/{site.tamper_run}"):
            r = c.get(path, follow_redirects=True)
            assert r.url.path == "/ui/login"
            assert site.tamper_run not in r.text and "clean-run" not in r.text
        for path in ("/ui/api/checkpoint", "/ui/api/proof?index=0&size=1"):
            assert c.get(path).status_code == 401
        r = c.get("/ui/login")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"


def _csrf(c: httpx.Client) -> str:
    page = c.get("/ui/login")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m is not None
    return m.group(1)


def test_login_needs_the_forms_csrf_token_and_a_reader_token(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        csrf = _csrf(c)
        # A cross-site form post carries no login cookie: refused even with a good token.
        other = httpx.post(site.url + "/ui/login", data={"token": site.reader, "csrf": csrf})
        assert other.status_code == 403 and "tw_session" not in other.cookies
        assert c.post("/ui/login", data={"token": site.reader, "csrf": "x"}).status_code == 403
        bad = c.post("/ui/login", data={"token": "tw_nope", "csrf": _csrf(c)})
        assert bad.status_code == 401
        _, writer = site.server.create_run(name="w")
        r = c.post("/ui/login", data={"token": writer, "csrf": _csrf(c)})
        assert r.status_code == 403 and "tw_session" not in c.cookies
        r = c.post("/ui/login", data={"token": site.reader, "csrf": _csrf(c)})
        assert r.status_code == 303 and r.headers["location"] == "/ui/runs"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert c.get("/ui/runs").status_code == 200
        # The session cookie authorises no API call.
        assert c.post("/v1/checkpoint").status_code == 401
        assert c.post("/v1/tokens", json={"role": "admin"}).status_code == 401


def test_runs_list_sorts_and_filters_on_the_server(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        r = c.post("/ui/login", data={"token": site.reader, "csrf": _csrf(c)})
        assert r.status_code == 303

        def names(**params: str) -> list[str]:
            page = c.get("/ui/runs", params=params).text
            return re.findall(r'<a href="/ui/runs/run_[0-9a-f]+">([^<]+)</a>', page)

        asc = names(sort="name", order="asc")
        assert len(asc) >= 2 and asc == sorted(asc, key=str.lower)
        assert names(sort="name", order="desc") == asc[::-1]
        assert names(q="alice") == ["clean-run"]
        assert "clean-run" not in names(status="tampering detected")
        # An unknown sort key falls back to the start time instead of failing.
        assert sorted(names(sort="__class__")) == sorted(asc)
