"""The report page: plain KPI rows and run summaries in, one HTML document out.

:func:`render` is pure (no database, no clock; the one file it reads is the plotly.js
bundle), so the page is tested from known data. The page is self-contained: plotly.js is
inlined once in its head (the basic partial build that reporting/package.json pins, which
draws bars, lines and pies: a quarter of plotly.py's full bundle), every chart is a
``Plotly.newPlot`` call on its own data, and no script, style or font is fetched: it opens
from a mail attachment or an air-gapped laptop as it does here.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reporting.sources import ReportError

Row = Mapping[str, Any]
DASH = "—"
TOP_GENRES = 10  # bars per day's chart; the table lists every genre
# Statuses by how a reader should feel about them (others are shown plain).
_GOOD = {"loaded", "recomputed", "replayed"}
_QUIET = {"no_new_files", "no_rds_data", "already_running"}
_LOCAL_RUN_TIME = re.compile(r"(\d{8}T\d{6})")

_TEMPLATE = go.layout.Template(
    layout=go.Layout(
        colorway=["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899"],
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12},
        paper_bgcolor="white",
        plot_bgcolor="white",
        xaxis={"gridcolor": "#e5e7eb", "zerolinecolor": "#d1d5db", "automargin": True},
        yaxis={"gridcolor": "#e5e7eb", "zerolinecolor": "#d1d5db", "automargin": True},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
)
_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Meta:
    """What the header says about the report itself (the warehouse DSN already masked)."""

    generated_at: dt.datetime
    warehouse: str
    summaries_from: str
    table: str = "music_kpi_metrics"
    # The KPI definitions, relative to the report's folder (out/ in the repository).
    definitions: str = "../docs/kpis.md"


@dataclass(frozen=True)
class Column:
    """A table's column: its header, and the line under the table that says what it counts."""

    name: str
    means: str
    numeric: bool = False


# What each table's columns hold (docs/kpis.md defines the KPIs; the runs' are the run
# summary's fields).
GENRE_COLUMNS = (
    Column("genre", "track_genre: a genre of the songs table"),
    Column(
        "genre listens",
        "plays of the genre's tracks that day; a play of a track listed under k genres "
        "counts in each of the k",
        numeric=True,
    ),
    Column(
        "avg duration (s)",
        "mean duration of the genre's distinct tracks played that day (not weighted by plays)",
        numeric=True,
    ),
    Column(
        "popularity",
        "0-100: half the genre's listens as a share of the day's leading genre's, half the "
        "mean catalogue popularity (0-100) of its plays; the day's leader scores 50 or more",
        numeric=True,
    ),
    Column(
        "most played track",
        "the genre's track with the most plays that day (ties: the higher catalogue "
        "popularity, then the smaller track id)",
    ),
)
QUARANTINE_COLUMNS = (
    Column("what", "row: one row of a stream file; file: a whole file"),
    Column("reason", "the first rule the row or file broke (docs/kpis.md, valid plays)"),
    Column("total", "rows or files, summed over the runs", numeric=True),
    Column("runs", "runs that quarantined at least one for this reason", numeric=True),
)
RUN_COLUMNS = (
    Column("run", "the run id: the Step Functions execution name, on every KPI row it loaded"),
    Column("kind", "daily (new files), recompute, replay_quarantine, revalidate or preflight"),
    Column("status", "how the run ended; a failed run names the state that failed and its error"),
    Column("started (UTC)", "when the execution started"),
    Column("duration", "from its start to its end"),
    Column("files", "stream files ingested", numeric=True),
    Column(
        "valid plays",
        "plays accepted (a replay: quarantined rows it accepted), each play once",
        numeric=True,
    ),
    Column("rows quarantined", "stream rows rejected, all reasons", numeric=True),
    Column("KPI rows loaded", "genre and hourly rows written to the warehouse", numeric=True),
    Column("KPI dates", "the dates whose KPIs the run computed"),
)


