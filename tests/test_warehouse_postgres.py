"""PostgresWarehouse against the embedded PostgreSQL, with the KPI Parquet in moto's S3."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kpi_pipeline.errors import ConfigurationError, WarehouseStatementFailed, WarehouseUnavailable
from kpi_pipeline.settings import WarehouseSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import DateJob, KpiBatch, open_warehouse
from kpi_pipeline.warehouse.arrow import KPI_SCHEMA, fit_to_schema
from kpi_pipeline.warehouse.postgres import PostgresWarehouse
from kpi_pipeline.warehouse.schema import (
    KPI_COLUMNS,
    StageBatch,
    create_fence_sql,
    create_stage_table_sql,
    create_table_sql,
    fence_table,
    stage_table,
)
from local_runner.databases import REDSHIFT_FUNCTIONS
from tests.conftest import create_database

BUCKET = "kpi-data"
D1 = dt.date(2024, 6, 24)
D2 = dt.date(2024, 6, 25)
T1 = dt.datetime(2024, 6, 26, 3, 0, 0, tzinfo=dt.UTC)
T2 = dt.datetime(2024, 6, 27, 3, 0, 0, tzinfo=dt.UTC)
NAMES = [c.name for c in KPI_COLUMNS]


def genre_row(
    kpi_date: dt.date | None, genre: str | None, run_id: str, **values: Any
) -> dict[str, Any]:
    return {
        "kpi_type": "genre",
        "kpi_date": kpi_date,
        "track_genre": genre,
        "listen_count": 3,
        "avg_track_duration_sec": 210.0,
        "popularity_index": 100 * (0.5 * 1 + 0.5 * (200 / 3) / 100),  # 83.33: docs/kpis.md's pop
        "most_popular_track": "Song A",
        "most_popular_track_id": "A",
        "stream_hour": None,
        "unique_listeners": None,
        "top_artists": None,
        "track_diversity_index": None,
        "run_id": run_id,
        **values,
    }


def hourly_row(kpi_date: dt.date, hour: int, run_id: str, **values: Any) -> dict[str, Any]:
    return {
        "kpi_type": "hourly",
        "kpi_date": kpi_date,
        "track_genre": None,
        "listen_count": 3,
        "avg_track_duration_sec": None,
        "popularity_index": None,
        "most_popular_track": None,
        "most_popular_track_id": None,
        "stream_hour": hour,
        "unique_listeners": 2,
        "top_artists": "Y",
        "track_diversity_index": 2 / 3,
        "run_id": run_id,
        **values,
    }


@pytest.fixture
def s3(aws: SimpleNamespace) -> Any:
    aws.s3.create_bucket(Bucket=BUCKET)
    return aws.s3


@pytest.fixture(scope="module")
def dsn(postgres: str) -> str:
    """One database for the module (CREATE DATABASE is slow); each test has its own table."""
    return create_database(postgres, "warehouse")


@pytest.fixture
def table() -> str:
    return f"kpis_{uuid.uuid4().hex[:10]}"


def create_tables(dsn: str, table: str) -> None:
    """The test's KPI table and its stage table, as the warehouse setup creates them."""
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(create_table_sql(table, redshift=False))
        cur.execute(create_stage_table_sql(stage_table(table), redshift=False))
    conn.close()


@pytest.fixture
def warehouse(dsn: str, table: str, s3: Any) -> PostgresWarehouse:
    create_tables(dsn, table)
    settings = WarehouseSettings.from_env(
        {"WAREHOUSE_KIND": "postgres", "WAREHOUSE_DSN": dsn, "WAREHOUSE_TABLE": table}
    )
    return PostgresWarehouse(settings, storage=Storage(s3))


