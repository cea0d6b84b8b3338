"""The warehouse table ``music_kpi_metrics``, exactly as docs/kpis.md defines it.

One definition serves the transform (the Parquet it writes), both warehouse adapters (the
DDL and the load statements) and the tests. VARCHAR widths are in bytes, as in Redshift, so
strings are cut to fit at a character boundary: "truncated to fit, never rejected". This
module needs no third-party package (the Load function runs without pyarrow); the Arrow
side of the schema is in :mod:`kpi_pipeline.warehouse.arrow`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

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


def create_table_sql(table: str, *, redshift: bool = True) -> str:
    """The KPI table (created by the warehouse setup, infra/warehouse_setup.sql)."""
    columns = ",\n    ".join(c.ddl for c in TABLE_COLUMNS)
    # Readers filter by date and type; Redshift keeps rows sorted that way.
    tail = "\nDISTSTYLE AUTO\nSORTKEY (kpi_date, kpi_type)" if redshift else ""
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {columns}\n){tail}"


# The rows of the dates the warehouse engine computed, until Load moves them. One table for
# every date and attempt: each batch of TransformInWarehouse inserts its rows stamped with
# its attempt and a batch id of its own (every submission its own id), and Load takes
# exactly the batches the attempt's results name, checking each one's row count. Nothing
# is created or dropped at run time: a batch of a stopped run that commits late adds rows
# no load takes. Load keeps the batches it took (a load run again takes them again) and
# deletes the other batches of its dates, and any batch a week old.
STAGE_BATCH = Column("batch_id", "VARCHAR(32)", "string", 32, not_null=True)
COMPUTED_AT = Column("computed_at", "TIMESTAMP", "timestamp", not_null=True)
STAGE_COLUMNS: tuple[Column, ...] = (
    *KPI_COLUMNS,
    Column("attempt", "VARCHAR(12)", "string", 12, not_null=True),
    STAGE_BATCH,
    COMPUTED_AT,
)
STAGE_RETENTION = dt.timedelta(days=7)


def stage_table(table: str) -> str:
    """The warehouse engine's stage table, beside ``table`` (same schema)."""
    return f"{table}_stage"


def create_stage_table_sql(stage: str, *, redshift: bool = True) -> str:
    # computed_at is the warehouse's clock: the statement that inserts a batch is the same
    # text however often it is submitted (its ClientToken finds the first submission).
    now = "GETDATE()" if redshift else "LOCALTIMESTAMP"
    columns = ",\n    ".join(
        f"{c.ddl} DEFAULT {now}" if c is COMPUTED_AT else c.ddl for c in STAGE_COLUMNS
    )
    tail = "\nDISTSTYLE AUTO\nSORTKEY (kpi_date)" if redshift else ""
    return f"CREATE TABLE IF NOT EXISTS {stage} (\n    {columns}\n){tail}"


PARTS = "kpi_parts"  # the temporary table Load COPYs the Lambda-computed parts into
FENCE_KEY = "music-kpi"  # the fence table's one row


def fence_table(table: str) -> str:
    """The fence beside ``table``: the newest lock token that loaded it."""
    return f"{table}_fence"


