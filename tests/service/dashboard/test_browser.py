"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium through Playwright):
log in with a reader token, find the sabotaged run, see its alert verified on the timeline and
marked on the plot, and check that nothing a reader's session carries can write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.service.dashboard.conftest import Site, pixel_variance, send, wait_checkpoint

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is required (.ci/apt-packages.txt)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            b.close()


def login(browser: Browser, site: Site) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site.url + "/ui/login")
    page.fill("#token", site.reader)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/ui/runs")
    return page


def open_run(page: Page, site: Site, run_id: str) -> None:
    page.goto(f"{site.url}/ui/runs/{run_id}")
    page.wait_for_selector("body[data-checked='1']", timeout=60_000)


def test_tampered_run_is_flagged_verified_and_marked(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    anon = browser.new_page()
    anon.goto(site.url + "/ui/runs")
    assert anon.url.endswith("/ui/login")
    assert "drill-" not in anon.content() and "clean-run" not in anon.content()
    anon.close()

    page = login(browser, site)
    row = page.locator(f"tr[data-run='{site.tamper_run}']")
    assert row.get_attribute("data-status") == "tampering detected"
    assert page.locator(f"tr[data-run='{site.clean_run}']").get_attribute("data-status") == "clean"
    assert "alice" in page.locator(f"tr[data-run='{site.clean_run}']").inner_text()
    page.select_option("select[name=status]", "tampering detected")
    page.click("form.filters button")
    assert page.locator(f"tr[data-run='{site.clean_run}']").count() == 0
    assert page.locator(f"tr[data-run='{site.tamper_run}']").count() == 1
    runs_png = tmp_path / "runs.png"
    page.screenshot(path=str(runs_png), full_page=True)

    page.click(f"tr[data-run='{site.tamper_run}'] a")
    page.wait_for_selector("body[data-checked='1']", timeout=60_000)
    alert = page.locator("tr.alert-row[data-rule='TWM-WEIGHT-EDIT']")
    assert alert.count() >= 1
    first = alert.first
    assert first.locator(".verify").inner_text().startswith("verified")
    assert first.get_attribute("data-step") == "3"
    assert "valid Ed25519 signature" in page.inner_text("#cp-sig")

    # The alert's marker is drawn on the plot: a red pixel where the chart says it put it.
    chart = page.locator(".chart[data-metric='grad_norm']")
    assert int(chart.get_attribute("data-markers") or 0) >= 1
    x, y = json.loads(chart.get_attribute("data-marker-px") or "[]")[0]
    rgba = page.evaluate(
        "([x, y]) => Array.from(document.querySelector(\".chart[data-metric='grad_norm'] canvas\")"
        ".getContext('2d').getImageData(x, y, 1, 1).data)",
        [x, y],
    )
    assert rgba[0] > 180 and rgba[1] < 80 and rgba[2] < 80, rgba
    assert "TWM-WEIGHT-EDIT at step 3" in chart.inner_text()

    run_png = tmp_path / "run.png"
    page.screenshot(path=str(run_png), full_page=True)
    for png in (runs_png, run_png):
        assert pixel_variance(browser, png) > 100, png
    blank = browser.new_page()
    blank.screenshot(path=str(tmp_path / "blank.png"))
    blank.close()
    assert pixel_variance(browser, tmp_path / "blank.png") < 1
    page.close()


def test_reader_session_reaches_no_write_action(browser: Browser, site: Site) -> None:
    page = login(browser, site)
    cookies = {c["name"] for c in page.context.cookies()}
    assert "tw_session" in cookies
    writes = [
        ("POST", "/v1/runs", {"name": "x"}),
        ("POST", "/v1/checkpoint", None),
        ("POST", "/v1/tokens", {"role": "admin"}),
        ("GET", "/v1/tokens", None),
        ("DELETE", "/v1/tokens/tok_0000000000000000", None),
        ("POST", f"/v1/runs/{site.tamper_run}/events", {"writer": "w", "events": []}),
    ]
    for method, path, body in writes:
        r = page.request.fetch(site.url + path, method=method, data=body)
        assert r.status == 401, (method, path, r.status)
        # The reader's own token, sent as a bearer token, is refused too.
        r = page.request.fetch(
            site.url + path,
            method=method,
            data=body,
            headers={"Authorization": f"Bearer {site.reader}"},
        )
        assert r.status in (401, 403), (method, path, r.status)
    # A logout without the session's CSRF token is refused and the session survives.
    r = page.request.post(site.url + "/ui/logout", form={"csrf": "forged"})
    assert r.status == 403
    page.goto(site.url + "/ui/runs")
    assert page.url.endswith("/ui/runs")
    page.click("#logout")
    page.wait_for_url("**/ui/login")
    page.goto(site.url + "/ui/runs")
    assert page.url.endswith("/ui/login")
    page.close()


def test_rewritten_row_and_forked_log_are_not_verified(browser: Browser, site: Site) -> None:
    alert = {
        "rule_id": "TWM-GRAD-SIGN",
        "severity": "HIGH",
        "step": 5,
        "rank": 1,
        "message": "gradient sign flipped",
        "evidence": {},
    }
    run_id = send(site.server, "rewritten", [("alert", alert)])
    wait_checkpoint(site.server)
    db = site.server.db_url[len("sqlite:///") :]
    with sqlite3.connect(db) as conn:
        (idx, body) = conn.execute(
            "SELECT idx, entry FROM tw_entries WHERE run_id = ? AND kind = 'alert'", (run_id,)
        ).fetchone()
        conn.execute(
            "UPDATE tw_entries SET entry = ? WHERE idx = ?",
            (bytes(body).replace(b"TWM-GRAD-SIGN", b"TWM-GRAD-OKAY"), idx),
        )
    conn.close()
    page = login(browser, site)
    open_run(page, site, run_id)
    mark = page.locator(f"tr.alert-row[data-index='{idx}'] .verify")
    assert mark.inner_text().startswith("NOT VERIFIED")
    assert "consistent" in page.inner_text("#cp-consistency") or "first" in page.inner_text(
        "#cp-consistency"
    )
    # This browser saw a checkpoint whose root the current log does not extend: a fork.
    origin = json.loads(page.evaluate("() => JSON.stringify(Object.keys(localStorage))"))
    seen = next(k for k in origin if k.startswith("tw.cp."))
    page.evaluate(
        "(k) => localStorage.setItem(k, JSON.stringify({size: 3, root: btoa('x'.repeat(32))}))",
        seen,
    )
    open_run(page, site, run_id)
    assert page.inner_text("#cp-consistency").startswith("INCONSISTENT")
    # A log that shrank since the browser last saw it is refused the same way.
    page.evaluate(
        "(k) => localStorage.setItem(k, JSON.stringify({size: 10**9, root: btoa('x'.repeat(32))}))",
        seen,
    )
    open_run(page, site, run_id)
    assert "shrank" in page.inner_text("#cp-consistency")
    page.close()
