"""Every endpoint against every kind of caller: no token, a wrong, malformed or revoked token,
another run's writer, a reader on a write, an oversized or malformed body. Each gets the right
status and a JSON error, and a refused request writes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwarden.ledger import open_storage

from .conftest import Server, pg_schema_url


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    allowed: frozenset[str]  # principals that may call it
    body: Any = None
    ok: int = 200


PUBLIC = frozenset({"none", "wrong", "malformed", "revoked", "admin", "reader", "writer", "other"})
READ = frozenset({"admin", "reader"})
ADMIN = frozenset({"admin"})
ANY_VALID = frozenset({"admin", "reader", "writer", "other"})


def _endpoints(run: str) -> list[Endpoint]:
    event = {"writer": "w", "events": [{"seq": 1, "kind": "k", "record": {}}]}
    return [
        Endpoint("GET", "/healthz", PUBLIC),
        Endpoint("GET", "/v1/key", PUBLIC),
        Endpoint("GET", "/metrics", PUBLIC),
        Endpoint("GET", "/v1/whoami", ANY_VALID),
        Endpoint("POST", "/v1/runs", ADMIN, {"name": "x", "ranks": 0}, 201),
        Endpoint("GET", "/v1/runs", READ),
        Endpoint("GET", f"/v1/runs/{run}", READ),
        Endpoint("POST", f"/v1/runs/{run}/events", frozenset({"writer"}), event),
        Endpoint("GET", "/v1/entries", READ),
        Endpoint("GET", "/v1/checkpoint", READ),
        Endpoint("POST", "/v1/checkpoint", ADMIN),
        Endpoint("GET", "/v1/checkpoints", READ),
        Endpoint("GET", "/v1/proof/inclusion?index=0", READ),
        Endpoint("GET", "/v1/proof/consistency?first=1&second=1", READ),
        Endpoint("POST", "/v1/tokens", ADMIN, {"role": "reader"}, 201),
        Endpoint("GET", "/v1/tokens", ADMIN),
        Endpoint("DELETE", "/v1/tokens/tok_doesnotexist", ADMIN, ok=404),
    ]


def _state(srv: Server) -> tuple[Any, ...]:
    """What a request could change. Waits first until the background checkpointer has covered
    the log, so that its own (legitimate) checkpoint is not mistaken for a request's write."""
    st = open_storage(srv.db_url)
    try:
        for _ in range(200):
            cp = st.latest_checkpoint()
            if cp is not None and cp.size >= st.size():
                break
            time.sleep(0.05)
        return (
            st.size(),
            len(st.list_runs()),
            [(t.token_id, t.revoked) for t in st.list_tokens()],
            len(st.checkpoints()),
        )
    finally:
        st.close()


def test_every_endpoint_times_every_caller(start_server: Callable[..., Server]) -> None:
    srv = start_server(extra=["--no-deadman"])
    admin = srv.admin_token
    run, writer = srv.create_run(ranks=0)
    _other_run, other = srv.create_run(ranks=0)
    with srv.client(admin) as c:
        # One entry so that proofs exist, and a checkpoint over it.
        with srv.client(writer) as w:
            r = w.post(
                f"/v1/runs/{run}/events",
                json={"writer": "seed", "events": [{"seq": 1, "kind": "k", "record": {}}]},
            )
            assert r.status_code == 200, r.text
        assert c.post("/v1/checkpoint").status_code == 200
        reader = c.post("/v1/tokens", json={"role": "reader"}).json()["token"]
        rev = c.post("/v1/tokens", json={"role": "reader"}).json()
        assert c.delete(f"/v1/tokens/{rev['token_id']}").status_code == 200
    headers: dict[str, dict[str, str]] = {
        "none": {},
        "wrong": {"Authorization": "Bearer tw_" + "A" * 43},
        "malformed": {"Authorization": "Basic " + admin},
        "revoked": {"Authorization": f"Bearer {rev['token']}"},
        "admin": {"Authorization": f"Bearer {admin}"},
        "reader": {"Authorization": f"Bearer {reader}"},
        "writer": {"Authorization": f"Bearer {writer}"},
        "other": {"Authorization": f"Bearer {other}"},
    }
    failures: list[str] = []
    seq = 2
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for ep in _endpoints(run):
            for who, hdr in headers.items():
                body = ep.body
                if body is not None and "events" in body:
                    body = {"writer": "w", "events": [{"seq": seq, "kind": "k", "record": {}}]}
                    seq += 1
                before = _state(srv)
                r = http.request(ep.method, ep.path, json=body, headers=hdr)
                if who in ep.allowed:
                    expected = ep.ok
                elif who in ("none", "wrong", "malformed", "revoked"):
                    expected = 401
                else:
                    expected = 403
                if r.status_code != expected:
                    failures.append(f"{ep.method} {ep.path} as {who}: {r.status_code} {r.text}")
                    continue
                if expected >= 400:
                    err = r.json()["error"]
                    assert err["status"] == expected and err["code"] and err["message"]
                    if _state(srv) != before:
                        failures.append(f"{ep.method} {ep.path} as {who}: wrote despite refusal")
            if ep.method in ("POST", "DELETE") and ep.body is not None:
                allowed = next(iter(ep.allowed))
                hdr = headers[allowed]
                for name, kwargs, status in (
                    ("oversized", {"content": b"{" + b" " * (9 * 1024 * 1024) + b"}"}, 413),
                    ("malformed", {"content": b'{"writer": "w", "events": [{'}, 422),
                    ("wrong schema", {"json": {"unexpected": 1}}, 422),
                ):
                    before = _state(srv)
                    r = http.request(
                        ep.method,
                        ep.path,
                        headers={**hdr, "Content-Type": "application/json"},
                        **kwargs,
                    )
                    if r.status_code != status or _state(srv) != before:
                        failures.append(f"{ep.method} {ep.path} {name}: {r.status_code}")
                    else:
                        assert r.json()["error"]["status"] == status
    assert not failures, "\n".join(failures)
    # Tokens never reach the server's output.
    log = srv.log.read_text()
    for tok in (admin, reader, writer, other, rev["token"]):
        assert tok not in log


