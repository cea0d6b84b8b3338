"""The report page: plain KPI rows and run summaries in, one HTML document out.

:func:`render` is pure (no database, no clock; the one file it reads is the plotly.js
bundle), so the page is tested from known data; :mod:`reporting.shaping` computes what it
shows. The page is self-contained: plotly.js is inlined once in its head (the basic partial
build that reporting/package.json pins, which draws bars, lines and pies: a quarter of
plotly.py's full bundle), each chart's figure is embedded as JSON beside it and drawn when
it is in sight, each table downloads as CSV from a ``data:`` link, and no script, style or
font is fetched: it opens from a mail attachment or an air-gapped laptop as it does here.

Sections: the headline figures; the days side by side (plays per day, a table of days);
one day at a time, chosen in a list (every genre, every hour with its top artist, their
charts); the top artists and tracks over all days; quarantines per day; the runs.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import html
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kpi_pipeline.alerts import error_message
from local_runner.databases import FORMULA_START
from reporting.shaping import (
    ACCEPTED_FIELD,
    DASH,
    ROW_FIELDS,
    Day,
    by_day,
    duration,
    ordered_runs,
    per_run_day,
    quarantine_totals,
    rows_quarantined,
    run_date,
    run_time,
    top_artists,
    top_tracks,
    valid_plays,
)
from reporting.sources import ReportError

__all__ = ["Meta", "by_day", "duration", "ordered_runs", "plotly_js", "render"]

Row = Mapping[str, Any]
TOP_GENRES = 10  # bars per day's chart; the table lists every genre
TOP_N = 10  # artists and tracks in the top lists
# Statuses by how a reader should feel about them (others are shown plain).
_GOOD = {"loaded", "recomputed", "replayed", "revalidated"}
_QUIET = {"no_new_files", "no_rds_data", "already_running"}
_CAUSE_CHARS = 300  # of a failure's message, in the runs table
# The files' chart: a series per reason, quarantined or unreadable (left in landing).
_FILE_SERIES = {
    "files_quarantined_by_reason": "quarantined: ",
    "files_unreadable_by_reason": "unreadable: ",
}

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
    """A table's column: its header, the line under the table that says what it holds, and
    its figures' decimals (None: text; 0: a count)."""

    name: str
    means: str
    digits: int | None = None

    @property
    def numeric(self) -> bool:
        return self.digits is not None


@dataclass(frozen=True)
class Cell:
    """A cell whose markup is not its plain text (a status badge, a link): the table shows
    ``markup``, the CSV holds ``text``."""

    markup: str
    text: str


