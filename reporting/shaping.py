"""What the page shows, computed from the KPI rows and the run summaries (no markup here).

The KPI table holds a row per (date, genre) and per (date, hour) (docs/kpis.md): a date's
plays are its hourly rows' ``listen_count`` summed (each play once), its genre listens the
genre rows' (a play once per genre of its track). The table holds no play count per track
or per artist, so the top-N ranks what it does hold: the hours an artist topped, the
genre-days a track led.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, Any]
DASH = "—"
_LOCAL_RUN_TIME = re.compile(r"(\d{8}T\d{6})")


def _count(value: object) -> int:
    return int(str(value)) if value not in (None, "") else 0


# --- the KPI rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hour:
    """One hour of a date; an hour without plays has no row, and is 0 plays here."""

    hour: int
    plays: int = 0
    listeners: int | None = None
    top_artist: str | None = None
    diversity: float | None = None


@dataclass(frozen=True)
class Day:
    """One kpi_date's rows: its genre rows by listen_count desc, its hourly rows by hour.

    ``plays`` counts each valid play once (the hourly rows' listen_count, summed);
    ``genre_listens`` counts a play once per genre of its track (docs/kpis.md), so it is
    larger than ``plays`` as soon as a multi-genre track is played."""

    date: str
    genres: list[Row] = field(default_factory=list)
    hourly: list[Row] = field(default_factory=list)

    @property
    def plays(self) -> int:
        return sum(_count(r.get("listen_count")) for r in self.hourly)

    @property
    def genre_listens(self) -> int:
        return sum(_count(r.get("listen_count")) for r in self.genres)

    @property
    def hours(self) -> list[Hour]:
        """All 24 hours, those without plays included (the curve dips to 0 there)."""
        found = {int(r["stream_hour"]): r for r in self.hourly if r.get("stream_hour") is not None}
        hours = []
        for hour in range(24):
            r = found.get(hour)
            if r is None:
                hours.append(Hour(hour))
                continue
            diversity = r.get("track_diversity_index")
            listeners = r.get("unique_listeners")
            hours.append(
                Hour(
                    hour,
                    _count(r.get("listen_count")),
                    None if listeners is None else int(listeners),
                    r.get("top_artists"),
                    None if diversity is None else float(diversity),
                )
            )
        return hours

    @property
    def busiest(self) -> Hour | None:
        """The hour with the most plays (the earliest of equals); None without plays."""
        hours = [h for h in self.hours if h.plays]
        return max(hours, key=lambda h: (h.plays, -h.hour)) if hours else None

    @property
    def loaded_by(self) -> list[str]:
        return sorted({str(r["run_id"]) for r in (*self.genres, *self.hourly) if r.get("run_id")})


def by_day(kpi_rows: Iterable[Row]) -> list[Day]:
    """Every date with KPI rows, the most recent first (a date with hourly rows only, or
    genre rows only, is listed too)."""
    days: dict[str, Day] = {}
    for row in kpi_rows:
        date = str(row.get("kpi_date"))[:10]
        day = days.setdefault(date, Day(date))
        if row.get("kpi_type") == "genre":
            day.genres.append(row)
        elif row.get("kpi_type") == "hourly":
            day.hourly.append(row)
    for day in days.values():
        day.genres.sort(key=lambda r: (-_count(r.get("listen_count")), str(r.get("track_genre"))))
        day.hourly.sort(key=lambda r: _count(r.get("stream_hour")))
    return sorted(days.values(), key=lambda d: d.date, reverse=True)


@dataclass(frozen=True)
class ArtistRank:
    """An artist by the hours it was the most played artist of (top_artists)."""

    artist: str
    hours: int
    days: int
    plays: int  # all plays of those hours (the artist's own are not in the table)


def top_artists(days: Sequence[Day], n: int) -> list[ArtistRank]:
    """The ``n`` artists that topped the most hours (then the most plays, then by name)."""
    hours: Counter[str] = Counter()
    plays: Counter[str] = Counter()
    dates: dict[str, set[str]] = {}
    for day in days:
        for hour in day.hours:
            if hour.top_artist:
                hours[hour.top_artist] += 1
                plays[hour.top_artist] += hour.plays
                dates.setdefault(hour.top_artist, set()).add(day.date)
    ranked = sorted(hours, key=lambda a: (-hours[a], -plays[a], a))[:n]
    return [ArtistRank(a, hours[a], len(dates[a]), plays[a]) for a in ranked]


@dataclass(frozen=True)
class TrackRank:
    """A track by the (date, genre) pairs it was the most played track of."""

    track: str
    track_id: str
    genre_days: int
    genres: list[str]
    genre_listens: int  # the listens of those genres on those dates


def top_tracks(days: Sequence[Day], n: int) -> list[TrackRank]:
    """The ``n`` tracks that led the most genre-days (then the most genre listens, then by
    name), told apart by track id (names are not unique)."""
    led: dict[str, list[Row]] = {}
    for day in days:
        for row in day.genres:
            key = row.get("most_popular_track_id") or row.get("most_popular_track")
            if key:
                led.setdefault(str(key), []).append(row)

    def rank(key: str) -> tuple[int, int, str]:
        rows = led[key]
        return (-len(rows), -sum(_count(r.get("listen_count")) for r in rows), name(key))

    def name(key: str) -> str:
        return str(led[key][0].get("most_popular_track") or key)

    return [
        TrackRank(
            name(key),
            key,
            len(led[key]),
            sorted({str(r.get("track_genre")) for r in led[key]}),
            sum(_count(r.get("listen_count")) for r in led[key]),
        )
        for key in sorted(led, key=rank)[:n]
    ]


# --- the run summaries -----------------------------------------------------------------------


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


def run_date(summary: Row) -> str | None:
    """The UTC date the run started on (None when unknown)."""
    moment = run_time(summary)
    return moment.astimezone(dt.UTC).date().isoformat() if moment else None


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


def counts(run: Row, field: str) -> dict[str, int]:
    """A {reason: n} summary field (a replay's or a revalidation's: ``replay.field``)."""
    part, _, name = field.rpartition(".")
    holder = run.get(part) if part else run
    found = holder.get(name) if isinstance(holder, Mapping) else None
    return {str(k): _count(v) for k, v in found.items()} if isinstance(found, Mapping) else {}


def rows_quarantined(summary: Row) -> int:
    return sum(counts(summary, "rows_quarantined").values())


def valid_plays(run: Row) -> object:
    """The plays a run accepted: its files', or the quarantined rows a replay accepted."""
    replay = run.get("replay")
    if isinstance(replay, Mapping) and replay.get("plays_valid"):
        return replay["plays_valid"]
    return run.get("plays_valid")


# Quarantined rows come from the stream files (rows_quarantined) and from revalidations
# (plays moved out of the accepted ones); a replay accepts some of them again, counted by
# the reason they were quarantined with (replay.rows_accepted).
ROW_FIELDS = ("rows_quarantined", "revalidation.plays_quarantined")
ACCEPTED_FIELD = "replay.rows_accepted"
# Whole files: quarantined, or left in landing because their storage class forbids reading.
FILE_FIELDS = {"files_quarantined_by_reason": "", "files_unreadable_by_reason": "unreadable: "}


@dataclass(frozen=True)
class QuarantineTotal:
    """One reason over all runs: how many were quarantined, accepted since, still there."""

    what: str  # "row" or "file"
    reason: str
    quarantined: int
    accepted: int | None  # by replays; None for files (never replayed)
    runs: int  # the runs that quarantined any

    @property
    def still(self) -> int:
        return self.quarantined - (self.accepted or 0)


def quarantine_totals(runs: Sequence[Row]) -> list[QuarantineTotal]:
    rows: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    row_runs: Counter[str] = Counter()
    files: Counter[str] = Counter()
    file_runs: Counter[str] = Counter()
    for run in runs:
        quarantined = Counter[str]()
        for name in ROW_FIELDS:
            quarantined.update(counts(run, name))
        rows.update(quarantined)
        row_runs.update(reason for reason, n in quarantined.items() if n)
        accepted.update(counts(run, ACCEPTED_FIELD))
        for name, prefix in FILE_FIELDS.items():
            found = {prefix + reason: n for reason, n in counts(run, name).items()}
            files.update(found)
            file_runs.update(reason for reason, n in found.items() if n)
    return [
        *(
            QuarantineTotal("row", reason, rows[reason], accepted[reason], row_runs[reason])
            for reason in sorted(rows | accepted)
        ),
        *(QuarantineTotal("file", r, files[r], None, file_runs[r]) for r in sorted(files)),
    ]


def per_run_day(runs: Sequence[Row], fields: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """{series: {UTC date the runs started on: n}} summed over each date's runs, for
    {reason: n} ``fields`` (field -> its series' prefix); runs of no known start left out."""
    series: dict[str, Counter[str]] = {}
    for run in runs:
        date = run_date(run)
        if date is None:
            continue
        for name, prefix in fields.items():
            for reason, n in counts(run, name).items():
                series.setdefault(prefix + reason, Counter())[date] += n
    return {name: dict(by_date) for name, by_date in sorted(series.items())}
