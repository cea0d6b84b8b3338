"""What `make bench` measures, each run in a fresh process (see ``benchmarks.__main__``).

Every step calls the production code of its Lambda on local files, with the DuckDB memory
limit that Lambda's memory size gives it; only S3 is left out. The competitors are the
seed's approach in naive pandas (``benchmarks.pandas_seed``) and quick DuckDB and Polars
scripts (``benchmarks.quick``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from infra.config import DEFAULT_FUNCTIONS, EXTRACT_DUCKDB_MEMORY_MB
from kpi_pipeline import engine
from kpi_pipeline.settings import EngineSettings
from kpi_pipeline.warehouse import copy_parquet

SNAPSHOT_KEY = "bench-songs"

# The modules each step imports, loaded before its clock starts: a Lambda loads them once
# per container, not per file, and a script's libraries are no part of its work. Their
# memory still counts in the step's peak.
IMPORTS: dict[str, tuple[str, ...]] = {
    "pandas_seed": ("benchmarks.pandas_seed",),
    "quick_duckdb": ("benchmarks.quick",),
    "quick_polars": ("benchmarks.quick", "polars"),
    "snapshot": ("kpi_pipeline.extract",),
    "ingest": ("kpi_pipeline.ingest",),
    "transform": ("kpi_pipeline.kpis", "kpi_pipeline.warehouse.arrow", "pyarrow.parquet"),
}
_HASH_CHUNK = 8 * 1024 * 1024


def lambda_engine(step: str) -> EngineSettings:
    """The engine settings a Lambda of ``step`` gets from its default memory size (and, for
    ExtractRds, its DuckDB memory cap)."""
    return EngineSettings(
        aws_lambda_function_memory_size=DEFAULT_FUNCTIONS[step].memory_mb,
        duckdb_memory_limit_mb=EXTRACT_DUCKDB_MEMORY_MB if step == "extract_rds" else None,
    )


def pandas_seed(users_csv: str, songs_csv: str, streams: list[str]) -> dict[str, Any]:
    from benchmarks.pandas_seed import seed_kpis

    return seed_kpis(users_csv, songs_csv, streams)


def quick_duckdb(users_csv: str, songs_csv: str, streams: list[str]) -> dict[str, Any]:
    from benchmarks.quick import duckdb_kpis

    return duckdb_kpis(users_csv, songs_csv, streams)


def quick_polars(users_csv: str, songs_csv: str, streams: list[str]) -> dict[str, Any]:
    from benchmarks.quick import polars_kpis

    return polars_kpis(users_csv, songs_csv, streams)


def snapshot(users_csv: str, songs_csv: str, out: str) -> dict[str, Any]:
    """ExtractRds's cleaning and Parquet snapshot, reading the tables from CSV."""
    from kpi_pipeline.extract import SNAPSHOT_QUERIES, stage_source_tables

    folder = Path(out)
    con = engine.connect(lambda_engine("extract_rds"), folder)
    options = "all_varchar = true, quote = '\"', escape = '\"', header = true"
    for table, path in (("users", users_csv), ("songs", songs_csv)):
        con.execute(
            f"CREATE TEMP VIEW raw_{table} AS "
            f"SELECT * FROM read_csv({engine.literal(path)}, {options})"
        )
    stage_source_tables(con)
    for table, query in SNAPSHOT_QUERIES.items():
        target = engine.literal(folder / f"{table}.parquet")
        con.execute(f"COPY ({query}) TO {target} {copy_parquet.DUCKDB_PARQUET}")
    rows = engine.scalar(
        con, "SELECT (SELECT count(*) FROM stg_users) + (SELECT count(*) FROM stg_songs)"
    )
    return {"rows": rows}


def ingest(csv_path: str, snapshot_dir: str, work: str) -> dict[str, Any]:
    """IngestFile on one file: its SHA-256 (the content key), then validation and output."""
    from kpi_pipeline.ingest import AcceptedFile, Lineage, Snapshot, validate_stream_file

    digest = hashlib.sha256()
    with Path(csv_path).open("rb") as raw:
        while chunk := raw.read(_HASH_CHUNK):
            digest.update(chunk)
    folder = Path(snapshot_dir)
    con = engine.connect(lambda_engine("ingest_file"), Path(work))
    outcome = validate_stream_file(
        Path(csv_path),
        snapshots=Snapshot(folder / "users.parquet", folder / "songs.parquet"),
        lineage=Lineage(Path(csv_path).name, digest.hexdigest(), "bench"),
        out_dir=Path(work) / "out",
        con=con,
    )
    assert isinstance(outcome, AcceptedFile), outcome
    quarantined = sum(outcome.rows_quarantined.values())
    return {
        "rows": outcome.plays_valid + outcome.duplicates + quarantined,
        "plays": outcome.plays_valid,
        "quarantined": quarantined,
    }