# What each table's columns hold (docs/kpis.md defines the KPIs; the runs' are the run
# summary's fields).
_PLAYS = "valid plays, each once (the hourly rows' listen_count summed)"
_GENRE_LISTENS = "a play counts once in each genre of its track (the genre rows' listen_count)"
DAY_COLUMNS = (
    Column("date", "the UTC date of the plays (kpi_date)"),
    Column("plays", _PLAYS, 0),
    Column("genre listens", _GENRE_LISTENS + ": more than the plays", 0),
    Column("genres", "genres with at least one play", 0),
    Column("most listened genre", "the genre with the most genre listens"),
    Column("busiest hour", "the UTC hour with the most plays"),
    Column("its top artist", "the most played artist of that hour"),
)
GENRE_COLUMNS = (
    Column("genre", "track_genre: a genre of the songs table"),
    Column(
        "genre listens",
        "plays of the genre's tracks that day; a play of a track listed under k genres "
        "counts in each of the k",
        0,
    ),
    Column(
        "avg duration (s)",
        "mean duration of the genre's distinct tracks played that day (not weighted by plays)",
        1,
    ),
    Column(
        "popularity",
        "0-100: half the genre's listens as a share of the day's leading genre's, half the "
        "mean catalogue popularity (0-100) of its plays; the day's leader scores 50 or more",
        2,
    ),
    Column(
        "most played track",
        "the genre's track with the most plays that day (ties: the higher catalogue "
        "popularity, then the smaller track id)",
    ),
)
HOUR_COLUMNS = (
    Column("hour", "the UTC hour (stream_hour); an hour without plays has no KPI row: 0"),
    Column("plays", "valid plays in the hour, each once", 0),
    Column(
        "unique listeners",
        "distinct users with a play in the hour (hours do not add up: a listener of two "
        "hours counts in each)",
        0,
    ),
    Column(
        "top artist",
        "the artist with the most plays in the hour (a play credits each artist of its "
        "track; ties: the smallest name)",
    ),
    Column(
        "diversity",
        "track diversity index: distinct tracks / plays in the hour (1: no track played "
        "twice; 0.25: each track four times on average)",
        3,
    ),
)
ARTIST_COLUMNS = (
    Column("artist", "an hour's top artist (top_artists) on at least one date"),
    Column("hours at the top", "the hours it was the most played artist of, all dates", 0),
    Column("days", "the dates of those hours", 0),
    Column(
        "plays in those hours",
        "all plays of those hours (the table holds no per-artist count)",
        0,
    ),
)
TRACK_COLUMNS = (
    Column("track", "a genre's most played track on at least one date"),
    Column("genre-days led", "the (date, genre) pairs it was the most played track of", 0),
    Column("genres", "the genres it led"),
    Column(
        "genre listens",
        "the genre listens of those genres on those dates (the table holds no per-track count)",
        0,
    ),
    Column("track id", "its track_id (names are not unique)"),
)
QUARANTINE_COLUMNS = (
    Column("what", "row: one row of a stream file; file: a whole file"),
    Column("reason", "the first rule the row or file broke (docs/kpis.md, valid plays)"),
    Column(
        "quarantined",
        "rows quarantined by the runs' ingests and revalidations, or files, summed",
        0,
    ),
    Column(
        "accepted since",
        "rows a replay of the quarantine checked again and accepted as plays (files are "
        "never replayed)",
        0,
    ),
    Column("still quarantined", "quarantined minus accepted since", 0),
    Column("runs", "runs that quarantined at least one for this reason", 0),
)
RUN_COLUMNS = (
    Column("run", "the run id: the Step Functions execution name, on every KPI row it loaded"),
    Column(
        "kind",
        "daily (new files), recompute, replay_quarantine, revalidate or preflight; for a "
        "run that failed before its summary, read from the records it left (— if none)",
    ),
    Column("status", "how the run ended; a failed run: the state that failed, its error"),
    Column("started (UTC)", "when the execution started"),
    Column("duration", "from its start to its end"),
    Column("files", "stream files ingested", 0),
    Column("valid plays", "plays accepted (a replay: quarantined rows it accepted), each once", 0),
    Column("rows quarantined", "stream rows rejected, all reasons", 0),
    Column("KPI rows loaded", "genre and hourly rows written to the warehouse", 0),
    Column("KPI dates", "the dates whose KPIs the run computed"),
)


def render(kpi_rows: Sequence[Row], summaries: Sequence[Row], meta: Meta) -> str:
    """The whole page: the headline, the days, one day, the top lists, quarantines, runs."""
    days = by_day(kpi_rows)
    runs = ordered_runs(summaries)
    sections = [
        _header(meta, days, runs),
        _trend_section(days),
        _day_section(days),
        _top_section(days),
        _quarantine_section(runs),
        _runs_section(runs),
    ]
    body = "\n".join(sections)
    # Charts need plotly.js (1.2 MB): only when there is one to draw.
    bundle = _plotly_bundle() if _CHART in body else ""
    return _page(f"Music KPI report — {meta.generated_at:%Y-%m-%d %H:%M}", bundle, body)


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


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# --- tables and their CSV --------------------------------------------------------------------


def _shown(column: Column, value: object) -> str:
    """A cell as the table shows it (markup)."""
    if isinstance(value, Cell):
        return value.markup
    if column.digits == 0:
        return _int(value)
    if column.digits is not None:
        return _num(value, column.digits)
    return _e(DASH if value is None or value == "" else value)


