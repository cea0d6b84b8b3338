"""The baseline: the seed's approach in plain pandas, as naively as the seed describes it.

Read every stream CSV, merge with users and songs, group by for the daily genre KPIs and the
hourly KPIs. No validation, no quarantine, no de-duplication beyond what the KPIs need: what
a notebook would do, down to the default timestamp parsing (the format of the first value,
so the rows spelled otherwise are lost: its numbers are not the pipeline's). `make bench`
runs it in a fresh process on the same files as the pipeline and compares the times.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def seed_kpis(users_csv: str, songs_csv: str, streams: list[str]) -> dict[str, Any]:
    users = pd.read_csv(users_csv, usecols=["user_id"])
    songs = pd.read_csv(
        songs_csv,
        usecols=["track_id", "artists", "track_name", "popularity", "duration_ms", "track_genre"],
    )
    plays = pd.concat(
        [pd.read_csv(path, dtype=str, on_bad_lines="skip") for path in streams], ignore_index=True
    )
    plays["user_id"] = pd.to_numeric(plays["user_id"], errors="coerce")
    plays["listen_time"] = pd.to_datetime(plays["listen_time"], errors="coerce", utc=True)
    plays = plays.dropna(subset=["user_id", "listen_time"]).drop_duplicates()
    plays = plays.merge(users, on="user_id")
    plays["kpi_date"] = plays["listen_time"].dt.date
    plays["stream_hour"] = plays["listen_time"].dt.hour

    # Daily genre KPIs: a play counts in every genre of its track.
    genre = plays.merge(songs, on="track_id")
    keys = ["kpi_date", "track_genre"]
    grouped = genre.groupby(keys)
    daily = grouped.agg(listen_count=("track_id", "size"), p=("popularity", "mean"))
    durations = genre.drop_duplicates([*keys, "track_id"]).groupby(keys)["duration_ms"].mean()
    daily["avg_track_duration_sec"] = durations / 1000.0
    leader = daily.groupby(level="kpi_date")["listen_count"].transform("max")
    daily["popularity_index"] = 100 * (
        0.5 * daily["listen_count"] / leader + 0.5 * daily["p"] / 100
    )
    track_plays = genre.groupby([*keys, "track_id", "track_name", "popularity"]).size()
    per_track = track_plays.reset_index(name="plays").sort_values(
        ["plays", "popularity", "track_id"], ascending=[False, False, True]
    )
    top = per_track.drop_duplicates(keys).set_index(keys)
    daily["most_popular_track"] = top["track_name"]

    # Hourly KPIs: each play once, whatever its genres.
    tracks = songs.drop_duplicates("track_id")[["track_id", "artists"]]
    hourly_plays = plays.merge(tracks, on="track_id", how="left")
    hour_keys = ["kpi_date", "stream_hour"]
    hourly = hourly_plays.groupby(hour_keys).agg(
        listen_count=("track_id", "size"),
        unique_listeners=("user_id", "nunique"),
        distinct_tracks=("track_id", "nunique"),
    )
    hourly["track_diversity_index"] = hourly["distinct_tracks"] / hourly["listen_count"]
    artists = hourly_plays.assign(artist=hourly_plays["artists"].str.split(";")).explode("artist")
    artists["artist"] = artists["artist"].str.strip()
    counts = artists.groupby([*hour_keys, "artist"]).size().reset_index(name="plays")
    counts = counts.sort_values(["plays", "artist"], ascending=[False, True])
    hourly["top_artists"] = counts.drop_duplicates(hour_keys).set_index(hour_keys)["artist"]
    return {"rows": len(plays), "kpi_rows": len(daily) + len(hourly)}
