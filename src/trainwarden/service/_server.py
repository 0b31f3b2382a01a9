"""Everything ``trainwarden serve`` needs before uvicorn starts: the state directory (signing key,
origin, admin token), the storage, the service and the refusal of unsafe binds."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from trainwarden.ledger._checkpoint import load_or_create_signer
from trainwarden.ledger._log import Ledger
from trainwarden.ledger._storage import open_storage
from trainwarden.ledger._types import LedgerError
from trainwarden.service._core import LedgerService, RunQuota

__all__ = ["ServeConfig", "build_service", "check_bind", "default_state_dir"]


def default_state_dir() -> Path:
    env = os.environ.get("TRAINWARDEN_LEDGER_HOME")
    return Path(env) if env else Path.home() / ".trainwarden" / "ledger"


@dataclass(frozen=True)
class ServeConfig:
    """``state_dir`` holds ``keys/`` (the log's Ed25519 key), ``origin`` and ``admin.token``;
    several servers sharing one PostgreSQL log must share the key and the origin."""

    db_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    state_dir: Path | None = None
    origin: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    deadman: bool = True
    quota: RunQuota = field(default_factory=RunQuota)

    @property
    def state(self) -> Path:
        return self.state_dir or default_state_dir()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def check_bind(host: str, tls: bool, insecure: bool) -> None:
    """Refuse a non-loopback bind without TLS unless ``insecure`` says so explicitly."""
    if tls or insecure:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise LedgerError(
            f"refusing to serve on {host} without TLS: tokens would cross the network in clear",
            hint="pass --tls-cert and --tls-key, bind 127.0.0.1, or --insecure if a TLS proxy"
            " terminates in front of this server",
        )


def _origin(state: Path, wanted: str | None) -> str:
    path = state / "origin"
    if path.exists():
        stored = path.read_text().strip()
        if wanted and wanted != stored:
            raise LedgerError(
                f"this log's origin is {stored!r}, not {wanted!r}",
                hint=f"the origin is fixed when the log is created ({path})",
            )
        return stored
    origin = wanted or f"{socket.getfqdn() or 'localhost'}/trainwarden-ledger"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(origin + "\n")
    return origin


def build_service(cfg: ServeConfig) -> tuple[LedgerService, Path, bool]:
    """Open storage and keys; return (service, admin token path, whether it was just created)."""
    check_bind(cfg.host, cfg.tls_cert is not None, cfg.insecure)
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise LedgerError("--tls-cert and --tls-key go together")
    state = cfg.state
    origin = _origin(state, cfg.origin)
    signer = load_or_create_signer(state / "keys", origin)
    url = cfg.db_url or f"sqlite:///{state / 'ledger.db'}"
    storage = open_storage(url)
    service = LedgerService(Ledger(storage, signer), deadman=cfg.deadman, quota=cfg.quota)
    token_path = state / "admin.token"
    created = service.ensure_admin_token(token_path)
    return service, token_path, created