def _exported(column: Column, value: object) -> str:
    """A cell as the CSV holds it: the figure shown, without thousands separators; a text
    that starts like a spreadsheet formula gets a leading apostrophe (as the local
    runner's CSV for people: local_runner.databases.FORMULA_START)."""
    if isinstance(value, Cell):
        value = value.text
    if value is None or value == "":
        return ""
    if column.digits is not None:
        return f"{float(str(value)):.{column.digits}f}"
    text = str(value)
    return "'" + text if re.match(FORMULA_START, text) else text


def _csv_link(file_name: str, columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> str:
    """A download of the table as CSV, carried by the link itself (nothing is fetched)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    writer.writerows([_exported(c, v) for c, v in zip(columns, row, strict=True)] for row in rows)
    href = "data:text/csv;charset=utf-8," + quote(out.getvalue(), safe=",.:;()-_/")
    return (
        f'<a class="csv" download="{_e(file_name)}" href="{_e(href)}">'
        f"Download as CSV ({_e(file_name)})</a>"
    )


def _table(
    columns: Sequence[Column],
    rows: Iterable[Sequence[object]],
    *,
    export: str,
    name: str = "",
) -> str:
    """A table (numeric columns right-aligned), one line per column saying what it holds,
    and its CSV download (``export``: the file's name)."""
    rows = list(rows)
    num = [" class=num" if c.numeric else "" for c in columns]
    head = "".join(f"<th{n}>{_e(c.name)}</th>" for c, n in zip(columns, num, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f"<td{n}>{_shown(c, v)}</td>" for c, n, v in zip(columns, num, row, strict=True))
        + "</tr>"
        for row in rows
    )
    notes = "".join(f"<dt>{_e(c.name)}</dt><dd>{_e(c.means)}</dd>" for c in columns)
    return (
        f'<div class="tablebox {_e(name)}"><div class="wide"><table><thead><tr>{head}</tr>'
        f'</thead><tbody>{body}</tbody></table><dl class="columns">{notes}</dl></div>'
        f'<p class="export">{_csv_link(export, columns, rows)}</p></div>'
    )


# --- charts ----------------------------------------------------------------------------------

_CHART = '<div class="chart"'


def _json_in_script(value: str) -> str:
    """JSON that no text in it can end its <script> element or open a comment."""
    return value.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _chart(fig: go.Figure, name: str, height: int) -> str:
    """A chart's place and its figure as JSON; the page's script draws it once in sight."""
    fig.update_layout(template=_TEMPLATE, height=height)
    figure = _json_in_script(fig.to_json())
    chart_id = f"chart-{_e(name)}"
    return (
        f'{_CHART} id="{chart_id}" style="height:{height}px"></div>'
        f'<script type="application/json" id="{chart_id}-figure">{figure}</script>'
    )


_DAY_MS = 86_400_000
_DATE_TICKS = 6  # at most, whatever the number of dates: level labels at 30 dates on a phone


def _date_axis(fig: go.Figure, dates: Sequence[str], title: str) -> None:
    """A date axis of whole days (ISO ``dates``, oldest first): a tick every day, or every
    few days, never at noon; half a day of room on either side for the bars."""
    first, last = dt.date.fromisoformat(dates[0]), dt.date.fromisoformat(dates[-1])
    span = (last - first).days + 1
    fig.update_xaxes(
        type="date",
        title_text=title,
        tickformat="%b %d",
        tickangle=0,
        tick0=dates[0],
        dtick=_DAY_MS * -(-span // _DATE_TICKS),
        range=[
            f"{first - dt.timedelta(days=1)} 12:00",
            f"{last} 12:00",
        ],
    )


# --- sections --------------------------------------------------------------------------------


def _header(meta: Meta, days: list[Day], runs: list[Row]) -> str:
    plays = sum(day.plays for day in days)
    span = f"{days[-1].date} to {days[0].date}" if days else "none"
    last = runs[-1] if runs else {}
    started = run_time(last)
    cards = [
        ("days", f"{len(days):,}", span),
        ("plays", f"{plays:,}", "valid plays, all days, each play once (hourly rows)"),
        ("runs", f"{len(runs):,}", f"last {last['run_id']}" if last else "no run summaries"),
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
        "repository), and the lines under each table. Plays count each valid play once; "
        "genre listens count a play once in each genre of its track, so they add up to "
        "more.</p>"
        f'<div class="cards">{card_html}</div></header>'
    )


def _busiest(day: Day) -> tuple[str | None, str | None]:
    busiest = day.busiest
    if busiest is None:
        return None, None
    return f"{busiest.hour:02d}:00 ({busiest.plays:,} plays)", busiest.top_artist


def _trend_section(days: list[Day]) -> str:
    title = '<section id="trend"><h2>Across days</h2>'
    if not days:
        return title + _note("The warehouse holds no KPI rows yet.") + "</section>"
    oldest_first = list(reversed(days))
    fig = go.Figure(
        go.Bar(
            x=[day.date for day in oldest_first],
            y=[day.plays for day in oldest_first],
            name="plays",
            customdata=[
                [
                    day.genre_listens,
                    _label(day.genres[0].get("track_genre") if day.genres else DASH),
                ]
                for day in oldest_first
            ],
            hovertemplate="%{x|%Y-%m-%d}: %{y:,} plays<br>%{customdata[0]:,} genre listens; "
            "most listened genre %{customdata[1]}<extra></extra>",
        )
    )
    fig.update_layout(title="Plays per day (each play once)", yaxis_title="plays")
    _date_axis(fig, [day.date for day in oldest_first], "date (UTC)")
    rows = []
    for day in days:
        hour, artist = _busiest(day)
        link = f'<a href="#day-{_e(day.date)}" data-day="{_e(day.date)}">{_e(day.date)}</a>'
        rows.append(
            [
                Cell(link, day.date),
                day.plays,
                day.genre_listens,
                len(day.genres),
                day.genres[0].get("track_genre") if day.genres else None,
                hour,
                artist,
            ]
        )
    return (
        title
        + _chart(fig, "trend", height=320)
        + _note("Newest first; a date opens that day below.")
        + _table(DAY_COLUMNS, rows, export="kpis-days.csv", name="days")
        + "</section>"
    )


def _day_section(days: list[Day]) -> str:
    title = '<section id="day"><h2>One day</h2>'
    if not days:
        return title + _note("No date to show.") + "</section>"
    options = "".join(
        f'<option value="{_e(day.date)}">{_e(day.date)} — {_e(_plural(day.plays, "play"))}</option>'
        for day in days
    )
    choice = (
        '<p class="choice"><label for="day-choice">Date</label> '
        f'<select id="day-choice">{options}</select> '
        f'<span class="note">{_plural(len(days), "date")}, the most recent first</span></p>'
    )
    return title + choice + "".join(_day(day) for day in days) + "</section>"


def _day(day: Day) -> str:
    rows = day.genres
    top = f", most listened: {rows[0].get('track_genre')}" if rows else ""
    summary = (
        f"{day.date} — {_plural(day.plays, 'play')}; "
        f"{_plural(day.genre_listens, 'genre listen')} in {_plural(len(rows), 'genre')}{top}"
    )
    if rows:
        genres = (
            '<div class="grid">'
            + _table(
                GENRE_COLUMNS,
                (
                    [
                        r.get("track_genre"),
                        r.get("listen_count"),
                        r.get("avg_track_duration_sec"),
                        r.get("popularity_index"),
                        r.get("most_popular_track"),
                    ]
                    for r in rows
                ),
                export=f"kpis-{day.date}-genres.csv",
                name="genres",
            )
            + f"<div>{_genre_chart(day.date, rows)}</div></div>"
        )
    else:
        genres = _note("No genre KPIs for this date.")
    if day.hourly:
        hours = (
            '<div class="grid">'
            + _table(
                HOUR_COLUMNS,
                (
                    [f"{h.hour:02d}:00", h.plays, h.listeners, h.top_artist, h.diversity]
                    for h in day.hours
                ),
                export=f"kpis-{day.date}-hours.csv",
                name="hours",
            )
            + f"<div>{_hourly_chart(day)}</div></div>"
        )
        artists = top_artists([day], TOP_N)
        hours += _note(
            "Top artists of the day (hours at the top): "
            + ", ".join(f"{a.artist} ({a.hours} h)" for a in artists)
            + "."
        )
    else:
        hours = _note("No hourly KPIs for this date.")
    loads = day.loaded_by
    return (
        f'<article class="day" data-date="{_e(day.date)}" id="day-{_e(day.date)}">'
        f"<h3>{_e(summary)}</h3>"
        + (_note(f"Loaded by {', '.join(loads)}.") if loads else "")
        + "<h4>Genres</h4>"
        + genres
        + "<h4>Hours (UTC)</h4>"
        + hours
        + "</article>"
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
            hovertemplate="%{y}: %{x:,} genre listens<br>popularity %{customdata[0]:.1f}"
            "<br>%{customdata[1]}<extra></extra>",
        )
    )
    fig.update_layout(title=f"Top {len(top)} genres by genre listens", xaxis_title="genre listens")
    return _chart(fig, f"genres-{day}", height=90 + 30 * len(top))


def _hourly_chart(day: Day) -> str:
    """The day's 24 hours: plays and unique listeners, the diversity on its own axis."""
    hours = day.hours
    x = [h.hour for h in hours]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[h.plays for h in hours],
            name="plays",
            mode="lines+markers",
            customdata=[_label(h.top_artist or DASH) for h in hours],
            hovertemplate="%{y:,} plays; top artist %{customdata}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(x=x, y=[h.listeners or 0 for h in hours], name="unique listeners", mode="lines")
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[h.diversity for h in hours],
            name="track diversity index",
            mode="lines",
            line={"dash": "dot"},
            connectgaps=False,
        ),
        secondary_y=True,
    )
    fig.update_layout(
        title="Plays and listeners per hour",
        hovermode="x unified",
        legend={"orientation": "h", "y": -0.2},
    )
    fig.update_xaxes(title_text="hour (UTC)", range=[-0.5, 23.5], dtick=3)
    fig.update_yaxes(title_text="per hour", secondary_y=False, rangemode="tozero")
    # Distinct tracks per play: at most 1. A fixed range keeps its ticks round (plotly would
    # otherwise align them to the plays axis: 0.053, 0.372...).
    top = max([1.0, *(h.diversity for h in hours if h.diversity is not None)])
    fig.update_yaxes(
        title_text="diversity index",
        range=[0, top * 1.05],
        tickmode="auto",
        showgrid=False,
        secondary_y=True,
    )
    return _chart(fig, f"hourly-{day.date}", height=380)


