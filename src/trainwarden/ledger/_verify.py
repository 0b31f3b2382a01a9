"""Whole-log verification: recompute every leaf and the tree from what is stored, check every
signed checkpoint and proof, and name the first bad entry; check a saved checkpoint against
today's log (an auditor's defence against a history rebuilt from scratch)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trainwarden.ledger._canonical import CanonicalError, canonical_bytes, parse_json_strict
from trainwarden.ledger._checkpoint import Checkpoint, CheckpointError, Verifier
from trainwarden.ledger._log import row_mac
from trainwarden.ledger._merkle import (
    MerkleTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from trainwarden.ledger._storage import CheckpointRow
from trainwarden.ledger._types import StoredEntry

__all__ = ["Problem", "VerifyReport", "verify_log", "verify_saved_checkpoint"]

MAX_PROBLEMS = 50

# Optional callbacks that fetch a proof from a server, so its answers are checked too (one that
# raises ProofError: the server's answer is no proof, reported as a problem with that proof).
InclusionSource = Callable[[int, int], list[bytes]]
ConsistencySource = Callable[[int, int], list[bytes]]


@dataclass(frozen=True)
class Problem:
    """One disagreement. ``index`` is the entry it concerns (None: not one entry)."""

    index: int | None
    run: str | None
    message: str
    exact: bool = True

    def __str__(self) -> str:
        where = f"entry {self.index}" if self.index is not None else "log"
        run = f" (run {self.run})" if self.run else ""
        return f"{where}{run}: {self.message}"


@dataclass
class VerifyReport:
    """What verification found. ``ok`` only when nothing disagreed."""

    size: int = 0
    checkpoints: int = 0
    inclusion_proofs: int = 0
    consistency_proofs: int = 0
    rows_authenticated: bool = False
    latest: Checkpoint | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        """The problem with the lowest entry index, preferring problems that name one exact entry
        over those that only bound a range (or else the first problem about the log)."""
        indexed = [p for p in self.problems if p.index is not None and p.exact]
        if not indexed:
            indexed = [p for p in self.problems if p.index is not None]
        if indexed:
            return min(indexed, key=lambda p: p.index if p.index is not None else 0)
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``trainwarden ledger verify --format json``)."""
        first = self.first_bad
        return {
            "ok": self.ok,
            "size": self.size,
            "checkpoints": self.checkpoints,
            "inclusion_proofs": self.inclusion_proofs,
            "consistency_proofs": self.consistency_proofs,
            "rows_authenticated": self.rows_authenticated,
            "first_bad": None
            if first is None
            else {"index": first.index, "run": first.run, "message": first.message},
            "problems": [
                {"index": p.index, "run": p.run, "message": p.message} for p in self.problems
            ],
        }

    def add(self, index: int | None, run: str | None, message: str, *, exact: bool = True) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(index, run, message, exact))


def _check_row(row: StoredEntry, report: VerifyReport, row_key: bytes | None) -> bytes:
    """Check one row's self-consistency; return the leaf hash recomputed from its content."""
    computed = leaf_hash(row.entry)
    try:
        obj = parse_json_strict(row.entry)
        if not isinstance(obj, dict):
            raise CanonicalError("entry is not a JSON object")
        if canonical_bytes(obj) != row.entry:
            report.add(row.index, row.run, "entry is not in RFC 8785 canonical form")
        if obj.get("index") != row.index:
            report.add(
                row.index,
                row.run,
                f"entry says it is index {obj.get('index')!r} but is stored at {row.index}"
                " (rows moved, inserted or deleted)",
            )
        for name, col in (("run", row.run), ("writer", row.writer), ("kind", row.kind)):
            if obj.get(name) != col:
                report.add(row.index, row.run, f"stored {name} column differs from the entry")
        if obj.get("seq") != row.seq:
            report.add(row.index, row.run, "stored seq column differs from the entry")
    except CanonicalError as e:
        report.add(row.index, row.run, f"entry is not valid JSON: {e}")
    if row.leaf_hash != computed:
        report.add(row.index, row.run, "stored leaf hash differs from the hash of the stored entry")
    if row_key is not None and row_mac(row_key, row.index, computed) != row.mac:
        report.add(
            row.index,
            row.run,
            "row authenticator does not match: this entry's content or position was rewritten",
        )
    return computed


