"""The warehouse table ``music_kpi_metrics``, exactly as KPIS.md defines it.

One definition serves the transform (the Parquet it writes), both warehouse adapters (the
DDL and the load statements) and the tests. VARCHAR widths are in bytes, as in Redshift, so
strings are cut to fit at a character boundary: "truncated to fit, never rejected".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    arrow_type: pa.DataType
    max_bytes: int | None = None
    not_null: bool = False

    @property
    def ddl(self) -> str:
        return f"{self.name} {self.sql_type}{' NOT NULL' if self.not_null else ''}"


# The columns the transform produces, in table order.
KPI_COLUMNS: tuple[Column, ...] = (
    Column("kpi_type", "VARCHAR(50)", pa.string(), 50),
    Column("kpi_date", "DATE", pa.date32(), not_null=True),
    Column("track_genre", "VARCHAR(255)", pa.string(), 255),
    Column("listen_count", "BIGINT", pa.int64()),
    Column("avg_track_duration_sec", "FLOAT", pa.float64()),
    Column("popularity_index", "FLOAT", pa.float64()),
    Column("most_popular_track", "VARCHAR(255)", pa.string(), 255),
    Column("most_popular_track_id", "VARCHAR(64)", pa.string(), 64),
    Column("stream_hour", "INT", pa.int32()),
    Column("unique_listeners", "INT", pa.int32()),
    Column("top_artists", "VARCHAR(255)", pa.string(), 255),
    Column("track_diversity_index", "FLOAT", pa.float64()),
    Column("run_id", "VARCHAR(128)", pa.string(), 128),
)
LOADED_AT = Column("loaded_at", "TIMESTAMP", pa.timestamp("us"))
TABLE_COLUMNS: tuple[Column, ...] = (*KPI_COLUMNS, LOADED_AT)
KPI_SCHEMA = pa.schema([(c.name, c.arrow_type) for c in KPI_COLUMNS])


def fit_to_schema(table: pa.Table) -> pa.Table:
    """Cast to the KPI schema and cut strings longer than their column to fit."""
    table = table.select([c.name for c in KPI_COLUMNS]).cast(KPI_SCHEMA)
    for column in KPI_COLUMNS:
        if column.max_bytes is None:
            continue
        values = table.column(column.name)
        too_long = pc.greater(pc.binary_length(values), column.max_bytes)
        if not pc.any(too_long).as_py():
            continue
        fitted = [
            None if value is None else truncate_utf8(value, column.max_bytes)
            for value in values.to_pylist()
        ]
        index = table.schema.get_field_index(column.name)
        table = table.set_column(index, column.name, pa.array(fitted, type=pa.string()))
    return table


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
