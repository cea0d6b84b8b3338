"""The local PostgreSQL: the source (users, songs) and the warehouse, as two databases.

``$RDS_DSN`` and ``$WAREHOUSE_DSN`` point at servers of your own; otherwise an embedded
PostgreSQL (PyPI ``pgserver``, binaries included) runs with its data under the state folder,
so the warehouse survives between runs.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql as pgsql
from psycopg2.extensions import make_dsn, parse_dsn

from kpi_pipeline.warehouse.postgres import unencoded_at

SOURCE_DB = "music_source"
WAREHOUSE_DB = "music_warehouse"

USERS_DDL = """
CREATE TABLE users (
    user_id INT PRIMARY KEY,
    user_name TEXT,
    user_age INT,
    user_country TEXT,
    created_at TIMESTAMP,
    -- as an operational schema keeps it: the incremental extract's change column
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""
SONGS_DDL = """
CREATE TABLE songs (
    id INT,
    track_id TEXT,
    artists TEXT,
    album_name TEXT,
    track_name TEXT,
    popularity INT,
    duration_ms INT,
    explicit BOOLEAN,
    danceability DOUBLE PRECISION,
    energy DOUBLE PRECISION,
    key INT,
    loudness DOUBLE PRECISION,
    mode INT,
    speechiness DOUBLE PRECISION,
    acousticness DOUBLE PRECISION,
    instrumentalness DOUBLE PRECISION,
    liveness DOUBLE PRECISION,
    valence DOUBLE PRECISION,
    tempo DOUBLE PRECISION,
    time_signature INT,
    track_genre TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


class DataError(ValueError):
    """An input CSV cannot be loaded into the source tables."""


@dataclass(frozen=True)
class Databases:
    source_dsn: str
    warehouse_dsn: str
    embedded: bool
    left_running: bool = False  # an embedded server a killed run had left running
    # $RDS_DSN: the user's own tables, read as they are and never written (nor a role made)
    source_given: bool = False


@contextmanager
def local_databases(state_dir: Path) -> Iterator[Databases]:
    """The source and warehouse DSNs, starting the embedded server when needed."""
    source, warehouse = os.environ.get("RDS_DSN"), os.environ.get("WAREHOUSE_DSN")
    for variable, dsn in (("RDS_DSN", source), ("WAREHOUSE_DSN", warehouse)):
        if dsn and unencoded_at(dsn):
            raise DataError(
                f"${variable}'s user info holds an unencoded '@': percent-encode it as %40"
            )
    if source and warehouse:
        apply_warehouse_setup(warehouse)
        yield Databases(source, warehouse, embedded=False, source_given=True)
        return
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver  # a dev dependency: only needed when no DSN is given

    pgdata = state_dir / "postgres"
    # One run at a time holds STATE (local_runner.state): a server running here now was
    # left by a run that was killed. It is reused, and stopped at the end like ours.
    left_running = postgres_running(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        admin = server.get_uri()
        for name in (SOURCE_DB, WAREHOUSE_DB):
            _create_database(admin, name)
        warehouse = warehouse or server.get_uri(WAREHOUSE_DB)
        apply_warehouse_setup(warehouse)
        yield Databases(
            source or server.get_uri(SOURCE_DB),
            warehouse,
            embedded=True,
            left_running=left_running,
            source_given=bool(source),
        )
    finally:
        server.cleanup()
        if postgres_running(pgdata):  # pgserver leaves a server it did not start itself
            _pg_ctl(pgdata, "stop", "-m", "fast")


def postgres_running(pgdata: Path) -> bool:
    """Whether an embedded PostgreSQL serves ``pgdata`` (its postmaster is alive)."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.is_file():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # alive, under another user (pgserver's own)
        return True
    return True


def _pg_ctl(pgdata: Path, *args: str) -> None:
    import pgserver

    pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    owner = pgdata.stat().st_uid
    command = [str(pg_ctl), "-D", str(pgdata), *args]
    if os.geteuid() == 0 and owner != 0:  # as root, pgserver runs PostgreSQL as its own user
        import pwd

        command = ["su", pwd.getpwuid(owner).pw_name, "-s", "/bin/sh", "-c", shlex.join(command)]
    subprocess.run(command, check=False, capture_output=True, timeout=60)  # noqa: S603


def warehouse_loads(dsn: str, table: str) -> list[list[str]]:
    """(run_id, loaded_at) of every load the table holds: what identifies its content."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            if not _table_exists(cur, table):
                return []
            cur.execute(
                pgsql.SQL("SELECT DISTINCT run_id, loaded_at::text FROM {} ORDER BY 1, 2").format(
                    pgsql.Identifier(*table.split("."))
                )
            )
            return [[str(run_id), str(loaded_at)] for run_id, loaded_at in cur.fetchall()]
    finally:
        conn.close()


def restore_table(dsn: str, table: str, columns: list[str], dump: Path) -> int:
    """Put the table back as :func:`export_table` wrote it (rows, not the table's DDL)."""
    from kpi_pipeline.warehouse.schema import create_table_sql

    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            name = pgsql.Identifier(*table.split("."))
            cur.execute(create_table_sql(table, redshift=False))
            cur.execute(pgsql.SQL("DELETE FROM {}").format(name))
            with dump.open("rb") as handle:
                cur.copy_expert(
                    pgsql.SQL("COPY {} ({}) FROM STDIN WITH CSV HEADER").format(
                        name, pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
                    ),
                    handle,
                )
            return int(cur.rowcount)
    finally:
        conn.close()


def _create_database(admin_dsn: str, name: str) -> None:
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                # Strings compare byte by byte, as in Redshift and DuckDB, whatever the locale.
                cur.execute(
                    pgsql.SQL(
                        "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' "
                        "LC_COLLATE 'C' LC_CTYPE 'C'"
                    ).format(pgsql.Identifier(name))
                )
    finally:
        conn.close()


def source_reader(admin_dsn: str) -> str:
    """A DSN of the source as the extract reads it in RDS: a role of its own that may read
    ``users`` and ``songs`` (as they are now and as they are created later) and see when
    other sessions' transactions began (pg_read_all_stats: the watermark stops at the oldest
    open one, see kpi_pipeline.source.HORIZON_SQL); no superuser. Idempotent."""
    params = parse_dsn(admin_dsn)
    database = params.get("dbname", "postgres")
    role = f"{database}_extract"[:63]
    conn = psycopg2.connect(admin_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone() is None:
                name = pgsql.Identifier(role)
                for statement in (
                    "CREATE ROLE {} LOGIN",
                    "GRANT CONNECT ON DATABASE {db} TO {}",
                    "GRANT USAGE ON SCHEMA public TO {}",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}",
                    "GRANT pg_read_all_stats TO {}",
                ):
                    cur.execute(pgsql.SQL(statement).format(name, db=pgsql.Identifier(database)))
    finally:
        conn.close()
    return make_dsn(admin_dsn, user=role)


def count_source_rows(dsn: str) -> dict[str, int]:
    """Rows of ``users`` and ``songs``, read in a read-only session (a source of one's own)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            counts = {}
            for table in ("users", "songs"):
                cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table)))
                counts[table] = int(cur.fetchone()[0])
            return counts
    except psycopg2.Error as exc:
        raise DataError(f"cannot read the tables of $RDS_DSN: {exc}".strip()) from None
    finally:
        conn.close()


def replace_source_tables(dsn: str, users_csv: Path, songs_csv: Path) -> dict[str, int]:
    """Replace ``users`` and ``songs`` with the CSV files' rows (Spotify layout for songs)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS users, songs")
            cur.execute(USERS_DDL)
            cur.execute(SONGS_DDL)
            # What an incremental read's WHERE needs (the preflight checks it is there).
            cur.execute("CREATE INDEX users_updated_at ON users (updated_at)")
            cur.execute("CREATE INDEX songs_updated_at ON songs (updated_at)")
            counts = {
                "users": _copy_csv(cur, "users", users_csv),
                "songs": _copy_csv(cur, "songs", songs_csv, rename_first={"", "unnamed: 0"}),
            }
    except psycopg2.Error as exc:
        raise DataError(f"cannot load the source tables: {exc}".strip()) from None
    finally:
        conn.close()
    return counts


def _copy_csv(cur: object, table: str, path: Path, rename_first: set[str] | None = None) -> int:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise DataError(f"{path} has no header row")
    columns = [name.strip() for name in header]
    # The public Spotify file names its first (index) column "" or "Unnamed: 0".
    if rename_first and columns[0].lower() in rename_first:
        columns[0] = "id"
    statement = pgsql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)").format(
        pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
    )
    with path.open("rb") as handle:
        cur.copy_expert(statement, handle)  # type: ignore[attr-defined]
    return int(cur.rowcount)  # type: ignore[attr-defined]