def transform(snapshot_dir: str, plays: list[str], work: str) -> dict[str, Any]:
    """Transform's models on the curated plays of every date, as one batch."""
    import pyarrow.parquet as pq

    from kpi_pipeline.kpis import _run_models
    from kpi_pipeline.warehouse.arrow import fit_to_schema

    by_date: dict[dt.date, list[Path]] = {}
    for path in map(Path, plays):
        by_date.setdefault(dt.date.fromisoformat(path.stem.removeprefix("plays_")), []).append(path)
    con = engine.connect(lambda_engine("transform"), Path(work))
    kpis, stats = _run_models(
        con,
        {SNAPSHOT_KEY: Path(snapshot_dir) / "songs.parquet"},
        by_date,
        dict.fromkeys(by_date, SNAPSHOT_KEY),
        "bench",
        song_artists={SNAPSHOT_KEY: Path(snapshot_dir) / "song_artists.parquet"},
    )
    pq.write_table(fit_to_schema(kpis), Path(work) / "music_kpi_metrics.parquet")
    return {
        "rows": stats["curated_rows"],
        "plays": stats["plays_in_kpis"],
        "kpi_rows": kpis.num_rows,
    }


def source_extract(dsn: str, mode: str, work: str) -> dict[str, Any]:
    """ExtractRds against the bench's PostgreSQL: the production step, its S3 in moto.

    ``full``: both tables read whole. ``incremental``: after a full read marked processed
    and a day of edits (one row in 1,000 changed), the timed part is the incremental read
    and merge only (the peak is the whole process's).
    """
    import time

    import boto3
    from moto import mock_aws
    from psycopg2.extensions import parse_dsn

    from benchmarks.source import touch_changed_rows
    from kpi_pipeline.extract import extract_snapshot
    from kpi_pipeline.layout import Layout
    from kpi_pipeline.settings import ScratchSettings, SourceSettings
    from kpi_pipeline.source import SourceDatabase
    from kpi_pipeline.source_state import mark_processed
    from kpi_pipeline.storage import Storage

    source_seconds: list[float] = []

    class TimedSource(SourceDatabase):
        """The production adapter, timed: how long the database itself was busy."""

        def read_tables(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().read_tables(*args, **kwargs)
            finally:
                source_seconds.append(time.perf_counter() - started)

    db = TimedSource(dict(parse_dsn(dsn)))
    source = SourceSettings(
        source_secret_arn="unused: the bench connects with its DSN",  # noqa: S106
        source_users_changed_column="updated_at",
        source_songs_changed_column="updated_at",
    )
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bench-data")
        storage, layout = Storage(s3), Layout("bench-data", "bench-landing", "landing/")

        def extract(run_id: str) -> Any:
            return extract_snapshot(
                run_id,
                db=db,
                source=source,
                full_extract=False,
                storage=storage,
                layout=layout,
                engine_settings=lambda_engine("extract_rds"),
                scratch=ScratchSettings(
                    work_dir=work,
                    ephemeral_storage_mb=DEFAULT_FUNCTIONS["extract_rds"].ephemeral_storage_mb,
                ),
            )

        if mode == "full":
            snapshot = extract("bench-full")
            return {
                "rows": sum(t.rows_read for t in snapshot.tables.values()),
                "source_seconds": source_seconds[-1],
            }
        mark_processed(storage, layout, extract("bench-base"), "bench-base")
        touch_changed_rows(dsn)
        cpu_before = time.process_time()
        started = time.perf_counter()
        snapshot = extract("bench-incremental")
        return {
            "rows": sum(t.rows_read for t in snapshot.tables.values()),
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_before,
            "modes": sorted({t.mode for t in snapshot.tables.values()}),
            "changed": sum(t.rows_changed for t in snapshot.tables.values()),
            "deleted": sum(t.rows_deleted for t in snapshot.tables.values()),
            "by_table": {t: f"{r.mode} {r.rows_read:,} rows" for t, r in snapshot.tables.items()},
            "source_seconds": source_seconds[-1],
        }


def list_new_files_million(objects: int) -> dict[str, Any]:
    """ListNewFiles over a landing prefix of ``objects`` objects (90% stream files in random
    order of arrival, 5% other files, 5% archived): the listing is produced page by page as
    S3 would, and nothing else is kept, so the peak is the step's own (moto would hold a
    million objects itself)."""
    import datetime as dt
    import random

    from kpi_pipeline.layout import Layout
    from kpi_pipeline.listing import list_new_files
    from kpi_pipeline.storage import ObjectInfo

    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    class Listing:
        """Landing as ListObjectsV2 pages it; the manifest's puts counted, not kept."""

        def __init__(self) -> None:
            self.put = 0

        def list_objects(self, bucket: str, prefix: str) -> Any:
            if bucket != "landing":
                return
            rng = random.Random(7)  # noqa: S311 - arrival times, not secrets
            for n in range(objects):
                kind = n % 20
                key = f"{prefix}batch-{n // 1000:05d}/file-{n:08d}" + (
                    ".json" if kind == 0 else ".csv"
                )
                stamp = start + dt.timedelta(seconds=rng.randrange(10_000_000))
                storage_class = "GLACIER" if kind == 1 else "STANDARD"
                yield ObjectInfo(key, f"{n:032x}", 1024 + n % 4096, stamp, storage_class)

        def put_json(self, bucket: str, key: str, document: Any) -> None:
            self.put += 1

    storage = Listing()
    summary = list_new_files(
        "bench",
        storage=storage,  # type: ignore[arg-type]
        layout=Layout("data", "landing", "landing/"),
        max_files=1000,
    )
    return {
        "rows": objects,
        "taken": summary.file_count,
        "deferred": summary.files_deferred,
        "ignored": summary.files_ignored,
        "unreadable": summary.files_unreadable,
    }
