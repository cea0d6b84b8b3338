"""The warehouse table ``music_kpi_metrics``, exactly as KPIS.md defines it.

One definition serves the transform (the Parquet it writes), both warehouse adapters (the
DDL and the load statements) and the tests. VARCHAR widths are in bytes, as in Redshift, so
strings are cut to fit at a character boundary: "truncated to fit, never rejected". This
module needs no third-party package (the Load function runs without pyarrow); the Arrow
side of the schema is in :mod:`kpi_pipeline.warehouse.arrow`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    arrow_type: str  # a pyarrow type factory name: "string", "date32", "int64"...
    max_bytes: int | None = None
    not_null: bool = False

    @property
    def ddl(self) -> str:
        return f"{self.name} {self.sql_type}{' NOT NULL' if self.not_null else ''}"


# The columns the transform produces, in table order.
KPI_COLUMNS: tuple[Column, ...] = (
    Column("kpi_type", "VARCHAR(50)", "string", 50),
    Column("kpi_date", "DATE", "date32", not_null=True),
    Column("track_genre", "VARCHAR(255)", "string", 255),
    Column("listen_count", "BIGINT", "int64"),
    Column("avg_track_duration_sec", "FLOAT", "float64"),
    Column("popularity_index", "FLOAT", "float64"),
    Column("most_popular_track", "VARCHAR(255)", "string", 255),
    Column("most_popular_track_id", "VARCHAR(64)", "string", 64),
    Column("stream_hour", "INT", "int32"),
    Column("unique_listeners", "INT", "int32"),
    Column("top_artists", "VARCHAR(255)", "string", 255),
    Column("track_diversity_index", "FLOAT", "float64"),
    Column("run_id", "VARCHAR(128)", "string", 128),
)
LOADED_AT = Column("loaded_at", "TIMESTAMP", "timestamp")
TABLE_COLUMNS: tuple[Column, ...] = (*KPI_COLUMNS, LOADED_AT)  # loaded_at: set by SQL only


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``max_bytes``."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def create_table_sql(table: str, *, redshift: bool) -> str:
    columns = ",\n    ".join(c.ddl for c in TABLE_COLUMNS)
    # Readers filter by date and type; Redshift keeps rows sorted that way.
    tail = "\nDISTSTYLE AUTO\nSORTKEY (kpi_date, kpi_type)" if redshift else ""
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {columns}\n){tail}"


STAGE = "music_kpi_metrics_stage"  # the temporary table a load goes through


def lock_table_sql(table: str) -> str:
    """PostgreSQL: loads of the same table wait for each other (Redshift serializes them)."""
    return f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"


def create_stage_sql(stage: str) -> str:
    columns = ", ".join(f"{c.name} {c.sql_type}" for c in KPI_COLUMNS)
    return f"CREATE TEMP TABLE {stage} ({columns})"


def delete_dates_sql(table: str, kpi_dates: list[dt.date]) -> str:
    # Dates are date objects rendered by isoformat(): safe to inline, and the Data API's
    # parameters cannot carry a list.
    dates = ", ".join(f"'{d.isoformat()}'" for d in sorted(set(kpi_dates)))
    return f"DELETE FROM {table} WHERE kpi_date IN ({dates})"


def insert_from_stage_sql(table: str, stage: str, loaded_at: dt.datetime) -> str:
    names = ", ".join(c.name for c in KPI_COLUMNS)
    stamp = loaded_at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    return (
        f"INSERT INTO {table} ({names}, {LOADED_AT.name}) "
        f"SELECT {names}, TIMESTAMP '{stamp}' FROM {stage}"
    )
