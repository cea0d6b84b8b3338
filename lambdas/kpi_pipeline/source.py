"""The source adapter: the operational PostgreSQL (Amazon RDS) holding users and songs.

Credentials come from Secrets Manager at run time (the standard RDS secret JSON:
``username``, ``password``, ``host``, ``port``, ``dbname``), never from the environment,
and never reach a log line. Tables are read in batches through a server-side cursor, so
memory is bounded by the batch size, not the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError
from psycopg2 import sql as pgsql

from kpi_pipeline import aws
from kpi_pipeline.contracts import SourceCheck
from kpi_pipeline.errors import ConfigurationError, SourceSchemaError, SourceUnavailable
from kpi_pipeline.settings import SourceSettings

# The source columns KPIS.md names, in its order. They are read as text and typed later
# in SQL (staging), so a column that is TEXT in one database and INT in another reads alike.
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id", "user_name", "user_age", "user_country", "created_at"),
    "songs": (
        "id",
        "track_id",
        "artists",
        "album_name",
        "track_name",
        "popularity",
        "duration_ms",
        "explicit",
        "danceability",
        "energy",
        "key",
        "loudness",
        "mode",
        "speechiness",
        "acousticness",
        "instrumentalness",
        "liveness",
        "valence",
        "tempo",
        "time_signature",
        "track_genre",
    ),
}


def connection_params(
    settings: SourceSettings, secrets_client: Any | None = None
) -> dict[str, Any]:
    """libpq parameters from the secret, with the endpoint settings taking precedence."""
    client = secrets_client or aws.client("secretsmanager")
    try:
        secret = client.get_secret_value(SecretId=settings.source_secret_arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"ThrottlingException", "InternalServiceError"}:
            raise SourceUnavailable(f"Secrets Manager {code}") from exc
        raise ConfigurationError(
            f"cannot read the source secret ({code}): check SOURCE_SECRET_ARN and the "
            "function's permission to read it"
        ) from exc
    except BotoCoreError as exc:
        raise SourceUnavailable(f"Secrets Manager unreachable: {exc}") from exc
    try:
        values = json.loads(secret["SecretString"])
    except (KeyError, json.JSONDecodeError):
        raise ConfigurationError("the source secret is not a JSON object") from None
    params = {
        "host": settings.source_host or values.get("host"),
        "port": settings.source_port or values.get("port") or 5432,
        "dbname": settings.source_database or values.get("dbname") or values.get("database"),
        "user": values.get("username"),
        "password": values.get("password"),
        "connect_timeout": settings.source_connect_timeout,
        "application_name": "music-kpi-pipeline",
        "sslmode": settings.source_sslmode,
        # A failover drops the connection without a word: keepalives notice within a minute.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        # A lock held by a migration or a stuck query ends as a retryable error, not a hang.
        "options": (
            f"-c statement_timeout={settings.source_statement_timeout_seconds * 1000} "
            f"-c lock_timeout={settings.source_lock_timeout_seconds * 1000}"
        ),
    }
    if settings.source_ssl_root_cert:
        params["sslrootcert"] = settings.source_ssl_root_cert
    missing = [name for name in ("host", "dbname", "user") if not params[name]]
    if missing:
        raise ConfigurationError(
            f"the source secret lacks {', '.join(missing)} (and no SOURCE_* override is set)"
        )
    return params


class SourceDatabase:
    """Read-only access to the users and songs tables."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        try:
            conn = psycopg2.connect(**self._params)
        except psycopg2.OperationalError as exc:
            # The message may name host and user; never the password (libpq omits it).
            raise SourceUnavailable(f"cannot connect to the source database: {exc}") from None
        try:
            conn.set_session(readonly=True)
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # Failovers, timeouts and dropped connections: the retry reconnects.
            raise SourceUnavailable(f"source connection lost: {exc}".strip()) from None
        finally:
            conn.close()

    def row_counts(self) -> dict[str, int]:
        """Rows in each source table (the data gate's first check)."""
        counts: dict[str, int] = {}
        with self._connect() as conn, conn.cursor() as cur:
            for table in SOURCE_COLUMNS:
                self._check_columns(cur, table)
                cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table)))
                counts[table] = int(cur.fetchone()[0])
        return counts

    def read_batches(self, table: str, batch_size: int) -> Iterator[list[str]]:
        """The table's spec columns as text, ``batch_size`` rows at a time.

        Each row arrives as one JSON object built by PostgreSQL (``row_to_json``): NULL stays
        null, text stays text, and writing a batch out is a single string join.
        """
        columns = SOURCE_COLUMNS[table]
        query = pgsql.SQL(
            "SELECT row_to_json(source_row)::text FROM (SELECT {} FROM {}) AS source_row"
        ).format(
            pgsql.SQL(", ").join(
                pgsql.SQL("{}::text AS {}").format(pgsql.Identifier(c), pgsql.Identifier(c))
                for c in columns
            ),
            pgsql.Identifier(table),
        )
        with self._connect() as conn:
            # Checked here too, not only by row_counts: a table changed after CheckSourceData
            # must fail ExtractRds as SourceSchemaError naming the column (the state machine's
            # error contract), not as psycopg2's UndefinedColumn.
            with conn.cursor() as check:
                self._check_columns(check, table)
            # A named cursor lives on the server: rows cross the wire batch by batch.
            with conn.cursor(name=f"extract_{table}") as cur:
                cur.itersize = batch_size
                cur.execute(query)
                while rows := cur.fetchmany(batch_size):
                    yield [row[0] for row in rows]

    @staticmethod
    def _check_columns(cur: Any, table: str) -> None:
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = ANY(current_schemas(false))",
            (table,),
        )
        present = {row[0] for row in cur.fetchall()}
        if not present:
            raise SourceSchemaError(f"the source database has no table '{table}'")
        missing = [c for c in SOURCE_COLUMNS[table] if c not in present]
        if missing:
            raise SourceSchemaError(f"source table '{table}' lacks columns: {', '.join(missing)}")


def check_source(db: SourceDatabase) -> SourceCheck:
    """The data gate's first check: both tables exist with their columns, and have rows."""
    counts = db.row_counts()
    return SourceCheck(
        users=counts["users"],
        songs=counts["songs"],
        has_data=counts["users"] > 0 and counts["songs"] > 0,
    )
