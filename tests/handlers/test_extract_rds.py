"""CheckSourceData and ExtractRds against a real PostgreSQL source."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pyarrow as pa
import pytest

from extract_rds.handler import check_source, extract_tables
from kpi_pipeline import settings as pipeline_settings
from kpi_pipeline.errors import (
    ConfigurationError,
    DataGateError,
    SourceSchemaError,
    SourceUnavailable,
)
from kpi_pipeline.settings import SourceSettings
from kpi_pipeline.source import EXTRACTED_COLUMNS, SourceDatabase, connection_params
from local_runner.databases import dsn_to_secret
from tests.handlers.support import (
    CONTEXT,
    DATA_BUCKET,
    PASSWORD,
    RUN,
    SONGS,
    USERS,
    closed_port,
    event,
    execute,
    keys,
    load_source_with_types,
    load_text_source,
    load_typed_source,
    read_parquet,
    snapshot_ref,
    song,
    user,
)

# A handler rejecting its event never reaches its metrics: Powertools then warns.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


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


def test_extract_writes_the_cleaned_snapshots_at_the_layout_keys(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    tables = snapshot.pop("tables")
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
    # No change column configured: both tables read whole, their raw rows kept beside.
    for table, rows in (("users", 2), ("songs", 3)):
        assert tables[table] == {
            "mode": "full",
            "rows_read": rows,
            "rows_changed": rows,
            "rows_deleted": 0,
            "watermark": None,
            "changed_column": None,
            "raw_key": f"snapshots/run_id={RUN}/raw_{table}.parquet",
            "full_at": tables[table]["full_at"],
            "columns": list(EXTRACTED_COLUMNS[table]),
            "key_unique": True,
        }
    assert read_parquet(cloud.s3, tables["users"]["raw_key"]).schema.names == ["user_id"]

    users = read_parquet(cloud.s3, snapshot["users_key"])
    songs = read_parquet(cloud.s3, snapshot["songs_key"])
    assert sorted(users.column("user_id").to_pylist()) == [1, 2]
    assert users.schema.names == ["user_id"]  # no personal data leaves the source
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
    # Artists split on ';' once, here, for both KPI engines: each (track, artist) once.
    artists = read_parquet(cloud.s3, f"snapshots/run_id={RUN}/song_artists.parquet")
    assert sorted(artists.to_pylist(), key=lambda r: (r["track_id"], r["artist"])) == [
        {"track_id": "A", "artist": "X"},
        {"track_id": "A", "artist": "Y"},
        {"track_id": "B", "artist": "Y"},
    ]
    assert keys(cloud.s3, DATA_BUCKET, "quarantine/") == []  # nothing was rejected


def test_extract_copies_each_table_once_and_of_users_only_their_ids(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY ... TO STDOUT streams each table as CSV (no Python object per row); the KPIs need
    no personal data, so of users only the ids leave the database."""
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
    copies: dict[str, list[str]] = {"users": [], "songs": []}
    real_copy_sql = SourceDatabase._copy_sql

    def spying_copy_sql(cur: Any, table: str, read: Any, **options: Any) -> str:
        statement = real_copy_sql(cur, table, read, **options)
        copies[table].append(statement)
        return statement

    monkeypatch.setattr(SourceDatabase, "_copy_sql", staticmethod(spying_copy_sql))

    result = extract_tables(event("extract_rds"), CONTEXT)

    assert result["songs"] == len(SONGS) + extra_songs
    assert result["tables"]["songs"]["rows_read"] == len(SONGS) + extra_songs
    (users_copy,) = copies["users"]
    (songs_copy,) = copies["songs"]
    assert users_copy.startswith('COPY (SELECT "user_id"::text AS "user_id" FROM "users")')
    assert "TO STDOUT WITH (FORMAT csv, HEADER true)" in users_copy
    assert all(column not in users_copy for column in ("user_name", "user_age", "created_at"))
    assert '"track_genre"::text' in songs_copy


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


