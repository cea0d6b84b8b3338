"""The warehouse engine's KPI SQL (``sql/warehouse/date_kpis.sql``) as statements to run.

The file is written in the SQL that Amazon Redshift and PostgreSQL share; its placeholders
are filled here with literals (the Data API runs a batch of statements without parameters),
from a date and a run id that the contracts have already validated. No third-party import:
the function that talks to the warehouse carries no DuckDB.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources

from kpi_pipeline.warehouse.schema import KPI_COLUMNS, insert_into_stage_sql

# The temporary tables the statements read, with their columns. COPY reads Parquet by
# position and needs as many columns as the file has: each table is exactly the Parquet it
# is filled from (curated plays; the catalogue's song_tracks and song_artists, written at
# extract). COPY from Parquet cannot truncate, so each string column is as wide as what the
# writers let through (kpi_pipeline.warehouse.copy_parquet.STRING_LIMITS), no wider.
INPUT_TABLES: dict[str, str] = {
    "wh_curated_plays": (
        "user_id BIGINT, track_id VARCHAR(256), listen_time TIMESTAMP, kpi_date DATE, "
        "content_key VARCHAR(128)"
    ),
    "wh_songs": (
        "track_id VARCHAR(256), track_genre VARCHAR(255), track_name VARCHAR(255), "
        "popularity INTEGER, duration_ms BIGINT"
    ),
    "wh_song_artists": "track_id VARCHAR(256), artist VARCHAR(255)",
}
OUTPUT_TABLE = "wh_kpis"


def date_kpi_statements(kpi_date: dt.date, run_id: str) -> list[str]:
    """The statements that compute ``wh_kpis`` for one date, in order."""
    text = (
        resources.files("kpi_pipeline")
        .joinpath("sql", "warehouse", "date_kpis.sql")
        .read_text(encoding="utf-8")
    )
    text = text.replace("{kpi_date}", f"DATE '{kpi_date.isoformat()}'")
    text = text.replace("{run_id}", "'" + run_id.replace("'", "''") + "'")
    statements = []
    for chunk in re.split(r";\s*\n", text):
        code = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--"))
        if code.strip():
            statements.append(code.strip().rstrip(";"))
    return statements


# The figures of a date (TransformDateResult's), read back after the statements ran.
FIGURES_SQL = """SELECT curated.curated_rows, plays.plays_in_kpis, orphans.plays_without_song,
    kpis.genre_rows, kpis.hourly_rows
FROM (SELECT COUNT(*) AS curated_rows FROM wh_curated_plays) AS curated
CROSS JOIN (SELECT COUNT(*) AS plays_in_kpis FROM wh_plays) AS plays
CROSS JOIN (
    SELECT COALESCE(SUM(plays), 0) AS plays_without_song
    FROM wh_hourly_track_plays AS hourly
    WHERE NOT EXISTS (SELECT 1 FROM wh_songs AS songs WHERE songs.track_id = hourly.track_id)
) AS orphans
CROSS JOIN (
    SELECT
        COALESCE(SUM(CASE WHEN kpi_type = 'genre' THEN 1 ELSE 0 END), 0) AS genre_rows,
        COALESCE(SUM(CASE WHEN kpi_type = 'hourly' THEN 1 ELSE 0 END), 0) AS hourly_rows
    FROM wh_kpis
) AS kpis"""
FIGURES = ("curated_rows", "plays_in_kpis", "plays_without_song", "genre_rows", "hourly_rows")


def input_columns(table: str) -> list[str]:
    """The column names of an input table, in order (COPY's order)."""
    return [column.split()[0] for column in INPUT_TABLES[table].split(", ")]


def create_input_sql(table: str) -> str:
    return f"CREATE TEMP TABLE {table} ({INPUT_TABLES[table]})"


def compute_into_stage(
    kpi_date: dt.date, run_id: str, stage: str, *, attempt: str, batch_id: str
) -> list[str]:
    """Once the input tables hold the date's rows: compute its KPIs and add them to the
    stage table, stamped with the attempt and this batch (Load takes the batch its result
    names: a retried or stopped batch's rows are never taken beside it)."""
    return [
        *date_kpi_statements(kpi_date, run_id),
        insert_into_stage_sql(stage, OUTPUT_TABLE, attempt, batch_id),
    ]


def kpi_rows_sql(table: str = OUTPUT_TABLE) -> str:
    """The KPI rows of ``table``, in a fixed order (the preflight compares them)."""
    names = ", ".join(c.name for c in KPI_COLUMNS)
    return f"SELECT {names} FROM {table} ORDER BY kpi_type, track_genre, stream_hour"


def select_values_sql(expressions: dict[str, str]) -> str:
    """One row of named values: ``SELECT expr AS name, ...``."""
    return "SELECT " + ", ".join(f"{expr} AS {name}" for name, expr in expressions.items())