# A cell a spreadsheet would run as a formula starts with one of these (OWASP's list).
FORMULA_START = r"^[-=+@\t\r]"


def export_table(
    dsn: str, table: str, columns: list[str], out: Path, *, for_people: bool = False
) -> int:
    """Write the whole warehouse table as CSV with a header (header only if it is absent).

    ``for_people``: the file someone opens in a spreadsheet. A text value that starts like a
    formula (``= + - @``, tab, carriage return: a genre or a track name comes from the
    data) gets a leading apostrophe, which spreadsheets show as text; the dump that STATE
    restores from keeps every value as it is."""
    from kpi_pipeline.warehouse.schema import TABLE_COLUMNS

    out.parent.mkdir(parents=True, exist_ok=True)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            if not _table_exists(cur, table):
                out.write_text(",".join(columns) + "\n")
                return 0
            order = "kpi_date, kpi_type, track_genre NULLS FIRST, stream_hour NULLS FIRST"
            texts = {c.name for c in TABLE_COLUMNS if c.arrow_type == "string"}
            selected = [
                pgsql.SQL("CASE WHEN {c} ~ {p} THEN '''' || {c} ELSE {c} END AS {c}").format(
                    c=pgsql.Identifier(column), p=pgsql.Literal(FORMULA_START)
                )
                if for_people and column in texts
                else pgsql.Identifier(column)
                for column in columns
            ]
            query = pgsql.SQL(
                "COPY (SELECT {} FROM {} ORDER BY {}) TO STDOUT WITH CSV HEADER"
            ).format(
                pgsql.SQL(", ").join(selected),
                pgsql.Identifier(*table.split(".")),
                pgsql.SQL(order),
            )
            with out.open("wb") as handle:
                cur.copy_expert(query, handle)
            cur.execute(
                pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(*table.split(".")))
            )
            counted = cur.fetchone()
            return int(counted[0]) if counted else 0
    finally:
        conn.close()


