"""The competitors: what a user would write instead of the pipeline, in DuckDB or in Polars.

Each reads every stream CSV with typed columns, joins the users and songs and computes the
seven KPIs of KPIS.md: no quarantine, no content hash, no output files. They carry only
what the pipeline's numbers need on the bench's data, so that the bench compares equal
work (``make bench`` checks their KPIs against the pipeline's):

- rows that do not parse as typed (a field too many or too few, a user id or a time that
  is no number or no timestamp) are skipped, unknown users and tracks drop out of the
  joins, and a time without seconds (``2024-06-25 10:00``, which lenient parsers take) is
  not a timestamp;
- rows repeating (user_id, track_id, listen_time) are one play: the generator delivers
  0.5% of the plays twice, and the listen counts are wrong without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

# A KPI row as the check compares them: "genre <date> <genre>" or "hourly <date> <hour>" ->
# the row's values, in the order of these columns.
GENRE_COLUMNS = (
    "listen_count",
    "avg_track_duration_sec",
    "popularity_index",
    "most_popular_track",
    "most_popular_track_id",
)
HOURLY_COLUMNS = ("listen_count", "unique_listeners", "top_artists", "track_diversity_index")
KpiRows = dict[str, list[Any]]

_STREAM_COLUMNS = ("user_id", "track_id", "listen_time")

_DUCKDB_PLAYS = """
CREATE TABLE plays AS
WITH typed AS (
    SELECT
        CAST(user_id AS BIGINT) AS user_id,
        track_id,
        TRY_CAST(listen_time AS TIMESTAMPTZ) AS listen_time
    FROM read_csv($streams, header = true, ignore_errors = true, all_varchar = true)
    WHERE length(listen_time) >= 19
        AND user_id IN (SELECT user_id FROM read_csv($users, all_varchar = true, quote = '"'))
        AND track_id IN (SELECT track_id FROM read_csv($songs))
),
distinct_plays AS (
    SELECT DISTINCT * FROM typed WHERE listen_time IS NOT NULL
)
SELECT *, CAST(listen_time AS DATE) AS kpi_date, hour(listen_time) AS stream_hour
FROM distinct_plays
"""

_DUCKDB_GENRES = """
WITH songs AS (
    SELECT DISTINCT track_id, track_genre, track_name, popularity, duration_ms
    FROM read_csv($songs)
),
day_tracks AS (
    SELECT kpi_date, track_id, count(*) AS plays
    FROM plays GROUP BY ALL
),
genre_tracks AS (
    SELECT * FROM day_tracks JOIN songs USING (track_id)
),
genres AS (
    SELECT
        kpi_date, track_genre,
        sum(plays) AS listen_count,
        avg(duration_ms) / 1000.0 AS avg_track_duration_sec,
        sum(plays * popularity) / sum(plays) AS p,
        arg_min(track_name, (-plays, -popularity, track_id)) AS most_popular_track,
        arg_min(track_id, (-plays, -popularity, track_id)) AS most_popular_track_id
    FROM genre_tracks GROUP BY ALL
)
SELECT
    kpi_date, track_genre, listen_count, avg_track_duration_sec,
    100 * (0.5 * listen_count / max(listen_count) OVER (PARTITION BY kpi_date) + 0.5 * p / 100)
        AS popularity_index,
    most_popular_track, most_popular_track_id
FROM genres
"""

_DUCKDB_HOURS = """
WITH artists AS (
    SELECT DISTINCT track_id, trim(unnest(string_split(artists, ';'))) AS artist
    FROM read_csv($songs)
),
hour_tracks AS (
    SELECT kpi_date, stream_hour, track_id, count(*) AS plays
    FROM plays GROUP BY ALL
),
top_artists AS (
    SELECT kpi_date, stream_hour, arg_min(artist, (-plays, artist)) AS top_artists
    FROM (
        SELECT kpi_date, stream_hour, artist, sum(plays) AS plays
        FROM hour_tracks JOIN artists USING (track_id) GROUP BY ALL
    )
    GROUP BY ALL
),
listeners AS (
    SELECT kpi_date, stream_hour, count(DISTINCT user_id) AS unique_listeners
    FROM plays GROUP BY ALL
)
SELECT
    kpi_date, stream_hour, sum(plays) AS listen_count, any_value(unique_listeners),
    any_value(top_artists), count(*) / sum(plays) AS track_diversity_index
FROM hour_tracks JOIN listeners USING (kpi_date, stream_hour)
    JOIN top_artists USING (kpi_date, stream_hour)
GROUP BY kpi_date, stream_hour
"""


def duckdb_kpis(users_csv: str, songs_csv: str, streams: list[str]) -> dict[str, Any]:
    """The seven KPIs in one DuckDB, on every core, with no memory limit."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    files = {"streams": streams, "users": users_csv, "songs": songs_csv}
    con.execute(_DUCKDB_PLAYS, files)
    genres = con.execute(_DUCKDB_GENRES, {"songs": songs_csv}).fetchall()
    hours = con.execute(_DUCKDB_HOURS, {"songs": songs_csv}).fetchall()
    plays = con.execute("SELECT count(*) FROM plays").fetchone()
    return _result(int(plays[0]) if plays else 0, genres, hours)