@pytest.mark.parametrize(
    "integer_type",
    ["INTEGER", "BIGINT", "NUMERIC(12,2)", "NUMERIC", "DOUBLE PRECISION", "REAL", "TEXT"],
)
def test_integral_values_are_accepted_whatever_the_source_column_type(
    source_dsn: str, cloud: Any, integer_type: str
) -> None:
    """A popularity typed NUMERIC(5,2) reads as '80.00', a plain NUMERIC duration keeps its
    input's scale ('180000.0'): integral values, which used to be quarantined (every song,
    so the extract failed). Only values that are not integers are quarantined."""
    songs = [
        song(1, "A", "pop", popularity="80.0", duration_ms="180000.0"),
        song(2, "B", "pop", popularity=40, duration_ms=240_000),
    ]
    users = [user("1.0"), user(2)]
    load_source_with_types(source_dsn, integer_type, users, songs)

    result = extract_tables(event("extract_rds"), CONTEXT)

    assert result["source_rows_quarantined"] == {}
    assert (result["users"], result["songs"]) == (2, 2)
    typed = read_parquet(cloud.s3, result["songs_key"]).to_pylist()
    assert sorted((r["id"], r["popularity"], r["duration_ms"]) for r in typed) == [
        (1, 80, 180_000),
        (2, 40, 240_000),
    ]
    # What the KPIs never read does not leave the source (the album, the audio features).
    assert {r["key"] for r in typed} == {r["album_name"] for r in typed} == {None}
    ids = read_parquet(cloud.s3, result["users_key"]).column("user_id").to_pylist()
    assert sorted(ids) == [1, 2]


@pytest.mark.parametrize("integer_type", ["NUMERIC(12,2)", "DOUBLE PRECISION", "TEXT"])
def test_values_that_are_not_integers_are_still_quarantined(
    source_dsn: str, cloud: Any, integer_type: str
) -> None:
    songs = [
        song(1, "A", "pop"),
        song(2, "B", "pop", popularity="80.5"),
        song(3, "C", "pop", duration_ms="180000.25"),
    ]
    load_source_with_types(source_dsn, integer_type, [user(1), user("2.5")], songs)

    result = extract_tables(event("extract_rds"), CONTEXT)

    assert result["source_rows_quarantined"] == {
        "songs.invalid_duration_ms": 1,
        "songs.invalid_popularity": 1,
        "users.invalid_user_id": 1,
    }


# --- the connection to RDS ---------------------------------------------------------------


def test_the_source_connection_requires_tls_and_bounds_every_wait(world: str) -> None:
    """libpq's default sslmode 'prefer' verifies nothing and falls back to plaintext; no
    keepalives or timeouts let a failover mid-extract hang until the Lambda timed out."""
    params = connection_params(SourceSettings.from_env({"SOURCE_SECRET_ARN": "x"}), _secrets(world))
    assert params["sslmode"] == "require"
    assert (params["keepalives"], params["keepalives_idle"]) == (1, 30)
    assert (params["keepalives_interval"], params["keepalives_count"]) == (10, 3)
    assert params["connect_timeout"] == 10
    assert "-c statement_timeout=900000" in params["options"]
    assert "-c lock_timeout=30000" in params["options"]
    verified = connection_params(
        SourceSettings.from_env(
            {
                "SOURCE_SECRET_ARN": "x",
                "SOURCE_SSLMODE": "verify-full",
                "SOURCE_SSL_ROOT_CERT": "/opt/rds/global-bundle.pem",
            }
        ),
        _secrets(world),
    )
    assert (verified["sslmode"], verified["sslrootcert"]) == (
        "verify-full",
        "/opt/rds/global-bundle.pem",
    )


def _secrets(dsn: str) -> Any:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    name = f"tls-{uuid.uuid4().hex[:6]}"
    client.create_secret(Name=name, SecretString=json.dumps(dsn_to_secret(dsn)))

    class OneSecret:
        def get_secret_value(self, SecretId: str) -> dict[str, Any]:  # noqa: N803 - boto's name
            return client.get_secret_value(SecretId=name)

    return OneSecret()


class PlaintextOnlyServer:
    """A TCP endpoint that answers PostgreSQL's SSLRequest with 'N' (no TLS here), then
    records whether the client goes on in plaintext (sends its startup packet)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.port = self.socket.getsockname()[1]
        self.plaintext_startups = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(8)
                if struct.unpack("!ii", request) == (8, 80877103):  # SSLRequest
                    conn.sendall(b"N")
                    if conn.recv(8):  # the startup packet, user name and all, in clear
                        self.plaintext_startups += 1


def test_a_server_without_tls_is_refused_rather_than_read_in_plaintext(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PlaintextOnlyServer()
    secret = {"host": "127.0.0.1", "port": server.port, "dbname": "music", "username": "etl"}
    use_secret(cloud, monkeypatch, "plaintext", secret)
    monkeypatch.setenv("SOURCE_SSLMODE", "require")
    pipeline_settings.clear_cache()

    with pytest.raises(SourceUnavailable, match="SSL"):
        check_source(event("check_source"), CONTEXT)
    assert server.plaintext_startups == 0


def test_a_table_locked_mid_extract_fails_fast_as_a_retryable_error(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failover or a long DDL holds a lock on songs: the extract waits lock_timeout, then
    fails with a retryable error, instead of hanging until the Lambda times out."""
    monkeypatch.setenv("SOURCE_LOCK_TIMEOUT_SECONDS", "1")
    pipeline_settings.clear_cache()
    holder = psycopg2.connect(world)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE songs IN ACCESS EXCLUSIVE MODE")  # held until rollback
            started = time.monotonic()
            with pytest.raises(SourceUnavailable, match="lock timeout"):
                extract_tables(event("extract_rds"), CONTEXT)
            assert time.monotonic() - started < 30
    finally:
        holder.rollback()
        holder.close()


