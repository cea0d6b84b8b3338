"""`make report`: the page from known data, the three warehouse readers, the summaries'
sources, the command line. The page in a real browser: tests/test_report_browser.py."""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import html
import io
import json
import math
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
import psycopg2
import pytest
from botocore.stub import Stubber
from plotly.offline import get_plotlyjs

from kpi_pipeline.warehouse.schema import create_table_sql
from local_runner.state import StateFolder
from reporting import page
from reporting.__main__ import main
from reporting.page import Meta, by_day, duration, ordered_runs, render
from reporting.sources import (
    COLUMNS,
    PostgresReader,
    RedshiftReader,
    RedshiftTarget,
    ReportError,
    UsageError,
    field_value,
    folder_summaries,
    mask_dsn,
    parse_redshift_dsn,
    redact,
    s3_summaries,
    select_sql,
)

ROOT = Path(__file__).resolve().parent.parent
META = Meta(dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC), "postgresql://u:***@h/db", "runs/")


@pytest.fixture(scope="session", autouse=True)
def report_js() -> None:
    """The report's plotly.js, installed as `make report` installs it (npm, once: a lock
    keeps parallel test processes from installing it together)."""
    lock = ROOT / ".cache" / "report-js.lock"
    lock.parent.mkdir(exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "report-js"], cwd=ROOT, check=True, timeout=600)


# --- data the tests share (the browser test too) -------------------------------------------


def genre_row(day: str, genre: str, listens: int, **extra: Any) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update(
        kpi_type="genre",
        kpi_date=day,
        track_genre=genre,
        listen_count=listens,
        avg_track_duration_sec=180.0 + listens % 60,
        popularity_index=40.0 + listens % 50 / 2,
        most_popular_track=f"{genre.title()} Anthem",
        most_popular_track_id=f"id-{genre}",
        run_id="local-20240627T010000-aaaa",
        loaded_at="2024-06-27 01:00:30",
    )
    row.update(extra)
    return row


def hourly_row(
    day: str,
    hour: int,
    listens: int,
    listeners: int,
    diversity: float,
    artist: str = "Amara Tanaka",
) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(
        kpi_type="hourly",
        kpi_date=day,
        listen_count=listens,
        stream_hour=hour,
        unique_listeners=listeners,
        top_artists=artist,
        track_diversity_index=diversity,
        run_id="local-20240627T010000-aaaa",
        loaded_at="2024-06-27 01:00:30",
    )
    return row


GENRES = ["pop", "hip-hop", "rock", "edm", "jazz", "latin", "country", "indie", "folk"]
GENRES += ["metal", "blues", "classical", "ambient"]


ARTISTS = ["Amara Tanaka", "Leo Brandt", "Nia Okafor"]