def _top_section(days: list[Day]) -> str:
    title = '<section id="top"><h2>Top artists and tracks, all dates</h2>'
    if not days:
        return title + _note("No KPI rows yet.") + "</section>"
    artists = top_artists(days, TOP_N)
    tracks = top_tracks(days, TOP_N)
    return (
        title
        + _note(
            "The KPI table counts plays per genre and per hour, not per artist or track: "
            "artists are ranked by the hours they topped, tracks by the genre-days they led."
        )
        + '<div class="grid">'
        + _table(
            ARTIST_COLUMNS,
            ([a.artist, a.hours, a.days, a.plays] for a in artists),
            export="top-artists.csv",
            name="artists",
        )
        + _table(
            TRACK_COLUMNS,
            (
                [t.track, t.genre_days, ", ".join(t.genres), t.genre_listens, t.track_id]
                for t in tracks
            ),
            export="top-tracks.csv",
            name="tracks",
        )
        + "</div></section>"
    )


def _per_day_chart(
    series: dict[str, dict[str, int]], dates: list[str], name: str, title: str
) -> str:
    fig = go.Figure(
        [
            go.Bar(x=dates, y=[by_date.get(d, 0) for d in dates], name=_label(reason))
            for reason, by_date in series.items()
        ]
    )
    fig.update_layout(barmode="relative", title=title, yaxis_title="count", showlegend=True)
    _date_axis(fig, dates, "date the runs started (UTC)")
    highest = max(sum(by_date.get(d, 0) for by_date in series.values()) for d in dates)
    if highest <= 10:  # whole counts: no 0.2 ticks
        fig.update_yaxes(dtick=1)
    return _chart(fig, name, height=380)