def verify_log(
    rows: Iterable[StoredEntry],
    head: int | None,
    checkpoints: list[CheckpointRow],
    verifier: Verifier,
    *,
    row_key: bytes | None = None,
    saved: str | None = None,
    inclusion_source: InclusionSource | None = None,
    consistency_source: ConsistencySource | None = None,
    proof_sample: int | None = None,
) -> VerifyReport:
    """Verify a whole log. ``rows`` in index order; ``head`` is the stored log size (None: it
    could not be read as one);
    ``row_key`` (the server's row key) lets every row be authenticated on its own;
    ``saved`` is a checkpoint note kept from earlier."""
    report = VerifyReport(rows_authenticated=row_key is not None)
    tree = MerkleTree()
    runs: list[str] = []
    expected = 0
    for row in rows:
        if row.problem is not None:
            report.add(None, row.run, row.problem)
            continue
        if row.index != expected:
            if row.index > expected:
                report.add(
                    expected,
                    None,
                    f"entries {expected}..{row.index - 1} are missing (rows deleted)",
                )
            else:
                report.add(row.index, row.run, "row out of order")
            # Keep building the tree from what is stored so later checks still run.
        tree.append(_check_row(row, report, row_key))
        runs.append(row.run)
        expected = row.index + 1 if row.index >= expected else expected
    report.size = tree.size
    if head is None:
        report.add(None, None, "the log head holds no entry count: the database was edited by hand")
    elif tree.size != head:
        report.add(
            min(tree.size, head),
            None,
            f"the log head says {head} entries but {tree.size} rows are stored",
        )
    _check_checkpoints(checkpoints, verifier, tree, runs, report, consistency_source)
    if report.latest is not None:
        _check_inclusion(tree, report, inclusion_source, proof_sample)
    if saved is not None:
        verify_saved_checkpoint(saved, verifier, tree, report, consistency_source)
    return report


def _check_checkpoints(
    checkpoints: list[CheckpointRow],
    verifier: Verifier,
    tree: MerkleTree,
    runs: list[str],
    report: VerifyReport,
    consistency_source: ConsistencySource | None,
) -> None:
    good: Checkpoint | None = None
    max_size = 0
    for row in checkpoints:
        report.checkpoints += 1
        try:
            cp = verifier.open(row.note)
        except CheckpointError as e:
            report.add(None, None, f"checkpoint #{row.seq}: {e}")
            continue
        if cp.size != row.size or cp.root != row.root:
            report.add(None, None, f"checkpoint #{row.seq}: stored columns differ from its note")
        if cp.size < max_size:
            report.add(
                cp.size,
                None,
                f"checkpoint #{row.seq} rolls the log back from {max_size} to {cp.size} entries",
            )
            continue
        max_size = cp.size
        if cp.size > tree.size:
            report.add(
                tree.size,
                None,
                f"checkpoint #{row.seq} signs {cp.size} entries but only {tree.size} are stored"
                " (entries deleted or the log rolled back)",
            )
            continue
        if tree.root(cp.size) != cp.root:
            lo = good.size if good is not None else 0
            run = runs[lo] if lo < len(runs) else None
            report.add(
                lo,
                run,
                f"checkpoint #{row.seq} (size {cp.size}) does not match the recomputed tree: an"
                f" entry in {lo}..{cp.size - 1} was changed, inserted or removed"
                " (the lowest such index is named when rows are authenticated)",
                exact=False,
            )
            continue
        if good is not None and good.size < cp.size:
            try:
                proof = (
                    consistency_source(good.size, cp.size)
                    if consistency_source is not None
                    else tree.consistency_proof(good.size, cp.size)
                )
                verify_consistency(good.size, cp.size, good.root, cp.root, proof)
                report.consistency_proofs += 1
            except ProofError as e:
                report.add(None, None, f"consistency {good.size}->{cp.size}: {e}")
        good = cp
    report.latest = good


def _check_inclusion(
    tree: MerkleTree,
    report: VerifyReport,
    source: InclusionSource | None,
    sample: int | None,
) -> None:
    latest = report.latest
    assert latest is not None  # noqa: S101 - caller checked
    n = latest.size
    if sample is None or sample >= n:
        indices: Iterable[int] = range(n)
    else:
        step = max(1, n // sample)
        indices = sorted({*range(0, n, step), n - 1})
    for i in indices:
        try:
            proof = source(i, n) if source is not None else tree.inclusion_proof(i, n)
            verify_inclusion(i, n, tree.leaf(i), proof, latest.root)
            report.inclusion_proofs += 1
        except ProofError as e:
            report.add(i, None, f"inclusion proof: {e}")


def verify_saved_checkpoint(
    note: str,
    verifier: Verifier,
    tree: MerkleTree,
    report: VerifyReport,
    consistency_source: ConsistencySource | None = None,
) -> None:
    """Check that today's log extends a checkpoint saved earlier."""
    try:
        saved = verifier.open(note)
    except CheckpointError as e:
        report.add(None, None, f"saved checkpoint: {e}")
        return
    if saved.size > tree.size:
        report.add(
            tree.size,
            None,
            f"the log was rolled back: the saved checkpoint has {saved.size} entries,"
            f" the log now has {tree.size}",
        )
        return
    if tree.root(saved.size) != saved.root:
        report.add(
            None,
            None,
            f"history rewritten: the first {saved.size} entries no longer hash to the saved"
            " checkpoint's root",
        )
        return
    latest = report.latest
    if latest is not None and latest.size >= saved.size:
        try:
            proof = (
                consistency_source(saved.size, latest.size)
                if consistency_source is not None
                else tree.consistency_proof(saved.size, latest.size)
            )
            verify_consistency(saved.size, latest.size, saved.root, latest.root, proof)
            report.consistency_proofs += 1
        except ProofError as e:
            report.add(None, None, f"saved checkpoint: {e}")
