"""`ledger verify --url` and the other clients of the service treat the server as hostile: the
server being checked is the party that may have rewritten the log. An answer that is not what
the API documents, pages that never end, an endless or trickled answer: each stops with a
one-line error naming the endpoint, in bounded memory and time. A malformed proof is a problem
with that proof (exit 1), not a crash. Each server here is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trainwarden.audit import AuditError
from trainwarden.audit._replay import ledger_events
from trainwarden.ledger import LedgerError, LedgerSink
from trainwarden.ledger._canonical import canonical_bytes
from trainwarden.ledger._checkpoint import Signer, load_or_create_signer
from trainwarden.ledger._client import MAX_RESPONSE_BYTES, LedgerClient
from trainwarden.ledger._merkle import MerkleTree, leaf_hash
from trainwarden.service._tools import verify_url

RunCli = Callable[..., subprocess.CompletedProcess[str]]
# (status, headers, body chunks) for a path and its query.
Handler = Callable[[str, dict[str, str]], tuple[int, dict[str, str], Iterator[bytes]]]


class FakeServer:
    """A real HTTP server on 127.0.0.1 answering every GET with ``handler``; counts the bytes it
    managed to send."""

    def __init__(self, handler: Handler) -> None:
        self.sent = 0
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                status, headers, chunks = handler(url.path, query)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        owner.sent += len(chunk)
                except OSError:
                    return

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], FakeServer]]:
    servers: list[FakeServer] = []

    def start(handler: Handler) -> FakeServer:
        servers.append(FakeServer(handler))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _json(obj: Any, status: int = 200) -> tuple[int, dict[str, str], Iterator[bytes]]:
    body = json.dumps(obj).encode()
    return (
        status,
        {"Content-Type": "application/json", "Content-Length": str(len(body))},
        iter([body]),
    )


def _raw(body: bytes, **headers: str) -> tuple[int, dict[str, str], Iterator[bytes]]:
    return 200, {"Content-Length": str(len(body)), **headers}, iter([body])


class Log:
    """A small valid log (entries, one signed checkpoint) served the way the service serves it;
    ``proofs`` replaces the server's proof answers."""

    def __init__(self, signer: Signer, n: int = 3) -> None:
        self.tree = MerkleTree()
        self.entries = [_good_entry(i, {"i": i}) for i in range(n)]
        for e in self.entries:
            self.tree.append(leaf_hash(e["entry"].encode()))
        self.note = signer.sign(n, self.tree.root(n)).note
        self.proofs: Callable[[str, dict[str, str]], Any] | None = None

    def __call__(self, path: str, q: dict[str, str]) -> tuple[int, dict[str, str], Iterator[bytes]]:
        if path == "/v1/entries":
            return _json({"entries": self.entries, "next_after": None})
        if path == "/v1/checkpoints":
            n = self.tree.size
            return _json(
                {"checkpoints": [{"seq": 1, "size": n, "note": self.note}], "next_after": None}
            )
        if path == "/v1/checkpoint":
            return _json({"note": self.note, "size": self.tree.size})
        if self.proofs is not None:
            return _json(self.proofs(path, q))
        if path == "/v1/proof/inclusion":
            proof = self.tree.inclusion_proof(int(q["index"]), int(q["size"]))
        else:
            proof = self.tree.consistency_proof(int(q["first"]), int(q["second"]))
        return _json({"proof": [base64.b64encode(h).decode() for h in proof]})


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return load_or_create_signer(tmp_path / "keys", "example.org/log")


def _vkey(tmp_path: Path) -> str:
    return str(tmp_path / "keys" / "ledger.vkey")


def _entries_page(entries: list[Any], next_after: Any) -> Any:
    return {"entries": entries, "next_after": next_after}