def render(kpi_rows: Sequence[Row], summaries: Sequence[Row], meta: Meta) -> str:
    """The whole page: header, one section per day, the hourly curve, quarantines, runs."""
    days = by_day(kpi_rows)
    runs = ordered_runs(summaries)
    sections = [
        _header(meta, days, runs),
        _days_section(days),
        _hourly_section([r for r in kpi_rows if r.get("kpi_type") == "hourly"]),
        _quarantine_section(runs),
        _runs_section(runs),
    ]
    body = "\n".join(sections)
    # Charts are plotly divs: the bundle (1.2 MB) only when there is one to draw.
    bundle = _plotly_bundle() if "js-plotly-chart" in body else ""
    return _page(f"Music KPI report — {meta.generated_at:%Y-%m-%d %H:%M}", bundle, body)


# --- data shaping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """One kpi_date's rows: its genre rows by listen_count desc, its hourly rows by hour.

    ``plays`` counts each valid play once (the hourly rows' listen_count, summed);
    ``genre_listens`` counts a play once per genre of its track (docs/kpis.md), so it is
    larger than ``plays`` as soon as a multi-genre track is played."""

    date: str
    genres: list[Row]
    hours: list[Row]

    @property
    def plays(self) -> int:
        return sum(int(r.get("listen_count") or 0) for r in self.hours)

    @property
    def genre_listens(self) -> int:
        return sum(int(r.get("listen_count") or 0) for r in self.genres)


def by_day(kpi_rows: Iterable[Row]) -> list[Day]:
    """Every date with KPI rows, the most recent first (a date with hourly rows only, or
    genre rows only, is listed too)."""
    days: dict[str, Day] = {}
    for row in kpi_rows:
        date = str(row.get("kpi_date"))[:10]
        day = days.setdefault(date, Day(date, [], []))
        if row.get("kpi_type") == "genre":
            day.genres.append(row)
        elif row.get("kpi_type") == "hourly":
            day.hours.append(row)
    for day in days.values():
        day.genres.sort(key=lambda r: (-(r.get("listen_count") or 0), str(r.get("track_genre"))))
        day.hours.sort(key=lambda r: int(r.get("stream_hour") or 0))
    return sorted(days.values(), key=lambda d: d.date, reverse=True)


def run_time(summary: Row) -> dt.datetime | None:
    """When the run started: ``started_at``, else the time in a local run id (UTC)."""
    for text in (summary.get("started_at"), _local_run_time(str(summary.get("run_id", "")))):
        if not text:
            continue
        try:
            moment = dt.datetime.fromisoformat(str(text))
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return None


def _local_run_time(run_id: str) -> str | None:
    found = _LOCAL_RUN_TIME.search(run_id)
    return found.group(1) if found else None


def ordered_runs(summaries: Iterable[Row]) -> list[Row]:
    """Oldest first: by start time when known, else by run id (runs of no known time first)."""
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)

    def key(summary: Row) -> tuple[bool, dt.datetime, str]:
        moment = run_time(summary)
        return (moment is not None, moment or epoch, str(summary.get("run_id", "")))

    return sorted(summaries, key=key)


def duration(summary: Row) -> str:
    """finished_at - started_at, readable ("2 min 05 s"), or a dash when either is missing."""
    start, end = summary.get("started_at"), summary.get("finished_at")
    if not start or not end:
        return DASH
    try:
        seconds = (
            dt.datetime.fromisoformat(str(end)) - dt.datetime.fromisoformat(str(start))
        ).total_seconds()
    except (ValueError, TypeError):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def reason_counts(runs: Sequence[Row], field: str) -> dict[str, list[int]]:
    """reason -> its count in each run (0 where absent), for a {reason: n} summary field."""
    reasons = sorted({reason for run in runs for reason in (run.get(field) or {})})
    return {r: [int((run.get(field) or {}).get(r, 0)) for run in runs] for r in reasons}


def rows_quarantined(summary: Row) -> int:
    return sum(int(n) for n in (summary.get("rows_quarantined") or {}).values())


# --- formatting ------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _label(value: object) -> str:
    """A data string as a chart draws it: Plotly renders a subset of HTML in labels, hover
    text and legends (a link, bold...), so the string is escaped (Plotly shows an entity as
    its character): a genre named like a link is shown, never followed."""
    return _e(value)


def _int(value: object) -> str:
    return DASH if value is None or value == "" else f"{int(str(value)):,}"


def _num(value: object, digits: int) -> str:
    return DASH if value is None or value == "" else f"{float(str(value)):,.{digits}f}"


def _when(value: object) -> str:
    if not value:
        return DASH
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo:
        moment = moment.astimezone(dt.UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}" + (" UTC" if moment.tzinfo else "")


def _dates(dates: object) -> str:
    values = sorted(str(d) for d in dates) if isinstance(dates, list | tuple) else []
    if not values:
        return DASH
    if len(values) <= 3:
        return ", ".join(values)
    return f"{values[0]} … {values[-1]} ({len(values)})"


def _table(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> str:
    """A table of already formatted cells (numeric columns right-aligned), then one line per
    column saying what it holds."""
    num = [" class=num" if c.numeric else "" for c in columns]
    head = "".join(f"<th{n}>{_e(c.name)}</th>" for c, n in zip(columns, num, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td{n}>{cell}</td>" for cell, n in zip(row, num, strict=True)) + "</tr>"
        for row in rows
    )
    notes = "".join(f"<dt>{_e(c.name)}</dt><dd>{_e(c.means)}</dd>" for c in columns)
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f'<dl class="columns">{notes}</dl>'
    )


def _chart(fig: go.Figure, name: str, height: int) -> str:
    """One figure as a div and its newPlot call, without plotly.js (it is in the head)."""
    fig.update_layout(template=_TEMPLATE, height=height)
    markup = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{name}",
        config=_CONFIG,
        default_width="100%",
        default_height=f"{height}px",
    )
    return f'<div class="js-plotly-chart" data-chart="{_e(name)}">{markup}</div>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# --- sections --------------------------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _header(meta: Meta, days: list[Day], runs: list[Row]) -> str:
    plays = sum(day.plays for day in days)
    span = f"{days[-1].date} to {days[0].date}" if days else "none"
    last = runs[-1] if runs else {}
    started = run_time(last)
    cards = [
        ("days", f"{len(days):,}", span),
        ("runs", f"{len(runs):,}", f"last {last['run_id']}" if last else "no run summaries"),
        ("plays", f"{plays:,}", "valid plays, all days, each play once (hourly rows)"),
        ("last run", str(last.get("status", DASH)), _when(started.isoformat()) if started else ""),
    ]
    card_html = "".join(
        f'<div class="card"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="sub">{_e(sub)}</div></div>'
        for label, value, sub in cards
    )
    return (
        "<header><h1>Music KPI report</h1>"
        f'<p class="meta">Generated {_e(_when(meta.generated_at.isoformat()))} from warehouse '
        f"<code>{_e(meta.warehouse)}</code> (table <code>{_e(meta.table)}</code>); "
        f"run summaries from <code>{_e(meta.summaries_from)}</code>. "
        f"{len(runs):,} runs, {len(days):,} dates. What each figure counts: "
        f'<a href="{_e(meta.definitions)}">the KPI definitions</a> (docs/kpis.md in the '
        "repository), and the lines under each table.</p>"
        f'<div class="cards">{card_html}</div></header>'
    )


def _days_section(days: list[Day]) -> str:
    if not days:
        return (
            '<section id="days"><h2>Genres per day</h2>'
            + _note("The warehouse holds no KPI rows yet: no run has loaded any date.")
            + "</section>"
        )
    parts = [_day(day, open_=i == 0) for i, day in enumerate(days)]
    return '<section id="days"><h2>Genres per day</h2>' + "".join(parts) + "</section>"


def _day(day: Day, *, open_: bool) -> str:
    rows = day.genres
    top = f", most listened: {rows[0].get('track_genre')}" if rows else ""
    loads = sorted({str(r.get("run_id")) for r in rows if r.get("run_id")})
    summary = (
        f"{day.date} — {_plural(day.plays, 'play')}; "
        f"{_plural(day.genre_listens, 'genre listen')} in {_plural(len(rows), 'genre')}{top}"
    )
    if not rows:
        content = _note("No genre KPIs for this date (hourly ones only).")
    else:
        table = _table(
            GENRE_COLUMNS,
            (
                [
                    _e(r.get("track_genre")),
                    _int(r.get("listen_count")),
                    _num(r.get("avg_track_duration_sec"), 1),
                    _num(r.get("popularity_index"), 2),
                    _e(r.get("most_popular_track") or DASH),
                ]
                for r in rows
            ),
        )
        content = (
            f'<div class="day-grid"><div class="scroll">{table}</div>'
            f"<div>{_genre_chart(day.date, rows)}</div></div>"
            + (_note(f"Loaded by {', '.join(loads)}.") if loads else "")
        )
    return (
        f'<details class="day" data-date="{_e(day.date)}"{" open" if open_ else ""}>'
        f"<summary>{_e(summary)}</summary>{content}</details>"
    )


def _genre_chart(day: str, rows: list[Row]) -> str:
    top = list(reversed(rows[:TOP_GENRES]))  # plotly draws the first bar at the bottom
    fig = go.Figure(
        go.Bar(
            x=[int(r.get("listen_count") or 0) for r in top],
            y=[_label(r.get("track_genre")) for r in top],
            orientation="h",
            text=[f"{int(r.get('listen_count') or 0):,}" for r in top],
            textposition="auto",
            customdata=[
                [r.get("popularity_index"), _label(r.get("most_popular_track"))] for r in top
            ],
            hovertemplate="%{y}: %{x:,} listens<br>popularity %{customdata[0]:.1f}"
            "<br>%{customdata[1]}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Top {len(top)} genres by listens, {_label(day)}", xaxis_title="listens"
    )
    return _chart(fig, f"genres-{day}", height=90 + 30 * len(top))


def hourly_points(rows: Iterable[Row]) -> list[tuple[str, int, int, float | None]]:
    """(kpi_date hour, listens, unique listeners, diversity) for every hour of every date
    that has hourly rows: an hour without plays is 0 listens (and no diversity), so the
    curve dips there instead of drawing a line over it."""
    found: dict[tuple[str, int], Row] = {}
    for r in rows:
        if r.get("stream_hour") is not None:
            found[(str(r.get("kpi_date"))[:10], int(r["stream_hour"]))] = r
    points = []
    for day in sorted({day for day, _ in found}):
        for hour in range(24):
            r = found.get((day, hour), {})
            diversity = r.get("track_diversity_index")
            points.append(
                (
                    f"{day} {hour:02d}:00",
                    int(r.get("listen_count") or 0),
                    int(r.get("unique_listeners") or 0),
                    None if diversity is None else float(diversity),
                )
            )
    return points


def _hourly_section(rows: list[Row]) -> str:
    title = "<h2>Listening through the day</h2>"
    points = hourly_points(rows)
    if not points:
        return f'<section id="hourly">{title}{_note("No hourly KPIs yet.")}</section>'
    x = [p[0] for p in points]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=x, y=[p[1] for p in points], name="listens", mode="lines"))
    fig.add_trace(go.Scatter(x=x, y=[p[2] for p in points], name="unique listeners", mode="lines"))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[p[3] for p in points],
            name="track diversity index",
            mode="lines",
            line={"dash": "dot"},
            connectgaps=False,
        ),
        secondary_y=True,
    )
    fig.update_layout(
        title="Listens and unique listeners per hour; track diversity", hovermode="x unified"
    )
    fig.update_yaxes(title_text="per hour", secondary_y=False)
    # Distinct tracks per play: at most 1. A fixed range keeps its ticks round (plotly would
    # otherwise align them to the listens axis: 0.053, 0.372...).
    top = max([1.0, *(p[3] for p in points if p[3] is not None)])
    fig.update_yaxes(
        title_text="diversity index",
        range=[0, top * 1.05],
        tickmode="auto",
        showgrid=False,
        secondary_y=True,
    )
    return f'<section id="hourly">{title}{_chart(fig, "hourly", height=420)}</section>'


def _stacked(runs: list[Row], series: dict[str, list[int]], name: str, title: str) -> str:
    x = [_label(run.get("run_id")) for run in runs]
    fig = go.Figure(
        [go.Bar(x=x, y=counts, name=_label(reason)) for reason, counts in series.items()]
    )
    fig.update_layout(barmode="stack", title=title, yaxis_title="count", showlegend=True)
    fig.update_traces(width=min(0.8, 0.15 * len(runs)))  # one run: a bar, not a wall
    fig.update_xaxes(type="category", tickangle=-30, title_text="run (oldest first)")
    highest = max(sum(column) for column in zip(*series.values(), strict=True))
    if highest <= 10:  # whole counts: no 0.2 ticks
        fig.update_yaxes(dtick=1)
    return _chart(fig, name, height=400)


def _quarantine_section(runs: list[Row]) -> str:
    title = "<h2>Quarantined rows and files</h2>"
    if not runs:
        return f'<section id="quarantine">{title}{_note("No run summaries.")}</section>'
    row_series = reason_counts(runs, "rows_quarantined")
    file_series = {
        **{
            f"quarantined: {r}": n
            for r, n in reason_counts(runs, "files_quarantined_by_reason").items()
        },
        **{
            f"unreadable: {r}": n
            for r, n in reason_counts(runs, "files_unreadable_by_reason").items()
        },
    }
    parts = [title]
    for series, name, what in (
        (row_series, "rows-quarantined", "Rows quarantined by reason"),
        (file_series, "files-quarantined", "Files quarantined or unreadable by reason"),
    ):
        if any(sum(counts) for counts in series.values()):
            parts.append(_stacked(runs, series, name, f"{what}, per run"))
        else:
            parts.append(_note(f"{what}: none in any run."))
    totals = [
        ("row", reason, sum(counts), sum(1 for n in counts if n))
        for reason, counts in row_series.items()
    ] + [
        ("file", reason, sum(counts), sum(1 for n in counts if n))
        for reason, counts in file_series.items()
    ]
    if totals:
        parts.append("<h3>Totals over all runs</h3>")
        parts.append(
            _table(
                QUARANTINE_COLUMNS,
                ([_e(kind), _e(reason), _int(total), _int(n)] for kind, reason, total, n in totals),
            )
        )
    return '<section id="quarantine">' + "".join(parts) + "</section>"


def _status(status: object) -> str:
    text = str(status or DASH)
    tone = (
        "good"
        if text in _GOOD
        else "quiet"
        if text in _QUIET
        else "bad"
        if text in {"failed", "files_rejected"}
        else ""
    )
    return f'<span class="status {tone}">{_e(text)}</span>'


def valid_plays(run: Row) -> object:
    """The plays a run accepted: its files', or the quarantined rows a replay accepted."""
    replay = run.get("replay")
    if isinstance(replay, dict) and replay.get("plays_valid"):
        return replay["plays_valid"]
    return run.get("plays_valid")


def _failure(run: Row) -> str:
    """Where and why a failed run stopped (its outcome document: the alert's fields)."""
    if run.get("status") != "failed" or not run.get("failed_state"):
        return ""
    return f'<div class="why">{_e(run["failed_state"])}: {_e(run.get("error") or DASH)}</div>'


def _started(run: Row) -> str:
    """started_at, else the time a local run id carries; in UTC (the column says so)."""
    moment = run_time(run)
    return _when(moment.isoformat()).removesuffix(" UTC") if moment else DASH


def _runs_section(runs: list[Row]) -> str:
    title = "<h2>Runs</h2>"
    if not runs:
        return f'<section id="runs">{title}{_note("No run summaries found.")}</section>'
    table = _table(
        RUN_COLUMNS,
        (
            [
                f"<code>{_e(run.get('run_id'))}</code>",
                _e(run.get("kind") or DASH),
                _status(run.get("status")) + _failure(run),
                _e(_started(run)),
                _e(duration(run)),
                _int(run.get("files_processed")),
                _int(valid_plays(run)),
                _int(rows_quarantined(run)),
                _int(run.get("kpi_rows_loaded")),
                _e(_dates(run.get("kpi_dates"))),
            ]
            for run in reversed(runs)
        ),
    )
    return (
        f'<section id="runs">{title}{_note("Newest first.")}'
        f'<div class="scroll wide">{table}</div></section>'
    )


# --- the document ----------------------------------------------------------------------------


# reporting/package.json pins the plotly.js bundle; `make report` installs it with npm.
_NPM = Path(__file__).resolve().parent


@functools.cache
def plotly_js() -> str:
    """The plotly.js bundle reporting/package.json pins (the basic partial build: bar,
    scatter, pie), as npm installed it beside it."""
    pinned = json.loads((_NPM / "package.json").read_text())["dependencies"]
    ((package, version),) = pinned.items()
    installed = _NPM / "node_modules" / package
    try:
        found = json.loads((installed / "package.json").read_text())
        if found.get("version") != version:
            raise ReportError(f"{installed} is {found.get('version')}, not the pinned {version}")
        return (installed / found["main"]).read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError) as exc:
        raise ReportError(
            f"the report's plotly.js ({package} {version}) is not installed: run `make report` "
            f"(or `make report-js`), which installs it with npm ({exc})"
        ) from None