def test_bad_events_are_refused_whole(start_server: Callable[..., Server]) -> None:
    srv = start_server(extra=["--no-deadman"])
    run, writer = srv.create_run(ranks=0)
    good = {"seq": 1, "kind": "monitor.step", "record": {"loss": 1.5}}
    cases: list[tuple[str, Any]] = [
        ("NaN", b'{"writer":"w","events":[{"seq":1,"kind":"k","record":{"x":NaN}}]}'),
        ("huge int", {"writer": "w", "events": [good, {**good, "seq": 2, "record": {"x": 2**60}}]}),
        ("service kind", {"writer": "w", "events": [{**good, "kind": "ledger.silence"}]}),
        ("service writer", {"writer": "trainwarden-ledger", "events": [good]}),
        ("bad kind", {"writer": "w", "events": [{**good, "kind": "a b"}]}),
        ("bad sha", {"writer": "w", "events": [{**good, "sha256": "XYZ"}]}),
        ("entry too big", {"writer": "w", "events": [{**good, "record": {"x": "a" * 70_000}}]}),
        ("too many", {"writer": "w", "events": [{**good, "seq": i} for i in range(1, 5002)]}),
        ("empty", {"writer": "w", "events": []}),
        ("seq 0", {"writer": "w", "events": [{**good, "seq": 0}]}),
        ("not object", {"writer": "w", "events": [{**good, "record": [1]}]}),
    ]
    with srv.client(writer) as c:
        for name, body in cases:
            before = _state(srv)
            if isinstance(body, bytes):
                r = c.post(
                    f"/v1/runs/{run}/events",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            else:
                r = c.post(
                    f"/v1/runs/{run}/events",
                    content=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
            assert r.status_code in (413, 422), (name, r.status_code, r.text)
            assert _state(srv) == before, name
    with httpx.Client(base_url=srv.url) as c:
        metrics = c.get("/metrics").text
    assert 'trainwarden_ledger_rejected_requests_total{reason="bad_entry"}' in metrics
    assert 'trainwarden_ledger_rejected_requests_total{reason="invalid"}' in metrics


def test_digits_a_double_is_written_as_are_taken_and_verify(
    start_server: Callable[..., Server],
) -> None:
    """A JSON writer other than Python (JavaScript's JSON.stringify, an RFC 8785 library)
    spells the double 2.6923296193817293e18 as plain digits: taken as that double, stored, and
    the log verifies; digits that are no double's spelling are refused."""
    from trainwarden.service._tools import verify_db

    srv = start_server(extra=["--no-deadman"])
    run, writer = srv.create_run(ranks=0)
    body = b'{"writer":"w","events":[{"seq":1,"kind":"monitor.step","record":{"loss":%s}}]}'
    with srv.client(writer) as c:
        headers = {"Content-Type": "application/json"}
        r = c.post(f"/v1/runs/{run}/events", content=body % b"2692329619381729300", headers=headers)
        assert r.status_code == 200, r.text
        r = c.post(f"/v1/runs/{run}/events", content=body % b"2692329619381729301", headers=headers)
        assert r.status_code == 422, r.text
    report = verify_db(srv.db_url, key=None, state_dir=srv.state, saved=[])
    assert report.ok, report.problems


def test_non_loopback_bind_needs_tls_or_insecure(
    run_cli: Callable[..., Any], tmp_path: Any
) -> None:
    r = run_cli(["serve", "--host", "0.0.0.0", "--state-dir", str(tmp_path)])  # noqa: S104
    assert r.returncode == 2
    assert "without TLS" in r.stderr and "Traceback" not in r.stderr


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "writer": st.one_of(st.text(max_size=5), st.integers(), st.just("w-1")),
            "events": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "seq": st.one_of(st.integers(-2, 3), st.just("1"), st.booleans()),
                        "kind": st.one_of(st.just("k"), st.just(""), st.integers()),
                        "record": st.one_of(st.just({}), st.just([]), st.none()),
                        "ts": st.one_of(
                            st.none(), st.floats(allow_nan=False), st.integers(0, 5), st.just("x")
                        ),
                        "rank": st.one_of(st.none(), st.integers(-1, 2), st.just(True)),
                        "host": st.one_of(st.none(), st.just("h"), st.integers()),
                        "sha256": st.one_of(st.none(), st.just("ab"), st.integers()),
                        "extra": st.just(1),
                    },
                ),
                max_size=3,
            ),
            "other": st.just(1),
        },
    )
)
def test_hand_parser_accepts_exactly_what_the_published_schema_accepts(
    body: dict[str, Any],
) -> None:
    import pydantic

    from trainwarden.service._app import AppendIn
    from trainwarden.service._core import ServiceError
    from trainwarden.service._parse import parse_events

    raw = json.dumps(body).encode()
    try:
        AppendIn.model_validate_json(raw)
        schema_ok = True
    except pydantic.ValidationError:
        schema_ok = False
    try:
        parse_events(raw)
        parser_ok = True
    except ServiceError:
        parser_ok = False
    assert parser_ok == schema_ok, body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/entries?after={n}",
        "/v1/checkpoints?after={n}",
        "/v1/proof/inclusion?index={n}",
        "/v1/proof/inclusion?index=0&size={n}",
        "/v1/proof/consistency?first={n}&second=1",
        "/v1/proof/consistency?first=0&second={n}",
    ],
)
def test_integers_beyond_64_bits_are_refused_as_json_not_a_server_error(
    start_server: Callable[..., Server], path: str
) -> None:
    # The databases hold 64-bit signed integers; a larger number must not reach the driver.
    srv = start_server(extra=["--no-deadman"])
    with srv.client(srv.admin_token) as c:
        for n in (2**63, 10**30):
            r = c.get(path.format(n=n))
            assert r.status_code == 422, (path, n, r.status_code, r.text)
            assert r.json()["error"]["code"] == "invalid"
        # The largest 64-bit value is a well-formed request: a 4xx answer, in JSON, not a crash.
        r = c.get(path.format(n=2**63 - 1))
        assert r.status_code < 500, (path, r.status_code, r.text)
        assert isinstance(r.json(), dict)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_nul_in_any_text_the_service_stores_or_looks_up_is_a_422_on_both_databases(
    start_server: Callable[..., Server], request: pytest.FixtureRequest, backend: str
) -> None:
    # PostgreSQL's text cannot hold NUL: such a request was a 500 there (and fine on SQLite).
    db_url = pg_schema_url(request.getfixturevalue("pg_dsn")) if backend == "postgresql" else None
    srv = start_server(db_url=db_url, extra=["--no-deadman"])
    run, writer = srv.create_run(ranks=0)
    event = {"seq": 1, "kind": "k", "record": {}}
    calls: list[tuple[str, str, str, Any]] = [
        ("admin", "POST", "/v1/runs", {"name": "a\x00b", "interval_s": 5, "ranks": 1}),
        ("admin", "POST", "/v1/tokens", {"role": "writer", "run_id": "run_\x00"}),
        ("admin", "GET", "/v1/runs/run_%00", None),
        ("admin", "GET", "/v1/entries?run=a%00b", None),
        ("admin", "GET", "/v1/entries?kind=a%00b", None),
        ("admin", "GET", "/v1/entries?writer=a%00b", None),
        ("admin", "DELETE", "/v1/tokens/tok_%00", None),
        (
            "writer",
            "POST",
            f"/v1/runs/{run}/events",
            {"writer": "w", "events": [{**event, "host": "h\x00"}]},
        ),
        ("writer", "POST", "/v1/runs/run_%00/events", {"writer": "w", "events": [event]}),
    ]
    before = _state(srv)
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for who, method, path, body in calls:
            token = srv.admin_token if who == "admin" else writer
            r = http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 422, (path, r.status_code, r.text)
            err = r.json()["error"]
            assert err["status"] == 422 and "NUL" in err["message"], (path, err)
    assert _state(srv) == before
    # The service still works: the same event without the NUL is stored.
    with srv.client(writer) as w:
        assert w.post(f"/v1/runs/{run}/events", json={"writer": "w", "events": [event]}).is_success


def test_no_such_route_or_method_is_the_same_json_error(
    start_server: Callable[..., Server],
) -> None:
    srv = start_server(extra=["--no-deadman"])
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for method, path, status in (("GET", "/v1/nothing", 404), ("PUT", "/v1/runs", 405)):
            r = http.request(method, path)
            assert r.status_code == status, r.text
            assert r.json()["error"]["status"] == status
        r = http.get("/metrics")
        assert 'reason="not_found"' in r.text and 'reason="method_not_allowed"' in r.text
