"""An independent, deliberately plain reference computation of the KPIs in docs/kpis.md.

The pipeline computes KPIs with DuckDB SQL; this module recomputes them with the
standard library only, one readable step per rule of the spec, so end-to-end tests
have a second opinion to compare against. It imports nothing from the project on
purpose: a shared helper would make both computations wrong in the same way.

Where the spec is silent the team's decided reading is implemented (see the module
tests for one hand-computed case per rule). Averages and ratios are computed
exactly with ``Fraction`` and rounded to ``float`` once, so the reference value is
the correctly rounded one and the pipeline is compared against it with a tolerance.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

REQUIRED_STREAM_COLUMNS = ("user_id", "track_id", "listen_time")

# File reasons, in the order the checks run.
NOT_UTF8 = "not_utf8"
EMPTY_FILE = "empty_file"
UNREADABLE_CSV = "unreadable_csv"
MISSING_COLUMNS = "missing_columns"
AMBIGUOUS_COLUMNS = "ambiguous_columns"

# Row reasons, in the order the checks run (the first failing one wins).
MALFORMED_ROW = "malformed_row"
INVALID_USER_ID = "invalid_user_id"
MISSING_TRACK_ID = "missing_track_id"
INVALID_LISTEN_TIME = "invalid_listen_time"
UNKNOWN_USER_ID = "unknown_user_id"
UNKNOWN_TRACK_ID = "unknown_track_id"

# ``[0-9]`` rather than ``\d``: ``\d`` also accepts non-ASCII (e.g. Arabic-Indic) digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_LISTEN_TIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"[Tt ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,6}))?"
    r"(?:(?P<zulu>[Zz])"
    r"|(?P<sign>[+-])(?P<off_hour>[0-9]{2})(?::?(?P<off_minute>[0-9]{2}))?)?"
)


# A cleaned songs row: source columns as text, popularity and duration_ms as int.
Song = dict[str, Any]


class Play(NamedTuple):
    """One valid play: the identity used for duplicates within and across files."""

    user_id: int
    track_id: str
    listened_at: datetime  # aware, UTC


@dataclass
class Reference:
    """Everything the pipeline publishes for a set of input files, recomputed."""

    genre_rows: list[dict[str, object]]
    hourly_rows: list[dict[str, object]]
    plays_valid: int
    duplicates: int
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    files_quarantined: dict[str, str] = field(default_factory=dict)
    files_already_processed: list[str] = field(default_factory=list)


# --- inputs -------------------------------------------------------------------------


# "Surrounding whitespace" is ASCII whitespace: space, tab, CR, LF, form feed, vertical tab.
_ASCII_WHITESPACE = " \t\r\n\f\v"


def strip(text: str) -> str:
    """Trim ASCII whitespace from both ends (not every Unicode space, as str.strip would)."""
    return text.strip(_ASCII_WHITESPACE)


def _is_integer(text: str) -> bool:
    return _INTEGER.fullmatch(text) is not None


def load_users(path: Path) -> set[int]:
    """Return the ids of ``users.csv``; a row whose id is not an integer is skipped."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        ids = set()
        for row in csv.DictReader(handle):
            text = strip(row.get("user_id") or "")
            if _is_integer(text):
                ids.add(int(text))
    return ids


def _song_is_clean(row: dict[str, str]) -> bool:
    """Whether a (trimmed) songs row survives extract; the others are quarantined there."""
    popularity = strip(row["popularity"])
    duration_ms = strip(row["duration_ms"])
    return (
        row["track_id"] != ""
        and row["track_genre"] != ""
        # keys must fit the warehouse (bytes, as Redshift counts): quarantined, never cut
        and len(row["track_id"].encode()) <= 256
        and len(row["track_genre"].encode()) <= 255
        and _is_integer(popularity)
        and 0 <= int(popularity) <= 100
        and _is_integer(duration_ms)
        and int(duration_ms) >= 0
    )


def _song_id_rank(row: dict[str, str], position: int) -> tuple[int, int, int]:
    """Sort key choosing which copy of a (track_id, track_genre) pair is kept.

    The smallest integer ``id`` wins; ``id`` is the table's integer key, but should
    one not be an integer it ranks after every integer id, ties in file order.
    """
    text = strip(row["id"])
    if _is_integer(text):
        return (0, int(text), position)
    return (1, 0, position)


def load_songs(path: Path) -> list[Song]:
    """Return the cleaned songs rows, one per (track_id, track_genre).

    Each row keeps every source column as text, except ``track_id`` and
    ``track_genre`` (trimmed) and ``popularity`` and ``duration_ms`` (int).
    """
    with path.open(encoding="utf-8-sig", newline="") as handle:
        # A short row leaves ``None`` in missing columns: read it as empty text.
        raw_rows = [
            {key: (value or "") for key, value in row.items() if key is not None}
            for row in csv.DictReader(handle)
        ]
    kept: dict[tuple[str, str], tuple[tuple[int, int, int], dict[str, str]]] = {}
    for position, raw in enumerate(raw_rows):
        row = {
            **raw,
            "track_id": strip(raw["track_id"]),
            "track_genre": strip(raw["track_genre"]),
        }
        if not _song_is_clean(row):
            continue
        pair = (row["track_id"], row["track_genre"])
        rank = _song_id_rank(row, position)
        if pair not in kept or rank < kept[pair][0]:
            kept[pair] = (rank, row)
    cleaned = sorted(kept.values(), key=lambda ranked: ranked[0])
    return [
        {
            **row,
            "popularity": int(strip(row["popularity"])),
            "duration_ms": int(strip(row["duration_ms"])),
        }
        for _, row in cleaned
    ]


