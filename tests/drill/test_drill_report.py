"""The drill's HTML report: self-contained, escaped, with plots and alert markers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from trainwarden._internal.sink import MemorySink
from trainwarden.drill import _runner as runner
from trainwarden.drill._report import render_html, write_report
from trainwarden.drill._runner import TECHNIQUES, DrillContext, Outcome, run_technique
from trainwarden.errors import TrainWardenError
from trainwarden.sink import EventSink

ROOT = Path(__file__).resolve().parents[2]
BY_ID = {t.id: t for t in TECHNIQUES}


def _row(tid: str, o: Outcome, *, control: bool = False) -> dict[str, object]:
    return {
        "technique": tid,
        "threat": "T6",
        "description": "desc <b>",
        "control": control,
        "passed": o.caught,
        "check": o.check,
        "rule_id": o.rule_id,
        "detail": o.detail,
        "steps_to_detection": o.steps_to_detection,
        "seconds_to_detection": o.seconds_to_detection,
        "ledger_index": o.ledger_index,
        "error": None,
    }


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_of_a_real_run_has_plots_and_alert_markers(tmp_path: Path) -> None:
    res = run_technique(BY_ID["T6-weight-edit"], tmp_path)
    assert res.outcome.caught and res.outcome.alert_steps
    page = render_html([_row(res.technique.id, res.outcome)], [res.outcome])
    p = _Collect()
    p.feed(page)
    tags = [t for t, _ in p.tags]
    assert tags.count("svg") == 2  # loss and step time
    assert tags.count("polyline") == 2
    markers = [a for t, a in p.tags if t == "line" and a.get("class") == "alert"]
    assert len(markers) == 2 * len(set(res.outcome.alert_steps))
    # Self-contained: nothing is fetched (no script, no link, no src, no external URL).
    assert not {"script", "link", "img", "iframe"} & set(tags)
    assert all("src" not in a and "href" not in a for _, a in p.tags)
    assert not re.search(r"https?://", page)


def test_report_escapes_everything_it_prints() -> None:
    o = Outcome(caught=False, detail="<script>alert(1)</script>", losses=(1.0, 2.0))
    page = render_html([_row("x<img src=y>", o)], [o])
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page
    assert "MISSED" in page


def test_write_report_into_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    o = Outcome(caught=True)
    with pytest.raises(TrainWardenError, match="cannot write report"):
        write_report(tmp_path / "nope" / "r.html", [_row("a", o)], [o])
    assert not (tmp_path / "nope").exists()


def test_cli_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "drill.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainwarden",
            "drill",
            "--technique",
            "T6-moment-edit",
            "--report",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = out.read_text()
    assert 'id="T6-moment-edit"' in page and "TWM-OPTSTATE-EDIT" in page
    assert [p.name for p in tmp_path.iterdir()] == ["drill.html"]  # no temporary file left


class _CaptureSinks(DrillContext):
    """The drill's own context, keeping the sinks it hands to watch() for inspection."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.captured: list[MemorySink] = []

    def sink(self, name: str) -> tuple[EventSink, Callable[[], int | None]]:
        got, first = super().sink(name)
        assert isinstance(got, MemorySink)  # no ledger: the sink is the memory one
        self.captured.append(got)
        return got, first


def test_watched_loop_reports_its_loss_to_the_monitor(tmp_path: Path) -> None:
    ctx = _CaptureSinks(tmp_path)
    o = runner._watched_run(ctx, "control")
    (sink,) = ctx.captured
    recorded = [r["loss"] for k, r in sink.events if k == "step"]
    assert len(recorded) == runner.STEPS == len(o.losses)
    assert None not in recorded
    assert recorded == pytest.approx(list(o.losses), rel=1e-6)


def _polyline_points(page: str, label: str) -> list[tuple[float, float]]:
    svg = re.search(rf'<svg [^>]*aria-label="{label}">(.*?)</svg>', page, re.S)
    assert svg is not None, f"no {label} plot"
    line = re.search(r'<polyline class="line" points="([^"]*)"', svg.group(1))
    assert line is not None, f"the {label} plot has no series"
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.group(1).split())]


def test_report_of_the_control_has_loss_and_step_time_series(tmp_path: Path) -> None:
    res = run_technique(BY_ID["control"], tmp_path)
    assert res.passed, res.outcome.detail
    page = render_html([_row(res.technique.id, res.outcome, control=True)], [res.outcome])
    loss = _polyline_points(page, "loss")
    step_time = _polyline_points(page, "step time")
    assert len(loss) == len(step_time) == runner.STEPS
    # The series are the values, not a flat placeholder: the loss moves between steps.
    assert len({y for _, y in loss}) > 1
    assert "no steps recorded" not in page
