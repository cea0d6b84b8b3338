"""The source adapter: the operational PostgreSQL (Amazon RDS) holding users and songs.

Credentials come from Secrets Manager at run time (the standard RDS secret JSON:
``username``, ``password``, ``host``, ``port``, ``dbname``), never from the environment,
and never reach a log line. Tables are read with ``COPY (SELECT ...) TO STDOUT`` as CSV,
streamed to a file: memory is bounded by psycopg2's copy buffer, not the table, and no row
becomes a Python object. Both tables are read in one read-only REPEATABLE READ
transaction, so they are one consistent moment of the database; a table with a change
column can be read from a point in time on (the incremental extract).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError
from psycopg2 import sql as pgsql

from kpi_pipeline import aws
from kpi_pipeline.contracts import SourceCheck
from kpi_pipeline.errors import ConfigurationError, SourceSchemaError, SourceUnavailable
from kpi_pipeline.observability import logger
from kpi_pipeline.settings import SourceSettings

# The types a change column may have: a point in time, compared as timestamptz in UTC.
CHANGE_COLUMN_TYPES = frozenset({"timestamp without time zone", "timestamp with time zone", "date"})
COPY_BUFFER_BYTES = 1 << 20

# The source columns docs/kpis.md names, in its order. They are read as text and typed later
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


# What leaves the source: what the cleaning and the KPIs read. Of users, the ids only (the
# KPIs need no personal data, so none crosses the wire); of songs, neither the album nor the
# audio features. The other spec columns are checked to exist and read as NULL.
EXTRACTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "songs": (
        "id",
        "track_id",
        "artists",
        "track_name",
        "popularity",
        "duration_ms",
        "track_genre",
    ),
}
# Each table's key: an incremental extract replaces a changed row by it. It must be unique
# in the source (the primary key).
KEY_COLUMNS = {"users": "user_id", "songs": "id"}


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
        # COPY sends bytes in the client encoding: DuckDB reads UTF-8, whatever the server's.
        "client_encoding": "UTF8",
        "sslmode": settings.source_sslmode,
        # Never the password in clear: a server (or an impostor behind a certificate no one
        # checked) asking for it so is refused; SCRAM, md5 and trust go on (libpq 16+).
        "require_auth": "!password",
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


# What libpq says when it refuses the server's certificate (verify-ca, verify-full).
CERTIFICATE_REFUSALS = (
    "certificate verify failed",
    "does not match host name",
    "root certificate file",
)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class TableRead:
    """How to read one table: whole, or the rows changed since a moment (and then its key
    column whole: the rows deleted since are those whose key is gone)."""

    changed_column: str | None = None
    since: str | None = None  # a timestamptz literal; None: every row
    overlap_seconds: int = 0  # read from this long before ``since``

    @property
    def incremental(self) -> bool:
        return self.since is not None and self.changed_column is not None


@dataclass(frozen=True)
class TableCopy:
    rows: int  # the rows COPY sent
    watermark: str | None  # where the next read starts: see Horizon
    keys: int | None = None  # an incremental read: the keys COPY sent (every row's)


# The moment before which every change to the tables is committed and visible to the read.
# A row's change time is set by its writer (``DEFAULT now()``: its transaction's start), but
# the row becomes visible only at commit: a transaction open across the read commits rows
# stamped before the read, which no read from the table's largest change time would return.
# So the watermark never passes the start of the oldest transaction open in the database
# (pg_stat_activity.xact_start of its sessions but autovacuum's and replication's; a
# prepared transaction, its PREPARE time), nor the moment this is asked
# (statement_timestamp()), which comes before the read's own snapshot: a transaction that
# commits in between began after it. Another role's session shows its xact_start only to a
# member of pg_read_all_stats: the extract's user needs it. A replica shows none of the
# primary's transactions: the read must be the primary's. The database's TimeZone says what
# a ``timestamp without time zone`` column's wall times are.
HORIZON_SQL = """
SELECT
    least(
        statement_timestamp(),
        min(xact_start) FILTER (WHERE pid <> pg_backend_pid()),
        (SELECT min(prepared) FROM pg_prepared_xacts WHERE database = current_database())
    )::text,
    statement_timestamp()::text,
    count(*) FILTER (WHERE pid <> pg_backend_pid() AND query = '<insufficient privilege>'),
    pg_is_in_recovery(),
    current_setting('TimeZone'),
    current_user
