"""The ledger client: :class:`LedgerClient` for the HTTP API, and :class:`LedgerSink`, an
:class:`~trainwarden.sink.EventSink` that spools every event durably on local disk before
``emit`` returns and ships batches in a background thread, so a training step never waits on
the network and no event is lost or duplicated across crashes of either side."""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwarden.ledger._canonical import CanonicalError, canonical_bytes
from trainwarden.ledger._types import LedgerError

if TYPE_CHECKING:
    from trainwarden.sink import EventSink

__all__ = ["LedgerClient", "LedgerSink", "configured_sink", "with_ledger"]

_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
MAX_RECORD_BYTES = 60 * 1024


# The largest answer read from a server: a page of a thousand entries (each at most 64 KiB of
# canonical JSON, escaped once more inside the page) stays far below it on a real log.
MAX_RESPONSE_BYTES = 64 << 20


def read_answer(
    http: Any,
    method: str,
    path: str,
    *,
    base: str,
    timeout: float,
    max_bytes: int = MAX_RESPONSE_BYTES,
    **kw: Any,
) -> tuple[int, bytes]:
    """``(status, body)`` of one request on the httpx client ``http``, read within ``timeout``
    seconds in all and at most ``max_bytes`` long; :class:`LedgerError` naming ``base + path``
    otherwise. The request runs in a thread of its own so that a server that sends its answer
    a byte at a time (headers included) cannot hold the caller past the deadline; only plain
    (not compressed) answers are read, so the size counted is the size held."""
    where = f"{base}{path}"
    done: dict[str, Any] = {}

    def fetch() -> None:
        try:
            headers = {**kw.pop("headers", {}), "Accept-Encoding": "identity"}
            with http.stream(method, path, headers=headers, **kw) as r:
                enc = r.headers.get("content-encoding", "").strip().lower()
                if enc not in ("", "identity"):
                    raise LedgerError(f"{where}: the server's answer is {enc[:40]}-encoded")
                length = r.headers.get("content-length", "").strip()
                if length.isdigit() and int(length) > max_bytes:
                    raise LedgerError(f"{where}: the server's answer is over {max_bytes} bytes")
                body = bytearray()
                for chunk in r.iter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise LedgerError(f"{where}: the server's answer is over {max_bytes} bytes")
                    if "abandoned" in done:
                        return
                done["answer"] = (r.status_code, bytes(body))
        except BaseException as e:  # handed to the caller's thread
            done["error"] = e

    worker = threading.Thread(target=fetch, name="ledger-request", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        done["abandoned"] = True
        raise LedgerError(f"{where}: the server did not answer within {timeout:g} s")
    error = done.get("error")
    if isinstance(error, LedgerError):
        raise error
    if error is not None:
        import httpx

        if isinstance(error, httpx.HTTPError | OSError):
            raise LedgerError(f"{where}: {error}", hint="is `trainwarden serve` running?")
        raise error
    status, body = done["answer"]
    return int(status), bytes(body)


def parse_answer(body: bytes, where: str) -> Any:
    """The JSON of a server's answer; :class:`LedgerError` naming ``where`` if it is not JSON
    (or nests past what the parser can follow)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        detail = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise LedgerError(f"{where}: the server's answer is not JSON ({detail})") from None


class LedgerClient:
    """A thin synchronous client of the ledger service's HTTP API. Every answer is read within
    ``timeout`` seconds and :data:`MAX_RESPONSE_BYTES`, and must be JSON (see
    :func:`read_answer`); :attr:`received` counts the bytes read so far."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.received = 0
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        status, body = read_answer(
            self._http, method, path, base=self.url, timeout=self.timeout, **kw
        )
        self.received += len(body)
        if status >= 400:
            try:
                msg = str(json.loads(body)["error"]["message"])[:300]
            except (ValueError, KeyError, TypeError, RecursionError):
                msg = body[:200].decode("utf-8", "replace")
            raise LedgerError(f"{self.url}{path}: HTTP {status}: {msg}")
        return parse_answer(body, f"{self.url}{path}")

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def whoami(self) -> dict[str, Any]:
        result = self.get("/v1/whoami")
        if not isinstance(result, dict):
            raise LedgerError(f"{self.url}/v1/whoami: the server's answer is not an object")
        return result

    def close(self) -> None:
        self._http.close()


def _writer_default() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname() or "host")[:60] or "host"
    rank = os.environ.get("RANK", "0")
    return f"{host}-rank{rank if rank.isdigit() else 0}"