def sample_kpis(days: tuple[str, ...] = ("2024-06-25", "2024-06-26", "2024-06-27")) -> list:
    """Realistic rows: 13 genres a day, 24 hours a day with an evening peak (the evening's
    top artist differs from the rest of the day's)."""
    rows = []
    for d, day in enumerate(days):
        for g, genre in enumerate(GENRES):
            rows.append(genre_row(day, genre, 4000 // (g + 1) + 37 * d))
        for hour in range(24):
            listens = int(460 + 380 * math.sin((hour - 9) / 24 * 2 * math.pi)) + 20 * d
            artist = ARTISTS[1 + d % 2] if 18 <= hour <= 21 else ARTISTS[0]
            rows.append(hourly_row(day, hour, listens, listens // 4, 0.35 + hour / 100, artist))
    return rows


def sample_summaries() -> list[dict[str, Any]]:
    """Four runs: an older summary (no kind, no times), a daily run, a replay that accepted
    8 of its unknown_track_id rows, and a failed recompute."""
    return [
        {
            "status": "loaded",
            "run_id": "local-20240625T010000-aaaa",
            "files_processed": 3,
            "plays_valid": 41230,
            "rows_quarantined": {"invalid_user_id": 7, "malformed_row": 5},
            "files_quarantined_by_reason": {"missing_columns": 1},
            "kpi_dates": ["2024-06-24", "2024-06-25"],
            "kpi_rows_loaded": 88,
        },
        {
            "status": "loaded",
            "run_id": "scheduled-0f3c",
            "kind": "daily",
            "started_at": "2024-06-26T01:00:00+00:00",
            "finished_at": "2024-06-26T01:02:05+00:00",
            "files_processed": 4,
            "plays_valid": 52001,
            "rows_quarantined": {"invalid_user_id": 3, "unknown_track_id": 11},
            "files_unreadable_by_reason": {"GLACIER": 2},
            "kpi_dates": ["2024-06-26"],
            "kpi_rows_loaded": 44,
        },
        {
            "status": "replayed",
            "run_id": "local-20240626T120000-cccc",
            "kind": "replay_quarantine",
            "started_at": "2024-06-26T12:00:00+00:00",
            "finished_at": "2024-06-26T12:00:40+00:00",
            "plays_valid": 0,
            "rows_quarantined": {},
            "replay": {
                "reasons": ["unknown_track_id", "unknown_user_id"],
                "rows_rechecked": {"unknown_track_id": 11},
                "rows_accepted": {"unknown_track_id": 8},
                "rows_still_quarantined": {"unknown_track_id": 3},
                "plays_valid": 8,
                "kpi_dates": ["2024-06-26"],
            },
            "kpi_dates": ["2024-06-26"],
            "kpi_rows_loaded": 37,
        },
        {
            "status": "failed",
            "run_id": "local-20240627T010000-bbbb",
            "kind": "recompute",
            "started_at": "2024-06-27T01:00:00Z",
            "files_processed": 0,
            "rows_quarantined": {},
            "kpi_dates": ["2024-06-24", "2024-06-25", "2024-06-26", "2024-06-27"],
            "failed_state": "Load",
            "error": "WarehouseStatementFailed",
            "cause": json.dumps(
                {
                    "errorMessage": "COPY failed: disk full on slice 3",
                    "errorType": "WarehouseStatementFailed",
                }
            ),
        },
    ]


def write_summaries(folder: Path, summaries: list[dict[str, Any]]) -> Path:
    """The summaries as a data bucket keeps them: runs/<run>/summary.json."""
    for summary in summaries:
        path = folder / "runs" / summary["run_id"] / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
        (path.parent / "manifest.json").write_text('{"files": []}')  # not a summary
    return folder


def load_warehouse(dsn: str, rows: list[dict[str, Any]], table: str = "music_kpi_metrics") -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(create_table_sql(table, redshift=False))
        for row in rows:
            cur.execute(
                f"INSERT INTO {table} ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                [row[c] for c in COLUMNS],
            )
    conn.close()


def with_password(dsn: str, user: str, password: str) -> str:
    """The test server's DSN as ``user``:``password`` (the role is created here)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD %s", (password,))
    conn.close()
    masked = dsn.replace("postgresql://postgres:@", f"postgresql://{user}:{password}@")
    assert masked != dsn, dsn
    return masked


def plot_count(page: str) -> int:
    return page.count('<div class="chart"')


def pinned_bundle() -> str:
    """The plotly.js bundle reporting/package.json pins, as npm installed it."""
    pinned = json.loads((ROOT / "reporting" / "package.json").read_text())["dependencies"]
    ((package, version),) = pinned.items()
    installed = ROOT / "reporting" / "node_modules" / package
    found = json.loads((installed / "package.json").read_text())
    assert found["version"] == version, found
    return (installed / found["main"]).read_text(encoding="utf-8")


def cards(page: str) -> dict[str, tuple[str, str]]:
    """The header's figures: label -> (value, what it counts)."""
    found = re.findall(
        r'<div class="label">(.*?)</div><div class="value">(.*?)</div><div class="sub">(.*?)</div>',
        page,
    )
    return {label: (value, sub) for label, value, sub in found}


def figure(page: str, name: str) -> dict[str, Any]:
    """A chart's figure, as the page embeds it for plotly.js to draw."""
    found = re.search(
        rf'<script type="application/json" id="chart-{re.escape(name)}-figure">(.*?)</script>',
        page,
        re.S,
    )
    assert found, f"no chart {name}"
    figure: dict[str, Any] = json.loads(found.group(1))
    return figure


def panel(page: str, day: str) -> str:
    """One date's part of the page."""
    found = re.search(rf'<article class="day" data-date="{day}".*?</article>', page, re.S)
    assert found, f"no panel for {day}"
    return found.group(0)


def section(page: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">.*?</section>', page, re.S)
    assert found, f"no section {name}"
    return found.group(0)


def exported(markup: str, name: str) -> list[dict[str, str]]:
    """The rows of the CSV a download link named ``name`` carries."""
    found = re.search(
        rf'download="{re.escape(name)}" href="data:text/csv;charset=utf-8,([^"]*)"', markup
    )
    assert found, f"no CSV {name}"
    text = unquote(html.unescape(found.group(1)))
    return list(csv.DictReader(io.StringIO(text, newline="")))


def table_rows(markup: str) -> list[list[str]]:
    """The cells of every body row of the first table in ``markup``, as text."""
    body = markup[markup.index("<tbody>") : markup.index("</tbody>")]
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", cell))
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


# --- the page --------------------------------------------------------------------------------


def test_page_shows_each_days_genres_by_listens_with_their_figures() -> None:
    rows = [
        genre_row("2024-06-26", "rock", 120, avg_track_duration_sec=201.26, popularity_index=55.5),
        genre_row("2024-06-26", "pop", 4215, most_popular_track="Hearts & <Minds>"),
        genre_row("2024-06-27", "jazz", 9),
        hourly_row("2024-06-27", 5, 30, 12, 0.8),
    ]
    page = render(rows, [], META)

    choices = re.findall(r'<option value="([\d-]+)"', page)
    assert choices == ["2024-06-27", "2024-06-26"]  # the most recent first, chosen first
    assert page.index(panel(page, "2024-06-27")) < page.index(panel(page, "2024-06-26"))
    day_26 = panel(page, "2024-06-26")
    assert "<td>pop</td><td class=num>4,215</td>" in day_26
    assert (
        "<td>rock</td><td class=num>120</td><td class=num>201.3</td><td class=num>55.50</td>"
        in (day_26)
    )
    assert day_26.index("<td>pop</td>") < day_26.index("<td>rock</td>")  # listens desc
    assert "Hearts &amp; &lt;Minds&gt;" in day_26  # escaped, never markup
    assert "0 plays; 4,335 genre listens in 2 genres, most listened: pop" in day_26
    assert "No hourly KPIs for this date." in day_26
    # two days' genres, one day's hourly curve, the trend; no run: no quarantine
    assert plot_count(page) == 2 + 1 + 1


def test_plays_come_from_the_hourly_rows_where_genre_listens_count_a_play_per_genre() -> None:
    """The KPI definitions' worked example: track A, listed under pop and dance, played
    twice and B (pop) once: 3 plays, but 5 genre listens (pop 3, dance 2). Plays are the
    sum of the hourly rows' listen_count; the genre sum is shown as what it is."""
    day = "2024-06-25"
    rows = [
        genre_row(day, "pop", 3),
        genre_row(day, "dance", 2),
        hourly_row(day, 10, 3, 2, 2 / 3),
        genre_row("2024-06-26", "pop", 4),
        hourly_row("2024-06-26", 9, 1, 1, 1.0),
        hourly_row("2024-06-26", 23, 3, 2, 1.0),
    ]
    page = render(rows, [], META)

    plays, counts = cards(page)["plays"]
    assert plays == "7" and "each play once" in counts  # 3 + 1 + 3, not 3 + 2 + 4
    assert "listens" not in cards(page)  # no figure of genre listens posing as plays
    assert "2024-06-25 — 3 plays; 5 genre listens in 2 genres" in panel(page, day)
    assert "2024-06-26 — 4 plays; 4 genre listens in 1 genre" in panel(page, "2024-06-26")
    days = table_rows(section(page, "trend"))
    assert [row[:3] for row in days] == [["2024-06-26", "4", "4"], ["2024-06-25", "3", "5"]]


def test_every_table_explains_each_of_its_columns_and_links_the_kpi_definitions() -> None:
    """Under each table, one line per column says what it counts ("popularity 87.05"
    means something), and the page links the KPI definitions of the repository."""
    page = render(sample_kpis(), sample_summaries(), META)
    tables = re.findall(r"<table>(.*?)</table>\s*<dl class=\"columns\">(.*?)</dl>", page, re.S)
    assert len(tables) == page.count("<table>") >= 8
    for table, notes in tables:
        headers = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table)
        explained = re.findall(r"<dt>(.*?)</dt><dd>(.+?)</dd>", notes)
        assert [name for name, _ in explained] == headers
    assert f'href="{META.definitions}"' in page and META.definitions.endswith("docs/kpis.md")


def test_genre_chart_has_the_top_ten_only_and_table_every_genre() -> None:
    rows = [genre_row("2024-06-27", f"g{i:02d}", 100 + i) for i in range(14)]
    page = render(rows, [], META)
    bars = figure(page, "genres-2024-06-27")["data"][0]["y"]
    assert bars == [f"g{i:02d}" for i in range(4, 14)]  # ten, the largest drawn on top
    assert page.count("<tr><td>g") == 14
    css = "".join(re.findall(r"<style>(.*?)</style>", page, re.S))
    assert "max-height" not in css and "overflow-y" not in css  # every row in sight


def test_data_strings_reach_the_charts_as_text_never_as_plotly_markup() -> None:
    """Plotly draws a subset of HTML in labels (<a href>, <b>, <br>): a genre, a track or an
    artist named with it would become a live link in a chart. Every data string is escaped
    first (Plotly shows the entity as the character), and the figures' JSON cannot end
    their script element."""
    link = '<a href="https://evil.example/">click</a>'
    row = genre_row("2024-06-27", link, 100)
    row["most_popular_track"] = "<b>" + link
    hour = hourly_row("2024-06-27", 3, 10, 2, 0.5, artist=link + "</script>")
    page = render([row, hour], [{**sample_summaries()[1], "rows_quarantined": {link: 1}}], META)
    scripts = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    charts = json.dumps([json.loads(script) for script in scripts])
    assert "evil.example" in charts  # drawn...
    assert "<a href" not in charts  # ...as text only
    assert "&lt;a href=&quot;https://evil.example/&quot;&gt;click&lt;/a&gt;" in charts
    assert all("</" not in script for script in scripts)


def test_page_lists_runs_newest_first_with_totals_and_durations() -> None:
    page = render([], sample_summaries(), META)
    runs = section(page, "runs")
    order = [runs.index(r) for r in ("local-20240627T010000-bbbb", "scheduled-0f3c")]
    assert order == sorted(order)
    assert runs.index("scheduled-0f3c") < runs.index("local-20240625T010000-aaaa")
    rows = re.findall(r"<tr><td><code>(.*?)</code></td>(.*?)</tr>", runs)
    cells = {run: re.findall(r"<td[^>]*>(.*?)</td>", rest) for run, rest in rows}
    assert cells["scheduled-0f3c"][:4] == [
        "daily",
        '<span class="status good">loaded</span>',
        "2024-06-26 01:00:00",
        "2 min 05 s",
    ]
    assert cells["scheduled-0f3c"][4:] == ["4", "52,001", "14", "44", "2024-06-26"]
    # an older summary: no kind, no finish; its start from its local run id
    old = cells["local-20240625T010000-aaaa"]
    assert old[0] == "—" and old[2] == "2024-06-25 01:00:00" and old[3] == "—"
    assert old[6] == "12" and old[8] == "2024-06-24, 2024-06-25"
    assert cells["local-20240626T120000-cccc"][5] == "8"  # a replay: the rows it accepted
    failed = cells["local-20240627T010000-bbbb"]
    assert failed[0] == "recompute" and "status bad" in failed[1] and failed[3] == "—"
    assert "Load: WarehouseStatementFailed — COPY failed: disk full on slice 3" in failed[1]
    assert failed[8] == "2024-06-24 … 2024-06-27 (4)"


def test_quarantine_totals_leave_out_the_rows_a_replay_accepted_since() -> None:
    page = render([], sample_summaries(), META)
    quarantine = section(page, "quarantine")
    totals = {row[1]: row for row in table_rows(quarantine)}
    assert totals == {
        # what, reason, quarantined, accepted by a replay since, still quarantined, runs
        "invalid_user_id": ["row", "invalid_user_id", "10", "0", "10", "2"],
        "malformed_row": ["row", "malformed_row", "5", "0", "5", "1"],
        "unknown_track_id": ["row", "unknown_track_id", "11", "8", "3", "1"],
        "missing_columns": ["file", "missing_columns", "1", "—", "1", "1"],
        "unreadable: GLACIER": ["file", "unreadable: GLACIER", "2", "—", "2", "1"],
    }
    assert "18 rows still quarantined (8 of 26 accepted since by a replay)" in quarantine
    # a revalidation moves accepted plays to the quarantine: they count as quarantined rows
    revalidation = {
        "run_id": "local-20240627T060000-dddd",
        "status": "revalidated",
        "kind": "revalidate",
        "revalidation": {"plays_quarantined": {"unknown_track_id": 2}},
    }
    page = render([], [*sample_summaries(), revalidation], META)
    totals = {row[1]: row for row in table_rows(section(page, "quarantine"))}
    assert totals["unknown_track_id"][2:] == ["13", "8", "5", "2"]


def test_quarantine_charts_are_per_day_of_the_runs() -> None:
    """One bar per UTC date the runs started on (not per run id): the two runs of
    2024-06-26 add up; a replay's accepted rows go below zero; a run of no known time is
    said, not charted."""
    summaries = [*sample_summaries(), {"run_id": "manual", "rows_quarantined": {"x": 4}}]
    page = render([], summaries, META)
    rows = figure(page, "rows-quarantined")
    traces = {trace["name"]: trace for trace in rows["data"]}
    assert traces["invalid_user_id"]["x"] == ["2024-06-25", "2024-06-26", "2024-06-27"]
    assert traces["invalid_user_id"]["y"] == [7, 3, 0]
    assert traces["accepted by a replay"]["y"] == [0, -8, 0]
    assert "x" not in traces  # the run of no known start
    assert rows["layout"]["xaxis"]["type"] == "date" and rows["layout"]["barmode"] == "relative"
    assert "1 run with no start time is not charted (manual)." in section(page, "quarantine")
    files = figure(page, "files-quarantined")
    assert {t["name"]: t["y"] for t in files["data"]} == {
        "quarantined: missing_columns": [1, 0, 0],
        "unreadable: GLACIER": [0, 2, 0],
    }


def test_page_is_self_contained_with_the_pinned_partial_plotly_inlined_once() -> None:
    page = render(sample_kpis(), sample_summaries(), META)
    bundle = pinned_bundle()
    assert page.count(bundle[:400]) == 1 and bundle in page
    assert get_plotlyjs()[:400] not in page  # not plotly.py's full bundle (4.8 MB)
    assert len(page.encode()) < len(get_plotlyjs().encode()) / 3
    figures = re.findall(r'<script type="application/json" id="chart-(.*?)-figure">', page)
    assert len(figures) == plot_count(page) == 1 + 3 * 2 + 2  # trend, per day: 2, quarantine
    assert not re.search(r"<script[^>]*\bsrc=", page, re.I)  # every script inline
    assert not re.search(r"<link\b", page, re.I)  # no stylesheet, font or icon link
    assert not re.search(r"<(img|iframe)\b[^>]*\bsrc=\"?https?:", page, re.I)
    css = "".join(re.findall(r"<style>(.*?)</style>", page, re.S))
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?https?:", css)
    links = re.findall(r'<a [^>]*href="([^"]*)"', page)
    assert all(href.startswith(("data:text/csv", "#", META.definitions)) for href in links)


def test_without_the_pinned_bundle_the_report_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    npm = tmp_path / "reporting"
    npm.mkdir()
    shutil.copy(ROOT / "reporting" / "package.json", npm)
    monkeypatch.setattr(page, "_NPM", npm)
    page.plotly_js.cache_clear()
    try:
        with pytest.raises(ReportError, match=r"not installed: run `make report`"):
            render(sample_kpis(), [], META)
    finally:
        page.plotly_js.cache_clear()


def test_an_empty_warehouse_and_no_runs_give_a_page_that_says_so() -> None:
    page = render([], [], META)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "The warehouse holds no KPI rows yet" in page
    assert "No run summaries found." in page
    assert "0 runs, 0 dates" in page
    assert plot_count(page) == 0 and pinned_bundle()[:400] not in page  # nothing to draw


def test_runs_are_ordered_by_start_else_run_id() -> None:
    runs = ordered_runs(
        [
            {"run_id": "local-20261202T000033-27f3"},
            {"run_id": "b", "started_at": "2026-12-01T23:00:00+00:00"},
            {"run_id": "local-20261201T120000-0000"},
            {"run_id": "manual"},  # no time at all: first
        ]
    )
    assert [r["run_id"] for r in runs] == [
        "manual",
        "local-20261201T120000-0000",
        "b",
        "local-20261202T000033-27f3",
    ]
    assert duration({"started_at": "2026-12-01T23:00:00", "finished_at": "2026-12-01T23:00:42.5"})
    assert duration({"started_at": "2026-12-01T23:00:00"}) == "—"
    assert duration(
        {"started_at": "2026-12-01T22:00:00", "finished_at": "2026-12-01T23:05:00"}
    ) == ("1 h 05 min")
    assert [d.date for d in by_day(sample_kpis())] == ["2024-06-27", "2024-06-26", "2024-06-25"]


def test_hourly_curve_is_one_day_each_with_the_silent_hours_at_zero() -> None:
    """One chart per date, hours 0-23 on its x axis: never all days joined into one line."""
    rows = [hourly_row("2024-06-27", 3, 30, 12, 0.5), hourly_row("2024-06-26", 22, 7, 5, 1.0)]
    page = render(rows, [], META)
    for day, hour, plays in (("2024-06-27", 3, 30), ("2024-06-26", 22, 7)):
        traces = {t["name"]: t for t in figure(page, f"hourly-{day}")["data"]}
        listens = traces["plays"]
        assert listens["x"] == list(range(24))
        assert listens["y"][hour] == plays and sum(listens["y"]) == plays
        assert traces["track diversity index"]["yaxis"] == "y2"  # on its own axis


def test_each_day_shows_its_hours_with_their_top_artist() -> None:
    page = render(sample_kpis(), [], META)
    hours = table_rows(panel(page, "2024-06-26").split('tablebox hours"', 1)[1])
    assert len(hours) == 24
    assert hours[9][:3] == ["09:00", "480", "120"]  # hour, plays, unique listeners
    assert hours[9][3] == "Amara Tanaka" and hours[19][3] == "Nia Okafor"
    artists = figure(page, "hourly-2024-06-26")["data"][0]["customdata"]
    assert artists[19] == "Nia Okafor"  # in the curve's hover too


def test_trend_across_days_is_the_plays_of_each_date() -> None:
    rows = sample_kpis()
    page = render(rows, [], META)
    plays = {
        day: sum(
            r["listen_count"] for r in rows if r["kpi_type"] == "hourly" and r["kpi_date"] == day
        )
        for day in ("2024-06-25", "2024-06-26", "2024-06-27")
    }
    trend = figure(page, "trend")
    assert trend["data"][0]["x"] == sorted(plays)  # oldest first, on a date axis
    assert trend["data"][0]["y"] == [plays[day] for day in sorted(plays)]
    assert trend["layout"]["xaxis"]["type"] == "date"
    overview = table_rows(section(page, "trend"))
    assert [row[0] for row in overview] == sorted(plays, reverse=True)
    assert overview[0][1] == f"{plays['2024-06-27']:,}"


def test_top_artists_and_tracks_over_all_days() -> None:
    """Artists ranked by the hours they topped, tracks by the genre-days they led: what the
    KPI table can rank (it holds no per-track or per-artist play count)."""
    rows = sample_kpis()
    rows.append(
        genre_row(
            "2024-06-27",
            "dance",
            10,
            most_popular_track="Pop Anthem",
            most_popular_track_id="id-pop",
        )
    )
    page = render(rows, [], META)
    top = section(page, "top")
    artists = table_rows(top.split('tablebox artists"', 1)[1])
    assert artists[0][:3] == ["Amara Tanaka", "60", "3"]  # 20 hours a day, on 3 days
    assert [a[0] for a in artists] == ["Amara Tanaka", "Leo Brandt", "Nia Okafor"]
    assert artists[1][1] == "8"  # 4 evening hours on 2 days
    tracks = table_rows(top.split('tablebox tracks"', 1)[1])
    assert tracks[0][:2] == ["Pop Anthem", "4"]  # pop on 3 days, dance once
    assert len(tracks) == 10  # the top ten of 13
    day = panel(page, "2024-06-27")
    assert "Top artists of the day" in day and "Amara Tanaka (20 h)" in day


def test_what_is_shown_exports_as_csv_with_formulas_neutralised() -> None:
    """Each table downloads as CSV from the page itself (a data: link, nothing fetched),
    with the figures shown; a text cell that starts like a spreadsheet formula gets a
    leading apostrophe, as the local runner's CSV for people does."""
    rows = sample_kpis(("2024-06-27",))
    rows.append(genre_row("2024-06-27", '=HYPERLINK("https://evil.example")', 1))
    rows[0]["most_popular_track"] = "@SUM(A1)"
    page = render(rows, sample_summaries(), META)

    day = panel(page, "2024-06-27")
    genres = exported(day, "kpis-2024-06-27-genres.csv")
    assert genres[0] == {
        "genre": "pop",
        "genre listens": "4000",
        "avg duration (s)": "220.0",
        "popularity": "40.00",
        "most played track": "'@SUM(A1)",
    }
    assert genres[-1]["genre"] == '\'=HYPERLINK("https://evil.example")'
    assert len(genres) == 14
    hours = exported(day, "kpis-2024-06-27-hours.csv")
    assert len(hours) == 24 and hours[9]["top artist"] == "Amara Tanaka"
    assert sum(int(h["plays"]) for h in hours) == sum(
        int(d["plays"]) for d in exported(page, "kpis-days.csv")
    )
    assert len(exported(page, "runs.csv")) == len(sample_summaries())
    assert len(exported(page, "quarantine.csv")) == 5
    assert {name for name in re.findall(r'download="([^"]+)"', page)} >= {
        "kpis-days.csv",
        "top-artists.csv",
        "top-tracks.csv",
    }


# --- secrets ---------------------------------------------------------------------------------


UNENCODED_AT = "(a DSN with an unencoded '@' in its user info: write it %40)"


@pytest.mark.parametrize(
    ("dsn", "masked", "password"),
    [
        (
            "postgresql://kpi:s3cr3t@db.example:5432/wh",
            "host=db.example port=5432 dbname=wh user=kpi",
            "s3cr3t",
        ),
        (
            "postgresql://kpi@db/wh?password=s3cr3t&sslmode=require",
            "host=db dbname=wh user=kpi sslmode=require",
            "s3cr3t",
        ),
        ("host=db user=kpi password='s3 cr3t' dbname=wh", "host=db dbname=wh user=kpi", "s3 cr3t"),
        ("postgresql://kpi:p%40ss@db/wh", "host=db dbname=wh user=kpi", "p@ss"),
        ("host=db sslpassword=k3y dbname=wh", "host=db dbname=wh", "k3y"),
        # what a pattern over the text misses: a percent-encoded key, an escaped value
        ("postgresql://kpi@db/wh?%70assword=s3cr3t", "host=db dbname=wh user=kpi", "s3cr3t"),
        ("host=db password=s3\\ cr3t dbname=wh", "host=db dbname=wh", "s3 cr3t"),
        ("redshift://wg/dev?region=eu-west-1", "redshift://wg/dev?region=eu-west-1", None),
        ("host=db password='s3cr3t", "(a DSN that does not parse)", None),
        # libpq ends the user info at the first '@': the password's tail would be the host
        ("postgresql://kpi:p@ss@db/wh", UNENCODED_AT, "p@ss"),
        ("postgresql://kpi:p@ss@db/wh", UNENCODED_AT, "ss@db"),
        # libpq ends the user info at the first '@' or '/': a '?' or a '/' in the password
        ("postgresql://kpi:p?x@ss@db/wh", UNENCODED_AT, "ss@db"),
        ("postgresql://kpi:p/x@ss@db/wh", UNENCODED_AT, "x@ss@db"),
        ("postgresql://a@b@db/wh", UNENCODED_AT, None),
    ],
)
def test_dsn_passwords_are_masked(dsn: str, masked: str, password: str | None) -> None:
    """The DSN shown is built from the parsed parameters without password and sslpassword
    (the driver's own reading: no spelling of the key or the value escapes it)."""
    assert mask_dsn(dsn) == masked
    assert redact("could not connect", dsn) == "could not connect"  # nothing else touched
    if password:  # a driver's message may quote the password, decoded
        message = redact(f"could not connect: {dsn} (password {password})", dsn)
        assert password not in message and masked in message


# --- the readers -----------------------------------------------------------------------------


def test_postgres_reader_reads_every_row_typed(new_database: Any) -> None:
    dsn = new_database("report")
    assert PostgresReader(dsn).read_kpis() == []  # no table yet: an empty warehouse
    rows = sample_kpis(("2024-06-26",))
    load_warehouse(dsn, rows)

    read = PostgresReader(dsn).read_kpis()

    assert len(read) == len(rows) == 13 + 24
    first = read[0]  # genre rows first, by genre name
    assert first["kpi_date"] == "2024-06-26" and first["track_genre"] == "ambient"
    assert isinstance(first["listen_count"], int) and isinstance(first["popularity_index"], float)
    assert first["stream_hour"] is None and first["loaded_at"] == "2024-06-27 01:00:30"
    hourly = [r for r in read if r["kpi_type"] == "hourly"]
    assert [r["stream_hour"] for r in hourly] == list(range(24))
    assert hourly[9]["unique_listeners"] == hourly[9]["listen_count"] // 4
    assert hourly[9]["track_diversity_index"] == pytest.approx(0.44)


def test_postgres_reader_reads_a_schema_qualified_table(new_database: Any) -> None:
    dsn = new_database("report")
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA analytics")
    conn.close()
    load_warehouse(dsn, [genre_row("2024-06-27", "pop", 5)], "analytics.kpis")
    assert [r["listen_count"] for r in PostgresReader(dsn, "analytics.kpis").read_kpis()] == [5]
    with pytest.raises(UsageError, match="table name"):
        select_sql("kpis; DROP TABLE x")


def redshift_stub(
    pages: list[list[list[dict[str, Any]]]],
    statuses: list[str],
    error: str = "ERROR: permission denied for relation music_kpi_metrics",
) -> Any:
    client = boto3.client("redshift-data", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response(
        "execute_statement",
        {"Id": "stmt-1"},
        {
            "Sql": (
                f"SELECT {', '.join(COLUMNS)} FROM music_kpi_metrics "
                "ORDER BY kpi_date, kpi_type, track_genre, stream_hour"
            ),
            "StatementName": "music-kpi-report",
            "Database": "dev",
            "WorkgroupName": "kpi-wg",
        },
    )
    for status in statuses:
        response: dict[str, Any] = {"Id": "stmt-1", "Status": status}
        if status == "FINISHED":
            response["HasResultSet"] = True
        if status == "FAILED":
            response["Error"] = error
        stub.add_response("describe_statement", response, {"Id": "stmt-1"})
    for i, records in enumerate(pages):
        page: dict[str, Any] = {"Records": records, "TotalNumRows": 3}
        expected = {"Id": "stmt-1", **({"NextToken": f"t{i}"} if i else {})}
        if i < len(pages) - 1:
            page["NextToken"] = f"t{i + 1}"
        stub.add_response("get_statement_result", page, expected)
    stub.activate()
    return client, stub


def redshift_record(values: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [values.get(c, {"isNull": True}) for c in COLUMNS]


def test_redshift_reader_runs_one_select_and_parses_typed_fields_of_every_page() -> None:
    genre = redshift_record(
        {
            "kpi_type": {"stringValue": "genre"},
            "kpi_date": {"stringValue": "2024-06-27"},
            "track_genre": {"stringValue": "pop"},
            "listen_count": {"longValue": 4215},
            "avg_track_duration_sec": {"doubleValue": 205.04},
            "popularity_index": {"doubleValue": 87},
            "most_popular_track": {"stringValue": "Hearts"},
            "run_id": {"stringValue": "r1"},
            "loaded_at": {"stringValue": "2024-06-27 01:00:30"},
        }
    )
    hourly = redshift_record(
        {
            "kpi_type": {"stringValue": "hourly"},
            "kpi_date": {"stringValue": "2024-06-27"},
            "listen_count": {"longValue": 30},
            "stream_hour": {"longValue": 0},
            "unique_listeners": {"longValue": 12},
            "track_diversity_index": {"doubleValue": 0.5},
        }
    )
    client, stub = redshift_stub([[genre], [hourly]], ["SUBMITTED", "STARTED", "FINISHED"])
    sleeps: list[float] = []
    target = parse_redshift_dsn("redshift://kpi-wg/dev")

    rows = RedshiftReader(target, client, sleep=sleeps.append).read_kpis()

    stub.assert_no_pending_responses()
    assert sleeps == [0.5, 0.5]
    assert rows[0]["listen_count"] == 4215 and rows[0]["popularity_index"] == 87.0
    assert isinstance(rows[0]["popularity_index"], float)
    assert rows[0]["stream_hour"] is None and rows[0]["most_popular_track_id"] is None
    assert rows[1]["stream_hour"] == 0 and rows[1]["track_genre"] is None  # 0 is not NULL
    assert rows[1]["track_diversity_index"] == 0.5
    page = render(rows, [], META)
    assert "<td>pop</td><td class=num>4,215</td><td class=num>205.0</td>" in page


def test_redshift_reader_reports_a_failed_statement() -> None:
    client, stub = redshift_stub([], ["FAILED"])
    target = parse_redshift_dsn("redshift://kpi-wg/dev")
    with pytest.raises(ReportError, match="permission denied"):
        RedshiftReader(target, client, sleep=lambda _: None).read_kpis()
    stub.assert_no_pending_responses()


def test_redshift_reader_reports_a_missing_column_but_not_a_missing_table() -> None:
    error = 'ERROR: column "stream_hour" does not exist in music_kpi_metrics'
    client, stub = redshift_stub([], ["FAILED"], error)
    target = parse_redshift_dsn("redshift://kpi-wg/dev")
    with pytest.raises(ReportError, match="stream_hour"):
        RedshiftReader(target, client, sleep=lambda _: None).read_kpis()
    stub.assert_no_pending_responses()


def test_redshift_field_values() -> None:
    assert field_value({"isNull": True}) is None
    assert field_value({"longValue": 0}) == 0
    assert field_value({"doubleValue": 1.5}) == 1.5
    assert field_value({"stringValue": ""}) == ""


def test_redshift_dsn_forms() -> None:
    assert parse_redshift_dsn("redshift://kpi-wg/dev").parameters() == {
        "Database": "dev",
        "WorkgroupName": "kpi-wg",
    }
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kpi-AbC"
    cluster = parse_redshift_dsn(f"redshift://kpi-cluster/dev?cluster=1&secret_arn={arn}")
    assert cluster.parameters() == {
        "Database": "dev",
        "ClusterIdentifier": "kpi-cluster",
        "SecretArn": arn,
    }
    assert parse_redshift_dsn(
        "redshift://c/dev?cluster=true&db_user=awsuser&region=eu-west-1"
    ) == RedshiftTarget("dev", cluster="c", db_user="awsuser", region="eu-west-1")
    for bad in (
        "redshift://c/dev?cluster=1",
        "redshift:///dev",
        "redshift://wg/",
        "redshift://wg/dev?user=x",
    ):
        with pytest.raises(UsageError):
            parse_redshift_dsn(bad)


# --- the summaries ---------------------------------------------------------------------------


def test_summaries_from_a_folder_skip_other_documents_and_broken_ones(tmp_path: Path) -> None:
    folder = write_summaries(tmp_path, sample_summaries())
    (folder / "runs" / "broken").mkdir()
    (folder / "runs" / "broken" / "summary.json").write_text("{not json")
    found = folder_summaries(folder)
    assert sorted(s["run_id"] for s in found) == sorted(s["run_id"] for s in sample_summaries())


def test_a_failed_or_early_run_comes_from_its_outcome_document(tmp_path: Path) -> None:
    """The state machine keeps an outcome at every end (runs/outcomes/<execution>.json):
    a run that failed after Archive keeps its summary's counts with the failure's status;
    one that failed earlier, or ended no_new_files, has only its outcome."""
    folder = write_summaries(tmp_path, [{"run_id": "r1", "status": "loaded", "plays_valid": 7}])
    outcomes = folder / "runs" / "outcomes"
    outcomes.mkdir()
    failure = {
        "status": "failed",
        "run_id": "r1",
        "failed_state": "Archive",
        "error": "IngestFailed",
    }
    (outcomes / "r1.json").write_text(json.dumps(failure))
    (outcomes / "r2.json").write_text(json.dumps({"status": "no_new_files", "run_id": "r2"}))
    early = {**failure, "run_id": "r3", "failed_state": "ExtractRds", "error": "SourceUnavailable"}
    (outcomes / "r3.json").write_text(json.dumps(early))
    # a failure's outcome names no kind: the records the run left say it (a recompute plan)
    late = {**failure, "run_id": "r5", "failed_state": "Load", "error": "WarehouseStatementFailed"}
    (outcomes / "r5.json").write_text(json.dumps({**late, "cause": "relation is locked"}))
    (folder / "runs" / "r5").mkdir()
    (folder / "runs" / "r5" / "recompute.json").write_text("{}")

    runs = {run["run_id"]: run for run in folder_summaries(folder)}

    assert runs["r1"]["status"] == "failed" and runs["r1"]["plays_valid"] == 7
    assert runs["r2"]["status"] == "no_new_files"
    assert runs["r5"]["kind"] == "recompute" and runs["r5"]["kind_from"] == "records"
    assert "kind" not in runs["r3"]  # failed before leaving any record of its kind
    page = render([], list(runs.values()), META)
    assert "ExtractRds: SourceUnavailable" in page
    assert "<td>recompute (from its records)</td>" in page
    assert "Load: WarehouseStatementFailed — relation is locked" in page
    replay = {
        "run_id": "r4",
        "status": "replayed",
        "plays_valid": 0,
        "replay": {"plays_valid": 4321},
    }
    assert "4,321" in render([], [replay], META)  # a replay's valid plays are the rows it accepted
    assert "Archive: IngestFailed" in page


def test_summaries_from_s3_page_by_page(aws: Any) -> None:
    aws.s3.create_bucket(Bucket="data")
    for summary in sample_summaries():
        key = f"pipeline/runs/{summary['run_id']}/summary.json"
        aws.s3.put_object(Bucket="data", Key=key, Body=json.dumps(summary).encode())
        aws.s3.put_object(
            Bucket="data", Key=f"pipeline/runs/{summary['run_id']}/manifest.json", Body=b"{}"
        )
        for index in range(3):  # per-file ingest results: never listed one by one
            aws.s3.put_object(
                Bucket="data",
                Key=f"pipeline/runs/{summary['run_id']}/ingest/{index}.json",
                Body=b"{}",
            )
    aws.s3.put_object(Bucket="data", Key="pipeline/runs/x/attempt/summary.json", Body=b"{}")
    aws.s3.put_object(Bucket="data", Key="runs/elsewhere/summary.json", Body=b"{}")
    failed = {"status": "failed", "run_id": "died-early", "failed_state": "ExtractRds"}
    aws.s3.put_object(  # a run that never reached Archive: only its outcome
        Bucket="data", Key="pipeline/runs/outcomes/died-early.json", Body=json.dumps(failed)
    )
    aws.s3.put_object(Bucket="data", Key="pipeline/runs/died-early/manifest.json", Body=b"{}")

    class SmallPages:  # two keys a page: the listing is paginated
        def __init__(self, client: Any) -> None:
            self.client = client
            self.exceptions = client.exceptions

        def get_paginator(self, name: str) -> Any:
            paginator = self.client.get_paginator(name)

            class Paginate:
                def paginate(self, **kwargs: Any) -> Any:
                    return paginator.paginate(**kwargs, PaginationConfig={"PageSize": 2})

            return Paginate()

        def get_object(self, **kwargs: Any) -> Any:
            return self.client.get_object(**kwargs)

    listed: list[dict[str, Any]] = []
    aws.s3.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: listed.append(dict(params))
    )
    found = s3_summaries("s3://data/pipeline/", SmallPages(aws.s3))
    expected = [*(s["run_id"] for s in sample_summaries()), "died-early"]
    assert sorted(s["run_id"] for s in found) == sorted(expected)
    # the run folders by delimiter, then the outcomes, then the records of the run that has
    # an outcome only (its kind): no per-file result is listed
    assert {(p.get("Prefix"), p.get("Delimiter")) for p in listed} == {
        ("pipeline/runs/", "/"),
        ("pipeline/runs/outcomes/", None),
        ("pipeline/runs/died-early/", "/"),
    }
    died = next(s for s in found if s["run_id"] == "died-early")
    assert died["kind"] == "daily" and died["kind_from"] == "records"  # its manifest


# --- the command line ------------------------------------------------------------------------


def test_report_command_end_to_end_never_shows_the_password(
    new_database: Any, tmp_path: Path
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    dsn = with_password(new_database("report"), f"reader_{uuid.uuid4().hex[:8]}", password)
    load_warehouse(dsn, sample_kpis())
    summaries = write_summaries(tmp_path / "bucket", sample_summaries())
    out = tmp_path / "out"

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reporting",
            "--out",
            str(out),
            "--dsn",
            dsn,
            "--state",
            str(tmp_path / "no-state"),
            "--summaries",
            str(summaries),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = out / "kpi_report.html"
    assert done.stdout.splitlines()[0] == str(report)
    runs = len(sample_summaries())
    assert f"report: 3 dates, 111 KPI rows, {runs} runs" in done.stdout
    page = report.read_text()
    assert "<td>pop</td><td class=num>4,074</td>" in page  # 4000 + 37 x 2, 2024-06-27
    link = re.search(r'href="([^"]*kpis\.md)"', page)
    assert link and (out / link.group(1)).resolve() == ROOT / "docs" / "kpis.md"
    assert "scheduled-0f3c" in page and plot_count(page) == 1 + 3 * 2 + 2
    for text in (done.stdout, done.stderr, page):
        assert password not in text
    assert mask_dsn(dsn) in page and "password" not in mask_dsn(dsn)


def test_an_unreachable_warehouse_fails_without_showing_the_password(
    tmp_path: Path, capsys: Any
) -> None:
    dsn = "postgresql://kpi:hunter2-secret@127.0.0.1:9/wh?connect_timeout=2"
    code = main(["--out", str(tmp_path), "--dsn", dsn, "--state", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1 and "cannot connect to host=127.0.0.1 port=9 dbname=wh user=kpi" in err
    assert "hunter2-secret" not in err and not (tmp_path / "kpi_report.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dsn", "mysql://u:topsecret@h/db"], "expected postgresql://... or redshift://"),
        (["--dsn", "redshift://wg/dev?cluster=1"], "needs db_user=... or secret_arn="),
        (["--summaries", "/no/such/folder", "--dsn", "postgresql://h/db"], "no such folder"),
        (["--table", "x;y", "--dsn", "postgresql://h/db"], "--table must be a table name"),
        ([], "run `make run` first"),  # no STATE
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    args: list[str], message: str, tmp_path: Path, capsys: Any
) -> None:
    code = main(["--out", str(tmp_path), "--state", str(tmp_path / "no-state"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "topsecret" not in err
    with pytest.raises(SystemExit) as exited:
        main(["--no-such-option"])
    assert exited.value.code == 2


def saved_state(state: Path, summaries: list[dict[str, Any]]) -> Path:
    """A STATE as `make run` leaves it: a current snapshot with a data and a landing bucket."""
    snapshot = state / "saved" / "snapshot-1234abcd"
    write_summaries(snapshot / "s3" / "local-storagedatabucketb1b922fa", summaries)
    write_summaries(
        snapshot / "s3" / "local-landingbucket0c9e2f11", [{"run_id": "not-ours", "status": "x"}]
    )
    (state / "saved" / "CURRENT").write_text("snapshot-1234abcd\n")
    return state


def test_local_report_reads_states_warehouse_and_snapshot_holding_state(
    new_database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    dsn = new_database("report")
    load_warehouse(dsn, sample_kpis(("2024-06-27",)))
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)  # as for `make run`: servers of one's own
    monkeypatch.setenv("RDS_DSN", dsn)
    state = saved_state(tmp_path / "state", sample_summaries())

    assert main(["--out", str(tmp_path / "out"), "--state", str(state)]) == 0
    page = (tmp_path / "out" / "kpi_report.html").read_text()
    assert f"{len(sample_summaries())} runs, 1 dates" in page and "not-ours" not in page
    assert "local-storagedatabucketb1b922fa (STATE&#x27;s saved snapshot)" in page
    capsys.readouterr()

    with StateFolder(state).in_use():  # a `make run` holds STATE: no report meanwhile
        assert main(["--out", str(tmp_path / "out2"), "--state", str(state)]) == 1
    assert "is in use by another `make run`" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_local_report_without_a_warehouse_in_state_says_run_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("WAREHOUSE_DSN", raising=False)
    state = saved_state(tmp_path / "state", [])
    assert main(["--out", str(tmp_path / "out"), "--state", str(state)]) == 2
    assert "run `make run` first" in capsys.readouterr().err


def test_a_redshift_dsn_shows_no_user_info() -> None:
    """Review of issue 20: a redshift:// DSN's user info is not used (boto3's credentials
    are), but one pasted with it must not show its password."""
    assert mask_dsn("redshift://admin:TopSecret1@kpi-wg/dev?region=eu-west-1") == (
        "redshift://kpi-wg/dev?region=eu-west-1"
    )


# --- issue 21, item 12: a Redshift report without a region or credentials -------------------


@pytest.fixture
def no_aws_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS variable, no ~/.aws files, no instance metadata, no cached boto3 session."""
    import os

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def redshift_report(tmp_path: Path, capsys: Any, dsn: str) -> tuple[int, str]:
    code = main(["--out", str(tmp_path / "out"), "--state", str(tmp_path / "none"), "--dsn", dsn])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.usefixtures("no_aws_configuration")
def test_a_redshift_report_without_a_region_says_where_to_give_one(
    tmp_path: Path, capsys: Any
) -> None:
    code, said = redshift_report(tmp_path, capsys, "redshift://kpi-wg/dev")

    assert code == 2, said
    assert "no AWS region for redshift://kpi-wg/dev" in said
    assert "AWS_REGION" in said and "AWS_DEFAULT_REGION" in said and "?region=" in said
    assert "Traceback" not in said and "NoRegionError" not in said
    assert not (tmp_path / "out" / "kpi_report.html").exists()


@pytest.mark.usefixtures("no_aws_configuration")
def test_a_redshift_report_without_credentials_says_how_to_provide_them(
    tmp_path: Path, capsys: Any
) -> None:
    code, said = redshift_report(tmp_path, capsys, "redshift://kpi-wg/dev?region=eu-west-1")

    assert code == 2, said
    lines = [line for line in said.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, said
    assert "no AWS credentials" in lines[0]
    assert "AWS_PROFILE" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0]
    assert "Traceback" not in said and "NoCredentialsError" not in said