def _good_entry(i: int, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Entry ``i`` as the service serves it: the canonical entry and its row's columns."""
    obj = {"index": i, "kind": "k", "record": record or {}, "run": "r", "seq": i + 1}
    entry = canonical_bytes({**obj, "writer": "w"})
    return {
        "index": i,
        "run": "r",
        "writer": "w",
        "seq": i + 1,
        "kind": "k",
        "entry": entry.decode(),
        "leaf_hash": base64.b64encode(leaf_hash(entry)).decode(),
    }


def test_the_fake_log_verifies_with_honest_proofs(
    serve: Callable[[Handler], FakeServer], signer: Signer, tmp_path: Path
) -> None:
    # The server the tests below corrupt is a faithful one when left alone.
    log = Log(signer)
    srv = serve(log)
    report = verify_url(srv.url, "tw_x", key=_vkey(tmp_path), saved=[])
    assert report.ok, [str(p) for p in report.problems]
    assert report.size == 3 and report.inclusion_proofs == 3


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (_raw(b"<html>no</html>"), "is not JSON"),
        (_raw(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
        (_raw(b"[1, 2]"), "is not an object"),
        (_json({"entries": {"0": 1}, "next_after": None}), "no list 'entries'"),
        (_json(_entries_page([{**_good_entry(0), "entry": 5}], None)), "no str 'entry'"),
        (_json(_entries_page([{**_good_entry(0), "index": True}], None)), "no int 'index'"),
        (_json(_entries_page([{**_good_entry(0), "leaf_hash": "AAAA"}], None)), "not 32 bytes"),
        (_json(_entries_page([{**_good_entry(0), "leaf_hash": "%%"}], None)), "not 32 bytes"),
        (_json(_entries_page([_good_entry(0)], "1")), "pages do not advance"),
        (_json(_entries_page([_good_entry(0)], -1)), "pages do not advance"),
        (_json(_entries_page([], 5)), "pages do not advance"),
        (_raw(gzip.compress(b'{"entries": []}'), **{"Content-Encoding": "gzip"}), "gzip-encoded"),
        (_raw(b"x", **{"Content-Length": str(MAX_RESPONSE_BYTES + 1)}), "is over"),
    ],
)
def test_an_answer_that_is_not_the_api_stops_verification_naming_the_endpoint(
    serve: Callable[[Handler], FakeServer],
    signer: Signer,
    tmp_path: Path,
    answer: tuple[int, dict[str, str], Iterator[bytes]],
    says: str,
) -> None:
    status, headers, body = answer
    chunks = list(body)
    srv = serve(lambda path, q: (status, headers, iter(chunks)))
    with pytest.raises(LedgerError, match=says) as e:
        verify_url(srv.url, "tw_x", key=_vkey(tmp_path), saved=[])
    assert f"{srv.url}/v1/entries" in str(e.value)
    assert "\n" not in str(e.value)


def test_an_endless_answer_is_cut_at_the_size_limit(
    serve: Callable[[Handler], FakeServer], signer: Signer, tmp_path: Path
) -> None:
    def endless(path: str, q: dict[str, str]) -> tuple[int, dict[str, str], Iterator[bytes]]:
        def body() -> Iterator[bytes]:
            yield b'{"entries": ["'
            while True:
                yield b"a" * (1 << 20)

        # No Content-Length: the answer ends when the connection does (never).
        return 200, {"Connection": "close"}, body()

    srv = serve(endless)
    with pytest.raises(LedgerError, match=f"over {MAX_RESPONSE_BYTES} bytes"):
        verify_url(srv.url, "tw_x", key=_vkey(tmp_path), saved=[])
    # The client stopped reading at the limit (what the sockets buffer is all that is extra).
    time.sleep(0.2)
    assert srv.sent < MAX_RESPONSE_BYTES + (32 << 20)


def test_a_server_that_answers_a_byte_at_a_time_is_abandoned_at_the_deadline(
    serve: Callable[[Handler], FakeServer],
) -> None:
    stop = threading.Event()

    def trickle(path: str, q: dict[str, str]) -> tuple[int, dict[str, str], Iterator[bytes]]:
        def body() -> Iterator[bytes]:
            while not stop.wait(0.2):
                yield b" "

        # Each byte comes well within the read timeout; the whole answer never does.
        return 200, {"Content-Length": "100000"}, body()

    srv = serve(trickle)
    client = LedgerClient(srv.url, "tw_x", timeout=1.0)
    try:
        with pytest.raises(LedgerError, match="did not answer within 1 s"):
            client.get("/v1/entries")
    finally:
        stop.set()
        client.close()


def _endless_log(delay: float = 0.0) -> Handler:
    def handler(path: str, q: dict[str, str]) -> tuple[int, dict[str, str], Iterator[bytes]]:
        time.sleep(delay)
        after = int(q.get("after", "-1"))
        page = [_good_entry(i) for i in range(after + 1, after + 101)]
        return _json(_entries_page(page, after + 100))

    return handler


def test_an_endless_log_stops_at_the_byte_budget(
    serve: Callable[[Handler], FakeServer], signer: Signer, tmp_path: Path
) -> None:
    srv = serve(_endless_log())
    with pytest.raises(LedgerError, match="sent more than 200000 bytes"):
        verify_url(srv.url, "tw_x", key=_vkey(tmp_path), saved=[], max_bytes=200_000)


def test_an_endless_slow_log_stops_at_the_time_budget(
    serve: Callable[[Handler], FakeServer], signer: Signer, tmp_path: Path
) -> None:
    srv = serve(_endless_log(delay=0.1))
    with pytest.raises(LedgerError, match="took longer than 1 s"):
        verify_url(srv.url, "tw_x", key=_vkey(tmp_path), saved=[], max_seconds=1)


@pytest.mark.parametrize(
    ("proof", "says"),
    [
        ({"proof": "AAAA"}, "no list of at most 64 hashes"),
        ({"proof": [base64.b64encode(b"\0" * 32).decode()] * 65}, "no list of at most 64"),
        ({"proof": [5]}, "not 32 bytes"),
        ({"proof": ["AAAA"]}, "not 32 bytes"),
        ({}, "no list"),
        ({"proof": [base64.b64encode(b"\0" * 32).decode()]}, "inclusion proof"),
    ],
)
def test_a_malformed_proof_is_a_problem_with_that_proof(
    serve: Callable[[Handler], FakeServer],
    signer: Signer,
    tmp_path: Path,
    proof: Any,
    says: str,
) -> None:
    log = Log(signer)
    log.proofs = lambda path, q: proof
    srv = serve(log)
    report = verify_url(srv.url, "tw_x", key=_vkey(tmp_path), saved=[])
    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert all("inclusion proof" in m for m in messages), messages
    assert any(says in m for m in messages), messages
    assert report.inclusion_proofs == 0


def test_cli_verify_against_a_hostile_server_is_one_line_and_exit_2(
    run_cli: RunCli, serve: Callable[[Handler], FakeServer], signer: Signer, tmp_path: Path
) -> None:
    srv = serve(lambda path, q: _json(_entries_page([], 7)))
    r = run_cli(["ledger", "verify", "--url", srv.url, "--token", "tw_x", "--key", _vkey(tmp_path)])
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert r.stderr.count("\n") == 1 and "pages do not advance" in r.stderr


def test_cli_checkpoint_saves_only_a_signed_note(
    run_cli: RunCli, serve: Callable[[Handler], FakeServer], signer: Signer, tmp_path: Path
) -> None:
    bad = serve(lambda path, q: _json({"note": {"not": "a note"}}))
    out = tmp_path / "saved.note"
    r = run_cli(["ledger", "checkpoint", "--url", bad.url, "--token", "tw_x", "-o", str(out)])
    assert r.returncode == 2 and "holds no signed note" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    log = Log(signer)
    good = serve(log)
    r = run_cli(["ledger", "checkpoint", "--url", good.url, "--token", "tw_x", "-o", str(out)])
    assert r.returncode == 0, r.stderr
    assert out.read_text() == log.note


def test_the_audit_reader_of_a_ledger_stops_on_pages_that_do_not_advance(
    serve: Callable[[Handler], FakeServer],
) -> None:
    page = _entries_page([{"entry": '{"kind":"audit.step"}'}], -1)
    srv = serve(lambda path, q: _json(page))
    with pytest.raises(AuditError, match="pages do not advance"):
        ledger_events(srv.url, "tw_x", "r")
    srv = serve(lambda path, q: _json(_entries_page([{"entry": "[1]"}], None)))
    with pytest.raises(AuditError, match="not a JSON object"):
        ledger_events(srv.url, "tw_x", "r")


def test_the_sink_reads_no_more_of_an_endless_answer_than_the_limit(
    serve: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    def handler(path: str, q: dict[str, str]) -> tuple[int, dict[str, str], Iterator[bytes]]:
        if path == "/v1/whoami":
            return _json({"run_id": "r"})

        def body() -> Iterator[bytes]:
            while True:
                yield b" " * (1 << 20)

        return 200, {"Connection": "close"}, body()

    srv = serve(handler)
    sink = LedgerSink(srv.url, "tw_x", writer="w", spool_dir=tmp_path / "spool")
    try:
        sink.emit("k", {"i": 1})
        assert not sink.flush(timeout=5)
        assert "is over" in (sink.last_error or ""), sink.last_error
        assert sink.pending == 1  # nothing acknowledged: it stays in the spool
    finally:
        sink.close(timeout=0.1)
