"""The report in a real browser: Debian's Chromium, headless, driven by Playwright.

The page is made by the command (`python -m reporting`) from rows in a real PostgreSQL and
run summaries, opened from a file:// URL, and checked as a reader would see it: every chart
drawn with its data, no script error, no request leaving the file. ``UPDATE_SCREENSHOT=1``
also copies the screenshots to docs/report.png and docs/report-phone.png (390 px wide).
"""

from __future__ import annotations

import csv
import io
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
# In sight at first: the plays per day, the latest day's genres and hours, quarantined rows
# and files per day (the other days' charts are drawn when chosen)
CHARTS_IN_SIGHT = 5
WIDE, NARROW = 1400, 390


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
            seen = Browsed(browser.new_page(viewport={"width": WIDE, "height": 900}))
            seen.tab.on(
                "console",
                lambda m: m.type == "error" and seen.errors.append(f"console: {m.text}"),
            )
            seen.tab.on("pageerror", lambda e: seen.errors.append(f"page: {e}"))
            seen.tab.route("**/*", seen.only_the_file)
            seen.tab.goto(report.as_uri(), wait_until="load")
            seen.tab.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length"
                f" >= {CHARTS_IN_SIGHT}"
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

# The rows of a table that a box would hide: inside an ancestor that clips vertically and
# is shorter than its content (a scroll box), or outside the page.
HIDDEN_ROWS = """selector => Array.from(document.querySelectorAll(selector)).filter(row => {
  if (!row.getClientRects().length) { return true; }
  for (let box = row.parentElement; box; box = box.parentElement) {
    const y = getComputedStyle(box).overflowY;
    if (y !== 'visible' && box.scrollHeight > box.clientHeight + 1) { return true; }
  }
  return false;
}).length"""


def charts(browsed: Browsed) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in browsed.tab.evaluate(CHART_MARKS)}


def shown_day(browsed: Browsed) -> str:
    days = browsed.tab.query_selector_all("article.day")
    shown = [d.get_attribute("data-date") for d in days if d.is_visible()]
    assert len(shown) == 1, shown
    return str(shown[0])


def test_every_chart_in_sight_is_drawn_with_its_data(browsed: Browsed) -> None:
    drawn = charts(browsed)

    assert sorted(drawn) == sorted(
        [
            "chart-trend",
            f"chart-genres-{DAYS[-1]}",
            f"chart-hourly-{DAYS[-1]}",
            "chart-rows-quarantined",
            "chart-files-quarantined",
        ]
    )
    assert drawn["chart-trend"]["bars"] == len(DAYS)  # plays per day
    genres = drawn[f"chart-genres-{DAYS[-1]}"]
    assert genres["bars"] == 10 and genres["traces"] == 1  # the top ten of 13 genres
    hourly = drawn[f"chart-hourly-{DAYS[-1]}"]
    assert hourly["traces"] == 3 and hourly["lines"] == 3  # plays, listeners, diversity
    rows = drawn["chart-rows-quarantined"]
    assert rows["traces"] == 4 and rows["bars"] > 0  # 3 reasons, and a replay's accepted
    files = drawn["chart-files-quarantined"]
    assert files["traces"] == 2 and files["bars"] > 0
    assert all(c["width"] > 300 for c in drawn.values()), drawn
    # the partial bundle (no map, 3D or WebGL trace) draws every trace type the page uses
    bundled = set(browsed.tab.evaluate("Object.keys(Plotly.PlotSchema.get().traces)"))
    assert {kind for c in drawn.values() for kind in c["types"]} <= bundled
    assert not bundled & {"choropleth", "scatter3d", "scattergl"}, bundled


def test_page_logs_no_error_and_requests_nothing_but_its_file(
    browsed: Browsed, report: Path
) -> None:
    browsed.tab.select_option("#day-choice", DAYS[0])  # drawing another day: no error either
    browsed.tab.wait_for_timeout(500)  # late errors (resize, fonts) have time to show
    assert browsed.errors == []
    assert browsed.requests == [report.as_uri()]
    assert browsed.tab.title().startswith("Music KPI report")


