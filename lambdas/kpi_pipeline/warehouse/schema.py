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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kpi_pipeline.warehouse import KpiBatch


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
    return f"CREATE TEMP TABLE {stage} ({_kpi_columns_ddl()})"


def _kpi_columns_ddl() -> str:
    return ", ".join(f"{c.name} {c.sql_type}" for c in KPI_COLUMNS)


def delete_dates_sql(table: str, kpi_dates: list[dt.date]) -> str:
    # Dates are date objects rendered by isoformat(): safe to inline, and the Data API's
    # parameters cannot carry a list.
    dates = ", ".join(f"'{d.isoformat()}'" for d in sorted(set(kpi_dates)))
    return f"DELETE FROM {table} WHERE kpi_date IN ({dates})"


def insert_from_stage_sql(table: str, stage: str, loaded_at: dt.datetime) -> str:
    """Every row of ``stage`` (a table, or a parenthesised subquery with an alias), stamped
    with ``loaded_at``."""
    names = ", ".join(c.name for c in KPI_COLUMNS)
    stamp = loaded_at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    return (
        f"INSERT INTO {table} ({names}, {LOADED_AT.name}) "
        f"SELECT {names}, TIMESTAMP '{stamp}' FROM {stage}"
    )


def date_stage_table(table: str, kpi_date: dt.date) -> str:
    """The table the warehouse engine leaves a date's KPI rows in, beside ``table`` (same
    schema), until Load moves them. One per date: dates computed at the same time never
    write the same table (Redshift would abort all but one as serializable violations). A
    date computed again (a retry, a later run) replaces it, and Load drops the stage table
    of every date it replaces, so one left by a failed run never outlives the next load of
    its date."""
    schema = f"{table.rsplit('.', 1)[0]}." if "." in table else ""
    return f"{schema}music_kpi_stage_{kpi_date:%Y%m%d}"


def create_date_stage_sql(stage: str) -> str:
    return f"CREATE TABLE {stage} ({_kpi_columns_ddl()})"


def insert_into_stage_sql(stage: str, source: str) -> str:
    """The rows of ``source`` cast to the table's types: strings cut to the column widths."""
    names = ", ".join(c.name for c in KPI_COLUMNS)
    values = ", ".join(f"CAST({c.name} AS {c.sql_type})" for c in KPI_COLUMNS)
    return f"INSERT INTO {stage} ({names}) SELECT {values} FROM {source}"


# What the Redshift Data API accepts in one BatchExecuteStatement.
MAX_BATCH_STATEMENTS = 40
MAX_STATEMENT_CHARS = 100_000
_STAGES_PER_STATEMENT = 500  # keeps an INSERT or a DROP of stage tables under 100,000 chars


def insert_from_stages_sql(table: str, stages: list[str], loaded_at: dt.datetime) -> list[str]:
    """INSERTs of every warehouse-computed date: a few statements for any number of dates
    (a Data API batch holds 40). A stage table has the columns of KPI_COLUMNS, in order."""
    return [
        insert_from_stage_sql(
            table,
            "(" + " UNION ALL ".join(f"SELECT * FROM {stage}" for stage in chunk) + ") AS computed",
            loaded_at,
        )
        for chunk in _chunks(stages)
    ]


def drop_tables_sql(tables: list[str]) -> str:
    return f"DROP TABLE IF EXISTS {', '.join(tables)}"


def load_statements(
    table: str, batch: KpiBatch, loaded_at: dt.datetime, *, redshift: bool
) -> tuple[list[str], list[str]]:
    """The load, as the statements before and after the KPI parts are copied into STAGE
    (Redshift: ``COPY ... FROM s3``; PostgreSQL: ``COPY FROM STDIN``). With no parts (every
    date computed in the warehouse) nothing is copied."""
    before = [create_table_sql(table, redshift=redshift)]
    if not redshift:
        # Two loads at once would each delete only the rows they can see, then both insert:
        # taking the lock first makes the second wait and replace the first.
        before.append(lock_table_sql(table))
    after = [delete_dates_sql(table, batch.kpi_dates)]
    if batch.has_parts:
        before.append(create_stage_sql(STAGE))
        after.append(insert_from_stage_sql(table, STAGE, loaded_at))
    if batch.stage_tables:
        after += insert_from_stages_sql(table, list(batch.stage_tables), loaded_at)
    # Every replaced date's stage table, whichever engine computed it this time.
    stale = [date_stage_table(table, d) for d in sorted(set(batch.kpi_dates))]
    after += [drop_tables_sql(chunk) for chunk in _chunks(stale)]
    check_batch(before + after)
    return before, after


def check_batch(statements: list[str]) -> None:
    """Refuse what the Data API would: more than 40 statements, or one over 100,000 chars.
    Both adapters check, so a local run fails where AWS would."""
    if len(statements) > MAX_BATCH_STATEMENTS:
        raise ValueError(
            f"{len(statements)} statements in one batch: the Data API takes at most "
            f"{MAX_BATCH_STATEMENTS}"
        )
    longest = max((len(s) for s in statements), default=0)
    if longest > MAX_STATEMENT_CHARS:
        raise ValueError(
            f"a statement of {longest:,} characters: the Data API takes at most "
            f"{MAX_STATEMENT_CHARS:,}"
        )


def _chunks(items: list[str]) -> list[list[str]]:
    return [
        items[i : i + _STAGES_PER_STATEMENT] for i in range(0, len(items), _STAGES_PER_STATEMENT)
    ]
