"""Each Lambda handler on its own, as Lambda calls it: an event dict and a context.

The real handler functions run against a real PostgreSQL (the source and the warehouse)
and moto's S3 and Secrets Manager, configured through environment variables as in AWS.
The events in ``tests/events/`` are what the state machine passes each step; tests load
them and replace what a step's real predecessor returned.

The source data is the worked example of docs/kpis.md, so computed KPIs can be checked by hand.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import psycopg2.extras
import pyarrow as pa
import pyarrow.parquet as pq

from archive.handler import handler as archive_handler
from extract_s3.handler import ingest_file
from kpi_pipeline.contracts import TransformResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.settings import StorageSettings
from kpi_pipeline.settings import load as load_settings
from kpi_pipeline.storage import Storage
from kpi_pipeline.transform_plan import transform_totals
from load.handler import handler as load_handler
from local_runner.databases import replace_source_tables
from local_runner.sample_data import SONGS_HEADER, USERS_HEADER
from transform.handler import handler as transform_handler
from transform.plan import handler as plan_transform_handler
from transform.warehouse import handler as transform_in_warehouse_handler

RUN = "handler-test-run"  # the run id of the sample events


DATA_BUCKET = "music-kpi-data-test"


LANDING_BUCKET = "music-kpi-landing-test"


LANDING = "landing/"


SECRET_ID = "music-kpi/source-rds"


PASSWORD = "Pw-7d1e9c-must-never-be-logged"  # a marker to look for, not a credential


EVENTS = Path(__file__).parent.parent / "events"


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


class CurrentStdout:
    """A stream that writes wherever ``sys.stdout`` points at the moment (capsys in a test)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


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
    load_source_with_types(dsn, "TEXT", users, songs)


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


def read_kpis(s3: Any, prefix: str) -> pa.Table:
    """Every KPI part a Transform wrote under its prefix (what Load's COPY reads)."""
    return pa.concat_tables([read_parquet(s3, key) for key in keys(s3, DATA_BUCKET, prefix)])


def read_parquet(s3: Any, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(s3, DATA_BUCKET, key)))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def snapshot_ref(snapshot: dict[str, Any]) -> dict[str, str]:
    """The part of ExtractRds's output the state machine hands to IngestFile and Transform."""
    return {"users_key": snapshot["users_key"], "songs_key": snapshot["songs_key"]}


def manifest_files(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's file list, which ListNewFiles keeps in S3 (the Map reads it there)."""
    s3 = boto3.client("s3", region_name="us-east-1")
    return list(json.loads(read_bytes(s3, DATA_BUCKET, manifest["files_key"])))


def ingest_manifest(
    run_id: str, manifest: dict[str, Any], snapshot: dict[str, Any]
) -> list[dict[str, Any]]:
    """The IngestStreams Map: IngestFile once per manifest entry."""
    return [
        ingest_file(
            event("ingest_file", run_id=run_id, file=entry, snapshot=snapshot_ref(snapshot)),
            CONTEXT,
        )
        for entry in manifest_files(manifest)
    ]


def transform(run_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """PlanTransform, then Transform once per date it wrote for the TransformDates Map; the
    plan with the totals Archive would add up."""
    plan = plan_transform(run_id, snapshot)
    if plan["dates_key"]:
        s3 = boto3.client("s3", region_name="us-east-1")
        for item in json.loads(read_bytes(s3, DATA_BUCKET, plan["dates_key"])):
            transform_date(run_id, plan, item["kpi_date"], item["engine"])
    layout = Layout.from_settings(load_settings(StorageSettings))
    totals = transform_totals(
        TransformResult.model_validate(plan), run_id, storage=Storage(), layout=layout
    )
    return totals.model_dump(mode="json")


def plan_transform(run_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    return plan_transform_handler(
        event("plan_transform", run_id=run_id, snapshot=snapshot_ref(snapshot)), CONTEXT
    )


def transform_date(
    run_id: str, plan: dict[str, Any], kpi_date: str, engine: str = "lambda"
) -> dict[str, Any]:
    """One item of the TransformDates Map, sent to the engine PlanTransform chose."""
    request = {"plan_version": plan["plan_version"], "attempt": plan["attempt"]}
    handler = transform_in_warehouse_handler if engine == "warehouse" else transform_handler
    return handler(event("transform", run_id=run_id, kpi_date=kpi_date, **request), CONTEXT)


def load(run_id: str, transformed: dict[str, Any]) -> dict[str, Any]:
    return load_handler(
        event(
            "load",
            run_id=run_id,
            kpi_prefix=transformed["kpi_prefix"],
            kpi_dates=transformed["kpi_dates"],
            plan_version=transformed.get("plan_version"),
            attempt=transformed.get("attempt"),
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
            manifest=manifest,
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


def fill_tmp(work_dir: str | Path, leave_free_bytes: int, capacity_mb: int = 512) -> None:
    """Make Lambda's /tmp (``work_dir``) hold other files, all but ``leave_free_bytes`` of
    ``capacity_mb``: a sparse file, so the test uses no disk for it."""
    folder = Path(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "left-by-something-else.bin").open("wb") as filler:
        filler.truncate(capacity_mb * 1024 * 1024 - leave_free_bytes)


# The numeric columns of the source tables, and their types in the worked example's RDS.
NUMERIC_COLUMNS = {
    "users": ("user_id", "user_age"),
    "songs": ("id", "popularity", "duration_ms", "key", "mode", "time_signature"),
}


def load_source_with_types(
    dsn: str,
    integer_type: str,
    users: list[dict[str, object]],
    songs: list[dict[str, object]],
) -> None:
    """Source tables whose integer columns have ``integer_type`` (NUMERIC(5,2), DOUBLE...),
    the others TEXT: a real schema, where values arrive as PostgreSQL prints that type."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS users, songs")
            for table, header, rows in (
                ("users", USERS_HEADER, users),
                ("songs", SONGS_HEADER, songs),
            ):
                columns = ", ".join(
                    f'"{c}" {integer_type if c in NUMERIC_COLUMNS[table] else "TEXT"}'
                    for c in header
                )
                cur.execute(f"CREATE TABLE {table} ({columns})")
                names = ", ".join(f'"{c}"' for c in header)
                # numbers go in as NUMERIC, then the column's type rounds or keeps them
                cast = "::numeric" if integer_type != "TEXT" else ""
                template = (
                    "("
                    + ", ".join(
                        f"%s{cast}" if c in NUMERIC_COLUMNS[table] else "%s" for c in header
                    )
                    + ")"
                )
                psycopg2.extras.execute_values(
                    cur,
                    f"INSERT INTO {table} ({names}) VALUES %s",
                    [tuple(None if r[c] is None else str(r[c]) for c in header) for r in rows],
                    template=template,
                )
    finally:
        conn.close()
