"""ExtractRds: the source tables, snapshotted to S3.

Each table is read with COPY (see :mod:`kpi_pipeline.source`), whole or incrementally: a
table with a change column (``source.<table>.changed_column``) is read from its watermark
on (less an overlap) and the changed rows replace, by key, those of the previous raw
snapshot the pipeline keeps; it is read whole on the first run, every
``source.full_extract_every_days`` (the reconciliation that finds deleted rows), and when
the execution's input asks (``{"full_extract": true}``). The raw rows are then cleaned in
SQL (``sql/staging``) and written as Parquet under the run's prefix. Song rows the KPIs
cannot use are quarantined with their reason and counted; they are never silently dropped.
The watermark is not advanced here: Archive marks the snapshot processed once the run is
through (:mod:`kpi_pipeline.source_state`), so a run that fails reads the same changes again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from kpi_pipeline import engine
from kpi_pipeline.contracts import SourceSnapshot, SourceTableExtract
from kpi_pipeline.errors import DataGateError, SourceUnavailable
from kpi_pipeline.kept import parquet_problem
from kpi_pipeline.layout import SONG_TABLES, Layout
from kpi_pipeline.observability import SOURCE_ROWS_EXTRACTED, count, logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.scratch import open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings, SourceSettings
from kpi_pipeline.source import (
    EXTRACTED_COLUMNS,
    KEY_COLUMNS,
    SOURCE_COLUMNS,
    SourceDatabase,
    TableRead,
)
from kpi_pipeline.source_state import TableMark, read_marks
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import copy_parquet

STAGING_MODELS = (
    ("users_checked", "staging/users_checked.sql"),
    ("songs_checked", "staging/songs_checked.sql"),
    ("stg_users", "staging/stg_users.sql"),
    ("stg_songs", "staging/stg_songs.sql"),
)


# What the snapshot keeps of each staged table. The pipeline needs no personal data: of
# users, it keeps the ids only. Artists are split and trimmed once, here: both KPI engines
# read that table.
SNAPSHOT_QUERIES = {
    "users": "SELECT user_id FROM stg_users",
    "songs": "SELECT * FROM stg_songs",
    "song_artists": "SELECT track_id, artist FROM song_artists",
    # The columns of the warehouse engine's wh_songs, in its order: COPY reads Parquet by
    # position (kpi_pipeline.warehouse.kpi_sql.INPUT_TABLES). A track's name is only ever
    # shown, in most_popular_track (VARCHAR(255)): kept to what that column holds, as the
    # Lambda engine cuts it, so that COPY (which cannot truncate) takes every name.
    "song_tracks": (
        "SELECT track_id, track_genre, fit_bytes(track_name, 255) AS track_name, popularity, "
        "duration_ms FROM stg_songs"
    ),
}


def stage_source_tables(con: engine.duckdb.DuckDBPyConnection) -> None:
    """The staging tables over ``raw_users`` and ``raw_songs`` (text), in dependency order,
    and ``song_artists``. Materialised: the snapshot, its counts and the quarantine each
    read them, and a view would type and de-duplicate every row again each time."""
    for table, model in STAGING_MODELS:
        engine.create_table(con, table, model)
    con.execute("CREATE TEMP VIEW songs AS SELECT *, NULL AS catalogue FROM stg_songs")
    engine.create_view(con, "song_artists", "staging/stg_song_artists.sql")


def extract_snapshot(
    run_id: str,
    *,
    db: SourceDatabase,
    source: SourceSettings,
    full_extract: bool,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    scratch: ScratchSettings,
) -> SourceSnapshot:
    now = dt.datetime.now(dt.UTC)
    with open_scratch(scratch, "extract") as space:
        tmp = space.path
        marks = read_marks(storage, layout, full_extract=full_extract)
        previous = {
            table: _download(
                table, marks.get(table), tmp / f"previous_{table}.parquet", storage, layout
            )
            for table in SOURCE_COLUMNS
        }
        reads = {
            table: _plan_read(
                table, source, marks.get(table), previous[table] is not None, full_extract, now
            )
            for table in SOURCE_COLUMNS
        }
        con = engine.connect(engine_settings, tmp, spill_limit_mb=space.spill_limit_mb())
        copies = db.read_tables(reads, lambda name: (tmp / f"{name}.csv").open("wb"))
        tables = {}
        for table, read in reads.items():
            incremental = read.incremental
            keys = tmp / f"{table}.keys.csv" if incremental else None
            rows_read, keys_read, changed, deleted, key_unique = _merge(
                con, table, tmp / f"{table}.csv", previous[table], keys=keys
            )
            sent = copies[table]
            if (rows_read, keys_read) != (sent.rows, sent.keys):
                raise SourceUnavailable(
                    f"{table}: COPY sent {sent.rows:,} rows and {sent.keys or 0:,} keys, "
                    f"{rows_read:,} and {keys_read or 0:,} arrived"
                )
            mark = marks.get(table)
            tables[table] = SourceTableExtract(
                mode="incremental" if incremental else "full",
                rows_read=rows_read,
                rows_changed=changed,
                rows_deleted=deleted,
                watermark=copies[table].watermark,
                changed_column=read.changed_column,
                raw_key=layout.snapshot_key(run_id, f"raw_{table}"),
                full_at=mark.full_at if incremental and mark else now.isoformat(),
                columns=list(EXTRACTED_COLUMNS[table]),
                key_unique=key_unique,
            )
            if not key_unique:
                logger.warning(
                    "the source key is NULL or repeated in some rows: the table is read whole "
                    "until it is unique again",
                    extra={"table": table, "key": KEY_COLUMNS[table]},
                )
            count(SOURCE_ROWS_EXTRACTED, rows_read, table=table)
            logger.info("source table read", extra={"table": table, **tables[table].model_dump()})
        stage_source_tables(con)

        outputs = {table: tmp / f"{table}.parquet" for table in SNAPSHOT_QUERIES}
        for table, query in SNAPSHOT_QUERIES.items():
            target = engine.literal(outputs[table])
            # Snappy: what Redshift's COPY documents (song_tracks and song_artists are read
            # by COPY; the others are kept alike).
            con.execute(f"COPY ({query}) TO {target} {copy_parquet.DUCKDB_PARQUET}")
        counts = {
            table: engine.scalar(
                con, f"SELECT count(*) FROM read_parquet({engine.literal(outputs[table])})"
            )
            for table in ("users", "songs")
        }

        rejected = tmp / "rejected_source_rows.parquet"
        con.execute(
            f"""
            COPY (
                SELECT 'users' AS source_table, raw_user_id AS row_key, reason
                FROM users_checked WHERE reason IS NOT NULL
                UNION ALL
                SELECT 'songs', coalesce(CAST(id AS VARCHAR), track_id), reason
                FROM songs_checked WHERE reason IS NOT NULL
            ) TO {engine.literal(rejected)} (FORMAT parquet)
            """
        )
        rejected_rows = f"read_parquet({engine.literal(rejected)})"
        quarantined = {
            f"{table}.{reason}": int(n)
            for table, reason, n in con.execute(
                f"SELECT source_table, reason, count(*) FROM {rejected_rows} "
                "GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        }
        usable_song_rows = engine.scalar(
            con, "SELECT count(*) FROM songs_checked WHERE reason IS NULL"
        )
        duplicate_pairs = usable_song_rows - counts["songs"]
        con.close()

        if counts["users"] == 0 or counts["songs"] == 0:
            raise DataGateError(
                f"no usable source rows after cleaning (users: {counts['users']}, songs: "
                f"{counts['songs']}; quarantined: {quarantined or 'none'})"
            )

        snapshot = SourceSnapshot(
            users_key=layout.snapshot_key(run_id, "users"),
            songs_key=layout.snapshot_key(run_id, "songs"),
            users=counts["users"],
            songs=counts["songs"],
            source_rows_quarantined=quarantined,
            song_duplicate_pairs=duplicate_pairs,
            tables=tables,
        )
        uploads = [
            (outputs["users"], snapshot.users_key),
            (outputs["songs"], snapshot.songs_key),
            *(
                (outputs[table], layout.songs_sibling_key(snapshot.songs_key, table))
                for table in SONG_TABLES
            ),
            *((tmp / f"raw_{table}.parquet", read.raw_key) for table, read in tables.items()),
        ]
        if quarantined:
            uploads.append((rejected, layout.source_quarantine_key(run_id, "rows")))
        parallel(
            lambda upload: storage.upload_file(upload[0], layout.data_bucket, upload[1]), uploads
        )
        return snapshot


def _plan_read(
    table: str,
    source: SourceSettings,
    mark: TableMark | None,
    has_previous: bool,
    full_extract: bool,
    now: dt.datetime,
) -> TableRead:
    """Incremental when the table has a change column and a usable mark (same column, a
    unique key, a watermark, its raw snapshot at hand, a full read recent enough) and more
    columns are extracted than its key (an incremental read also reads the key column
    whole, to find the deletes: of users, that is every column extracted); else whole."""
    column = source.changed_column(table)
    if column is None:
        return TableRead()
    if EXTRACTED_COLUMNS[table] == (KEY_COLUMNS[table],):
        return TableRead(changed_column=column)
    due = dt.timedelta(days=source.source_full_extract_every_days)
    if (
        full_extract
        or mark is None
        or not has_previous
        or mark.changed_column != column
        or not mark.key_unique
        or mark.watermark is None
        or now - dt.datetime.fromisoformat(mark.full_at) >= due
    ):
        return TableRead(changed_column=column)
    return TableRead(column, since=mark.watermark, overlap_seconds=source.source_overlap_seconds)


def _download(
    table: str, mark: TableMark | None, path: Path, storage: Storage, layout: Layout
) -> Path | None:
    """The table's previous raw snapshot (None: no mark, its snapshot expired, it holds
    other columns than are extracted now, or it cannot be read: the table is then read
    whole, which needs nothing kept)."""
    if mark is None or mark.columns != EXTRACTED_COLUMNS[table]:
        return None
    if not storage.download_file(layout.data_bucket, mark.raw_key, path):
        return None
    problem = parquet_problem(path)
    if problem:
        logger.warning(
            "the kept raw snapshot cannot be read: the table is read whole, and a new one kept",
            extra={
                "table": table,
                "object": f"s3://{layout.data_bucket}/{mark.raw_key}",
                "problem": problem,
            },
        )
        path.unlink()
        return None
    return path


def _merge(
    con: engine.duckdb.DuckDBPyConnection,
    table: str,
    read: Path,
    previous: Path | None,
    *,
    keys: Path | None,
) -> tuple[int, int | None, int, int, bool]:
    """``raw_<table>``: the rows read, merged by key into the previous raw snapshot when
    the read was incremental (``keys``: the key column read whole at the same moment),
    written to ``raw_<table>.parquet`` (the next increment's base).

    Returns the rows and keys read, the rows changed and deleted since ``previous``, and
    whether every row has a key, none twice (else the next read is whole: a merge by a
    key that is NULL or repeated could keep a stale row or lose one)."""
    names = EXTRACTED_COLUMNS[table]
    key = KEY_COLUMNS[table]
    _read_csv(con, f"read_{table}", read, names)
    rows_read = engine.scalar(con, f"SELECT count(*) FROM read_{table}")
    keys_read = None
    before = f"read_parquet({engine.literal(previous)})" if previous else None
    if keys is not None and before:  # an incremental read is planned with its base at hand
        _read_csv(con, f"keys_{table}", keys, (key,))
        keys_read = engine.scalar(con, f"SELECT count(*) FROM keys_{table}")
        # The base's rows whose key is still in the table and was not read again, then every
        # row read. (The base has no NULL key: a read is incremental only after a snapshot
        # whose keys were unique, and a NULL key read now makes the next read whole.)
        con.execute(
            f"""
            CREATE TEMP TABLE merged_{table} AS
            SELECT * FROM {before} AS kept
            WHERE kept.{key} IN (SELECT {key} FROM keys_{table})
                AND kept.{key} NOT IN (SELECT {key} FROM read_{table} WHERE {key} IS NOT NULL)
            UNION ALL
            SELECT * FROM read_{table}
            """
        )
    else:
        con.execute(f"CREATE TEMP VIEW merged_{table} AS SELECT * FROM read_{table}")
    # Changed: rows read that the previous snapshot did not hold as they are now (compared
    # with the previous rows of the keys read only, not the whole table).
    changed = engine.scalar(
        con,
        f"SELECT count(*) FROM (SELECT * FROM read_{table} EXCEPT ALL "
        f"SELECT b.* FROM {before} AS b WHERE b.{key} IS NULL OR b.{key} IN "
        f"(SELECT {key} FROM read_{table}))"
        if before
        else f"SELECT count(*) FROM read_{table}",
    )
    # Deleted: keys of the previous snapshot the table no longer has.
    deleted = (
        engine.scalar(
            con,
            f"SELECT count(*) FROM (SELECT {key} FROM {before} WHERE {key} IS NOT NULL "
            f"EXCEPT SELECT {key} FROM merged_{table})",
        )
        if before
        else 0
    )
    read.unlink()  # parsed: its space is the snapshot's
    if keys is not None:
        keys.unlink()
    # Uploaded with the snapshot, once the data gate passed.
    raw = engine.literal(read.with_name(f"raw_{table}.parquet"))
    con.execute(
        f"COPY merged_{table} TO {raw} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
    )
    # The staging models read every spec column: those that never leave the source are NULL.
    missing = [c for c in SOURCE_COLUMNS[table] if c not in names]
    con.execute(
        f"CREATE TEMP VIEW raw_{table} AS SELECT *"
        + "".join(f", CAST(NULL AS VARCHAR) AS {c}" for c in missing)
        + f" FROM merged_{table}"
    )
    key_unique = bool(
        engine.scalar(
            con,
            f"SELECT CAST(count({key}) = count(*) AND count(DISTINCT {key}) = count(*) "
            f"AS INTEGER) FROM merged_{table}",
        )
    )
    return rows_read, keys_read, changed, deleted, key_unique


def _read_csv(
    con: engine.duckdb.DuckDBPyConnection, name: str, path: Path, columns: tuple[str, ...]
) -> None:
    """A CSV that COPY sent (text columns, NULL unquoted and empty) as a temp table."""
    types = ", ".join(f"'{column}': 'VARCHAR'" for column in columns)
    con.execute(
        f"CREATE TEMP TABLE {name} AS SELECT * FROM read_csv({engine.literal(path)}, "
        f"header = true, columns = {{{types}}}, allow_quoted_nulls = false, quote = '\"', "
        "escape = '\"', auto_detect = false)"
    )