def polars_kpis(users_csv: str, songs_csv: str, streams: list[str]) -> dict[str, Any]:
    """The seven KPIs in Polars' lazy engine, on every core."""
    import polars as pl

    users = pl.scan_csv(users_csv).select("user_id")
    songs = pl.scan_csv(songs_csv).select(
        "track_id", "track_genre", "track_name", "popularity", "duration_ms", "artists"
    )
    # Polars reads a row of a field too many or too few as a row (or fails): the script
    # splits the lines itself and keeps those of three fields.
    fields = pl.col("line").str.split_exact(",", 2).struct.rename_fields(list(_STREAM_COLUMNS))
    text = pl.col("listen_time").str.replace("T", " ").str.replace("Z", "+00:00")
    plays = (
        pl.scan_csv(
            streams,
            has_header=False,
            skip_rows=1,
            separator="\x1f",
            quote_char=None,
            schema={"line": pl.String},
        )
        .filter(pl.col("line").str.count_matches(",", literal=True) == 2)
        .select(fields.struct.unnest())
        .with_columns(
            user_id=pl.col("user_id").str.to_integer(strict=False),
            listen_time=pl.coalesce(
                text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f%#z", strict=False),
                text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False).dt.replace_time_zone(
                    "UTC"
                ),
            ),
        )
        .drop_nulls()
        .unique()
        .join(users, on="user_id", how="semi")
        .join(songs.select("track_id").unique(), on="track_id", how="semi")
        .with_columns(
            kpi_date=pl.col("listen_time").dt.date(), stream_hour=pl.col("listen_time").dt.hour()
        )
        .collect()
    )

    day_tracks = plays.lazy().group_by("kpi_date", "track_id").agg(plays=pl.len())
    genres = (
        day_tracks.join(songs.unique(["track_id", "track_genre"]), on="track_id")
        .group_by("kpi_date", "track_genre")
        .agg(
            listen_count=pl.col("plays").sum(),
            avg_track_duration_sec=pl.col("duration_ms").mean() / 1000.0,
            p=(pl.col("plays") * pl.col("popularity")).sum() / pl.col("plays").sum(),
            top=pl.struct("track_name", "track_id")
            .sort_by("plays", "popularity", "track_id", descending=[True, True, False])
            .first(),
        )
        .with_columns(
            popularity_index=100
            * (
                0.5 * pl.col("listen_count") / pl.col("listen_count").max().over("kpi_date")
                + 0.5 * pl.col("p") / 100
            )
        )
        .select(
            "kpi_date",
            "track_genre",
            "listen_count",
            "avg_track_duration_sec",
            "popularity_index",
            pl.col("top").struct.field("track_name").alias("most_popular_track"),
            pl.col("top").struct.field("track_id").alias("most_popular_track_id"),
        )
    )

    hour_keys = ["kpi_date", "stream_hour"]
    hour_tracks = plays.lazy().group_by(*hour_keys, "track_id").agg(plays=pl.len())
    artists = (
        songs.select("track_id", artist=pl.col("artists").str.split(";"))
        .explode("artist")
        .with_columns(pl.col("artist").str.strip_chars())
        .unique()
    )
    top_artists = (
        hour_tracks.join(artists, on="track_id")
        .group_by(*hour_keys, "artist")
        .agg(plays=pl.col("plays").sum())
        .sort("plays", "artist", descending=[True, False])
        .group_by(hour_keys)
        .agg(top_artists=pl.col("artist").first())
    )
    listeners = plays.lazy().group_by(hour_keys).agg(unique_listeners=pl.col("user_id").n_unique())
    hours = (
        hour_tracks.group_by(hour_keys)
        .agg(listen_count=pl.col("plays").sum(), tracks=pl.len())
        .join(listeners, on=hour_keys)
        .join(top_artists, on=hour_keys)
        .select(
            *hour_keys,
            "listen_count",
            "unique_listeners",
            "top_artists",
            track_diversity_index=pl.col("tracks") / pl.col("listen_count"),
        )
    )
    genre_rows, hour_rows = pl.collect_all([genres, hours])
    return _result(plays.height, genre_rows.rows(), hour_rows.rows())


def keyed(rows: Iterable[Mapping[str, Any]]) -> KpiRows:
    """KPI rows (the pipeline's music_kpi_metrics, or any with its column names) as the
    check compares them: a row with a genre is a genre row, any other an hourly one."""
    kpis: KpiRows = {}
    for row in rows:
        if row.get("track_genre") is not None:
            kpis[f"genre {row['kpi_date']} {row['track_genre']}"] = [row[c] for c in GENRE_COLUMNS]
        else:
            key = f"hourly {row['kpi_date']} {row['stream_hour']}"
            kpis[key] = [row[c] for c in HOURLY_COLUMNS]
    return kpis


def differences(expected: KpiRows, actual: KpiRows) -> list[str]:
    """The keys of the rows that differ (or that only one side has); values computed in
    another order may differ in the last bits of a float, nothing more."""

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
        return bool(a == b)

    return [
        key
        for key in sorted(expected.keys() | actual.keys())
        if key not in expected
        or key not in actual
        or not all(same(a, b) for a, b in zip(expected[key], actual[key], strict=True))
    ]


def _result(
    plays: int, genres: list[tuple[Any, ...]], hours: list[tuple[Any, ...]]
) -> dict[str, Any]:
    """What the bench prints and checks: the plays counted and every KPI row, keyed."""
    rows = [dict(zip(("kpi_date", "track_genre", *GENRE_COLUMNS), g, strict=True)) for g in genres]
    rows += [dict(zip(("kpi_date", "stream_hour", *HOURLY_COLUMNS), h, strict=True)) for h in hours]
    kpis = keyed(rows)
    return {"rows": plays, "kpi_rows": len(kpis), "kpis": kpis}
