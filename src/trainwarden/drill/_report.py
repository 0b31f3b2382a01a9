"""The drill's HTML report: one self-contained page (inline CSS and SVG, no script, nothing
fetched) with the result table and, per technique, the loss and step-time plots with the steps
where an alert at MEDIUM or above was raised marked."""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainwarden.errors import TrainWardenError

__all__ = ["render_html", "write_report"]

_W, _H, _PAD = 360, 120, 28

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}
.yes{color:#070}.missed{color:#b00;font-weight:bold}
section{margin:1.5em 0;border-top:1px solid #ddd;padding-top:1em}
svg{background:#fafafa;border:1px solid #ddd;margin-right:1em}
.alert{stroke:#d00;stroke-width:1.5;stroke-dasharray:4 2}
.line{fill:none;stroke:#246;stroke-width:1.5}
.axis{font-size:10px;fill:#555}
"""


def _plot(title: str, values: Sequence[float], alert_steps: Sequence[int], unit: str) -> str:
    """An inline SVG line plot of ``values`` (step 1..n) with alert steps as red dashed lines."""
    e = html.escape
    head = f'<svg width="{_W}" height="{_H}" role="img" aria-label="{e(title)}">'
    label = f'<text class="axis" x="4" y="12">{e(title)}</text>'
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f'{head}{label}<text class="axis" x="4" y="60">no steps recorded</text></svg>'
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    n = len(values)

    def x(step: float) -> float:
        return _PAD + (step - 1) * (_W - 2 * _PAD) / max(n - 1, 1)

    def y(v: float) -> float:
        return _H - _PAD + 8 - (v - lo) * (_H - 2 * _PAD) / span

    pts = " ".join(f"{x(i + 1):.1f},{y(v):.1f}" for i, v in enumerate(values) if math.isfinite(v))
    marks = "".join(
        f'<line class="alert" x1="{x(s):.1f}" x2="{x(s):.1f}" y1="16" y2="{_H - 12}">'
        f"<title>alert at step {s}</title></line>"
        for s in sorted(set(alert_steps))
        if 1 <= s <= n
    )
    axis = f'<text class="axis" x="4" y="{_H - 4}">step 1..{n}; {lo:.3g}-{hi:.3g} {e(unit)}</text>'
    return f'{head}{label}<polyline class="line" points="{pts}"/>{marks}{axis}</svg>'


def render_html(rows: Sequence[dict[str, Any]], outcomes: Sequence[Any]) -> str:
    """The report for the drill's ``rows`` (as ``trainwarden drill --format json`` prints them)
    and the matching :class:`~trainwarden.drill._runner.Outcome` objects (for the series)."""
    e = html.escape
    missed = [r["technique"] for r in rows if not r["passed"]]
    verdict = (
        "every technique caught, control clean" if not missed else "missed: " + ", ".join(missed)
    )
    head_cells = ("technique", "threat", "verdict", "by", "rule", "steps", "seconds", "ledger")
    table = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in head_cells) + "</tr>"]
    for r in rows:
        if r["error"]:
            v, cls = "ERROR", "missed"
        elif r["control"]:
            v, cls = ("clean", "yes") if r["passed"] else ("ALERTED", "missed")
        else:
            v, cls = ("caught", "yes") if r["passed"] else ("MISSED", "missed")
        cells = [
            r["technique"],
            r["threat"],
            v,
            r["check"],
            r["rule_id"],
            "" if r["steps_to_detection"] is None else str(r["steps_to_detection"]),
            "" if r["seconds_to_detection"] is None else f"{r['seconds_to_detection']:.2f}",
            "" if r["ledger_index"] is None else str(r["ledger_index"]),
        ]
        tds = "".join(
            f'<td class="{cls}">{e(c)}</td>' if i == 2 else f"<td>{e(c)}</td>"
            for i, c in enumerate(cells)
        )
        table.append(f"<tr>{tds}</tr>")
    table.append("</table>")
    sections = []
    for r, o in zip(rows, outcomes, strict=True):
        plots = ""
        if o.losses or o.step_seconds:
            plots = _plot("loss", o.losses, o.alert_steps, "") + _plot(
                "step time", o.step_seconds, o.alert_steps, "s"
            )
        else:
            plots = "<p>No training steps: this technique is judged before or after training.</p>"
        sections.append(
            f'<section id="{e(r["technique"])}"><h2>{e(r["technique"])} ({e(r["threat"])})</h2>'
            f"<p>{e(r['description'])}</p><p><b>{e(r['check'] or 'not caught')}</b> "
            f"{e(r['rule_id'])}: {e(r['detail'])}</p>{plots}</section>"
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>TrainWarden drill report</title>"
        f"<style>{_CSS}</style></head><body><h1>TrainWarden drill report</h1>"
        f"<p>{e(verdict)}. Red dashed lines mark the steps where an alert at MEDIUM or above "
        "was raised.</p>" + "".join(table) + "".join(sections) + "</body></html>\n"
    )


def write_report(path: Path, rows: Sequence[dict[str, Any]], outcomes: Sequence[Any]) -> None:
    """Write the report to ``path`` atomically (a temporary file renamed into place)."""
    text = render_html(rows, outcomes)
    folder = path.parent if str(path.parent) else Path()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".drill-report-", suffix=".html", dir=folder)
    except OSError as e:
        raise TrainWardenError(f"cannot write report {path}: {e}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a plain file's mode, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise TrainWardenError(f"cannot write report {path}: {e}") from e