def create_fence_sql(fence: str) -> list[str]:
    """The fence table and its one row (token 0: every run may load first)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {fence} (\n    pipeline VARCHAR(64) NOT NULL,\n"
        "    token BIGINT NOT NULL,\n    run_id VARCHAR(128),\n    fenced_at TIMESTAMP\n)",
        f"INSERT INTO {fence} (pipeline, token) SELECT '{FENCE_KEY}', 0 "
        f"WHERE NOT EXISTS (SELECT 1 FROM {fence} WHERE pipeline = '{FENCE_KEY}')",
    ]


def fence_sql(fence: str, token: int, run_id: str) -> list[str]:
    """The load's first statements: take the fence for ``token`` unless a newer token took
    it (the UPDATE waits for a load running at the same time), then fail the whole load
    (a CAST of a sentence) if the fence is not this token's. A stopped run's load that
    commits late is refused here, inside its own transaction."""
    # (a run id is at most 128 bytes: CheckRequest refuses longer names)
    run = run_id.encode()[:128].decode(errors="ignore").replace("'", "''")
    token = int(token)
    return [
        f"UPDATE {fence} SET token = {token}, run_id = '{run}', fenced_at = GETDATE() "
        f"WHERE pipeline = '{FENCE_KEY}' AND token <= {token}",
        f"SELECT CAST(CASE WHEN max(token) = {token} THEN '0' "
        f"WHEN max(token) IS NULL THEN 'the fence row of {fence} is missing: run the "
        "warehouse setup again (make warehouse-sql)' "
        f"ELSE 'the fence holds lock token ' || CAST(max(token) AS VARCHAR) || ', newer "
        f"than this load''s {token}: a later run loaded since and this load is stale; if no "
        "run did, the lock table was recreated (docs/runbook.md, Every Load fails: the fence "
        f"holds...)' END AS INTEGER) AS fence_holds FROM {fence} WHERE pipeline = '{FENCE_KEY}'",
    ]


def lock_table_sql(table: str) -> str:
    """PostgreSQL: loads of the same table wait for each other (Redshift serializes them)."""
    return f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"


def create_parts_sql() -> str:
    return f"CREATE TEMP TABLE {PARTS} ({_kpi_columns_ddl()})"


def _kpi_columns_ddl() -> str:
    return ", ".join(f"{c.name} {c.sql_type}" for c in KPI_COLUMNS)


# A statement that lists dates or batch ids lists at most this many: any number of them
# loads in statements under the Data API's 100,000 characters (a date is 14 characters, a
# batch id 36: 1,500 of both make 75,000).
_LISTED_PER_STATEMENT = 1500


def delete_dates_sql(table: str, kpi_dates: list[dt.date]) -> list[str]:
    """DELETEs of every row of ``kpi_dates``, a chunk of dates each."""
    # Dates are date objects rendered by isoformat(): safe to inline, and the Data API's
    # parameters cannot carry a list.
    dates = [f"'{d.isoformat()}'" for d in sorted(set(kpi_dates))]
    return [
        f"DELETE FROM {table} WHERE kpi_date IN ({', '.join(chunk)})" for chunk in _chunks(dates)
    ]


def insert_from_sql(table: str, source: str, loaded_at: dt.datetime, where: str = "") -> str:
    """Every row of ``source`` (with the KPI columns), stamped with ``loaded_at``."""
    names = ", ".join(c.name for c in KPI_COLUMNS)
    stamp = _timestamp(loaded_at)
    return (
        f"INSERT INTO {table} ({names}, {LOADED_AT.name}) "
        f"SELECT {names}, {stamp} FROM {source}{where}"
    )


@dataclass(frozen=True)
class StageBatch:
    """A date the warehouse engine computed: the batch holding its rows, and how many."""

    kpi_date: dt.date
    batch_id: str
    rows: int  # its genre and hourly rows, as its result counted them


def insert_from_stage_sql(
    table: str, stage: str, batches: list[StageBatch], loaded_at: dt.datetime
) -> list[str]:
    """For each chunk of batches: a check that the stage holds exactly their rows (a
    failing CAST rolls the load back otherwise: a batch cleared or never committed would
    empty its date), then the INSERT of exactly those rows of their dates."""
    statements = []
    for chunk in _chunks(sorted(batches, key=lambda b: b.kpi_date)):
        ids = ", ".join(f"'{_checked_batch_id(b.batch_id)}'" for b in chunk)
        dates = ", ".join(f"'{b.kpi_date.isoformat()}'" for b in chunk)
        where = f" WHERE batch_id IN ({ids}) AND kpi_date IN ({dates})"
        expected = sum(int(b.rows) for b in chunk)
        statements.append(
            f"SELECT CAST(CASE WHEN count(*) = {expected} THEN '0' ELSE "
            f"'the stage table lacks rows of the batches this load takes' END AS INTEGER) "
            f"AS stage_rows_present FROM {stage}{where}"
        )
        statements.append(insert_from_sql(table, stage, loaded_at, where))
    return statements


def clear_stage_sql(
    stage: str, kpi_dates: list[dt.date], kept: list[StageBatch], loaded_at: dt.datetime
) -> list[str]:
    """The stage rows of the replaced dates but the batches this load took (a load run
    again takes them again), and rows a week old (a stopped run's batch that committed
    after its run ended)."""
    expired = _timestamp(loaded_at - STAGE_RETENTION)
    keep_of: dict[dt.date, list[str]] = {}
    for batch in kept:
        keep_of.setdefault(batch.kpi_date, []).append(_checked_batch_id(batch.batch_id))
    deletes = []
    for chunk in _chunks(sorted(set(kpi_dates))):
        dates = ", ".join(f"'{d.isoformat()}'" for d in chunk)
        keep = ", ".join(f"'{b}'" for d in chunk for b in sorted(set(keep_of.get(d, []))))
        deletes.append(
            f"DELETE FROM {stage} WHERE kpi_date IN ({dates})"
            + (f" AND batch_id NOT IN ({keep})" if keep else "")
        )
    return [*deletes, f"DELETE FROM {stage} WHERE computed_at < {expired}"]


def insert_into_stage_sql(stage: str, source: str, attempt: str, batch_id: str) -> str:
    """The rows of ``source`` cast to the table's types (strings cut to the column widths),
    stamped with the attempt and the batch that computed them (computed_at: the column's
    default, the warehouse's clock)."""
    names = ", ".join(c.name for c in STAGE_COLUMNS if c is not COMPUTED_AT)
    values = ", ".join(f"CAST({c.name} AS {c.sql_type})" for c in KPI_COLUMNS)
    if not ATTEMPT.fullmatch(attempt):
        raise ValueError(f"not an attempt id: {attempt!r}")
    stamps = f"'{attempt}', '{_checked_batch_id(batch_id)}'"
    return f"INSERT INTO {stage} ({names}) SELECT {values}, {stamps} FROM {source}"


ATTEMPT = re.compile(r"[0-9a-f]{12}")
BATCH_ID = re.compile(r"[0-9a-f]{32}")


def _checked_batch_id(batch_id: str) -> str:
    """A batch id goes into SQL as a literal: 32 lower-case hex digits, nothing else."""
    if not BATCH_ID.fullmatch(batch_id):
        raise ValueError(f"not a stage batch id: {batch_id!r}")
    return batch_id


def _timestamp(moment: dt.datetime) -> str:
    stamp = moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    return f"TIMESTAMP '{stamp}'"


_Item = TypeVar("_Item")

# What the Redshift Data API accepts in one BatchExecuteStatement.
MAX_BATCH_STATEMENTS = 40
MAX_STATEMENT_CHARS = 100_000


def load_statements(
    table: str, batch: KpiBatch, loaded_at: dt.datetime, *, redshift: bool
) -> tuple[list[str], list[str]]:
    """The load, as the statements before and after the KPI parts are copied into PARTS
    (Redshift: ``COPY ... FROM s3``; PostgreSQL: ``COPY FROM STDIN``). With no parts (every
    date computed in the warehouse) nothing is copied."""
    before: list[str] = []
    if not redshift:
        # Two loads at once would each delete only the rows they can see, then both insert:
        # taking the lock first makes the second wait and replace the first.
        before.append(lock_table_sql(table))
    if batch.fence is not None:
        before += fence_sql(fence_table(table), batch.fence, batch.run_id)
    after = delete_dates_sql(table, batch.kpi_dates)
    if batch.has_parts:
        before.append(create_parts_sql())
        after.append(insert_from_sql(table, PARTS, loaded_at))
    stage = stage_table(table)
    taken = list(batch.stage_batches)
    if taken:
        after += insert_from_stage_sql(table, stage, taken, loaded_at)
    after += clear_stage_sql(stage, batch.kpi_dates, taken, loaded_at)
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


def _chunks(items: list[_Item]) -> list[list[_Item]]:
    return [
        items[i : i + _LISTED_PER_STATEMENT] for i in range(0, len(items), _LISTED_PER_STATEMENT)
    ]


# --- the views BI tools read (infra/warehouse_setup.sql creates them beside the table) ------


@dataclass(frozen=True)
class ViewColumn:
    name: str  # the view's plain column name
    source: str  # its expression over the table
    comment: str


@dataclass(frozen=True)
class BiView:
    """A view over the KPI table that a BI tool reads without knowing the table's layout."""

    suffix: str  # the view is ``<table>_<suffix>``, beside the table
    comment: str
    columns: tuple[ViewColumn, ...]
    kpi_type: str  # the rows of the table it shows
    group_by: tuple[str, ...] = ()  # the table's columns an aggregating view groups by

    def name(self, table: str) -> str:
        return f"{table}_{self.suffix}"


_RUN = ViewColumn("run_id", "run_id", "the pipeline run that loaded the row")
_LOADED = ViewColumn("loaded_at", "loaded_at", "when the row was loaded (UTC)")
_DAY = ViewColumn("play_date", "kpi_date", "the UTC date of the plays")

BI_VIEWS: tuple[BiView, ...] = (
    BiView(
        "genre_daily",
        "Daily KPIs per genre: one row per date and genre with at least one play. A play of "
        "a track listed under several genres counts once in each.",
        (
            _DAY,
            ViewColumn("genre", "track_genre", "the genre (a track may be listed under several)"),
            ViewColumn("plays", "listen_count", "valid plays of the genre's tracks that day"),
            ViewColumn(
                "avg_track_duration_seconds",
                "avg_track_duration_sec",
                "mean duration in seconds of the distinct tracks of the genre played that day",
            ),
            ViewColumn(
                "popularity_index",
                "popularity_index",
                "0-100: half the genre's plays relative to the day's leading genre, half the "
                "play-weighted popularity of its songs",
            ),
            ViewColumn(
                "top_track",
                "most_popular_track",
                "the genre's most played track that day (ties: the more popular, then the "
                "smaller track id)",
            ),
            ViewColumn("top_track_id", "most_popular_track_id", "that track's id"),
            _RUN,
            _LOADED,
        ),
        kpi_type="genre",
    ),
    BiView(
        "hourly",
        "Hourly KPIs: one row per date and UTC hour with at least one play. Each play counts "
        "once, whatever the number of genres of its track.",
        (
            _DAY,
            ViewColumn("hour_utc", "stream_hour", "the UTC hour of the plays, 0-23"),
            ViewColumn("plays", "listen_count", "valid plays in that hour"),
            ViewColumn("listeners", "unique_listeners", "distinct users who played in that hour"),
            ViewColumn(
                "top_artist",
                "top_artists",
                "the artist with the most plays in that hour (ties: the alphabetically first)",
            ),
            ViewColumn(
                "track_diversity",
                "track_diversity_index",
                "distinct tracks played in that hour divided by its plays (0 to 1)",
            ),
            _RUN,
            _LOADED,
        ),
        kpi_type="hourly",
    ),
    BiView(
        "plays_daily",
        "Plays per day, added up from the hourly rows (each play once: the genre rows count "
        "a play once per genre of its track).",
        (
            _DAY,
            ViewColumn("plays", "SUM(listen_count)", "valid plays that day"),
            ViewColumn("hours_with_plays", "COUNT(*)", "how many UTC hours of the day had plays"),
            ViewColumn("loaded_at", "MAX(loaded_at)", "when the day's rows were last loaded"),
        ),
        kpi_type="hourly",
        group_by=("kpi_date",),
    ),
)


def create_view_sql(table: str, view: BiView) -> list[str]:
    """The view, and a comment on it and on each of its columns (for the BI tool's
    catalogue). A view's columns are named once, here; re-running replaces it."""
    columns = ",\n    ".join(
        c.source if c.source == c.name else f"{c.source} AS {c.name}" for c in view.columns
    )
    group = f"\nGROUP BY {', '.join(view.group_by)}" if view.group_by else ""
    name = view.name(table)
    return [
        f"CREATE OR REPLACE VIEW {name} AS\nSELECT\n    {columns}\nFROM {table}\n"
        f"WHERE kpi_type = '{view.kpi_type}'{group}",
        f"COMMENT ON VIEW {name} IS {_literal(view.comment)}",
        *(f"COMMENT ON COLUMN {name}.{c.name} IS {_literal(c.comment)}" for c in view.columns),
    ]


def _literal(text: str) -> str:
    if ";" in text:  # the setup SQL is split on semicolons
        raise ValueError(f"a comment may not hold ';': {text!r}")
    return "'" + text.replace("'", "''") + "'"