def split_artists(artists: str) -> set[str]:
    """The names credited by one ``artists`` value: split on ``;``, trimmed, no blanks, each
    kept to its first 255 bytes (what top_artists holds)."""
    return {_first_bytes(strip(name), 255) for name in artists.split(";") if strip(name)}


def _first_bytes(text: str, limit: int) -> str:
    return text.encode()[:limit].decode("utf-8", errors="ignore")


# --- stream rows --------------------------------------------------------------------


def parse_listen_time(text: str) -> datetime | None:
    """Parse a ``listen_time`` into an aware UTC datetime, or ``None`` if it is invalid.

    No offset means UTC. A value whose UTC instant falls outside ``datetime``'s
    range (years 1-9999) is invalid too, since it has no UTC date.
    """
    match = _LISTEN_TIME.fullmatch(strip(text))
    if match is None:
        return None
    parts = match.groupdict()
    offset = timedelta(0)
    if parts["sign"] is not None:
        off_hour = int(parts["off_hour"])
        off_minute = int(parts["off_minute"] or "0")
        if off_hour > 23 or off_minute > 59:
            return None
        offset = timedelta(hours=off_hour, minutes=off_minute)
        if parts["sign"] == "-":
            offset = -offset
    # ".5" is half a second: pad the digits on the right to microseconds.
    microsecond = int((parts["fraction"] or "").ljust(6, "0"))
    try:
        local = datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"]),
            int(parts["minute"]),
            int(parts["second"]),
            microsecond,
            tzinfo=timezone(offset),
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        # Not a real date/time (hour 24, second 60, 30 February, year 0), or its UTC
        # instant leaves the representable range.
        return None


def classify_row(
    record: Sequence[str],
    header: Sequence[str],
    users: Collection[int],
    track_ids: Collection[str],
) -> Play | str:
    """Return the row's valid play, or the reason it is quarantined.

    ``header`` is the file's header with names trimmed and lower-cased; it must hold
    each required column exactly once. The first failing check wins.
    """
    if len(record) != len(header):
        return MALFORMED_ROW
    user_text = strip(record[header.index("user_id")])
    track_id = strip(record[header.index("track_id")])
    listen_text = record[header.index("listen_time")]
    if not _is_integer(user_text):
        return INVALID_USER_ID
    if track_id == "":
        return MISSING_TRACK_ID
    listened_at = parse_listen_time(listen_text)
    if listened_at is None:
        return INVALID_LISTEN_TIME
    if int(user_text) not in users:
        return UNKNOWN_USER_ID
    if track_id not in track_ids:
        return UNKNOWN_TRACK_ID
    return Play(int(user_text), track_id, listened_at)


# --- stream files -------------------------------------------------------------------


@dataclass
class FileResult:
    """What one stream file contributes: a file reason, or its rows' outcomes."""

    reason: str | None = None
    plays: list[Play] = field(default_factory=list)  # distinct, in file order
    duplicates: int = 0
    rows_quarantined: Counter[str] = field(default_factory=Counter)


def read_stream_file(
    content: bytes, users: Collection[int], track_ids: Collection[str]
) -> FileResult:
    """Check one stream file whole, then classify its rows."""
    try:
        # "utf-8-sig" accepts and strips a leading BOM and reads the rest as UTF-8.
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return FileResult(reason=NOT_UTF8)
    if strip(text) == "":
        return FileResult(reason=EMPTY_FILE)
    try:
        # Strict RFC 4180: a quoted field that never closes, or text right after a closing
        # quote, makes the whole file unreadable; a quote inside an unquoted field is text.
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        return FileResult(reason=UNREADABLE_CSV)
    # A blank line reads as []: it is no record at all, so not counted anywhere.
    records = [record for record in records if record]
    header = [strip(name).lower() for name in records[0]]
    if any(column not in header for column in REQUIRED_STREAM_COLUMNS):
        return FileResult(reason=MISSING_COLUMNS)
    if any(header.count(column) > 1 for column in REQUIRED_STREAM_COLUMNS):
        return FileResult(reason=AMBIGUOUS_COLUMNS)

    result = FileResult()
    seen: set[Play] = set()
    for record in records[1:]:
        outcome = classify_row(record, header, users, track_ids)
        if isinstance(outcome, str):
            result.rows_quarantined[outcome] += 1
        elif outcome in seen:
            result.duplicates += 1
        else:
            seen.add(outcome)
            result.plays.append(outcome)
    return result


# --- KPIs ---------------------------------------------------------------------------


