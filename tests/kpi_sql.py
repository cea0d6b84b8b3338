"""Given/expect helpers for testing the KPI SQL models directly on DuckDB."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import psycopg2.extras

from kpi_pipeline import engine
from kpi_pipeline.engine import sql
from kpi_pipeline.kpis import run_kpi_models
from kpi_pipeline.settings import EngineSettings
from kpi_pipeline.warehouse.kpi_sql import INPUT_TABLES, OUTPUT_TABLE, date_kpi_statements

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


def warehouse_kpi_rows(
    tmp_path: Path,
    dsn: str,
    songs: list[dict[str, Any]],
    plays: list[dict[str, Any]],
    dates: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """Run the warehouse engine's statements on PostgreSQL, one date at a time, on the same
    songs and plays; the song artists come from the extract's model, as in production."""
    con = engine.connect(EngineSettings(), tmp_path)
    try:
        _table(
            con,
            "songs",
            "track_id VARCHAR, artists VARCHAR, catalogue VARCHAR",
            [{"catalogue": CATALOGUE, **row} for row in songs],
        )
        artists = con.sql(f"SELECT track_id, artist FROM ({sql('staging/stg_song_artists.sql')})")
        song_artists = [
            dict(zip(("track_id", "artist"), r, strict=True)) for r in artists.fetchall()
        ]
    finally:
        con.close()
    rows: list[dict[str, Any]] = []
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            for day in dates:
                for table, columns in INPUT_TABLES.items():
                    cur.execute(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP")
                _insert(cur, "wh_songs", songs, INPUT_TABLES["wh_songs"])
                _insert(cur, "wh_song_artists", song_artists, INPUT_TABLES["wh_song_artists"])
                utc = [{**p, "listen_time": p["listen_time"].replace(tzinfo=None)} for p in plays]
                _insert(cur, "wh_curated_plays", utc, INPUT_TABLES["wh_curated_plays"])
                for statement in date_kpi_statements(dt.date.fromisoformat(day), "test-run"):
                    cur.execute(statement)
                cur.execute(f"SELECT * FROM {OUTPUT_TABLE}")
                rows += [dict(r) for r in cur.fetchall()]
                conn.rollback()
    finally:
        conn.close()
    rows.sort(
        key=lambda r: (r["kpi_date"], r["kpi_type"], r["track_genre"] or "", r["stream_hour"] or -1)
    )
    return {
        "genre": [r for r in rows if r["kpi_type"] == "genre"],
        "hourly": [r for r in rows if r["kpi_type"] == "hourly"],
    }


def _insert(cur: Any, table: str, rows: list[dict[str, Any]], columns: str) -> None:
    names = [c.strip().split()[0] for c in columns.split(",")]
    for row in rows:
        cur.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('%s' for _ in names)})",
            [row.get(n) for n in names],
        )


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
