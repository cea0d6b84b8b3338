"""ExtractRds: the source tables, snapshotted to S3.

The snapshot is taken batch by batch (memory bounded by the batch), cleaned in SQL
(``sql/staging``) and written as Parquet under the run's prefix. Song rows the KPIs cannot
use are quarantined with their reason and counted; they are never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

from kpi_pipeline import engine
from kpi_pipeline.contracts import SourceSnapshot
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.layout import SONG_TABLES, Layout
from kpi_pipeline.observability import SOURCE_ROWS_EXTRACTED, count, logger
from kpi_pipeline.scratch import open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings
from kpi_pipeline.source import SOURCE_COLUMNS, SourceDatabase
from kpi_pipeline.storage import Storage

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
    "song_artists": "SELECT track_id, artist FROM song_artists ORDER BY ALL",
    # The columns of the warehouse engine's wh_songs, in its order: COPY reads Parquet by
    # position (kpi_pipeline.warehouse.kpi_sql.INPUT_TABLES).
    "song_tracks": (
        "SELECT track_id, track_genre, track_name, popularity, duration_ms FROM stg_songs "
        "ORDER BY ALL"
    ),
}


def stage_source_tables(con: engine.duckdb.DuckDBPyConnection) -> None:
    """The staging views over ``raw_users`` and ``raw_songs`` (text), in dependency order,
    and ``song_artists``."""
    for view, model in STAGING_MODELS:
        engine.create_view(con, view, model)
    con.execute("CREATE TEMP VIEW songs AS SELECT *, NULL AS catalogue FROM stg_songs")
    engine.create_view(con, "song_artists", "staging/stg_song_artists.sql")


def extract_snapshot(
    run_id: str,
    *,
    db: SourceDatabase,
    batch_size: int,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    scratch: ScratchSettings,
) -> SourceSnapshot:
    with open_scratch(scratch, "extract") as space:
        tmp = space.path
        for table in SOURCE_COLUMNS:
            rows = _write_raw(db, table, batch_size, tmp / f"raw_{table}.json")
            count(SOURCE_ROWS_EXTRACTED, rows, table=table)
            logger.info("source table read", extra={"table": table, "rows": rows})

        con = engine.connect(engine_settings, tmp, spill_limit_mb=space.spill_limit_mb())
        for table in SOURCE_COLUMNS:
            raw = engine.literal(tmp / f"raw_{table}.json")
            columns = ", ".join(f"'{name}': 'VARCHAR'" for name in SOURCE_COLUMNS[table])
            con.execute(
                f"CREATE TEMP VIEW raw_{table} AS SELECT * FROM read_json({raw}, "
                f"format = 'newline_delimited', columns = {{{columns}}})"
            )
        stage_source_tables(con)

        outputs = {table: tmp / f"{table}.parquet" for table in SNAPSHOT_QUERIES}
        for table, query in SNAPSHOT_QUERIES.items():
            target = engine.literal(outputs[table])
            con.execute(f"COPY ({query}) TO {target} (FORMAT parquet, COMPRESSION zstd)")
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
        )
        storage.upload_file(outputs["users"], layout.data_bucket, snapshot.users_key)
        storage.upload_file(outputs["songs"], layout.data_bucket, snapshot.songs_key)
        for table in SONG_TABLES:
            storage.upload_file(
                outputs[table],
                layout.data_bucket,
                layout.songs_sibling_key(snapshot.songs_key, table),
            )
        if quarantined:
            storage.upload_file(
                rejected, layout.data_bucket, layout.source_quarantine_key(run_id, "rows")
            )
        return snapshot


def _write_raw(db: SourceDatabase, table: str, batch_size: int, path: Path) -> int:
    """Append the table's batches to one newline-delimited JSON file; return the row count."""
    rows = 0
    with path.open("w", encoding="utf-8") as out:
        for batch in db.read_batches(table, batch_size):
            out.write("\n".join(batch))
            out.write("\n")
            rows += len(batch)
    return rows