def dsn_to_secret(dsn: str) -> dict[str, object]:
    """The RDS-style secret JSON for a libpq DSN (as Secrets Manager would hold it)."""
    params = parse_dsn(dsn)
    return {
        "engine": "postgres",
        "host": params.get("host", "localhost"),
        "port": int(params.get("port", 5432)),
        "dbname": params.get("dbname", "postgres"),
        "username": params.get("user", "postgres"),
        "password": params.get("password", ""),
    }


def _table_exists(cur: psycopg2.extensions.cursor, table: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    row = cur.fetchone()
    return bool(row and row[0])


def dsn_as(dsn: str, user: str) -> str:
    """``dsn`` signing in as ``user`` (no password: the local server trusts its socket)."""
    params = {k: v for k, v in parse_dsn(dsn).items() if k != "password"}
    return str(make_dsn(**{**params, "user": user}))


def local_warehouse_setup(database: str, env_name: str = "local") -> str:
    """The warehouse setup SQL of the local environment (cdk.json), for ``database``."""
    from infra.config import load_config
    from infra.warehouse_setup import REPO, render

    context = json.loads((REPO / "cdk.json").read_text())["context"]
    return render(load_config(context, env_name), database=database)


# Redshift's functions the pipeline calls, in PostgreSQL: GETDATE() (the stage table's
# computed_at default, the fence's fenced_at), the local time of the session, which runs in
# UTC; db_collation(), which the preflight asks: a byte-wise ('C') database compares strings
# as Redshift's case_sensitive one does.
REDSHIFT_FUNCTIONS = (
    "CREATE OR REPLACE FUNCTION public.getdate() RETURNS timestamp LANGUAGE sql "
    "STABLE AS $$ SELECT LOCALTIMESTAMP $$",
    "CREATE OR REPLACE FUNCTION public.db_collation() RETURNS text LANGUAGE sql "
    "STABLE AS $$ SELECT CASE WHEN datcollate = 'C' THEN 'case_sensitive' ELSE "
    "'case_insensitive' END FROM pg_database WHERE datname = current_database() $$",
)


def apply_warehouse_setup(admin_dsn: str, edit: Callable[[str], str] | None = None) -> None:
    """Run the local environment's warehouse setup (infra/warehouse_setup.sql; ``edit``
    changes its text first) as its administrator would, on PostgreSQL, after taking from
    PUBLIC what PostgreSQL gives every role and the setup grants explicitly (temporary
    tables, CREATE in schema public): each step then has exactly the setup's grants."""
    from infra.warehouse_setup import postgres_statements

    conn = psycopg2.connect(admin_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            (database,) = cur.fetchone() or ("",)
            setup_sql = local_warehouse_setup(database)
            setup_sql = edit(setup_sql) if edit else setup_sql
            cur.execute(
                pgsql.SQL("REVOKE TEMP ON DATABASE {} FROM PUBLIC").format(
                    pgsql.Identifier(database)
                )
            )
            cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            for statement in REDSHIFT_FUNCTIONS:
                cur.execute(statement)
            for statement, creates in postgres_statements(setup_sql):
                if creates is not None:
                    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (creates,))
                    if cur.fetchone():
                        continue
                cur.execute(statement)
    finally:
        conn.close()
