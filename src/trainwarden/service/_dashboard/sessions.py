"""Dashboard sessions: a random session id in an HttpOnly, SameSite=Strict cookie, kept only in
this server's memory with an absolute expiry and a per-session CSRF token. The token that
opened the session is re-checked (still known, still not revoked) on every request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from trainwarden.ledger._storage import Storage
from trainwarden.ledger._types import Role

__all__ = ["Session", "SessionStore"]

COOKIE = "tw_session"
LOGIN_COOKIE = "tw_login"


@dataclass(frozen=True)
class Session:
    sid_hash: bytes
    token_hash: bytes
    token_id: str
    role: Role
    csrf: str
    expires: float


class SessionStore:
    """At most ``max_sessions`` live sessions; the oldest is dropped beyond that."""

    def __init__(self, storage: Storage, ttl_s: float, max_sessions: int = 10_000) -> None:
        if ttl_s <= 0:
            raise ValueError("session lifetime must be positive")
        self.storage = storage
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._by_sid: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _h(sid: str) -> bytes:
        return hashlib.sha256(sid.encode("utf-8", "surrogateescape")).digest()

    def open(self, token_hash: bytes, token_id: str, role: Role) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        s = Session(
            sid_hash=self._h(sid),
            token_hash=token_hash,
            token_id=token_id,
            role=role,
            csrf=secrets.token_urlsafe(32),
            expires=time.time() + self.ttl_s,
        )
        with self._lock:
            if len(self._by_sid) >= self.max_sessions:
                oldest = min(self._by_sid.values(), key=lambda x: x.expires)
                del self._by_sid[oldest.sid_hash]
            self._by_sid[s.sid_hash] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        """The live session for cookie value ``sid``, or None (expired, unknown, revoked)."""
        if not sid or len(sid) > 128:
            return None
        h = self._h(sid)
        with self._lock:
            s = self._by_sid.get(h)
            if s is None:
                return None
            if time.time() >= s.expires:
                del self._by_sid[h]
                return None
        info = self.storage.find_token(s.token_hash)
        if info is None or info.revoked or not hmac.compare_digest(info.token_hash, s.token_hash):
            self.close(sid)
            return None
        return s

    def close(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._by_sid.pop(self._h(sid), None)


def csrf_ok(expected: str, got: str | None) -> bool:
    return bool(got) and hmac.compare_digest(expected.encode(), (got or "").encode())
