"""The drill's verdict as a report: one row per technique run, the techniques not run in this
release, and a finding for each technique missed, each control that alerted and each technique
that could not run (the :class:`~trainwarden.report.Report` protocol)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwarden.findings import Finding, Severity
from trainwarden.report import exit_code_for

if TYPE_CHECKING:
    from trainwarden.drill._runner import DrillResult, Outcome

__all__ = ["DrillReport"]

#: The columns of the text table, in order (``text_lines``).
TABLE_HEADER = ("technique", "threat", "caught", "by", "rule", "steps", "seconds", "ledger")


def _row(r: DrillResult) -> dict[str, Any]:
    o = r.outcome
    return {
        "technique": r.technique.id,
        "threat": r.technique.threat,
        "description": r.technique.description,
        "control": r.technique.control,
        "caught": o.caught,
        "passed": r.passed,
        "check": o.check,
        "rule_id": o.rule_id,
        "detail": o.detail,
        "steps_to_detection": o.steps_to_detection,
        "seconds_to_detection": o.seconds_to_detection,
        "ledger_index": o.ledger_index,
        "works_unprotected": o.effective,
        "seconds": r.seconds,
        "error": r.error,
    }


def _verdict(row: dict[str, Any]) -> str:
    if row["error"]:
        return "ERROR"
    if row["control"]:
        return "clean" if row["passed"] else "ALERTED"
    return "yes" if row["passed"] else "MISSED"


@dataclass(frozen=True)
class DrillReport:
    """What ``trainwarden drill`` found: ``results`` in the order run, and ``not_run`` as
    ``(threat, why)`` pairs for threats this release does not replay (never counted as caught).
    """

    results: tuple[DrillResult, ...]
    not_run: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls, results: Iterable[DrillResult], not_run: Iterable[tuple[str, str]] = ()
    ) -> DrillReport:
        return cls(tuple(results), tuple(not_run))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One JSON-serialisable row per technique (the ``techniques`` list of ``to_dict``)."""
        return [_row(r) for r in self.results]

    @property
    def outcomes(self) -> list[Outcome]:
        return [r.outcome for r in self.results]

    @property
    def missed(self) -> list[str]:
        """Ids of every technique that did not pass: missed, control alerted, or errored."""
        return [r.technique.id for r in self.results if not r.passed]

    @property
    def errors(self) -> list[str]:
        """Ids of the techniques that could not run (the CLI exits 2 for these)."""
        return [r.technique.id for r in self.results if r.error is not None]

    @property
    def ok(self) -> bool:
        return not self.missed

    @property
    def findings(self) -> Sequence[Finding]:
        out: list[Finding] = []
        for r in self.results:
            if r.passed:
                continue
            tid = r.technique.id
            if r.error is not None:
                rule, msg = "TWE-ERROR", f"{tid} could not run: {r.error}"
            elif r.technique.control:
                rule, msg = "TWE-CONTROL-ALERTED", f"the control run alerted: {r.outcome.detail}"
            else:
                rule, msg = "TWE-MISSED", f"{tid} was not caught: {r.outcome.detail}"
            out.append(Finding(rule, Severity.HIGH, msg, location=tid, evidence=_row(r)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """What ``trainwarden drill --format json`` prints."""
        missed = self.missed
        return {
            "ok": not missed,
            "techniques": self.rows,
            "not_run": [{"threat": t, "description": d} for t, d in self.not_run],
            "missed": missed,
        }

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """``1`` when a technique was missed or the control alerted (at ``fail_on`` = HIGH)."""
        return exit_code_for(self.findings, fail_on)

    def text_lines(self) -> list[str]:
        """The text table, the reason for each technique missed, and the count passed."""
        rows = self.rows
        table: list[tuple[str, ...]] = [TABLE_HEADER]
        for r in rows:
            table.append(
                (
                    r["technique"],
                    r["threat"],
                    _verdict(r),
                    r["check"],
                    r["rule_id"],
                    "" if r["steps_to_detection"] is None else str(r["steps_to_detection"]),
                    "" if r["seconds_to_detection"] is None else f"{r['seconds_to_detection']:.2f}",
                    "" if r["ledger_index"] is None else str(r["ledger_index"]),
                )
            )
        for threat, _ in self.not_run:
            table.append((threat, threat, "not run", "", "", "", "", ""))
        widths = [max(len(line[i]) for line in table) for i in range(len(TABLE_HEADER))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in table
        ]
        lines += [f"MISSED {r['technique']}: {r['detail']}" for r in rows if not r["passed"]]
        missed = self.missed
        lines.append(
            f"{len(rows) - len(missed)}/{len(rows)} passed"
            + (f"; missed: {', '.join(missed)}" if missed else "")
        )
        return lines

    def write_html(self, path: Path) -> None:
        """Write the self-contained HTML report (table, loss and step-time plots) to ``path``."""
        from trainwarden.drill._report import write_report

        write_report(path, self.rows, self.outcomes)