def _safe_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as canonicalisable JSON: non-JSON values become strings, oversized records a
    digest and a preview (the sink must never refuse evidence)."""
    try:
        data = json.loads(json.dumps(dict(record), default=str, allow_nan=True))
    except (TypeError, ValueError) as e:
        return {"unserialisable": repr(e)[:500]}
    try:
        raw = canonical_bytes(data)
    except CanonicalError:
        text = json.dumps(data, default=str)
        raw = text.encode()
        data = {"noncanonical": text[:2000]}
        raw = canonical_bytes(data)
    if len(raw) > MAX_RECORD_BYTES:
        return {
            "truncated": True,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw),
            "preview": raw[:2000].decode("utf-8", "replace"),
        }
    result: dict[str, Any] = data
    return result


class LedgerSink:
    """Ships events to the ledger service through a local spool.

    ``emit`` appends the event to ``spool_dir`` and fsyncs before returning; a background thread
    sends batches with retry and exponential backoff. The server deduplicates by (run, writer,
    sequence number), so a batch resent after a crash is stored once. A process restarted with
    the same spool directory resends what was not acknowledged. ``emit`` never raises and never
    waits on the network; problems are in :attr:`last_error`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        writer: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_backoff: float = 5.0,
        timeout: float = 10.0,
        fsync: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.writer = writer or _writer_default()
        if not _KIND.match(self.writer):
            raise LedgerError(f"writer name {self.writer!r} is not allowed")
        key = hashlib.sha256(f"{self.url}\n{token}".encode()).hexdigest()[:16]
        root = Path(spool_dir) if spool_dir else Path.home() / ".trainwarden" / "spool"
        self.spool_dir = root / key / self.writer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.fsync = fsync
        self.host = socket.gethostname()
        rank = os.environ.get("RANK", "")
        self.rank: int | None = int(rank) if rank.isdigit() else None
        self.last_error: str | None = None
        self.shipped = 0
        self.run_id: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self._open_spool()
        self._thread = threading.Thread(target=self._ship_loop, name="ledger-sink", daemon=True)
        self._thread.start()

    # -- the spool -------------------------------------------------------------------------

    def _open_spool(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lockfh = open(self.spool_dir / "lock", "a+")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(self._lockfh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._lockfh.close()
            raise LedgerError(
                f"{self.spool_dir}: spool is in use by another process",
                hint="give each process its own writer name",
            ) from e
        self._acked_path = self.spool_dir / "acked"
        try:
            acked = int(self._acked_path.read_text().strip() or 0)
        except (OSError, ValueError):
            acked = 0
        path = self.spool_dir / "spool.jsonl"
        data = path.read_bytes() if path.exists() else b""
        # A line without its newline was never acknowledged to the caller: drop it.
        cut = data.rfind(b"\n") + 1
        if cut != len(data):
            with open(path, "r+b") as fh:
                fh.truncate(cut)
                os.fsync(fh.fileno())
        last = acked
        for line in data[:cut].splitlines():
            try:
                seq = int(json.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            last = max(last, seq)
            if seq > acked:
                self._pending.append((seq, line))
        self._acked = acked
        self._next_seq = last + 1
        self._spool = open(path, "ab", buffering=0)  # noqa: SIM115 - held for life

    def emit(self, kind: str, record: Mapping[str, Any]) -> None:
        try:
            self._emit(kind, record)
        except Exception as e:
            self.last_error = f"spool write failed: {e}"

    def _emit(self, kind: str, record: Mapping[str, Any]) -> None:
        if not _KIND.match(kind) or kind.startswith("ledger."):
            record = {"original_kind": kind[:200], **record}
            kind = "invalid.kind"
        rec = _safe_record(record)
        ev: dict[str, Any] = {"kind": kind, "record": rec, "ts": time.time(), "host": self.host}
        # The event's rank is the process's own (RANK), which the dead-man switch and a token
        # bound to ranks go by; a record's "rank" is only taken where the process has none.
        rank = self.rank if self.rank is not None else record.get("rank")
        if isinstance(rank, int) and not isinstance(rank, bool) and 0 <= rank < 2**31:
            ev["rank"] = rank
        sha = record.get("sha256")
        if isinstance(sha, str) and _SHA.match(sha):
            ev["sha256"] = sha
        with self._lock:
            if self._spool.closed:
                self.last_error = "emit after close"
                return
            ev["seq"] = self._next_seq
            line = json.dumps(ev, separators=(",", ":")).encode() + b"\n"
            self._spool.write(line)
            if self.fsync:
                os.fsync(self._spool.fileno())
            self._next_seq += 1
            self._pending.append((ev["seq"], line.rstrip(b"\n")))
        self._wake.set()

    def _ack(self, seq: int) -> None:
        tmp = self.spool_dir / "acked.tmp"
        with open(tmp, "w") as fh:
            fh.write(str(seq))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._acked_path)
        self._acked = seq
        with self._lock:
            while self._pending and self._pending[0][0] <= seq:
                self._pending.popleft()
            if not self._pending and self._spool.tell() > 4 * 1024 * 1024:
                # Everything is acknowledged: start the spool afresh.
                self._spool.truncate(0)
                self._spool.seek(0)
                os.fsync(self._spool.fileno())

    # -- shipping --------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _ship_loop(self) -> None:
        import httpx

        client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=self.timeout,
        )
        backoff = 0.0
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and (not self.pending or time.monotonic() >= self._deadline):
                    return
                if backoff:
                    delay = backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter only
                    if stopping:
                        time.sleep(min(delay, max(0.0, self._deadline - time.monotonic())))
                    else:
                        self._stop.wait(delay)
                elif not stopping:
                    self._wake.wait(self.flush_interval)
                    self._wake.clear()
                with self._lock:
                    batch = [line for _, line in itertools.islice(self._pending, self.batch_size)]
                if not batch:
                    continue
                try:
                    self._send(client, batch)
                    backoff = 0.0
                except Exception as e:
                    self.last_error = str(e)[:500]
                    backoff = min(self.max_backoff, max(0.05, backoff * 2))
        finally:
            client.close()

    _deadline = float("inf")

    def _send(self, client: Any, batch: list[bytes]) -> None:
        # Answers are read as LedgerClient reads them: within the timeout and the size limit.
        if self.run_id is None:
            status, body = read_answer(
                client, "GET", "/v1/whoami", base=self.url, timeout=self.timeout
            )
            if status != 200:
                raise LedgerError(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
            got = parse_answer(body, f"{self.url}/v1/whoami")
            run = got.get("run_id") if isinstance(got, dict) else None
            if not run or not isinstance(run, str):
                raise LedgerError("the ledger token is not a writer token of a run")
            self.run_id = run
        events = [json.loads(b) for b in batch]
        payload = json.dumps({"writer": self.writer, "events": events}).encode()
        path = f"/v1/runs/{self.run_id}/events"
        status, body = read_answer(
            client,
            "POST",
            path,
            base=self.url,
            timeout=self.timeout,
            content=payload,
            headers={"Content-Type": "application/json"},
        )
        if status != 200:
            raise LedgerError(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
        got = parse_answer(body, f"{self.url}{path}")
        new = got.get("new", 0) if isinstance(got, dict) else 0
        self.shipped += new if isinstance(new, int) and not isinstance(new, bool) else 0
        self._ack(int(events[-1]["seq"]))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every spooled event is acknowledged; return whether that happened."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.pending:
                return True
            self._wake.set()
            time.sleep(0.02)
        return not self.pending

    def close(self, timeout: float = 10.0) -> None:
        """Try to ship what is pending for up to ``timeout`` seconds, then stop. Anything still
        unacknowledged stays in the spool and is sent by the next sink on the same spool."""
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 1)
        with self._lock:
            if not self._spool.closed:
                self._spool.close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lockfh.fileno(), fcntl.LOCK_UN)
        self._lockfh.close()


def configured_sink(
    ledger: bool | None = None, env: Mapping[str, str] | None = None
) -> LedgerSink | None:
    """The ledger sink the environment asks for: ``TRAINWARDEN_LEDGER_URL`` and
    ``TRAINWARDEN_LEDGER_TOKEN`` (``TRAINWARDEN_LEDGER_SPOOL`` optional). ``ledger=True`` (the
    CLI's ``--ledger``) makes missing settings an error; ``False`` turns the ledger off."""
    e = os.environ if env is None else env
    if ledger is False:
        return None
    if ledger is None:
        # `trainwarden --ledger ...` exports this, so child processes insist on the ledger too.
        ledger = e.get("TRAINWARDEN_LEDGER") == "1"
    url, token = e.get("TRAINWARDEN_LEDGER_URL"), e.get("TRAINWARDEN_LEDGER_TOKEN")
    if not url or not token:
        if ledger:
            raise LedgerError(
                "--ledger needs TRAINWARDEN_LEDGER_URL and TRAINWARDEN_LEDGER_TOKEN",
                hint="create a run with the ledger service and export its writer token",
            )
        return None
    spool = e.get("TRAINWARDEN_LEDGER_SPOOL") or None
    try:
        return LedgerSink(url, token, spool_dir=spool)
    except LedgerError:
        # Another process on this host and rank holds the default spool: use our own.
        return LedgerSink(url, token, spool_dir=spool, writer=f"{_writer_default()}-{os.getpid()}")


def with_ledger(sink: EventSink | None) -> EventSink | None:
    """``sink`` plus the configured ledger sink (see :func:`configured_sink`), or ``sink``
    unchanged when no ledger is configured."""
    from trainwarden.sink import TeeSink

    led = configured_sink()
    if led is None:
        return sink
    return led if sink is None else TeeSink(sink, led)


def _b64decode(s: str) -> bytes:
    return base64.b64decode(s, validate=True)