def _plotly_bundle() -> str:
    """plotly.js, inline, once: every chart's newPlot call runs after it (they are in the
    body); MathJax stays off (it would be fetched)."""
    return (
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f'<script charset="utf-8">{plotly_js()}</script>'
    )


# A chart drawn inside a closed <details> has no width yet: resize it when it is opened.
_SCRIPT = """<script>
document.querySelectorAll("details").forEach(function (d) {
  d.addEventListener("toggle", function () {
    if (d.open && window.Plotly) {
      d.querySelectorAll(".js-plotly-plot").forEach(function (p) { Plotly.Plots.resize(p); });
    }
  });
});
</script>"""

_CSS = """
:root { color-scheme: light; --ink: #111827; --muted: #6b7280; --line: #e5e7eb; }
* { box-sizing: border-box; }
body {
  margin: 0 auto; max-width: 1280px; padding: 24px; color: var(--ink); background: #f9fafb;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 28px 0 12px; font-size: 20px; }
h3 { font-size: 15px; margin: 20px 0 8px; }
code {
  font: 12px ui-monospace, SFMono-Regular, Menlo, monospace;
  background: #f3f4f6; padding: 1px 4px; border-radius: 4px;
}
.meta, .note { color: var(--muted); }
.cards {
  display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr));
  gap: 12px; margin-top: 16px;
}
.card { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; }
.card .value { font-size: 24px; font-weight: 600; }
.card .sub { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
section {
  background: white; border: 1px solid var(--line); border-radius: 8px;
  padding: 4px 20px 20px; margin-top: 20px;
}
details.day { border-top: 1px solid var(--line); padding: 8px 0; }
details.day > summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
.day-grid {
  display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
  gap: 20px; align-items: start; margin-top: 8px;
}
@media (max-width: 900px) { .day-grid { grid-template-columns: 1fr; } }
.scroll { max-height: 420px; overflow: auto; }
.scroll.wide { max-height: none; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td {
  text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap;
}
th { position: sticky; top: 0; background: #f3f4f6; font-weight: 600; }
#runs td:last-child { white-space: normal; min-width: 120px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #f9fafb; }
.status { padding: 1px 8px; border-radius: 999px; background: #e5e7eb; font-size: 12px; }
.status.good { background: #d1fae5; color: #065f46; }
.status.quiet { background: #e0e7ff; color: #3730a3; }
.status.bad { background: #fee2e2; color: #991b1b; }
.why { font-size: 12px; color: #991b1b; }
dl.columns {
  display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 12px;
  margin: 8px 0 0; font-size: 12px; color: var(--muted);
}
dl.columns dt { font-weight: 600; }
dl.columns dd { margin: 0; }
"""


def _page(title: str, bundle: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style>\n{bundle}\n</head>\n"
        f"<body>\n{body}\n{_SCRIPT}\n</body></html>\n"
    )