def _quarantine_section(runs: list[Row]) -> str:
    title = '<section id="quarantine"><h2>Quarantined rows and files</h2>'
    if not runs:
        return title + _note("No run summaries.") + "</section>"
    parts = [
        title,
        _note(
            "Per UTC date the runs started on, by reason; the rows a replay of the quarantine "
            "accepted since go below zero on the date of the replay."
        ),
    ]
    dates = sorted({d for d in map(run_date, runs) if d})
    rows = per_run_day(runs, dict.fromkeys(ROW_FIELDS, ""))
    accepted = per_run_day(runs, {ACCEPTED_FIELD: ""})
    if accepted:
        total = {d: -sum(by_reason.get(d, 0) for by_reason in accepted.values()) for d in dates}
        rows["accepted by a replay"] = total
    files = per_run_day(runs, _FILE_SERIES)
    for series, name, what in (
        (rows, "rows-quarantined", "Rows quarantined"),
        (files, "files-quarantined", "Files quarantined or unreadable"),
    ):
        if dates and any(any(by_date.values()) for by_date in series.values()):
            parts.append(_per_day_chart(series, dates, name, f"{what} per day"))
        else:
            parts.append(_note(f"{what}: none in any run."))
    timeless = [str(run.get("run_id")) for run in runs if run_date(run) is None]
    if timeless:
        parts.append(
            _note(
                f"{_plural(len(timeless), 'run')} with no start time "
                f"{'is' if len(timeless) == 1 else 'are'} not charted ({', '.join(timeless)})."
            )
        )
    totals = quarantine_totals(runs)
    if totals:
        row_totals = [t for t in totals if t.what == "row"]
        quarantined = sum(t.quarantined for t in row_totals)
        since = sum(t.accepted or 0 for t in row_totals)
        parts.append(
            "<h3>Totals over all runs</h3>"
            + _note(
                f"{_plural(quarantined - since, 'row')} still quarantined "
                f"({since:,} of {quarantined:,} accepted since by a replay)."
            )
            + _table(
                QUARANTINE_COLUMNS,
                ([t.what, t.reason, t.quarantined, t.accepted, t.still, t.runs] for t in totals),
                export="quarantine.csv",
                name="totals",
            )
        )
    return "".join(parts) + "</section>"


