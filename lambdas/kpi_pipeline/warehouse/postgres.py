"""PostgreSQL warehouse adapter (psycopg2): local runs and tests.

It runs the same statements as the Redshift adapter, with one difference: rows reach the
stage table through ``COPY FROM STDIN`` instead of ``COPY FROM s3://``. They are read from
S3 the way Redshift's COPY reads them: the batch's S3 path is a key prefix, listed, then
every object under it is read, with the rights of the COPY role (when one is configured),
so a grant COPY would lack fails here too.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path

import psycopg2
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kpi_pipeline import aws
from kpi_pipeline.errors import ConfigurationError, WarehouseStatementFailed, WarehouseUnavailable
from kpi_pipeline.settings import WarehouseSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import KpiBatch
from kpi_pipeline.warehouse.arrow import fit_to_schema
from kpi_pipeline.warehouse.schema import (
    KPI_COLUMNS,
    STAGE,
    create_stage_sql,
    create_table_sql,
    delete_dates_sql,
    insert_from_stage_sql,
    lock_table_sql,
)


class PostgresWarehouse:
    def __init__(self, settings: WarehouseSettings, storage: Storage | None = None) -> None:
        if not settings.warehouse_dsn:
            raise ConfigurationError("WAREHOUSE_DSN is required when WAREHOUSE_KIND=postgres")
        self._dsn = settings.warehouse_dsn
        self._table = settings.warehouse_table
        self._copy_role_arn = settings.redshift_copy_role_arn
        self._storage = storage

    def replace_dates(self, batch: KpiBatch, loaded_at: dt.datetime) -> int:
        rows = self._read_batch(batch)
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
                cur.execute(create_table_sql(self._table, redshift=False))
                # Two loads at once would each delete only the rows they can see, then both
                # insert: taking the lock first makes the second wait and replace the first.
                cur.execute(lock_table_sql(self._table))
                cur.execute(create_stage_sql(STAGE))
                cur.copy_expert(
                    f"COPY {STAGE} ({', '.join(c.name for c in KPI_COLUMNS)}) "
                    "FROM STDIN WITH (FORMAT csv, HEADER true)",
                    _as_csv(rows),
                )
                cur.execute(delete_dates_sql(self._table, batch.kpi_dates))
                cur.execute(insert_from_stage_sql(self._table, STAGE, loaded_at))
                inserted = int(cur.rowcount)
        except psycopg2.OperationalError as exc:
            raise WarehouseUnavailable(f"warehouse connection lost: {exc}") from None
        except psycopg2.Error as exc:
            raise WarehouseStatementFailed(f"warehouse rejected the load: {exc}") from None
        finally:
            conn.close()
        return inserted

    def _read_batch(self, batch: KpiBatch) -> pa.Table:
        """What ``COPY ... FROM 's3://bucket/key' FORMAT AS PARQUET`` reads: every object
        whose key starts with the batch's path, listed first, as the COPY role."""
        storage = self._storage or Storage(aws.client("s3", role_arn=self._copy_role_arn))
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
                tables.append(fit_to_schema(pq.read_table(path)))
            return pa.concat_tables(tables)


def _as_csv(table: pa.Table) -> io.BytesIO:
    # Quote every non-null value so PostgreSQL tells an empty string from a NULL.
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(quoting_style="all_valid"))
    buffer.seek(0)
    return buffer