FROM pg_stat_activity
WHERE datname = current_database()
    -- (another role's session shows no backend_type to a user that may not see it)
    AND coalesce(backend_type, '') NOT IN ('autovacuum worker', 'walsender')
"""
# The TimeZone names of UTC: a timestamp without time zone is then UTC wall time.
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Universal", "Zulu"})


@dataclass(frozen=True)
class Horizon:
    at: str  # the oldest open transaction's start, else when it was asked
    asked_at: str
    timezone: str  # the database's TimeZone (sessions' default)


class SourceDatabase:
    """Read-only access to the users and songs tables."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        try:
            conn = psycopg2.connect(**self._params)
        except psycopg2.OperationalError as exc:
            if any(sign in str(exc) for sign in CERTIFICATE_REFUSALS):
                raise ConfigurationError(
                    f"the source's certificate was refused ({_first_line(exc)}): with sslmode "
                    "verify-full it must be signed by a CA of source.ssl_root_cert (the RDS CA "
                    "bundle of the database's region) for source.host; a certificate of "
                    "another CA or another name is an impostor or a wrong host"
                ) from None
            if "authentication method requirement" in str(exc):
                raise ConfigurationError(
                    "the source asked for the password in clear (password authentication), "
                    "which the pipeline never sends: use scram-sha-256 (RDS's default from "
                    "PostgreSQL 14) for the extract's user, and check that source.host is "
                    "the database (sslmode verify-full with the RDS CA bundle proves it)"
                ) from None
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

    def describe(self, changed_columns: Mapping[str, str | None]) -> dict[str, Any]:
        """What the preflight reports of the source: its version, TLS, each table's columns
        and change column (type, and whether an index leads with it)."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version'), current_database()")
            version, database = cur.fetchone()
            cur.execute(
                "SELECT CASE WHEN ssl THEN version END FROM pg_stat_ssl "
                "WHERE pid = pg_backend_pid()"
            )
            tls = (cur.fetchone() or (None,))[0]
            # What the watermark's cap needs (HORIZON_SQL): to see every session's xact_start.
            cur.execute(
                "SELECT current_user, pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
                "OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                "pg_is_in_recovery()"
            )
            user, sees_sessions, replica = cur.fetchone()
            tables: dict[str, Any] = {}
            for table in SOURCE_COLUMNS:
                cur.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = %s AND table_schema = ANY(current_schemas(false))",
                    (table,),
                )
                present = dict(cur.fetchall())
                found: dict[str, Any] = {
                    "exists": bool(present),
                    "present": sorted(present),
                    "missing": [c for c in SOURCE_COLUMNS[table] if c not in present],
                }
                column = changed_columns.get(table)
                if column:
                    cur.execute(
                        "SELECT EXISTS (SELECT 1 FROM pg_index AS i "
                        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid "
                        "AND a.attnum = i.indkey[0] "
                        "WHERE i.indrelid = to_regclass(%s) AND a.attname = %s)",
                        (table, column),
                    )
                    found["changed_column"] = {
                        "name": column,
                        "type": present.get(column),
                        "type_ok": present.get(column) in CHANGE_COLUMN_TYPES,
                        "indexed": bool(cur.fetchone()[0]),
                    }
                tables[table] = found
        return {
            "server_version": version,
            "database": database,
            "tls": tls,
            "user": user,
            "sees_all_sessions": bool(sees_sessions),
            "replica": bool(replica),
            "tables": tables,
        }

    def row_counts(self) -> dict[str, int]:
        """Rows in each source table (the data gate's first check)."""
        counts: dict[str, int] = {}
        with self._connect() as conn, conn.cursor() as cur:
            for table in SOURCE_COLUMNS:
                self._check_columns(cur, table)
                cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table)))
                counts[table] = int(cur.fetchone()[0])
        return counts

    def read_tables(
        self, reads: Mapping[str, TableRead], sink: Callable[[str], ContextManager[IO[bytes]]]
    ) -> dict[str, TableCopy]:
        """Each table's extracted columns as text, written to ``sink(table)`` as CSV with a
        header (NULL unquoted and empty, an empty string quoted), all at one moment.

        A read with a change column also returns the next watermark: the column's largest
        value, capped at the :data:`HORIZON_SQL`. One with ``since`` reads only the rows
        changed at or after it less the overlap, and the key column whole to
        ``sink("<table>.keys")``.
        """
        copies = {}
        with self._connect() as conn:
            horizon = self._horizon(conn) if any(r.changed_column for r in reads.values()) else None
            conn.set_session(readonly=True, isolation_level="REPEATABLE READ")
            with conn.cursor() as cur:
                # Timestamps become text and watermarks compare in UTC, whatever the server.
                cur.execute("SET TIME ZONE 'UTC'")
                for table, read in reads.items():
                    # Checked here too, not only by row_counts: a table changed after
                    # CheckSourceData must fail ExtractRds as SourceSchemaError naming the
                    # column (the state machine's error contract), not as UndefinedColumn.
                    kind = self._check_columns(cur, table, read.changed_column)
                    if kind == "timestamp without time zone" and horizon:
                        _check_wall_time(table, read, horizon.timezone)
                    watermark = None
                    if read.changed_column and horizon:
                        # Never past the horizon: not past an open transaction's start, and
                        # not past now (one row stamped in the future would otherwise hide
                        # every change made until then).
                        cur.execute(
                            pgsql.SQL(
                                "SELECT least(max({})::timestamptz, {}::timestamptz)::text FROM {}"
                            ).format(
                                pgsql.Identifier(read.changed_column),
                                pgsql.Literal(horizon.at),
                                pgsql.Identifier(table),
                            )
                        )
                        watermark = cur.fetchone()[0]
                    with sink(table) as out:
                        copy = self._copy_sql(cur, table, read, by_day=kind == "date")
                        cur.copy_expert(copy, out, COPY_BUFFER_BYTES)
                    rows = int(cur.rowcount)
                    keys = None
                    if read.incremental:
                        with sink(f"{table}.keys") as out:
                            cur.copy_expert(self._keys_sql(cur, table), out, COPY_BUFFER_BYTES)
                        keys = int(cur.rowcount)
                    copies[table] = TableCopy(rows=rows, watermark=watermark, keys=keys)
        return copies

    @staticmethod
    def _horizon(conn: Any) -> Horizon:
        """The :data:`HORIZON_SQL`, asked in a transaction of its own, before the read's."""
        with conn.cursor() as cur:
            cur.execute(HORIZON_SQL)
            at, asked_at, unseen, replica, timezone, user = cur.fetchone()
        conn.commit()
        if replica:
            raise ConfigurationError(
                "the source is a replica (pg_is_in_recovery()): its pg_stat_activity shows "
                "none of the primary's transactions, so an incremental read cannot tell when "
                "one open across it started. Point source.host at the primary (the cluster "
                "endpoint, not a reader), or unset source.<table>.changed_column"
            )
        if unseen:
            raise ConfigurationError(
                f"the source user {user} cannot see the transactions of {unseen} other "
                "session(s) of the database (pg_stat_activity), so an incremental read cannot "
                "tell when a transaction open across it started: GRANT pg_read_all_stats TO "
                f"{user} (in RDS, as the master user), or unset source.<table>.changed_column "
                "to read the tables whole"
            )
        if at != asked_at:
            logger.info(
                "the watermark stops at the oldest transaction open in the source",
                extra={"open_since": at, "asked_at": asked_at},
            )
        return Horizon(at=at, asked_at=asked_at, timezone=str(timezone))

    @staticmethod
    def _copy_sql(cur: Any, table: str, read: TableRead, *, by_day: bool = False) -> str:
        """The read's COPY. ``by_day``: the change column is a DATE, compared with the day
        its watermark falls on (a watermark capped at a time of day would leave out every
        row dated that day)."""
        columns = pgsql.SQL(", ").join(
            pgsql.SQL("{}::text AS {}").format(pgsql.Identifier(c), pgsql.Identifier(c))
            for c in EXTRACTED_COLUMNS[table]
        )
        query = pgsql.SQL("SELECT {} FROM {}").format(columns, pgsql.Identifier(table))
        if read.since is not None and read.changed_column:
            # A row whose change time is NULL cannot be placed: it is read every time.
            since = "({}::timestamptz - {} * interval '1 second')" + ("::date" if by_day else "")
            query = pgsql.SQL("{} WHERE {} >= " + since + " OR {} IS NULL").format(
                query,
                pgsql.Identifier(read.changed_column),
                pgsql.Literal(read.since),
                pgsql.Literal(read.overlap_seconds),
                pgsql.Identifier(read.changed_column),
            )
        copy = pgsql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(query)
        return str(copy.as_string(cur))

    @staticmethod
    def _keys_sql(cur: Any, table: str) -> str:
        key = pgsql.Identifier(KEY_COLUMNS[table])
        query = pgsql.SQL("SELECT {}::text AS {} FROM {}").format(key, key, pgsql.Identifier(table))
        copy = pgsql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(query)
        return str(copy.as_string(cur))

    @staticmethod
    def _check_columns(cur: Any, table: str, changed_column: str | None = None) -> str | None:
        """Check the table's columns; return the change column's type, if it has one."""
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = ANY(current_schemas(false))",
            (table,),
        )
        present = dict(cur.fetchall())
        if not present:
            raise SourceSchemaError(f"the source database has no table '{table}'")
        missing = [c for c in SOURCE_COLUMNS[table] if c not in present]
        if missing:
            raise SourceSchemaError(f"source table '{table}' lacks columns: {', '.join(missing)}")
        if changed_column is None:
            return None
        kind = present.get(changed_column)
        if kind is None:
            raise SourceSchemaError(
                f"source table '{table}' has no column '{changed_column}' (its configured "
                "change column)"
            )
        if kind not in CHANGE_COLUMN_TYPES:
            raise SourceSchemaError(
                f"the change column {table}.{changed_column} is {kind}: it must be a timestamp "
                "or a date"
            )
        return str(kind)


def _check_wall_time(table: str, read: TableRead, timezone: str) -> None:
    """A ``timestamp without time zone`` change column holds its writers' wall time: read as
    UTC, compared with instants (the watermark's cap), only if that wall time is UTC."""
    if timezone not in UTC_ZONES:
        raise SourceSchemaError(
            f"the change column {table}.{read.changed_column} is a timestamp without time "
            f"zone in a database whose TimeZone is {timezone}: its values are that zone's wall "
            "time, which an incremental read cannot compare with the moment a transaction "
            "began. Make it timestamp with time zone (ALTER TABLE ... TYPE timestamptz), or "
            "set the database's TimeZone to UTC (and have its writers stamp UTC)"
        )


def check_source(db: SourceDatabase) -> SourceCheck:
    """The data gate's first check: both tables exist with their columns, and have rows."""
    counts = db.row_counts()
    return SourceCheck(
        users=counts["users"],
        songs=counts["songs"],
        has_data=counts["users"] > 0 and counts["songs"] > 0,
    )