def _status(run: Row) -> Cell:
    text = str(run.get("status") or DASH)
    tone = (
        "good"
        if text in _GOOD
        else "quiet"
        if text in _QUIET
        else "bad"
        if text in {"failed", "files_rejected"}
        else ""
    )
    why = _failure(run)
    markup = f'<span class="status {tone}">{_e(text)}</span>'
    if why:
        markup += f'<div class="why">{_e(why)}</div>'
    return Cell(markup, f"{text}: {why}" if why else text)


def _failure(run: Row) -> str:
    """Where and why a failed run stopped (its outcome document: the alert's fields)."""
    if run.get("status") != "failed":
        return ""
    where = str(run.get("failed_state") or "")
    error = str(run.get("error") or "")
    message = _cause(run.get("cause"))
    text = ": ".join(part for part in (where, error) if part) or "no error recorded"
    return f"{text} — {message}" if message else text


def _cause(cause: object) -> str:
    """A failure's message: a Lambda error's errorMessage, else the cause as it is; cut."""
    if not cause:
        return ""
    text = error_message(str(cause))
    return text if len(text) <= _CAUSE_CHARS else text[: _CAUSE_CHARS - 1] + "…"


def _kind(run: Row) -> str | None:
    kind = run.get("kind")
    if kind and run.get("kind_from") == "records":
        return f"{kind} (from its records)"
    return str(kind) if kind else None


def _started(run: Row) -> str:
    """started_at, else the time a local run id carries; in UTC (the column says so)."""
    moment = run_time(run)
    return _when(moment.isoformat()).removesuffix(" UTC") if moment else DASH


