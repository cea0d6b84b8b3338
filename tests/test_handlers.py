"""Each Lambda handler on its own, as Lambda calls it: an event dict and a context.

The real handler functions run against a real PostgreSQL (the source and the warehouse)
and moto's S3 and Secrets Manager, configured through environment variables as in AWS.
The events in ``tests/events/`` are what the state machine passes each step; tests load
them and replace what a step's real predecessor returned.

The source data is the worked example of KPIS.md, so computed KPIs can be checked by hand.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import socket
import sys
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from archive.handler import handler as archive_handler
from extract_rds.handler import check_source, extract_tables
from extract_s3.handler import ingest_file, list_new_files
from kpi_pipeline import aws as pipeline_aws
from kpi_pipeline import settings as pipeline_settings
from kpi_pipeline.contracts import (
    ArchiveRequest,
    IngestRequest,
    LoadRequest,
    RunRequest,
    TransformRequest,
)
from kpi_pipeline.errors import (
    ConfigurationError,
    DataGateError,
    SourceSchemaError,
    SourceUnavailable,
)
from kpi_pipeline.observability import logger as pipeline_logger
from kpi_pipeline.source import SourceDatabase
from kpi_pipeline.warehouse.arrow import KPI_SCHEMA
from load.handler import handler as load_handler
from local_runner.databases import dsn_to_secret, replace_source_tables
from local_runner.sample_data import SONGS_HEADER, USERS_HEADER
from transform.handler import handler as transform_handler

# A handler rejecting its event never reaches its metrics: Powertools then warns.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

RUN = "handler-test-run"  # the run id of the sample events
DATA_BUCKET = "music-kpi-data-test"
LANDING_BUCKET = "music-kpi-landing-test"
LANDING = "landing/"
SECRET_ID = "music-kpi/source-rds"
PASSWORD = "Pw-7d1e9c-must-never-be-logged"  # a marker to look for, not a credential
EVENTS = Path(__file__).parent / "events"
DAY = dt.date(2024, 6, 25)
NEXT_DAY = dt.date(2024, 6, 26)


@dataclass(frozen=True)
class FakeLambdaContext:
    """What the Lambda runtime passes as ``context`` (the attributes Powertools reads)."""

    function_name: str = "music-kpi-handler-test"
    function_version: str = "$LATEST"
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:music-kpi-handler-test"
    )
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "6f1c2a3e-0000-4000-8000-000000000001"
    log_group_name: str = "/aws/lambda/music-kpi-handler-test"
    log_stream_name: str = "2024/06/26/[$LATEST]0123456789abcdef"
    remaining_millis: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


CONTEXT = FakeLambdaContext()


def event(step: str, **overrides: Any) -> dict[str, Any]:
    """The sample event of ``step`` (tests/events/<step>.json) with some fields replaced."""
    return {**json.loads((EVENTS / f"{step}.json").read_text()), **overrides}


# --- the worked example of KPIS.md ----------------------------------------------------------


def song(
    id: int,  # the source column's name
    track_id: str,
    track_genre: str,
    *,
    track_name: str | None = None,
    artists: str = "X;Y",
    popularity: object = 80,
    duration_ms: object = 180_000,
) -> dict[str, object]:
    """One row of the source ``songs`` table (Spotify tracks layout)."""
    return {
        "id": id,
        "track_id": track_id,
        "artists": artists,
        "album_name": f"Album {track_id}",
        "track_name": track_name or f"Song {track_id}",
        "popularity": popularity,
        "duration_ms": duration_ms,
        "explicit": "False",
        "danceability": 0.5,
        "energy": 0.6,
        "key": 5,
        "loudness": -6.5,
        "mode": 1,
        "speechiness": 0.05,
        "acousticness": 0.1,
        "instrumentalness": 0.0,
        "liveness": 0.12,
        "valence": 0.4,
        "tempo": 118.0,
        "time_signature": 4,
        "track_genre": track_genre,
    }


def user(user_id: object, name: str = "Listener") -> dict[str, object]:
    return {
        "user_id": user_id,
        "user_name": name,
        "user_age": 30,
        "user_country": "BR",
        "created_at": "2020-01-02 03:04:05",
    }


USERS = [user(1, "Ana Silva"), user(2, "Jack Kelly")]
SONGS = [
    song(0, "A", "pop", popularity=80, duration_ms=180_000),
    song(1, "A", "dance", popularity=80, duration_ms=180_000),
    song(2, "B", "pop", artists="Y", popularity=40, duration_ms=240_000),
]
# Plays of 2024-06-25: a duplicate (1, B, 10:40) and an unknown user 3 (quarantined).
STREAMS_DAY = (
    "user_id,track_id,listen_time\n"
    "1,A,2024-06-25 10:05:00\n"
    "2,A,2024-06-25 10:20:00\n"
    "1,B,2024-06-25 10:40:00\n"
    "1,B,2024-06-25 10:40:00\n"
    "3,B,2024-06-25 11:00:00\n"
)
STREAMS_NEXT_DAY = "user_id,track_id,listen_time\n2,B,2024-06-26T08:15:00Z\n"
NO_LISTEN_TIME = "user_id,track_id,played\n1,A,2024-06-25 10:05:00\n"


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def cloud(aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """moto's S3 with the two buckets, and the storage settings of every step."""
    for bucket in (DATA_BUCKET, LANDING_BUCKET):
        aws.s3.create_bucket(Bucket=bucket)
    # The pipeline's clients are moto's: building fresh boto3 sessions in every test would
    # re-parse botocore's service models each time (about a second per test).
    monkeypatch.setitem(pipeline_aws._clients, "s3", aws.s3)
    monkeypatch.setitem(pipeline_aws._clients, "secretsmanager", aws.secrets)
    monkeypatch.setenv("DATA_BUCKET", DATA_BUCKET)
    monkeypatch.setenv("LANDING_BUCKET", LANDING_BUCKET)
    monkeypatch.setenv("LANDING_PREFIX", LANDING)
    monkeypatch.setenv("WORK_DIR", str(tmp_path / "lambda-tmp"))
    return aws


