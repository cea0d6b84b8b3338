"""PostgreSQL warehouse adapter (psycopg2): local runs and tests.

It runs the same statements as the Redshift adapter, with one difference: rows reach
tables through ``COPY FROM STDIN`` instead of ``COPY FROM s3://``. They are read from S3 the
way Redshift's COPY reads them, with the rights of the COPY role (when one is configured),
so a grant COPY would lack fails here too:

- a bare S3 path is a key prefix: listed, then every object under it is read;
- a manifest is read, then exactly the objects it lists; each entry must be mandatory and
  carry the object's exact ``meta.content_length`` (Redshift needs it for Parquet);
- each file is refused as COPY would refuse it (:mod:`kpi_pipeline.warehouse.copy_parquet`:
  its column count, codec, column types and string widths).

And before anything runs, the statements the Redshift adapter would send for the same call
are handed to every check in :data:`REDSHIFT_CHECKS` (the local runner and the tests put
Redshift's grammar there): what Redshift would refuse fails here too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kpi_pipeline import aws
from kpi_pipeline.errors import ConfigurationError, WarehouseStatementFailed, WarehouseUnavailable
from kpi_pipeline.settings import WarehouseSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import DateJob, KpiBatch
from kpi_pipeline.warehouse.copy_parquet import refusal
from kpi_pipeline.warehouse.kpi_sql import (
    FIGURES,
    FIGURES_SQL,
    INPUT_TABLES,
    compute_into_stage,
    create_input_sql,
    date_kpi_statements,
    input_columns,
    kpi_rows_sql,
    select_values_sql,
)
from kpi_pipeline.warehouse.redshift import (
    compute_batch,
    load_batch,
    preflight_compute_batch,
    preflight_parts_batch,
)
from kpi_pipeline.warehouse.schema import (
    KPI_COLUMNS,
    PARTS,
    check_batch,
    load_statements,
    stage_table,
)

# Checks of the statements the Redshift adapter would send (statements, what they are for):
# each raises what Redshift would answer. Empty in AWS, where Redshift itself checks.
REDSHIFT_CHECKS: list[Callable[[list[str], str], None]] = []
LOCAL_COPY_ROLE = "arn:aws:iam::123456789012:role/local-redshift-copy"  # when none is set


def unencoded_at(dsn: str) -> str | None:
    """The user info of a ``postgresql://`` URI whose password holds an unencoded '@'
    (else None).

    libpq ends the user info at the first '@' (or '/'): the rest of such a password would
    become the host name or the database name, quoted by every connection error. Such a DSN
    is refused; it is told by what libpq reads in it, a host or database name with an '@'.
    """
    from psycopg2.extensions import parse_dsn

    scheme, separator, rest = dsn.partition("://")
    if not separator or scheme.lower() not in {"postgresql", "postgres"} or "@" not in rest:
        return None
    try:
        parsed = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return None  # malformed: refused as such where it is used
    if not any("@" in parsed.get(name, "") for name in ("host", "hostaddr", "dbname", "port")):
        return None
    return rest[: rest.rfind("@")]


class PostgresWarehouse:
    def __init__(self, settings: WarehouseSettings, storage: Storage | None = None) -> None:
        if not settings.warehouse_dsn:
            raise ConfigurationError("WAREHOUSE_DSN is required when WAREHOUSE_KIND=postgres")
        if unencoded_at(settings.warehouse_dsn):
            raise ConfigurationError(
                "WAREHOUSE_DSN's user info holds an unencoded '@': percent-encode it as %40"
            ) from None
        self._dsn = settings.warehouse_dsn
        self._table = settings.warehouse_table
        self._copy_role_arn = settings.redshift_copy_role_arn
        self._storage = storage

    def replace_dates(self, batch: KpiBatch, loaded_at: dt.datetime) -> int:
        _as_redshift(load_batch(self._table, batch, loaded_at, self._role()), "the load")
        rows = self._read_batch(batch) if batch.has_parts else None
        before, after = load_statements(self._table, batch, loaded_at, redshift=False)
        inserted = 0
        with self._transaction("the load") as cur:
            for statement in before:
                cur.execute(statement)
            if rows is not None:
                cur.copy_expert(
                    f"COPY {PARTS} ({', '.join(c.name for c in KPI_COLUMNS)}) "
                    "FROM STDIN WITH (FORMAT csv, HEADER true)",
                    _as_csv(rows),
                )
            for statement in after:
                cur.execute(statement)
                if statement.startswith(f"INSERT INTO {self._table} "):
                    inserted += int(cur.rowcount)
        return inserted

    def compute_date(self, job: DateJob) -> tuple[dict[str, int], str]:
        # No ClientToken here: every computation is a batch of its own, never taken twice.
        batch = uuid.uuid4().hex
        redshift = compute_batch(self._table, job, batch, self._role())
        _as_redshift(redshift, f"the KPIs of {job.kpi_date}")
        check_batch(redshift)  # the Data API's limits apply to what Redshift would be sent
        storage = self._copy_storage()
        inputs = {
            table: self._read_manifest(storage, job.bucket, job.manifests[table], table)
            for table in INPUT_TABLES
        }
        statements = compute_into_stage(
            job.kpi_date, job.run_id, stage_table(self._table), attempt=job.attempt, batch_id=batch
        )
        with self._transaction(f"the KPIs of {job.kpi_date}") as cur:
            self._fill_inputs(cur, inputs)
            for statement in statements:
                cur.execute(statement)
            cur.execute(FIGURES_SQL)
            record = cur.fetchone()
        figures = {name: int(value or 0) for name, value in zip(FIGURES, record or (), strict=True)}
        return figures, batch

    # --- the preflight: what a step may do, tried with its own identity, nothing kept -----

    def values(self, expressions: dict[str, str]) -> dict[str, Any]:
        statement = select_values_sql(expressions)
        _as_redshift([statement], "the preflight's privilege checks")
        with self._transaction("the preflight's privilege checks", keep=False) as cur:
            cur.execute(statement)
            names = [column.name for column in cur.description]
            return dict(zip(names, cur.fetchone() or (), strict=True))

    def preflight_compute(self, job: DateJob) -> list[dict[str, Any]]:
        _as_redshift(preflight_compute_batch(job, self._role()), "the preflight's KPIs")
        storage = self._copy_storage()
        inputs = {
            table: self._read_manifest(storage, job.bucket, job.manifests[table], table)
            for table in INPUT_TABLES
        }
        with self._transaction("the preflight's KPIs", keep=False) as cur:
            self._fill_inputs(cur, inputs)
            for statement in date_kpi_statements(job.kpi_date, job.run_id):
                cur.execute(statement)
            cur.execute(kpi_rows_sql())
            names = [column.name for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def preflight_copy_parts(self, batch: KpiBatch) -> int:
        _as_redshift(preflight_parts_batch(batch, self._role()), "the preflight's COPY")
        rows = self._read_batch(batch)
        with self._transaction("the preflight's COPY", keep=False) as cur:
            for statement in preflight_parts_batch(batch, self._role())[:1]:
                cur.execute(statement + " ON COMMIT DROP")
            cur.copy_expert(
                f"COPY {PARTS} ({', '.join(c.name for c in KPI_COLUMNS)}) "
                "FROM STDIN WITH (FORMAT csv, HEADER true)",
                _as_csv(rows),
            )
            cur.execute(f"SELECT count(*) FROM {PARTS}")
            (counted,) = cur.fetchone() or (0,)
            return int(counted)

    @staticmethod
    def _fill_inputs(cur: Any, inputs: dict[str, pa.Table]) -> None:
        for table, rows in inputs.items():
            cur.execute(create_input_sql(table) + " ON COMMIT DROP")
            cur.copy_expert(
                f"COPY {table} ({', '.join(rows.column_names)}) "
                "FROM STDIN WITH (FORMAT csv, HEADER true)",
                _as_csv(rows),
            )

    @contextlib.contextmanager
    def _transaction(self, what: str, *, keep: bool = True) -> Iterator[Any]:
        """One transaction as this step's user: committed, or (``keep`` False) rolled back."""
        try:
            conn = psycopg2.connect(self._dsn)
        except psycopg2.OperationalError as exc:
            raise WarehouseUnavailable(f"cannot connect to the warehouse: {exc}") from None
        except psycopg2.ProgrammingError:
            # A malformed DSN raises ProgrammingError("invalid dsn: ..."), whose message quotes
            # the DSN or the offending token, password included: report it as the configuration
            # error it is, without echoing anything of the DSN.
            raise ConfigurationError(
                "WAREHOUSE_DSN is not a valid libpq connection string (key=value pairs or a "
                "postgresql:// URI)"
            ) from None
        try:
            with conn, conn.cursor() as cur:  # one transaction: commit on success
                yield cur
                if not keep:
                    conn.rollback()
        except psycopg2.OperationalError as exc:
            raise WarehouseUnavailable(f"warehouse connection lost: {exc}") from None
        except psycopg2.Error as exc:
            raise WarehouseStatementFailed(f"warehouse rejected {what}: {exc}") from None
        finally:
            conn.close()

    def _role(self) -> str:
        return self._copy_role_arn or LOCAL_COPY_ROLE

    def _copy_storage(self) -> Storage:
        return self._storage or Storage(aws.client("s3", role_arn=self._copy_role_arn))

    def _read_manifest(self, storage: Storage, bucket: str, key: str, table: str) -> pa.Table:
        """What ``COPY table FROM 's3://bucket/key' FORMAT AS PARQUET MANIFEST`` reads, under
        the table's column names (by position)."""
        manifest = storage.get_json(bucket, key)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
            raise WarehouseStatementFailed(f"s3://{bucket}/{key} is not a COPY manifest")
        names = input_columns(table)
        tables = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, entry in enumerate(manifest["entries"]):
                url = str(entry.get("url", ""))
                length = (entry.get("meta") or {}).get("content_length")
                if not url.startswith("s3://") or not entry.get("mandatory"):
                    raise WarehouseStatementFailed(
                        f"manifest {key}: entry {i} must be a mandatory s3:// URL"
                    )
                if not isinstance(length, int):
                    raise WarehouseStatementFailed(
                        f"manifest {key}: {url} has no meta.content_length (needed for Parquet)"
                    )
                object_bucket, object_key = url.removeprefix("s3://").split("/", 1)
                path = Path(tmp) / f"{i:06d}.parquet"
                if not storage.download_file(object_bucket, object_key, path):
                    raise WarehouseStatementFailed(f"{url} is listed in {key} but missing")
                if path.stat().st_size != length:
                    raise WarehouseStatementFailed(
                        f"{url} is {path.stat().st_size:,} bytes, its manifest says {length:,}"
                    )
                problem = refusal(path, _columns(INPUT_TABLES[table]), url)
                if problem:
                    raise WarehouseStatementFailed(f"COPY {table} refused: {problem}")
                tables.append(pq.read_table(path).rename_columns(names))
        if not tables:
            raise WarehouseStatementFailed(f"manifest {key} lists no object")
        return pa.concat_tables(tables, promote_options="permissive")

    def _read_batch(self, batch: KpiBatch) -> pa.Table:
        """What ``COPY ... FROM 's3://bucket/key' FORMAT AS PARQUET`` reads: every object
        whose key starts with the batch's path, listed first, as the COPY role."""
        storage = self._copy_storage()
        objects = [o for o in storage.list_objects(batch.bucket, batch.prefix) if o.size > 0]
        if not objects:
            raise WarehouseStatementFailed(
                f"COPY found no object under s3://{batch.bucket}/{batch.prefix}"
            )
        with tempfile.TemporaryDirectory() as tmp:
            tables = []
            for i, obj in enumerate(objects):
                path = Path(tmp) / f"{i:05d}.parquet"
                if not storage.download_file(batch.bucket, obj.key, path):
                    raise WarehouseStatementFailed(f"s3://{batch.bucket}/{obj.key} is gone")
                url = f"s3://{batch.bucket}/{obj.key}"
                problem = refusal(path, [(c.name, c.sql_type) for c in KPI_COLUMNS], url)
                if problem:
                    raise WarehouseStatementFailed(f"COPY {PARTS} refused: {problem}")
                part = pq.read_table(path)
                tables.append(part.rename_columns([c.name for c in KPI_COLUMNS]))
            return pa.concat_tables(tables)


def _as_redshift(statements: list[str], what: str) -> None:
    for check in REDSHIFT_CHECKS:
        check(statements, what)


def _columns(ddl: str) -> list[tuple[str, str]]:
    """``a BIGINT, b VARCHAR(5)`` -> [("a", "BIGINT"), ("b", "VARCHAR(5)")]."""
    return [
        (column.split(maxsplit=1)[0], column.split(maxsplit=1)[1]) for column in ddl.split(", ")
    ]


def _as_csv(table: pa.Table) -> io.BytesIO:
    # Quote every non-null value so PostgreSQL tells an empty string from a NULL.
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(quoting_style="all_valid"))
    buffer.seek(0)
    return buffer
