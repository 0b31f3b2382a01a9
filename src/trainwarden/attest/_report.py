"""A node's verify result sent to the ledger service, so a fleet's attestations are kept where
no node can rewrite them.

One ledger entry per finding (kind ``attest.verify.finding``) and then one summary entry (kind
``attest.verify``) with the sha256 of the node's in-toto statement, its subjects (interpreter,
environment and code digests) and, when a signing key is given, the Ed25519 signature of that
statement (DSSE), so the statement kept elsewhere can later be shown to be the one reported.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwarden.attest import AttestationError
from trainwarden.attest._verify import VerifyReport

__all__ = ["LedgerReceipt", "report_to_ledger", "statement_payload", "verify_record"]


def _writer() -> str:
    from trainwarden.ledger._client import _writer_default

    return _writer_default()


@dataclass(frozen=True)
class LedgerReceipt:
    """What was sent: the statement digest, how many entries, and the run they went to."""

    statement_sha256: str
    entries: int
    run_id: str | None


def statement_payload(report: VerifyReport) -> bytes:
    """The bytes a DSSE signature of the snapshot covers (the statement as ``attest snapshot
    --sign`` serialises it)."""
    statement = report.snapshot.to_statement()
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def verify_record(report: VerifyReport, *, sign_key: Path | None = None) -> dict[str, Any]:
    """The summary entry: statement digest and subjects, finding counts, optional signature."""
    from trainwarden.attest._signing import sign_statement

    payload = statement_payload(report)
    statement = json.loads(payload)
    counts: dict[str, int] = {}
    for f in report.findings:
        counts[f.severity.name] = counts.get(f.severity.name, 0) + 1
    record: dict[str, Any] = {
        "host": socket.gethostname(),
        "interpreter": report.snapshot.interpreter.path,
        "statement_sha256": hashlib.sha256(payload).hexdigest(),
        "subject": statement["subject"],
        "findings": len(report.findings),
        "by_severity": counts,
        "baseline": None if report.baseline is None else report.baseline.source,
        "signature": None,
    }
    if sign_key is not None:
        envelope = sign_statement(statement, sign_key)
        # The envelope's payload must be the bytes digested above, or the digest proves nothing.
        if base64.b64decode(envelope["payload"]) != payload:
            raise AttestationError("the signed statement differs from the reported one")
        record["signature"] = {
            "payloadType": envelope["payloadType"],
            **envelope["signatures"][0],
        }
    return record


def report_to_ledger(
    report: VerifyReport,
    url: str,
    token: str,
    *,
    sign_key: Path | None = None,
    spool_dir: str | None = None,
    timeout: float = 15.0,
) -> LedgerReceipt:
    """Send ``report`` to the ledger service at ``url`` with a run's writer ``token``; returns
    once the service acknowledged every entry. Raises :class:`AttestationError` when it did not
    within ``timeout`` (the entries stay spooled and the next sink on that spool sends them)."""
    from trainwarden.ledger._client import LedgerSink
    from trainwarden.ledger._types import LedgerError

    record = verify_record(report, sign_key=sign_key)
    try:
        try:
            sink = LedgerSink(url, token, spool_dir=spool_dir)
        except LedgerError:
            # Another process of this host and rank holds the default spool: use our own.
            sink = LedgerSink(url, token, spool_dir=spool_dir, writer=f"{_writer()}-{os.getpid()}")
    except LedgerError as e:
        raise AttestationError(f"cannot report to {url}: {e}", hint=e.hint) from e
    try:
        for f in report.findings:
            sink.emit("attest.verify.finding", f.to_dict())
        sink.emit("attest.verify", record)
        if not sink.flush(timeout=timeout):
            raise AttestationError(
                f"the ledger at {url} did not acknowledge the report ({sink.last_error}); "
                f"{sink.pending} entr{'y' if sink.pending == 1 else 'ies'} stay in "
                f"{sink.spool_dir}",
                hint="check the URL and that the token is a writer token of a run",
            )
        run_id = sink.run_id
    finally:
        sink.close(timeout=1)
    return LedgerReceipt(record["statement_sha256"], len(report.findings) + 1, run_id)