def _runs_section(runs: list[Row]) -> str:
    title = '<section id="runs"><h2>Runs</h2>'
    if not runs:
        return title + _note("No run summaries found.") + "</section>"
    rows = [
        [
            Cell(f"<code>{_e(run.get('run_id'))}</code>", str(run.get("run_id"))),
            _kind(run),
            _status(run),
            _started(run),
            duration(run),
            run.get("files_processed"),
            valid_plays(run),
            rows_quarantined(run),
            run.get("kpi_rows_loaded"),
            _dates(run.get("kpi_dates")),
        ]
        for run in reversed(runs)
    ]
    return (
        title
        + _note("Newest first.")
        + _table(RUN_COLUMNS, rows, export="runs.csv", name="runs")
        + "</section>"
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
    """plotly.js, inline, once, before the page's script; MathJax stays off (it would be
    fetched)."""
    return (
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f'<script charset="utf-8">{plotly_js()}</script>'
    )


# One day at a time: the list shows the chosen date's part and hides the others (without
# JavaScript, every date shows). A chart is drawn from its figure once it is in sight, and
# resized when it comes back into sight.
_SCRIPT = """<script>
(function () {
  var config = %(config)s;
  function draw() {
    if (!window.Plotly) { return; }
    document.querySelectorAll("div.chart").forEach(function (div) {
      if (div.offsetParent === null) { return; }
      if (div.dataset.drawn) { Plotly.Plots.resize(div); return; }
      var figure = JSON.parse(document.getElementById(div.id + "-figure").textContent);
      Plotly.newPlot(div, figure.data, figure.layout, config);
      div.dataset.drawn = "1";
    });
  }
  var choice = document.getElementById("day-choice");
  function show(date) {
    choice.value = date;
    document.querySelectorAll("article.day").forEach(function (day) {
      day.hidden = day.dataset.date !== date;
    });
    draw();
  }
  if (choice) {
    choice.addEventListener("change", function () { show(choice.value); });
    document.querySelectorAll("a[data-day]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        show(link.dataset.day);
        document.getElementById("day").scrollIntoView();
      });
    });
    show(choice.value);
  } else {
    draw();
  }
})();
</script>"""

_CSS = """
:root { color-scheme: light; --ink: #111827; --muted: #6b7280; --line: #e5e7eb; }
* { box-sizing: border-box; }
body {
  margin: 0 auto; max-width: 1400px; padding: 24px; color: var(--ink); background: #f9fafb;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 28px 0 12px; font-size: 20px; }
h3 { font-size: 16px; margin: 16px 0 8px; }
h4 { font-size: 14px; margin: 16px 0 6px; color: var(--muted); text-transform: uppercase; }
code {
  font: 12px ui-monospace, SFMono-Regular, Menlo, monospace;
  background: #f3f4f6; padding: 1px 4px; border-radius: 4px;
}
a { color: #1d4ed8; }
.meta, .note { color: var(--muted); }
.cards {
  display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr));
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
.choice { font-size: 15px; }
.choice select { font: inherit; padding: 4px 8px; margin: 0 8px; }
article.day { border-top: 1px solid var(--line); margin-top: 8px; }
.grid {
  display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
  gap: 20px; align-items: start; margin-top: 8px;
}
@media (max-width: 900px) { .grid { grid-template-columns: minmax(0, 1fr); } }
.wide { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td {
  text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap;
}
th { background: #f3f4f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #f9fafb; }
@media (max-width: 600px) {
  body { padding: 8px; }
  section { padding: 4px 10px 12px; }
  th, td { white-space: normal; padding: 4px; }
}
.runs td:nth-child(3) { white-space: normal; min-width: 160px; }
.runs td:last-child { white-space: normal; min-width: 120px; }
.status { padding: 1px 8px; border-radius: 999px; background: #e5e7eb; font-size: 12px; }
.status.good { background: #d1fae5; color: #065f46; }
.status.quiet { background: #e0e7ff; color: #3730a3; }
.status.bad { background: #fee2e2; color: #991b1b; }
.why { font-size: 12px; color: #991b1b; overflow-wrap: anywhere; }
dl.columns {
  display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 12px;
  margin: 8px 0 0; font-size: 12px; color: var(--muted);
}
dl.columns dt { font-weight: 600; }
dl.columns dd { margin: 0; }
.export { margin: 6px 0 0; font-size: 12px; }
"""


def _page(title: str, bundle: str, body: str) -> str:
    script = _SCRIPT % {"config": json.dumps(_CONFIG)}
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style>\n{bundle}\n</head>\n"
        f"<body>\n{body}\n{script}\n</body></html>\n"
    )