def test_the_headline_plays_are_the_hourly_rows_summed(browsed: Browsed) -> None:
    """Each play once: the hourly rows' listen_count, never the genre rows' (a play of a
    multi-genre track counts once per genre there)."""
    rows = sample_kpis(DAYS)
    plays = sum(r["listen_count"] for r in rows if r["kpi_type"] == "hourly")
    genre_listens = sum(r["listen_count"] for r in rows if r["kpi_type"] == "genre")
    assert plays != genre_listens
    cards = browsed.tab.eval_on_selector_all(
        ".card",
        "cards => cards.map(c => [c.querySelector('.label').innerText,"
        " c.querySelector('.value').innerText])",
    )
    assert [value for label, value in cards if label.lower() == "plays"] == [f"{plays:,}"]
    per_day = browsed.tab.eval_on_selector_all(
        ".tablebox.days tbody tr", "rows => rows.map(r => r.cells[1].innerText)"
    )
    assert sum(int(n.replace(",", "")) for n in per_day) == plays


def test_choosing_a_date_shows_that_day_alone_with_its_charts(browsed: Browsed) -> None:
    page = browsed.tab
    assert shown_day(browsed) == DAYS[-1]  # the most recent first
    first_row = page.inner_text("article.day:not([hidden]) .genres tbody tr").split("\t")
    assert first_row[:2] == ["pop", "4,074"]

    page.select_option("#day-choice", DAYS[0])
    page.wait_for_function(
        f"document.querySelectorAll('#day-{DAYS[0]} .js-plotly-plot .main-svg').length >= 2"
    )
    assert shown_day(browsed) == DAYS[0]
    drawn = charts(browsed)
    assert drawn[f"chart-genres-{DAYS[0]}"]["bars"] == 10
    assert drawn[f"chart-hourly-{DAYS[0]}"]["lines"] == 3
    assert drawn[f"chart-hourly-{DAYS[0]}"]["width"] > 300  # drawn in sight: its full width

    page.click(f'.tablebox.days a[data-day="{DAYS[1]}"]')  # a date of the days' table
    page.wait_for_timeout(300)
    assert shown_day(browsed) == DAYS[1] and page.input_value("#day-choice") == DAYS[1]
    runs = page.inner_text("#runs tbody").splitlines()
    assert runs[0].startswith("local-20240627T010000-bbbb")  # newest first
    assert "52,001" in page.inner_text("#runs")


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_every_genre_hour_and_top_artist_is_in_sight_at_any_width(
    browsed: Browsed, width: int
) -> None:
    page = browsed.tab
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(300)
    shown = "article.day:not([hidden])"
    assert len(page.query_selector_all(f"{shown} .genres tbody tr")) == 13
    assert page.evaluate(HIDDEN_ROWS, f"{shown} .genres tbody tr") == 0  # no scroll box
    assert page.evaluate(HIDDEN_ROWS, f"{shown} .hours tbody tr") == 0
    hours = page.inner_text(f"{shown} .hours tbody")
    assert "Amara Tanaka" in hours and "Leo Brandt" in hours  # each hour's top artist
    assert "Top artists of the day" in page.inner_text(shown)
    assert "Amara Tanaka" in page.inner_text("#top .artists")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways page


def test_a_table_downloads_as_the_csv_of_what_it_shows(browsed: Browsed) -> None:
    page = browsed.tab
    with page.expect_download() as event:
        page.click(f"#day-{DAYS[-1]} .genres a.csv")
    download = event.value
    assert download.suggested_filename == f"kpis-{DAYS[-1]}-genres.csv"
    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(), newline="")))
    shown = page.eval_on_selector_all(
        f"#day-{DAYS[-1]} .genres tbody tr", "rows => rows.map(r => r.cells[0].innerText)"
    )
    assert [row["genre"] for row in exported] == shown and len(shown) == 13
    assert exported[0]["genre listens"] == "4074"


def test_screenshot(browsed: Browsed, tmp_path: Path) -> None:
    """Full-page screenshots at both widths; on request, the README's picture: the top of
    the wide page (the headline, the days, the latest day), small enough for a README."""
    page = browsed.tab
    for width in (NARROW, WIDE):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)
        shot = tmp_path / f"report-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000  # charts and tables, not a blank page
    top = tmp_path / "report.png"
    page.screenshot(
        path=str(top), full_page=True, clip={"x": 0, "y": 0, "width": WIDE, "height": 1500}
    )
    assert 50_000 < top.stat().st_size < 300_000
    narrow = tmp_path / "report-phone.png"  # the top of the page on a phone
    page.set_viewport_size({"width": NARROW, "height": 900})
    page.wait_for_timeout(300)
    page.screenshot(
        path=str(narrow), full_page=True, clip={"x": 0, "y": 0, "width": NARROW, "height": 1800}
    )
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(top, ROOT / "docs" / "report.png")
        shutil.copyfile(narrow, ROOT / "docs" / "report-phone.png")