def upload_batch(
    s3: Any,
    tmp_path: Path,
    key: str,
    rows: list[dict[str, Any]],
    dates: list[dt.date],
    *,
    fit: bool = False,
    compression: str = "snappy",
) -> KpiBatch:
    """A KPI part as Transform writes it (``fit``: its strings cut to their columns)."""
    table = pa.Table.from_pylist(rows, schema=KPI_SCHEMA)
    path = tmp_path / key.replace("/", "_")
    pq.write_table(fit_to_schema(table) if fit else table, path, compression=compression)
    s3.upload_file(str(path), BUCKET, key)
    return KpiBatch(BUCKET, key, dates)


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@dataclass(frozen=True)
class Db:
    """The test's warehouse table, read directly."""

    dsn: str
    table: str

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` with ``{table}`` standing for the test's table."""
        return fetch(self.dsn, sql.format(table=self.table))

    def rows(self) -> list[tuple[Any, ...]]:
        """Every row, all columns (loaded_at last), in a stable order."""
        return self.fetch(
            f"SELECT {', '.join(NAMES)}, loaded_at FROM {{table}} "
            "ORDER BY kpi_date, kpi_type, track_genre, stream_hour"
        )


@pytest.fixture
def db(dsn: str, table: str) -> Db:
    return Db(dsn, table)


def as_tuple(row: dict[str, Any], loaded_at: dt.datetime) -> tuple[Any, ...]:
    return (*(row[name] for name in NAMES), loaded_at.replace(tzinfo=None))


# --- the table --------------------------------------------------------------------------------


def test_the_setups_table_has_the_spec_columns_types_and_order(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", [genre_row(D1, "pop", "run-1")], [D1])

    warehouse.replace_dates(batch, T1)

    columns = db.fetch(
        "SELECT column_name, data_type, character_maximum_length, is_nullable "
        "FROM information_schema.columns WHERE table_name = '{table}' "
        "ORDER BY ordinal_position",
    )
    assert columns == [
        ("kpi_type", "character varying", 50, "YES"),
        ("kpi_date", "date", None, "NO"),
        ("track_genre", "character varying", 255, "YES"),
        ("listen_count", "bigint", None, "YES"),
        ("avg_track_duration_sec", "double precision", None, "YES"),
        ("popularity_index", "double precision", None, "YES"),
        ("most_popular_track", "character varying", 255, "YES"),
        ("most_popular_track_id", "character varying", 64, "YES"),
        ("stream_hour", "integer", None, "YES"),
        ("unique_listeners", "integer", None, "YES"),
        ("top_artists", "character varying", 255, "YES"),
        ("track_diversity_index", "double precision", None, "YES"),
        ("run_id", "character varying", 128, "YES"),
        ("loaded_at", "timestamp without time zone", None, "YES"),
    ]


def test_load_into_a_schema_qualified_table(s3: Any, db: Db, tmp_path: Path) -> None:
    schema = f"analytics_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(db.dsn)
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    conn.close()
    create_tables(db.dsn, f"{schema}.{db.table}")
    settings = WarehouseSettings.from_env(
        {
            "WAREHOUSE_KIND": "postgres",
            "WAREHOUSE_DSN": db.dsn,
            "WAREHOUSE_TABLE": f"{schema}.{db.table}",
        }
    )
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", [genre_row(D1, "pop", "run-1")], [D1])

    inserted = PostgresWarehouse(settings, storage=Storage(s3)).replace_dates(batch, T1)

    assert inserted == 1
    assert db.fetch(f"SELECT track_genre FROM {schema}.{{table}}") == [("pop",)]
    assert db.fetch("SELECT to_regclass('public.{table}')") == [(None,)]


# --- loading ------------------------------------------------------------------------------------


def test_load_inserts_every_row_as_written_and_returns_the_count(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    rows = [
        genre_row(D2, "dance", "run-1", popularity_index=100 * (0.5 * 2 / 3 + 0.4)),
        genre_row(D2, "pop", "run-1"),
        hourly_row(D2, 0, "run-1"),
        hourly_row(D2, 23, "run-1", listen_count=9_000_000_000, track_diversity_index=1.0),
    ]
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", rows, [D2])

    inserted = warehouse.replace_dates(batch, T1)

    assert inserted == 4
    # Exact equality: floats (2/3, 73.333...) and BIGINT survive the CSV COPY bit for bit.
    assert db.rows() == [as_tuple(row, T1) for row in rows]


def test_loaded_at_is_the_given_instant_in_utc(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", [hourly_row(D1, 5, "run-1")], [D1])
    new_york_summer = dt.timezone(dt.timedelta(hours=-4))

    warehouse.replace_dates(batch, dt.datetime(2024, 6, 25, 22, 15, 30, tzinfo=new_york_summer))

    assert db.fetch("SELECT loaded_at FROM {table}") == [(dt.datetime(2024, 6, 26, 2, 15, 30),)]


def test_reloading_one_date_replaces_exactly_that_dates_rows(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    first = [
        genre_row(D1, "pop", "run-1"),
        hourly_row(D1, 10, "run-1"),
        genre_row(D2, "pop", "run-1"),
        genre_row(D2, "rock", "run-1"),
        hourly_row(D2, 11, "run-1"),
    ]
    warehouse.replace_dates(upload_batch(s3, tmp_path, "kpis/run-1.parquet", first, [D1, D2]), T1)
    # The late file changed D2: rock is gone, jazz appears, pop's count moved.
    second = [
        genre_row(D2, "jazz", "run-2"),
        genre_row(D2, "pop", "run-2", listen_count=7),
        hourly_row(D2, 11, "run-2", listen_count=8),
    ]

    inserted = warehouse.replace_dates(
        upload_batch(s3, tmp_path, "kpis/run-2.parquet", second, [D2]), T2
    )

    assert inserted == 3
    d1_rows = [as_tuple(row, T1) for row in first[:2]]  # run-1 and T1, untouched
    d2_rows = [as_tuple(row, T2) for row in second]
    assert db.rows() == d1_rows + d2_rows


def test_rerunning_the_same_batch_does_not_duplicate_rows(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    rows = [genre_row(D1, "pop", "run-1"), hourly_row(D1, 10, "run-1")]
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", rows, [D1])

    warehouse.replace_dates(batch, T1)
    inserted = warehouse.replace_dates(batch, T2)

    assert inserted == 2
    assert db.rows() == [as_tuple(row, T2) for row in rows]


def test_a_batch_date_without_rows_is_emptied(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    first = [genre_row(D1, "pop", "run-1"), genre_row(D2, "pop", "run-1")]
    warehouse.replace_dates(upload_batch(s3, tmp_path, "kpis/run-1.parquet", first, [D1, D2]), T1)

    # The batch covers D1 and D2 but only has rows for D2: D1's rows go, none come back.
    second = [genre_row(D2, "rock", "run-2")]
    warehouse.replace_dates(upload_batch(s3, tmp_path, "kpis/run-2.parquet", second, [D1, D2]), T2)

    assert db.rows() == [as_tuple(second[0], T2)]


# --- atomicity ----------------------------------------------------------------------------------


def test_a_row_rejected_mid_load_rolls_back_the_delete(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    first = [genre_row(D1, "pop", "run-1"), genre_row(D2, "pop", "run-1")]
    warehouse.replace_dates(upload_batch(s3, tmp_path, "kpis/run-1.parquet", first, [D1, D2]), T1)
    before = db.rows()
    # kpi_date is NOT NULL: the stage accepts the row, the INSERT after the DELETE refuses it.
    bad = [genre_row(D2, "rock", "run-2"), genre_row(None, "jazz", "run-2")]
    batch = upload_batch(s3, tmp_path, "kpis/run-2.parquet", bad, [D1, D2])

    with pytest.raises(WarehouseStatementFailed, match="kpi_date"):
        warehouse.replace_dates(batch, T2)

    assert db.rows() == before


def test_a_load_with_an_older_lock_token_than_the_fence_is_refused_saying_why(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    """A stopped run's load that commits after a newer run's is refused in its own
    transaction; the message says which token the fence holds, and where to look when no
    run loaded since (a recreated lock table restarts the tokens)."""
    rows = [genre_row(D1, "pop", "run-2")]
    batch = upload_batch(s3, tmp_path, "kpis/run-2.parquet", rows, [D1])
    for statement in (*REDSHIFT_FUNCTIONS, *create_fence_sql(fence_table(db.table))):
        _execute(db.dsn, statement)
    warehouse.replace_dates(replace(batch, fence=2, run_id="run-2"), T1)

    stale = replace(batch, fence=1, run_id="run-1")
    with pytest.raises(WarehouseStatementFailed) as refused:
        warehouse.replace_dates(stale, T2)

    message = str(refused.value)
    assert "the fence holds lock token 2, newer than this load's 1" in message
    assert "docs/runbook.md" in message
    assert db.rows() == [as_tuple(rows[0], T1)]
    _execute(db.dsn, f"DELETE FROM {fence_table(db.table)}")
    with pytest.raises(WarehouseStatementFailed, match=r"fence row of .* is missing"):
        warehouse.replace_dates(replace(batch, fence=3, run_id="run-3"), T2)


def _execute(dsn: str, sql: str) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def test_a_missing_kpi_file_raises_and_leaves_the_table_untouched(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    rows = [genre_row(D1, "pop", "run-1")]
    warehouse.replace_dates(upload_batch(s3, tmp_path, "kpis/run-1.parquet", rows, [D1]), T1)

    with pytest.raises(WarehouseStatementFailed, match=r"s3://kpi-data/kpis/gone\.parquet"):
        warehouse.replace_dates(KpiBatch(BUCKET, "kpis/gone.parquet", [D1]), T2)

    assert db.rows() == [as_tuple(rows[0], T1)]


# --- strings --------------------------------------------------------------------------------------


def test_strings_the_transform_cut_to_fit_arrive_as_cut(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    # Each value is cut where a whole character no longer fits in the column's bytes.
    genre = genre_row(
        D1,
        "é" * 300,  # 2 bytes each: 127 fit in 255
        "r" * 200,  # run_id
        most_popular_track="🎵" * 100,  # 4 bytes each: 63 fit in 255
        most_popular_track_id="t" * 70,
    )
    hourly = hourly_row(D1, 3, "run-1", top_artists="Y" * 100 + "ö" * 100)
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", [genre, hourly], [D1], fit=True)

    assert warehouse.replace_dates(batch, T1) == 2

    assert db.fetch(
        "SELECT track_genre, most_popular_track, most_popular_track_id, run_id "
        "FROM {table} WHERE kpi_type = 'genre'",
    ) == [("é" * 127, "🎵" * 63, "t" * 64, "r" * 128)]
    assert db.fetch("SELECT top_artists FROM {table} WHERE stream_hour = 3") == [
        ("Y" * 100 + "ö" * 77,)  # 254 bytes: a 78th 'ö' would need 256
    ]


def test_empty_strings_and_nulls_survive_the_copy_distinctly(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    rows = [
        genre_row(D1, "", "run-1", most_popular_track=None),
        genre_row(D1, None, "run-1", most_popular_track=""),
    ]
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", rows, [D1])

    warehouse.replace_dates(batch, T1)

    assert db.fetch(
        "SELECT track_genre, most_popular_track FROM {table} ORDER BY track_genre NULLS LAST"
    ) == [("", None), (None, "")]


def test_strings_with_csv_and_copy_special_characters_arrive_verbatim(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    # Separators, quotes, line breaks, COPY's NULL and end-of-data markers, blanks.
    texts = ['Rock, "Indie" & Folk', "line one\nline two", "C:\\music\\N", "\\N", "NULL"]
    texts += ["\\.", "  ", "'; DROP TABLE x; --"]
    rows = [hourly_row(D1, hour, "run-1", top_artists=text) for hour, text in enumerate(texts)]
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", rows, [D1])

    warehouse.replace_dates(batch, T1)

    assert db.fetch("SELECT top_artists FROM {table} ORDER BY stream_hour") == [
        (text,) for text in texts
    ]


# --- connection and configuration -----------------------------------------------------------------


def test_unreachable_server_is_retryable_and_the_password_is_not_in_the_message(
    s3: Any, tmp_path: Path
) -> None:
    dsn = "postgresql://loader:Sup3rSecretPw@127.0.0.1:1/warehouse?connect_timeout=2"
    settings = WarehouseSettings.from_env({"WAREHOUSE_KIND": "postgres", "WAREHOUSE_DSN": dsn})
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", [genre_row(D1, "pop", "r")], [D1])

    with pytest.raises(WarehouseUnavailable, match="cannot connect") as raised:
        PostgresWarehouse(settings, storage=Storage(s3)).replace_dates(batch, T1)

    assert "Sup3rSecretPw" not in str(raised.value)


@pytest.mark.parametrize(
    "malformed_dsn",
    [
        "host=127.0.0.1 port=1 password=Sup3r Secret",  # unquoted space in the password
        "postgresql://loader:Sup3rSecret%zz@127.0.0.1:1/warehouse",  # bad percent-encoding
        "postgresql://loader:Sup3rSecret@[::1/warehouse",  # unclosed IPv6 bracket
        # an unencoded '@' in the password: libpq ends the user info at the first one, so
        # the rest would become the host name, quoted in every connection error
        "postgresql://loader:Sup3r@Secret@127.0.0.1:1/warehouse",
        "postgresql://loader:Sup3r?x@Secret@127.0.0.1:1/warehouse",
        "postgresql://loader:Sup3r/x@Secret@127.0.0.1:1/warehouse",
    ],
)
def test_malformed_dsn_is_a_configuration_error_that_does_not_echo_the_dsn(
    s3: Any, tmp_path: Path, malformed_dsn: str
) -> None:
    settings = WarehouseSettings.from_env(
        {"WAREHOUSE_KIND": "postgres", "WAREHOUSE_DSN": malformed_dsn}
    )
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", [genre_row(D1, "pop", "r")], [D1])

    with pytest.raises(ConfigurationError, match="WAREHOUSE_DSN") as raised:
        PostgresWarehouse(settings, storage=Storage(s3)).replace_dates(batch, T1)

    assert "Secret" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_settings_error_never_echoes_the_dsn() -> None:
    dsn = "postgresql://loader:Sup3rSecretPw@db.internal:5432/warehouse"

    with pytest.raises(ConfigurationError, match="WAREHOUSE_TABLE") as raised:
        WarehouseSettings.from_env(
            {"WAREHOUSE_KIND": "postgres", "WAREHOUSE_DSN": dsn, "WAREHOUSE_TABLE": "kpis; --"}
        )

    assert "Sup3rSecretPw" not in str(raised.value)
    assert "db.internal" not in str(raised.value)


def test_postgres_kind_without_dsn_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="WAREHOUSE_DSN is required"):
        WarehouseSettings.from_env({"WAREHOUSE_KIND": "postgres"})


def test_open_warehouse_picks_the_postgres_adapter() -> None:
    settings = WarehouseSettings.from_env(
        {"WAREHOUSE_KIND": "postgres", "WAREHOUSE_DSN": "host=localhost dbname=kpis"}
    )

    assert isinstance(open_warehouse(settings), PostgresWarehouse)


def test_two_loads_of_the_same_date_at_once_leave_one_copy(
    warehouse: PostgresWarehouse, s3: Any, tmp_path: Path, db: Db
) -> None:
    rows = [genre_row(D1, "pop", "run-a"), hourly_row(D1, 10, "run-a")]
    batches = [
        upload_batch(s3, tmp_path, f"kpis/{name}.parquet", rows, [D1]) for name in ("a", "b")
    ]
    warehouse.replace_dates(batches[0], T1)  # the table exists from here
    errors: list[BaseException] = []

    def load(batch: KpiBatch) -> None:
        try:
            warehouse.replace_dates(batch, T2)
        except BaseException as exc:  # re-raised through the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(db.rows()) == len(rows)


# --- the warehouse engine: COPY ... FORMAT AS PARQUET MANIFEST, as Redshift reads it ---------

CURATED = pa.schema(
    [
        ("user_id", pa.int64()),
        ("track_id", pa.string()),
        ("listen_time", pa.timestamp("us")),  # the UTC wall time, no time zone
        ("kpi_date", pa.date32()),
        ("content_key", pa.string()),
    ]
)


def put_parquet(s3: Any, tmp_path: Path, key: str, table: pa.Table) -> int:
    path = tmp_path / key.replace("/", "_")
    pq.write_table(table, path)
    s3.upload_file(str(path), BUCKET, key)
    return path.stat().st_size


def date_job(
    s3: Any,
    tmp_path: Path,
    kpi_table: str,
    *,
    plays: pa.Table | None = None,
    lengths: dict[str, int] | None = None,
) -> DateJob:
    """A job for D2: two plays of one song, its artists; manifests as TransformInWarehouse
    writes them (``lengths`` overrides a manifest's content_length)."""
    at = dt.datetime(2024, 6, 25, 10, 5, tzinfo=dt.UTC)
    inputs = {
        "wh_curated_plays": plays
        if plays is not None
        else pa.Table.from_pylist(
            [
                {
                    "user_id": 1,
                    "track_id": "A",
                    "listen_time": at,
                    "kpi_date": D2,
                    "content_key": "c1",
                },
                {
                    "user_id": 2,
                    "track_id": "A",
                    "listen_time": at,
                    "kpi_date": D2,
                    "content_key": "c1",
                },
            ],
            schema=CURATED,
        ),
        "wh_songs": pa.table(
            {
                "track_id": ["A"],
                "track_genre": ["pop"],
                "track_name": ["Song A"],
                "popularity": pa.array([60], pa.int32()),
                "duration_ms": [200_000],
            }
        ),
        "wh_song_artists": pa.table({"track_id": ["A"], "artist": ["Y"]}),
    }
    manifests = {}
    for table, rows in inputs.items():
        key = f"inputs/{table}.parquet"
        size = put_parquet(s3, tmp_path, key, rows)
        length = (lengths or {}).get(table, size)
        manifest = {
            "entries": [
                {
                    "url": f"s3://{BUCKET}/{key}",
                    "mandatory": True,
                    "meta": {"content_length": length},
                }
            ]
        }
        s3.put_object(Bucket=BUCKET, Key=f"manifests/{table}.manifest", Body=json.dumps(manifest))
        manifests[table] = f"manifests/{table}.manifest"
    return DateJob(D2, "run-w", BUCKET, manifests, ATTEMPT, "c" * 32)


ATTEMPT = "0a1b2c3d4e5f"


def test_a_date_is_computed_from_its_manifests_into_its_stage_batch(
    s3: Any, warehouse: PostgresWarehouse, db: Db, tmp_path: Path, table: str
) -> None:
    job = date_job(s3, tmp_path, table)

    figures, batch_id = warehouse.compute_date(job)

    assert figures == {
        "curated_rows": 2,
        "plays_in_kpis": 2,
        "plays_without_song": 0,
        "genre_rows": 1,
        "hourly_rows": 1,
    }
    rows = db.fetch(
        "SELECT kpi_type, listen_count, top_artists, attempt, batch_id FROM {table}_stage "
        "ORDER BY 1"
    )
    assert rows == [("genre", 2, None, ATTEMPT, batch_id), ("hourly", 2, "Y", ATTEMPT, batch_id)]
    # Load takes the batch's rows in its one transaction, and keeps them: a load run again
    # (a retry after its commit) gives the same rows, never an empty date.
    taken = StageBatch(D2, batch_id, 2)
    batch = KpiBatch(BUCKET, "unused/", [D2], has_parts=False, stage_batches=(taken,))
    assert warehouse.replace_dates(batch, T1) == 2
    assert warehouse.replace_dates(batch, T2) == 2
    assert len(db.rows()) == 2
    assert db.fetch("SELECT count(*) FROM {table}_stage") == [(2,)]


def test_each_computation_of_a_date_is_a_batch_of_its_own(
    s3: Any, warehouse: PostgresWarehouse, db: Db, tmp_path: Path, table: str
) -> None:
    """The review found a retry after a commit inserted a second copy under the same id,
    and Load took both: every computation has its own id, and Load takes the one its
    result names."""
    job = date_job(s3, tmp_path, table)
    _, first = warehouse.compute_date(job)
    _, second = warehouse.compute_date(job)
    assert first != second

    batch = KpiBatch(
        BUCKET, "unused/", [D2], has_parts=False, stage_batches=(StageBatch(D2, second, 2),)
    )
    assert warehouse.replace_dates(batch, T1) == 2
    assert len(db.rows()) == 2
    # the first batch, never taken, is gone with the load of its date
    assert db.fetch("SELECT DISTINCT batch_id FROM {table}_stage") == [(second,)]


def test_a_load_whose_batch_lacks_rows_replaces_nothing(
    s3: Any, warehouse: PostgresWarehouse, db: Db, tmp_path: Path, table: str
) -> None:
    """A batch cleared or never committed (its result names it all the same) would empty
    its date: the row check rolls the load back."""
    job = date_job(s3, tmp_path, table)
    _, batch_id = warehouse.compute_date(job)
    taken = StageBatch(D2, batch_id, 2)
    warehouse.replace_dates(
        KpiBatch(BUCKET, "u/", [D2], has_parts=False, stage_batches=(taken,)), T1
    )
    missing = StageBatch(D2, "f" * 32, 2)

    with pytest.raises(WarehouseStatementFailed, match="lacks rows of the batches this load"):
        warehouse.replace_dates(
            KpiBatch(BUCKET, "u/", [D2], has_parts=False, stage_batches=(missing,)), T2
        )
    assert len(db.rows()) == 2


def test_load_takes_only_the_batches_it_names(
    s3: Any, warehouse: PostgresWarehouse, db: Db, tmp_path: Path, table: str
) -> None:
    """Issue 17, item 2: a stopped run's batch of the same date, committed late, is never
    taken beside the current run's."""
    job = date_job(s3, tmp_path, table)
    _, batch_id = warehouse.compute_date(job)
    stale = DateJob(D2, "run-old", BUCKET, job.manifests, "ffffffffffff", "d" * 32)
    warehouse.compute_date(stale)

    taken = StageBatch(D2, batch_id, 2)
    batch = KpiBatch(BUCKET, "unused/", [D2], has_parts=False, stage_batches=(taken,))

    assert warehouse.replace_dates(batch, T1) == 2
    assert db.fetch("SELECT DISTINCT run_id FROM {table}") == [("run-w",)]


def test_a_manifest_entry_whose_content_length_is_wrong_fails_the_copy(
    s3: Any, warehouse: PostgresWarehouse, tmp_path: Path, table: str
) -> None:
    """Redshift needs each Parquet object's exact size in the manifest; moto checks nothing."""
    job = date_job(s3, tmp_path, table, lengths={"wh_songs": 10})

    with pytest.raises(WarehouseStatementFailed, match="its manifest says 10"):
        warehouse.compute_date(job)


def test_parquet_with_another_number_of_columns_than_its_table_fails_the_copy(
    s3: Any, warehouse: PostgresWarehouse, tmp_path: Path, table: str
) -> None:
    """COPY maps Parquet columns to the table's by position and needs as many."""
    plays = pa.table({"user_id": [1], "track_id": ["A"], "listen_time": [T1]})

    with pytest.raises(WarehouseStatementFailed, match="has 3 columns and the table 5"):
        warehouse.compute_date(date_job(s3, tmp_path, table, plays=plays))


def test_a_manifest_listing_a_missing_object_fails_the_copy(
    s3: Any, warehouse: PostgresWarehouse, tmp_path: Path, table: str
) -> None:
    job = date_job(s3, tmp_path, table)
    s3.delete_object(Bucket=BUCKET, Key="inputs/wh_song_artists.parquet")

    with pytest.raises(WarehouseStatementFailed, match=r"listed in .* but missing"):
        warehouse.compute_date(job)


# --- what COPY from Parquet refuses (kpi_pipeline.warehouse.copy_parquet) ----------------------


def test_a_part_with_a_string_longer_than_its_column_is_refused(
    warehouse: PostgresWarehouse, s3: Any, db: Db, tmp_path: Path
) -> None:
    """COPY from Parquet cannot truncate: Transform writes its parts cut to fit."""
    rows = [genre_row(D1, "é" * 300, "run-1")]
    batch = upload_batch(s3, tmp_path, "kpis/run-1.parquet", rows, [D1])

    with pytest.raises(WarehouseStatementFailed, match=r"600 bytes: track_genre is VARCHAR\(255\)"):
        warehouse.replace_dates(batch, T1)
    assert db.rows() == []


def test_a_part_compressed_with_zstd_is_refused(
    warehouse: PostgresWarehouse, s3: Any, tmp_path: Path
) -> None:
    """Issue 18, item 3: Redshift documents Snappy, gzip and bzip2 for Parquet, not ZSTD."""
    rows = [genre_row(D1, "pop", "run-1")]
    batch = upload_batch(s3, tmp_path, "kpis/z.parquet", rows, [D1], compression="zstd")

    with pytest.raises(WarehouseStatementFailed, match="compressed with ZSTD"):
        warehouse.replace_dates(batch, T1)


def test_utc_adjusted_listen_times_are_refused(
    s3: Any, warehouse: PostgresWarehouse, tmp_path: Path, table: str
) -> None:
    """Issue 18, item 3: a UTC-adjusted Parquet timestamp has no Redshift type to go to."""
    at = dt.datetime(2024, 6, 25, 10, 5, tzinfo=dt.UTC)
    plays = pa.table(
        {
            "user_id": [1],
            "track_id": ["A"],
            "listen_time": pa.array([at], pa.timestamp("us", tz="UTC")),
            "kpi_date": pa.array([D2], pa.date32()),
            "content_key": ["c1"],
        }
    )

    with pytest.raises(WarehouseStatementFailed, match=r"TIMESTAMP\(true,micros\)"):
        warehouse.compute_date(date_job(s3, tmp_path, table, plays=plays))