def test_a_server_that_asks_for_the_password_in_clear_is_refused(world: str, tmp_path) -> None:
    """Issue 20, item 2: libpq sends the password to a server asking for it in clear
    ('password' authentication), which a fake server behind an unverified certificate
    would do. The connection requires an authentication that never sends it (scram-sha-256,
    md5, or none), and a refusal is a setting to fix, not a failure to retry."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    server = pgserver.get_server(tmp_path / "cleartext", cleanup_mode="delete")
    try:
        admin = server.get_uri()
        execute(admin, "CREATE ROLE reader LOGIN PASSWORD 's3cr3t-in-clear'")
        hba = tmp_path / "cleartext" / "pg_hba.conf"
        hba.write_text("local all reader password\n" + hba.read_text())
        execute(admin, "SELECT pg_reload_conf()")
        secret = {**dsn_to_secret(admin), "username": "reader", "password": "s3cr3t-in-clear"}
        settings = SourceSettings.from_env({"SOURCE_SECRET_ARN": "x", "SOURCE_SSLMODE": "disable"})
        params = connection_params(settings, _secrets_json(secret))
        assert params["require_auth"] == "!password"

        with pytest.raises(ConfigurationError, match="asked for the password in clear") as caught:
            SourceDatabase(params).row_counts()
        assert "s3cr3t-in-clear" not in str(caught.value)
    finally:
        server.cleanup()


def _secrets_json(secret: dict[str, Any]) -> Any:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    name = f"tls-{uuid.uuid4().hex[:6]}"
    client.create_secret(Name=name, SecretString=json.dumps(secret))

    class OneSecret:
        def get_secret_value(self, SecretId: str) -> dict[str, Any]:  # noqa: N803 - boto's name
            return client.get_secret_value(SecretId=name)

    return OneSecret()


@pytest.mark.parametrize(
    ("trusted", "name", "outcome"),
    [
        ("rds-ca", "localhost", "reached"),
        ("other-ca", "localhost", "certificate verify failed"),
        ("rds-ca", "db.example", "does not match host name"),
    ],
)
def test_verify_full_trusts_only_the_configured_ca_for_the_host(
    cloud: Any, tmp_path: Path, trusted: str, name: str, outcome: str
) -> None:
    """Issue 20, item 2: sslmode verify-full with the CA bundle. A server whose certificate
    that CA signed for the host is reached; one signed by another CA, or for another name
    (an impostor), is refused before a password is sent, as a setting to fix (no retry)."""
    from tests.tls_server import REACHED, make_ca, make_server_cert, tls_postgres

    ca, ca_key, ca_cert = make_ca(tmp_path, "rds-ca")
    other, _, _ = make_ca(tmp_path, "other-ca")
    cert, key = make_server_cert(tmp_path, ca_key, ca_cert, name)
    with tls_postgres(cert, key) as port:
        secret = {"host": "localhost", "port": port, "dbname": "music", "username": "reader",
                  "password": "s3cr3t"}  # fmt: skip
        settings = SourceSettings.from_env(
            {
                "SOURCE_SECRET_ARN": "x",
                "SOURCE_SSLMODE": "verify-full",
                "SOURCE_SSL_ROOT_CERT": str(ca if trusted == "rds-ca" else other),
            }
        )
        params = connection_params(settings, _secrets_json(secret))
        expected = SourceUnavailable if outcome == "reached" else ConfigurationError
        with pytest.raises(expected) as caught:
            SourceDatabase(params).row_counts()
    message = str(caught.value)
    assert (REACHED if outcome == "reached" else outcome) in message
    assert "s3cr3t" not in message