def genre_kpis(plays: Collection[Play], songs: list[Song]) -> list[dict[str, object]]:
    """One row per (kpi_date, track_genre) with at least one play, per the spec."""
    # track_id -> genre -> that genre's cleaned row.
    rows_by_track: dict[str, dict[str, Song]] = defaultdict(dict)
    for song in songs:
        rows_by_track[song["track_id"]][song["track_genre"]] = song

    # (kpi_date, genre) -> track_id -> plays: a play counts once in each of its genres.
    plays_by_genre: dict[tuple[date, str], Counter[str]] = defaultdict(Counter)
    for play in plays:
        for genre in rows_by_track[play.track_id]:
            plays_by_genre[(play.listened_at.date(), genre)][play.track_id] += 1

    # L: the largest listen_count of any genre on the date.
    leading_count: dict[date, int] = defaultdict(int)
    for (kpi_date, _), per_track in plays_by_genre.items():
        leading_count[kpi_date] = max(leading_count[kpi_date], sum(per_track.values()))

    rows = []
    for (kpi_date, genre), per_track in sorted(plays_by_genre.items()):
        # Each value comes from this genre's row of the track.
        genre_rows = {track_id: rows_by_track[track_id][genre] for track_id in per_track}
        popularity = {track_id: row["popularity"] for track_id, row in genre_rows.items()}
        listen_count = sum(per_track.values())
        avg_duration = Fraction(
            sum(row["duration_ms"] for row in genre_rows.values()), 1000 * len(genre_rows)
        )
        # P: play-weighted mean popularity over the genre's plays.
        mean_popularity = Fraction(
            sum(count * popularity[track_id] for track_id, count in per_track.items()),
            listen_count,
        )
        popularity_index = 100 * (
            Fraction(1, 2) * Fraction(listen_count, leading_count[kpi_date])
            + Fraction(1, 2) * mean_popularity / 100
        )
        # Most plays, then higher popularity, then the smaller track_id.
        top_track = min(per_track, key=lambda t: (-per_track[t], -popularity[t], t))
        rows.append(
            {
                "kpi_date": kpi_date,
                "track_genre": genre,
                "listen_count": listen_count,
                "avg_track_duration_sec": float(avg_duration),
                "popularity_index": float(popularity_index),
                "most_popular_track": genre_rows[top_track]["track_name"],
                "most_popular_track_id": top_track,
            }
        )
    return rows


def hourly_kpis(plays: Collection[Play], songs: list[Song]) -> list[dict[str, object]]:
    """One row per (kpi_date, stream_hour) with at least one play, per the spec."""
    # An artist credited on any row of the track is credited for its plays.
    artists_by_track: dict[str, set[str]] = defaultdict(set)
    for song in songs:
        artists_by_track[song["track_id"]] |= split_artists(song["artists"])

    plays_by_hour: dict[tuple[date, int], list[Play]] = defaultdict(list)
    for play in plays:
        plays_by_hour[(play.listened_at.date(), play.listened_at.hour)].append(play)

    rows = []
    for (kpi_date, stream_hour), hour_plays in sorted(plays_by_hour.items()):
        artist_plays: Counter[str] = Counter()
        for play in hour_plays:
            artist_plays.update(artists_by_track[play.track_id])  # a set: once per play
        # Most plays, then the smallest name; None if no play credits any artist.
        top_artist = min(artist_plays, key=lambda name: (-artist_plays[name], name), default=None)
        rows.append(
            {
                "kpi_date": kpi_date,
                "stream_hour": stream_hour,
                "listen_count": len(hour_plays),
                "unique_listeners": len({play.user_id for play in hour_plays}),
                "top_artists": top_artist,
                "track_diversity_index": float(
                    Fraction(len({play.track_id for play in hour_plays}), len(hour_plays))
                ),
            }
        )
    return rows


def compute_reference(users_csv: Path, songs_csv: Path, stream_files: Sequence[Path]) -> Reference:
    """Recompute the run summary and every KPI row for these inputs, files in order."""
    users = load_users(users_csv)
    songs = load_songs(songs_csv)
    track_ids = {song["track_id"] for song in songs}

    reference = Reference(genre_rows=[], hourly_rows=[], plays_valid=0, duplicates=0)
    rows_quarantined: Counter[str] = Counter()
    seen_contents: set[bytes] = set()
    all_plays: set[Play] = set()
    for path in stream_files:
        content = path.read_bytes()
        result = read_stream_file(content, users, track_ids)
        if result.reason is not None:
            # A bad file is quarantined each time it comes, whatever came before.
            reference.files_quarantined[path.name] = result.reason
            continue
        # Same bytes as an earlier accepted file: already processed, counted once.
        if content in seen_contents:
            reference.files_already_processed.append(path.name)
            continue
        seen_contents.add(content)
        reference.plays_valid += len(result.plays)
        reference.duplicates += result.duplicates
        rows_quarantined.update(result.rows_quarantined)
        # KPIs use each distinct play once, whichever files it came in.
        all_plays.update(result.plays)

    reference.rows_quarantined = dict(rows_quarantined)
    reference.genre_rows = genre_kpis(all_plays, songs)
    reference.hourly_rows = hourly_kpis(all_plays, songs)
    return reference