@pytest.fixture
def source_dsn(cloud: Any, new_database: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty source database, and its RDS-style secret (with a password) in moto."""
    dsn = new_database("source")
    secret = {**dsn_to_secret(dsn), "password": PASSWORD}  # the test server trusts anyway
    cloud.secrets.create_secret(Name=SECRET_ID, SecretString=json.dumps(secret))
    monkeypatch.setenv("SOURCE_SECRET_ARN", SECRET_ID)
    return dsn


@pytest.fixture
def world(source_dsn: str, tmp_path: Path) -> str:
    """The source holds the worked example's users and songs (typed columns, as in RDS)."""
    load_typed_source(source_dsn, tmp_path, USERS, SONGS)
    return source_dsn


@pytest.fixture
def snapshot(world: str) -> dict[str, Any]:
    """ExtractRds's output for the run ``RUN``."""
    return extract_tables(event("extract_rds"), CONTEXT)


@pytest.fixture
def warehouse_dsn(new_database: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    dsn = new_database("warehouse")
    monkeypatch.setenv("WAREHOUSE_KIND", "postgres")
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    return dsn


class CurrentStdout:
    """A stream that writes wherever ``sys.stdout`` points at the moment (capsys in a test)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def captured_logs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """capsys, with the pipeline's log lines in it.

    The Powertools logger keeps the ``sys.stdout`` of import time, which capsys never sees:
    its handler writes to the current ``sys.stdout`` instead for the test's duration.
    """
    monkeypatch.setattr(pipeline_logger.registered_handler, "stream", CurrentStdout())
    return capsys


# --- helpers ------------------------------------------------------------------------------------


def load_typed_source(
    dsn: str, tmp_path: Path, users: list[dict[str, object]], songs: list[dict[str, object]]
) -> None:
    """Replace the source tables through the local runner's loader (typed DDL)."""
    folder = tmp_path / f"source-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    for name, header, rows in (("users", USERS_HEADER, users), ("songs", SONGS_HEADER, songs)):
        with (folder / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    replace_source_tables(dsn, folder / "users.csv", folder / "songs.csv")


def load_text_source(
    dsn: str, users: list[dict[str, object]], songs: list[dict[str, object]]
) -> None:
    """Source tables whose every column is TEXT, so they can hold values RDS types forbid."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS users, songs")
            for table, header, rows in (
                ("users", USERS_HEADER, users),
                ("songs", SONGS_HEADER, songs),
            ):
                names = ", ".join(f'"{c}"' for c in header)
                cur.execute(f"CREATE TABLE {table} ({names.replace(',', ' TEXT,')} TEXT)")
                psycopg2.extras.execute_values(
                    cur,
                    f"INSERT INTO {table} ({names}) VALUES %s",
                    [tuple(None if r[c] is None else str(r[c]) for c in header) for r in rows],
                )
    finally:
        conn.close()


def execute(dsn: str, statement: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def put_landing(s3: Any, name: str, body: str | bytes) -> str:
    key = LANDING + name
    s3.put_object(
        Bucket=LANDING_BUCKET, Key=key, Body=body.encode() if isinstance(body, str) else body
    )
    return key


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def object_versions(s3: Any, prefix: str) -> list[tuple[str, str]]:
    """(key, version id) of every version under ``prefix`` of the (versioned) data bucket."""
    found = s3.list_object_versions(Bucket=DATA_BUCKET, Prefix=prefix).get("Versions", [])
    return sorted((v["Key"], v["VersionId"]) for v in found)


def read_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def read_json(s3: Any, key: str) -> Any:
    return json.loads(read_bytes(s3, DATA_BUCKET, key))


def read_parquet(s3: Any, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(s3, DATA_BUCKET, key)))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def snapshot_ref(snapshot: dict[str, Any]) -> dict[str, str]:
    """The part of ExtractRds's output the state machine hands to IngestFile and Transform."""
    return {"users_key": snapshot["users_key"], "songs_key": snapshot["songs_key"]}


def ingest_manifest(
    run_id: str, manifest: dict[str, Any], snapshot: dict[str, Any]
) -> list[dict[str, Any]]:
    """The IngestStreams Map: IngestFile once per manifest entry."""
    return [
        ingest_file(
            event("ingest_file", run_id=run_id, file=entry, snapshot=snapshot_ref(snapshot)),
            CONTEXT,
        )
        for entry in manifest["files"]
    ]


def transform(run_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    return transform_handler(
        event("transform", run_id=run_id, snapshot=snapshot_ref(snapshot)), CONTEXT
    )


def load(run_id: str, transformed: dict[str, Any]) -> dict[str, Any]:
    return load_handler(
        event(
            "load",
            run_id=run_id,
            kpi_key=transformed["kpi_key"],
            kpi_dates=transformed["kpi_dates"],
        ),
        CONTEXT,
    )


def archive(
    run_id: str,
    manifest: dict[str, Any],
    snapshot: dict[str, Any],
    transformed: dict[str, Any],
    loaded: dict[str, Any] | None,
) -> dict[str, Any]:
    return archive_handler(
        event(
            "archive",
            run_id=run_id,
            manifest_key=manifest["manifest_key"],
            files_deferred=manifest["files_deferred"],
            files_ignored=manifest["files_ignored"],
            source=snapshot,
            transform=transformed,
            # The state machine's NothingToLoad state passes {"skipped": true}.
            load=loaded if loaded is not None else {"skipped": True},
        ),
        CONTEXT,
    )


def warehouse_rows(dsn: str) -> list[dict[str, Any]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(
                "SELECT * FROM music_kpi_metrics "
                "ORDER BY kpi_date, kpi_type, track_genre NULLS FIRST, stream_hour NULLS FIRST"
            )
            return [dict(row) for row in cur.fetchall()]
    finally:
        conn.close()


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- CheckSourceData ------------------------------------------------------------------------------


def test_check_source_counts_the_rows_of_users_and_songs(world: str) -> None:
    result = check_source(event("check_source"), CONTEXT)

    assert result == {"users": 2, "songs": 3, "has_data": True}


@pytest.mark.parametrize("emptied", ["users", "songs"])
def test_check_source_has_no_data_when_a_table_is_empty(world: str, emptied: str) -> None:
    execute(world, f"DELETE FROM {emptied}")

    result = check_source(event("check_source"), CONTEXT)

    assert result["has_data"] is False
    assert result[emptied] == 0
    assert result["users" if emptied == "songs" else "songs"] > 0


@pytest.mark.parametrize(
    ("step", "handler"),
    [("check_source", check_source), ("extract_rds", extract_tables)],
    ids=["CheckSourceData", "ExtractRds"],
)
def test_a_missing_source_column_is_a_schema_error_naming_it(
    world: str, step: str, handler: Any
) -> None:
    # ExtractRds too: the table may change after CheckSourceData looked at it.
    execute(world, "ALTER TABLE songs DROP COLUMN track_genre")

    with pytest.raises(SourceSchemaError, match=r"'songs' lacks columns: track_genre$"):
        handler(event(step), CONTEXT)


def use_secret(
    cloud: Any, monkeypatch: pytest.MonkeyPatch, name: str, secret: str | dict[str, object]
) -> None:
    """Store a source secret in moto and point SOURCE_SECRET_ARN at it (a new cold start)."""
    text = secret if isinstance(secret, str) else json.dumps(secret)
    cloud.secrets.create_secret(Name=name, SecretString=text)
    monkeypatch.setenv("SOURCE_SECRET_ARN", name)
    pipeline_settings.clear_cache()  # settings are read once per process


def test_check_source_rejects_a_secret_that_is_not_json(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_secret(cloud, monkeypatch, "not-json", "host=db.internal user=etl")

    with pytest.raises(ConfigurationError, match="source secret is not a JSON object"):
        check_source(event("check_source"), CONTEXT)


def test_check_source_rejects_a_secret_without_host(
    source_dsn: str, cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_host = {k: v for k, v in dsn_to_secret(source_dsn).items() if k != "host"}
    use_secret(cloud, monkeypatch, "no-host", without_host)

    with pytest.raises(ConfigurationError, match="source secret lacks host"):
        check_source(event("check_source"), CONTEXT)


def test_check_source_reports_an_unreachable_database_as_source_unavailable(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    secret = {"host": "127.0.0.1", "port": port, "dbname": "music", "username": "etl"}
    use_secret(cloud, monkeypatch, "unreachable", secret)

    with pytest.raises(SourceUnavailable, match=f"cannot connect.*{port}"):
        check_source(event("check_source"), CONTEXT)


def test_source_password_never_reaches_an_error_or_a_log_line(
    world: str, cloud: Any, monkeypatch: pytest.MonkeyPatch, captured_logs: Any
) -> None:
    # Steps that succeed with the password, then two failures that carry it.
    check_source(event("check_source"), CONTEXT)
    extract_tables(event("extract_rds"), CONTEXT)
    failures = []
    use_secret(cloud, monkeypatch, "not-json", f"host=db.internal password={PASSWORD}")
    with pytest.raises(ConfigurationError) as not_json:
        check_source(event("check_source"), CONTEXT)
    failures.append(not_json.value)
    down = {**dsn_to_secret(world), "host": "127.0.0.1", "port": closed_port()}
    use_secret(cloud, monkeypatch, "down", {**down, "password": PASSWORD})
    with pytest.raises(SourceUnavailable) as unreachable:
        check_source(event("check_source"), CONTEXT)
    failures.append(unreachable.value)

    logs = captured_logs.readouterr()
    assert logs.out.count('"step failed"') == 2  # the log lines were really captured
    assert '"step":"ExtractRds"' in logs.out
    assert PASSWORD not in logs.out + logs.err
    for failure in failures:  # with its whole chain, as a traceback would print it
        assert PASSWORD not in "".join(traceback.format_exception(failure))


# --- ExtractRds -----------------------------------------------------------------------------------


def test_extract_writes_the_cleaned_snapshots_at_the_layout_keys(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    assert snapshot == {
        "users_key": f"snapshots/run_id={RUN}/users.parquet",
        "songs_key": f"snapshots/run_id={RUN}/songs.parquet",
        "users": 2,
        "songs": 3,
        "source_rows_quarantined": {},
        "song_duplicate_pairs": 0,
    }
    # The sample events hand these keys to IngestFile and Transform.
    assert event("ingest_file")["snapshot"] == snapshot_ref(snapshot)

    users = read_parquet(cloud.s3, snapshot["users_key"])
    songs = read_parquet(cloud.s3, snapshot["songs_key"])
    assert sorted(users.column("user_id").to_pylist()) == [1, 2]
    assert users.schema.field("user_id").type == pa.int64()
    rows = sorted(
        songs.select(["id", "track_id", "track_genre", "popularity", "duration_ms"]).to_pylist(),
        key=lambda r: r["id"],
    )
    assert rows == [
        {"id": 0, "track_id": "A", "track_genre": "pop", "popularity": 80, "duration_ms": 180_000},
        {
            "id": 1,
            "track_id": "A",
            "track_genre": "dance",
            "popularity": 80,
            "duration_ms": 180_000,
        },
        {"id": 2, "track_id": "B", "track_genre": "pop", "popularity": 40, "duration_ms": 240_000},
    ]
    assert keys(cloud.s3, DATA_BUCKET, "quarantine/") == []  # nothing was rejected


def test_extract_fetches_the_source_in_batches_of_extract_batch_size(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra_songs = 1_050
    execute(
        world,
        f"""
        INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity,
                           duration_ms, track_genre)
        SELECT 100 + g, 'T' || g, 'Artist ' || g, 'Album', 'Track ' || g, g % 101,
               120000 + g, 'rock'
        FROM generate_series(1, {extra_songs}) AS g
        """,
    )
    monkeypatch.setenv("EXTRACT_BATCH_SIZE", "100")
    fetched: dict[str, list[int]] = {"users": [], "songs": []}
    real_read_batches = SourceDatabase.read_batches

    def spying_read_batches(self: SourceDatabase, table: str, batch_size: int) -> Any:
        for batch in real_read_batches(self, table, batch_size):
            fetched[table].append(len(batch))
            yield batch

    monkeypatch.setattr(SourceDatabase, "read_batches", spying_read_batches)

    result = extract_tables(event("extract_rds"), CONTEXT)

    total = len(SONGS) + extra_songs  # 1053 rows: ten full batches and one of 53
    assert fetched["songs"] == [100] * 10 + [53]
    assert fetched["users"] == [2]
    assert result["songs"] == total


def test_extract_quarantines_unusable_song_rows_with_their_reason(
    source_dsn: str, cloud: Any
) -> None:
    load_text_source(
        source_dsn,
        users=[user(1), user("abc")],
        songs=[
            song(1, "A", "pop"),
            song(2, "", "pop"),
            song(3, "   ", "rock"),
            song(4, "C", ""),
            song(5, "D", "pop", popularity=150),
            song(6, "E", "pop", popularity="12.5"),
            song(7, "F", "pop", popularity=-1),
            song(8, "G", "pop", duration_ms=-5),
            song(9, "H", "pop", duration_ms="3 minutes"),
        ],
    )

    result = extract_tables(event("extract_rds"), CONTEXT)

    assert result["source_rows_quarantined"] == {
        "songs.invalid_duration_ms": 2,
        "songs.invalid_popularity": 3,
        "songs.missing_track_genre": 1,
        "songs.missing_track_id": 2,
        "users.invalid_user_id": 1,
    }
    assert (result["users"], result["songs"]) == (1, 1)
    songs = read_parquet(cloud.s3, result["songs_key"])
    assert songs.column("track_id").to_pylist() == ["A"]
    rejected = read_parquet(cloud.s3, f"quarantine/source/run_id={RUN}/rows.parquet")
    rejected_songs = {
        r["row_key"]: r["reason"] for r in rejected.to_pylist() if r["source_table"] == "songs"
    }
    assert rejected_songs == {
        "2": "missing_track_id",
        "3": "missing_track_id",
        "4": "missing_track_genre",
        "5": "invalid_popularity",
        "6": "invalid_popularity",
        "7": "invalid_popularity",
        "8": "invalid_duration_ms",
        "9": "invalid_duration_ms",
    }
    rejected_users = [r["reason"] for r in rejected.to_pylist() if r["source_table"] == "users"]
    assert rejected_users == ["invalid_user_id"]


def test_extract_keeps_the_smallest_id_of_a_repeated_track_genre_pair(
    source_dsn: str, tmp_path: Path, cloud: Any
) -> None:
    load_typed_source(
        source_dsn,
        tmp_path,
        USERS,
        [
            song(7, "A", "pop", track_name="late copy"),
            song(3, "A", "pop", track_name="original"),
            song(9, "A", "pop", track_name="another copy"),
            song(5, "A", "dance", track_name="dance row"),
        ],
    )

    result = extract_tables(event("extract_rds"), CONTEXT)

    assert result["songs"] == 2
    assert result["song_duplicate_pairs"] == 2  # rows beyond the first of their pair
    assert result["source_rows_quarantined"] == {}
    songs = read_parquet(cloud.s3, result["songs_key"]).to_pylist()
    kept = {(r["track_genre"], r["id"], r["track_name"]) for r in songs}
    assert kept == {("pop", 3, "original"), ("dance", 5, "dance row")}


def test_extract_fails_the_data_gate_when_no_song_is_usable(source_dsn: str, cloud: Any) -> None:
    load_text_source(
        source_dsn,
        users=[user(1)],
        songs=[song(1, "", "pop"), song(2, "B", "pop", popularity=101)],
    )

    with pytest.raises(DataGateError, match="songs: 0"):
        extract_tables(event("extract_rds"), CONTEXT)
    assert keys(cloud.s3, DATA_BUCKET, "snapshots/") == []


# --- ListNewFiles ---------------------------------------------------------------------------------


def test_list_new_files_takes_only_csv_files_under_the_landing_prefix(cloud: Any) -> None:
    s3 = cloud.s3
    put_landing(s3, "b.csv", STREAMS_DAY)
    put_landing(s3, "2024/06/A.CSV", STREAMS_NEXT_DAY)
    put_landing(s3, "notes.txt", "not streams")
    put_landing(s3, "streams.csv.gz", b"\x1f\x8b")
    put_landing(s3, "folder/", b"")  # a console "folder" placeholder
    s3.put_object(Bucket=LANDING_BUCKET, Key="elsewhere/c.csv", Body=STREAMS_DAY.encode())

    manifest = list_new_files(event("list_new_files"), CONTEXT)

    def head(key: str) -> dict[str, Any]:
        found = s3.head_object(Bucket=LANDING_BUCKET, Key=key)
        return {"etag": found["ETag"].strip('"'), "size": found["ContentLength"]}

    assert manifest["files"] == [
        {"index": 0, "key": "landing/2024/06/A.CSV", **head("landing/2024/06/A.CSV")},
        {"index": 1, "key": "landing/b.csv", **head("landing/b.csv")},
    ]
    assert manifest["files"][1]["size"] == len(STREAMS_DAY)
    assert (manifest["file_count"], manifest["files_deferred"], manifest["files_ignored"]) == (
        2,
        0,
        2,
    )
    assert manifest["manifest_key"] == f"runs/{RUN}/manifest.json"
    written = read_json(s3, manifest["manifest_key"])
    assert written["run_id"] == RUN
    assert written["files"] == manifest["files"]
    assert written["files_ignored"] == 2
    # Listing moves nothing: every object is still where it landed.
    assert keys(s3, LANDING_BUCKET) == [
        "elsewhere/c.csv",
        "landing/2024/06/A.CSV",
        "landing/b.csv",
        "landing/folder/",
        "landing/notes.txt",
        "landing/streams.csv.gz",
    ]


def test_list_new_files_defers_files_beyond_max_files_per_run(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("s3.csv", "s1.csv", "s2.csv", "s4.csv"):
        put_landing(cloud.s3, name, STREAMS_DAY + f"1,A,2024-06-25 12:00:0{name[1]}\n")
    monkeypatch.setenv("MAX_FILES_PER_RUN", "3")

    manifest = list_new_files(event("list_new_files"), CONTEXT)

    assert [f["key"] for f in manifest["files"]] == [
        "landing/s1.csv",
        "landing/s2.csv",
        "landing/s3.csv",
    ]
    assert (manifest["file_count"], manifest["files_deferred"]) == (3, 1)
    assert read_json(cloud.s3, manifest["manifest_key"])["files_deferred"] == 1


# --- IngestFile -----------------------------------------------------------------------------------


def test_ingest_file_publishes_curated_plays_a_ledger_entry_and_its_result(
    snapshot: dict[str, Any], cloud: Any, tmp_path: Path
) -> None:
    s3 = cloud.s3
    put_landing(s3, "streams_2024-06-25.csv", STREAMS_DAY)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    content_key = sha256(STREAMS_DAY)

    result = ingest_file(
        event("ingest_file", file=manifest["files"][0], snapshot=snapshot_ref(snapshot)), CONTEXT
    )

    assert result["outcome"] == "processed"
    assert result["content_key"] == content_key
    assert (result["plays_valid"], result["duplicates"]) == (3, 1)
    assert result["rows_quarantined"] == {"unknown_user_id": 1}
    assert result["kpi_dates"] == ["2024-06-25"]
    curated_key = f"curated/plays/kpi_date=2024-06-25/{content_key}.parquet"
    assert keys(s3, DATA_BUCKET, "curated/") == [curated_key]
    plays = read_parquet(s3, curated_key)
    played = sorted((r["user_id"], r["track_id"]) for r in plays.to_pylist())
    assert played == [(1, "A"), (1, "B"), (2, "A")]
    ledger = read_json(s3, f"ledger/files/{content_key}.json")
    assert ledger["run_id"] == RUN
    assert ledger["source_key"] == "landing/streams_2024-06-25.csv"
    assert ledger["kpi_dates"] == ["2024-06-25"]
    assert "loaded_by_run" not in ledger
    assert read_json(s3, f"runs/{RUN}/ingest/0.json") == result
    assert keys(s3, DATA_BUCKET, "quarantine/rows/") == [f"quarantine/rows/{content_key}.parquet"]
    assert list((tmp_path / "lambda-tmp").iterdir()) == []  # /tmp is left clean


def test_ingest_file_recognises_the_same_bytes_under_another_name(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    s3 = cloud.s3
    # With versioning, any rewrite of an accepted output would show as a second version.
    s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    put_landing(s3, "first.csv", STREAMS_DAY)
    first = ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    s3.delete_object(Bucket=LANDING_BUCKET, Key=LANDING + "first.csv")
    put_landing(s3, "resent-copy.csv", STREAMS_DAY)
    accepted_outputs = ("curated/", "quarantine/rows/", "ledger/")
    versions_before = {p: object_versions(s3, p) for p in accepted_outputs}

    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    (again,) = ingest_manifest("run-2", manifest, snapshot)

    assert first[0]["outcome"] == "processed"
    assert again["outcome"] == "already_processed"
    assert again["key"] == "landing/resent-copy.csv"
    assert again["content_key"] == first[0]["content_key"]
    assert again["ingested_by_run"] == "run-1"
    assert again["loaded_by_run"] is None
    assert again["kpi_dates"] == ["2024-06-25"]
    assert again["plays_valid"] == 0  # its plays were counted by run-1
    # Recognised from the ledger: nothing of run-1's outputs is validated or written again.
    assert {p: object_versions(s3, p) for p in accepted_outputs} == versions_before
    assert len(versions_before["curated/"]) == 1
    assert read_json(s3, "runs/run-2/ingest/0.json")["outcome"] == "already_processed"


def test_ingest_file_quarantines_a_file_without_the_required_columns(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    put_landing(cloud.s3, "bad_header.csv", NO_LISTEN_TIME)
    manifest = list_new_files(event("list_new_files"), CONTEXT)

    (result,) = ingest_manifest(RUN, manifest, snapshot)

    assert result["outcome"] == "quarantined"
    assert result["reason"] == "missing_columns"
    assert "listen_time" in result["detail"]
    assert result["kpi_dates"] == []
    assert keys(cloud.s3, DATA_BUCKET, "curated/") == []
    assert keys(cloud.s3, DATA_BUCKET, "ledger/") == []
    assert read_json(cloud.s3, f"runs/{RUN}/ingest/0.json")["reason"] == "missing_columns"


def test_ingest_file_skips_an_object_replaced_after_the_manifest(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    put_landing(cloud.s3, "streams.csv", STREAMS_DAY)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    put_landing(cloud.s3, "streams.csv", STREAMS_NEXT_DAY)  # same key, new bytes

    (result,) = ingest_manifest(RUN, manifest, snapshot)

    assert result["outcome"] == "skipped"
    assert result["reason"] == "changed_after_listing"
    assert result["etag"] == manifest["files"][0]["etag"]
    assert result["content_key"] is None
    assert keys(cloud.s3, DATA_BUCKET, "curated/") == []
    assert keys(cloud.s3, DATA_BUCKET, "ledger/") == []


# --- Transform ------------------------------------------------------------------------------------


def test_transform_computes_the_kpis_of_the_dates_this_run_ingested(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    put_landing(cloud.s3, "bad.csv", NO_LISTEN_TIME)
    ingested = ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    assert sorted(r["outcome"] for r in ingested) == ["processed", "processed", "quarantined"]

    result = transform(RUN, snapshot)

    assert result["kpi_dates"] == ["2024-06-25", "2024-06-26"]
    assert result["kpi_date_count"] == 2
    assert result["kpi_key"] == f"kpis/run_id={RUN}/music_kpi_metrics.parquet"
    assert (result["genre_rows"], result["hourly_rows"], result["plays_in_kpis"]) == (3, 2, 4)
    plan = read_json(cloud.s3, f"runs/{RUN}/load_plan.json")
    assert plan["content_keys"] == sorted([sha256(STREAMS_DAY), sha256(STREAMS_NEXT_DAY)])

    kpis = read_parquet(cloud.s3, result["kpi_key"])
    assert kpis.schema.equals(KPI_SCHEMA)
    rows = {
        (r["kpi_date"], r["kpi_type"], r["track_genre"] or r["stream_hour"]): r
        for r in kpis.to_pylist()
    }
    assert set(rows) == {
        (DAY, "genre", "pop"),
        (DAY, "genre", "dance"),
        (DAY, "hourly", 10),
        (NEXT_DAY, "genre", "pop"),
        (NEXT_DAY, "hourly", 8),
    }
    # KPIS.md's worked example, figure by figure.
    pop, dance, hour_10 = (
        rows[DAY, "genre", "pop"],
        rows[DAY, "genre", "dance"],
        rows[DAY, "hourly", 10],
    )
    assert (pop["listen_count"], pop["avg_track_duration_sec"]) == (3, 210.0)
    assert pop["popularity_index"] == pytest.approx(100 * (0.5 + 0.5 * (200 / 3) / 100))
    assert (pop["most_popular_track"], pop["most_popular_track_id"]) == ("Song A", "A")
    assert (dance["listen_count"], dance["avg_track_duration_sec"]) == (2, 180.0)
    assert dance["popularity_index"] == pytest.approx(100 * (0.5 * 2 / 3 + 0.4))
    assert (hour_10["listen_count"], hour_10["unique_listeners"]) == (3, 2)
    assert hour_10["top_artists"] == "Y"
    assert hour_10["track_diversity_index"] == pytest.approx(2 / 3)
    assert {r["run_id"] for r in rows.values()} == {RUN}


def test_transform_recomputes_dates_of_content_ingested_earlier_but_never_loaded(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    # run-1 ingested the 25th and then failed: nothing was transformed nor loaded, and the
    # file was never archived, so run-2 finds it again beside a new file for the 26th.
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    outcomes = [r["outcome"] for r in ingest_manifest("run-2", manifest, snapshot)]
    assert outcomes == ["already_processed", "processed"]

    result = transform("run-2", snapshot)

    assert result["kpi_dates"] == ["2024-06-25", "2024-06-26"]
    kpis = read_parquet(cloud.s3, result["kpi_key"]).to_pylist()
    pop_day = next(r for r in kpis if r["kpi_date"] == DAY and r["track_genre"] == "pop")
    assert pop_day["listen_count"] == 3  # the plays run-1 accepted
    assert {r["run_id"] for r in kpis} == {"run-2"}


def test_transform_with_no_new_content_plans_no_date_and_writes_no_kpi_file(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    load("run-1", transform("run-1", snapshot))
    cloud.s3.delete_object(Bucket=LANDING_BUCKET, Key=LANDING + "day.csv")
    # run-2: the same, already loaded content under a new name, and a file quarantined whole.
    put_landing(cloud.s3, "day-resent.csv", STREAMS_DAY)
    put_landing(cloud.s3, "bad.csv", NO_LISTEN_TIME)
    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    outcomes = [r["outcome"] for r in ingest_manifest("run-2", manifest, snapshot)]
    assert outcomes == ["quarantined", "already_processed"]

    result = transform("run-2", snapshot)

    assert result["kpi_date_count"] == 0
    assert result["kpi_dates"] == []
    assert result["kpi_key"] is None
    assert keys(cloud.s3, DATA_BUCKET, "kpis/run_id=run-2/") == []
    assert read_json(cloud.s3, "runs/run-2/load_plan.json") == {"content_keys": [], "kpi_dates": []}


# --- Load -----------------------------------------------------------------------------------------


def test_load_replaces_the_dates_in_the_warehouse_and_marks_the_ledger(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    transformed = transform(RUN, snapshot)

    result = load(RUN, transformed)
    again = load(RUN, transformed)  # a Step Functions retry after a timeout

    rows = warehouse_rows(warehouse_dsn)
    assert result["rows_loaded"] == again["rows_loaded"] == len(rows) == 5
    assert result["kpi_dates"] == ["2024-06-25", "2024-06-26"]
    assert result["skipped"] is False
    assert {r["run_id"] for r in rows} == {RUN}
    assert all(r["loaded_at"] is not None for r in rows)
    pop = next(r for r in rows if r["kpi_date"] == DAY and r["track_genre"] == "pop")
    assert (pop["listen_count"], pop["most_popular_track"]) == (3, "Song A")
    assert pop["popularity_index"] == pytest.approx(100 * (0.5 + 0.5 * (200 / 3) / 100))
    hour_8 = next(r for r in rows if r["kpi_date"] == NEXT_DAY and r["stream_hour"] == 8)
    assert (hour_8["listen_count"], hour_8["unique_listeners"], hour_8["track_genre"]) == (
        1,
        1,
        None,
    )
    for content in (STREAMS_DAY, STREAMS_NEXT_DAY):
        assert read_json(cloud.s3, f"ledger/files/{sha256(content)}.json")["loaded_by_run"] == RUN


# --- Archive --------------------------------------------------------------------------------------


def test_archive_moves_exactly_the_manifest_files_and_writes_the_summary(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    s3 = cloud.s3
    good = put_landing(s3, "day=2024-06-25/streams.csv", STREAMS_DAY)
    bad = put_landing(s3, "bad.csv", NO_LISTEN_TIME)
    changed = put_landing(s3, "changed.csv", STREAMS_NEXT_DAY)
    put_landing(s3, "notes.txt", "left alone")
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    put_landing(s3, "changed.csv", STREAMS_NEXT_DAY + "1,B,2024-06-26 09:00:00\n")
    put_landing(s3, "arrived-late.csv", STREAMS_NEXT_DAY)  # not in the manifest
    ingested = ingest_manifest(RUN, manifest, snapshot)
    assert [r["outcome"] for r in ingested] == ["quarantined", "skipped", "processed"]
    transformed = transform(RUN, snapshot)
    loaded = load(RUN, transformed)

    summary = archive(RUN, manifest, snapshot, transformed, loaded)

    assert summary == {
        "status": "loaded",
        "run_id": RUN,
        "files_processed": 1,
        "files_already_processed": 0,
        "files_quarantined": 1,
        "files_skipped": 1,
        "files_failed": 0,
        "files_deferred": 0,
        "files_ignored": 1,
        "files_archived": 2,
        "plays_valid": 3,
        "duplicates": 1,
        "duplicates_across_files": 0,
        "rows_quarantined": {"unknown_user_id": 1},
        "files_quarantined_by_reason": {"missing_columns": 1},
        "source_users": 2,
        "source_songs": 3,
        "source_rows_quarantined": {},
        "source_song_duplicate_pairs": 0,
        "plays_without_song": 0,
        "kpi_dates": ["2024-06-25"],
        "kpi_rows_loaded": 3,
    }
    assert read_json(s3, f"runs/{RUN}/summary.json") == summary
    assert keys(s3, LANDING_BUCKET) == [
        "landing/arrived-late.csv",
        changed,
        "landing/notes.txt",
    ]
    assert b"09:00:00" in read_bytes(s3, LANDING_BUCKET, changed)  # the new version, intact
    assert keys(s3, DATA_BUCKET, "archive/") == [f"archive/run_id={RUN}/day=2024-06-25/streams.csv"]
    assert read_bytes(s3, DATA_BUCKET, f"archive/run_id={RUN}/day=2024-06-25/streams.csv") == (
        STREAMS_DAY.encode()
    )
    quarantined = f"quarantine/files/run_id={RUN}/bad.csv"
    assert keys(s3, DATA_BUCKET, "quarantine/files/") == [quarantined, quarantined + ".reason.json"]
    assert read_bytes(s3, DATA_BUCKET, quarantined) == NO_LISTEN_TIME.encode()
    reason = read_json(s3, quarantined + ".reason.json")
    assert (reason["key"], reason["reason"]) == (bad, "missing_columns")
    assert good not in keys(s3, LANDING_BUCKET)


@pytest.mark.parametrize(
    ("content", "outcome"),
    [(STREAMS_DAY, "processed"), (NO_LISTEN_TIME, "quarantined")],
    ids=["accepted", "quarantined"],
)
def test_archive_leaves_a_file_replaced_after_ingest_where_it_is(
    snapshot: dict[str, Any], cloud: Any, content: str, outcome: str
) -> None:
    s3 = cloud.s3
    key = put_landing(s3, "streams.csv", content)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    assert [r["outcome"] for r in ingest_manifest(RUN, manifest, snapshot)] == [outcome]
    transformed = transform(RUN, snapshot)
    newer = STREAMS_DAY + "2,B,2024-06-25 23:59:59\n"
    put_landing(s3, "streams.csv", newer)  # replaced between IngestFile and Archive

    summary = archive(RUN, manifest, snapshot, transformed, None)

    assert summary["files_archived"] == 0
    assert keys(s3, LANDING_BUCKET) == [key]
    assert read_bytes(s3, LANDING_BUCKET, key) == newer.encode()  # neither moved nor deleted
    # Nothing of that file in archive or quarantine, not even a reason without its file.
    assert keys(s3, DATA_BUCKET, "archive/") == []
    assert keys(s3, DATA_BUCKET, "quarantine/files/") == []


class ReplacedRightAfterCopy:
    """An S3 client through which a producer re-uploads a landing file just after Archive
    copied it and before Archive deletes it (the race the delete's ETag guards against)."""

    def __init__(self, s3: Any, new_body: str) -> None:
        self._s3 = s3
        self._new_body = new_body

    def copy(self, source: dict[str, str], bucket: str, key: str, **kwargs: Any) -> None:
        self._s3.copy(source, bucket, key, **kwargs)
        self._s3.put_object(Bucket=source["Bucket"], Key=source["Key"], Body=self._new_body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_archive_never_deletes_a_file_replaced_between_its_copy_and_its_delete(
    snapshot: dict[str, Any], cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = cloud.s3
    key = put_landing(s3, "streams.csv", STREAMS_DAY)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    ingest_manifest(RUN, manifest, snapshot)
    transformed = transform(RUN, snapshot)
    newer = STREAMS_DAY + "2,B,2024-06-25 23:59:59\n"
    monkeypatch.setitem(pipeline_aws._clients, "s3", ReplacedRightAfterCopy(s3, newer))

    summary = archive(RUN, manifest, snapshot, transformed, None)

    assert summary["files_archived"] == 0
    assert read_bytes(s3, LANDING_BUCKET, key) == newer.encode()  # waits for the next run


def test_archive_reports_no_new_files_when_the_load_was_skipped(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    put_landing(cloud.s3, "bad.csv", NO_LISTEN_TIME)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    ingest_manifest(RUN, manifest, snapshot)
    transformed = transform(RUN, snapshot)
    assert transformed["kpi_date_count"] == 0

    summary = archive(RUN, manifest, snapshot, transformed, None)

    assert summary["status"] == "no_new_files"
    assert (summary["files_quarantined"], summary["files_archived"]) == (1, 1)
    assert (summary["kpi_dates"], summary["kpi_rows_loaded"]) == ([], 0)
    assert read_json(cloud.s3, f"runs/{RUN}/summary.json") == summary
    assert keys(cloud.s3, LANDING_BUCKET) == []


# --- events and configuration ----------------------------------------------------------------

HANDLERS = {
    "check_source": check_source,
    "extract_rds": extract_tables,
    "list_new_files": list_new_files,
    "ingest_file": ingest_file,
    "transform": transform_handler,
    "load": load_handler,
    "archive": archive_handler,
}


def test_sample_events_are_valid_requests_of_their_step() -> None:
    models = {
        "check_source": RunRequest,
        "extract_rds": RunRequest,
        "list_new_files": RunRequest,
        "ingest_file": IngestRequest,
        "transform": TransformRequest,
        "load": LoadRequest,
        "archive": ArchiveRequest,
    }
    assert sorted(p.stem for p in EVENTS.glob("*.json")) == sorted(models)
    for step, model in models.items():
        assert model.model_validate(event(step)).run_id == RUN, step


@pytest.mark.parametrize("step", sorted(HANDLERS))
def test_an_event_without_run_id_is_rejected(step: str) -> None:
    bad = {k: v for k, v in event(step).items() if k != "run_id"}

    with pytest.raises(ValidationError) as raised:
        HANDLERS[step](bad, CONTEXT)
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [(("run_id",), "missing")]


@pytest.mark.parametrize("step", sorted(HANDLERS))
def test_a_run_id_with_a_space_is_rejected(step: str) -> None:
    with pytest.raises(ValidationError) as raised:
        HANDLERS[step](event(step, run_id="run 1"), CONTEXT)
    assert [e["loc"] for e in raised.value.errors()] == [("run_id",)]


def test_a_missing_data_bucket_is_a_configuration_error_naming_it(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATA_BUCKET")

    with pytest.raises(ConfigurationError, match=r"DATA_BUCKET is not set") as raised:
        list_new_files(event("list_new_files"), CONTEXT)
    assert "LANDING_BUCKET" not in str(raised.value)
    assert keys(cloud.s3, LANDING_BUCKET) == []  # failed before touching anything
