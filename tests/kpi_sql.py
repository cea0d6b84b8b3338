"""Given/expect helpers for testing the KPI SQL models directly on DuckDB."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb

from kpi_pipeline import engine
from kpi_pipeline.kpis import run_kpi_models
from kpi_pipeline.settings import EngineSettings

CATALOGUE = "catalogue/songs/run_id=test.parquet"
SONG_DEFAULTS: dict[str, Any] = {
    "id": None,
    "artists": "Someone",
    "album_name": "An album",
    "popularity": 50,
    "duration_ms": 200_000,
}


def song(track_id: str, genre: str, **values: Any) -> dict[str, Any]:
    row = {**SONG_DEFAULTS, "track_id": track_id, "track_genre": genre, **values}
    row.setdefault("track_name", f"Track {track_id}")
    return row


def play(user_id: int, track_id: str, when: str) -> dict[str, Any]:
    """A curated play; ``when`` is an ISO timestamp in UTC."""
    moment = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
    return {"user_id": user_id, "track_id": track_id, "listen_time": moment}


def kpi_rows(
    tmp_path: Path, songs: list[dict[str, Any]], plays: list[dict[str, Any]], dates: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Run the marts on the given songs (one row per track and genre) and plays."""
    con = engine.connect(EngineSettings(), tmp_path)
    try:
        _table(
            con,
            "songs",
            "id BIGINT, track_id VARCHAR, artists VARCHAR, album_name VARCHAR, "
            "track_name VARCHAR, popularity INTEGER, duration_ms BIGINT, track_genre VARCHAR, "
            "catalogue VARCHAR",
            [{"catalogue": CATALOGUE, **row} for row in songs],
        )
        _table(
            con,
            "test_plays",
            "user_id BIGINT, track_id VARCHAR, listen_time TIMESTAMPTZ",
            plays,
        )
        days = [dt.date.fromisoformat(day) for day in dates]
        # Every date reads the whole table: the models must keep only the date's plays.
        table = run_kpi_models(
            con, "test-run", dict.fromkeys(days, CATALOGUE), dict.fromkeys(days, "test_plays")
        ).to_pylist()
    finally:
        con.close()
    return {
        "genre": [r for r in table if r["kpi_type"] == "genre"],
        "hourly": [r for r in table if r["kpi_type"] == "hourly"],
    }


def _table(
    con: duckdb.DuckDBPyConnection, name: str, columns: str, rows: list[dict[str, Any]]
) -> None:
    con.execute(f"CREATE TEMP TABLE {name} ({columns})")
    names = [c.strip().split()[0] for c in columns.split(",")]
    for row in rows:
        con.execute(
            f"INSERT INTO {name} VALUES ({', '.join('?' for _ in names)})",
            [row.get(n) for n in names],
        )
