"""The report in a real browser: Debian's Chromium, headless, driven by Playwright.

The page is made by the command (`python -m reporting`) from rows in a real PostgreSQL and
run summaries, opened from a file:// URL, and checked as a reader would see it: every chart
drawn with its data, no script error, no request leaving the file. ``UPDATE_SCREENSHOT=1``
also copies the screenshot to docs/report.png (the README's picture).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reporting.__main__ import main
from tests.test_report import (
    load_warehouse,
    report_js,  # noqa: F401  (the fixture that installs the report's plotly.js)
    sample_kpis,
    sample_summaries,
    write_summaries,
)

pytestmark = pytest.mark.usefixtures("report_js")

ROOT = Path(__file__).resolve().parent.parent
# This machine's network is closed: without these, Chromium floods refused connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAYS = ("2024-06-25", "2024-06-26", "2024-06-27")
# a bar chart per day, the hourly curve, quarantined rows, quarantined/unreadable files
EXPECTED_CHARTS = len(DAYS) + 3


def chromium() -> str | None:
    """Debian's Chromium (never a browser Playwright would download)."""
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def report(new_database: Any, tmp_path: Path) -> Path:
    dsn = new_database("report")
    load_warehouse(dsn, sample_kpis(DAYS))
    summaries = write_summaries(tmp_path / "bucket", sample_summaries())
    out = tmp_path / "out"
    args = ["--out", str(out), "--dsn", dsn, "--summaries", str(summaries)]
    assert main([*args, "--state", str(tmp_path / "no-state")]) == 0
    return out / "kpi_report.html"


@dataclass
class Browsed:
    """The report open in a tab, and what the tab logged and requested so far."""

    tab: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def only_the_file(self, route: Any) -> None:
        """Every request passes here: the file itself goes on, anything else is refused."""
        url = route.request.url
        self.requests.append(url)
        if url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            route.abort()


@pytest.fixture
def browsed(report: Path) -> Iterator[Browsed]:
    """The report loaded in headless Chromium, all its charts drawn."""
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium: install Debian's chromium (make browser) to run this test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            seen = Browsed(browser.new_page(viewport={"width": 1280, "height": 900}))
            seen.tab.on(
                "console",
                lambda m: m.type == "error" and seen.errors.append(f"console: {m.text}"),
            )
            seen.tab.on("pageerror", lambda e: seen.errors.append(f"page: {e}"))
            seen.tab.route("**/*", seen.only_the_file)
            seen.tab.goto(report.as_uri(), wait_until="load")
            seen.tab.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length"
                f" >= {EXPECTED_CHARTS}"
            )
            yield seen
        finally:
            browser.close()


# What each chart drew: its traces, bars and line paths with a real path.
CHART_MARKS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => ({
  id: p.id,
  width: p.getBoundingClientRect().width,
  bars: p.querySelectorAll('.barlayer .point path').length,
  lines: Array.from(p.querySelectorAll('.scatterlayer .trace path.js-line'))
    .filter(l => (l.getAttribute('d') || '').length > 20).length,
  traces: p.data.length,
  types: p.data.map(t => t.type || 'scatter'),
}))"""


def test_every_chart_is_drawn_with_its_data(browsed: Browsed) -> None:
    charts = {c["id"]: c for c in browsed.tab.evaluate(CHART_MARKS)}

    assert len(charts) == EXPECTED_CHARTS, sorted(charts)
    for day in DAYS:
        genres = charts[f"chart-genres-{day}"]
        assert genres["bars"] == 10 and genres["traces"] == 1  # the top ten of 13 genres
    hourly = charts["chart-hourly"]
    assert hourly["traces"] == 3 and hourly["lines"] == 3  # listens, listeners, diversity
    rows = charts["chart-rows-quarantined"]
    assert rows["traces"] == 3 and rows["bars"] > 0  # 3 reasons, stacked per run
    files = charts["chart-files-quarantined"]
    assert files["traces"] == 2 and files["bars"] > 0
    assert all(c["width"] > 300 for c in charts.values()), charts
    # the partial bundle (no map, 3D or WebGL trace) draws every trace type the page uses
    bundled = set(browsed.tab.evaluate("Object.keys(Plotly.PlotSchema.get().traces)"))
    assert {kind for c in charts.values() for kind in c["types"]} <= bundled
    assert not bundled & {"choropleth", "scatter3d", "scattergl"}, bundled


def test_page_logs_no_error_and_requests_nothing_but_its_file(
    browsed: Browsed, report: Path
) -> None:
    browsed.tab.wait_for_timeout(500)  # late errors (resize, fonts) have time to show
    assert browsed.errors == []
    assert browsed.requests == [report.as_uri()]
    assert browsed.tab.title().startswith("Music KPI report")


def test_tables_read_as_expected_and_closed_days_open_with_their_chart(browsed: Browsed) -> None:
    page = browsed.tab
    latest, *older = page.query_selector_all("details.day")
    assert latest.get_attribute("data-date") == "2024-06-27" and latest.get_attribute("open") == ""
    assert all(d.get_attribute("open") is None for d in older)
    first_row = page.inner_text("details.day[open] tbody tr").split("\t")
    assert first_row[:2] == ["pop", "4,074"]
    runs = page.inner_text("#runs tbody").splitlines()
    assert runs[0].startswith("local-20240627T010000-bbbb")  # newest first
    assert "52,001" in page.inner_text("#runs")

    older[-1].query_selector("summary").click()
    page.wait_for_timeout(300)
    chart = older[-1].query_selector(".js-plotly-plot")
    assert chart.bounding_box()["width"] > 300  # resized to its place once opened
    assert len(chart.query_selector_all(".barlayer .point path")) == 10


def test_screenshot(browsed: Browsed, tmp_path: Path) -> None:
    """A full-page screenshot; the README's copy only on request."""
    page = browsed.tab
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000  # charts and tables, not a blank page
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        target = ROOT / "docs" / "report.png"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, target)
