"""Redshift warehouse adapter, through the Redshift Data API.

Each call is one ``BatchExecuteStatement``, which Redshift runs as a single transaction:

- the load: create the table if needed, stage the run's Parquet parts with ``COPY``, delete
  the dates being replaced, insert the parts' rows and the stage tables' rows, drop the
  stage tables. Readers never see a half-loaded date.
- a date of the warehouse engine: ``COPY`` exactly the objects its manifests list (never a
  prefix) into temporary tables, compute its KPIs (``sql/warehouse/date_kpis.sql``) into
  its stage table, and read back its figures.

Each batch is polled until it reaches a terminal state (FINISHED, FAILED or ABORTED), with
a poll cap; a batch still running at the cap is cancelled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kpi_pipeline import aws
from kpi_pipeline.errors import ConfigurationError, WarehouseStatementFailed, WarehouseUnavailable
from kpi_pipeline.settings import WarehouseSettings
from kpi_pipeline.warehouse import DateJob, KpiBatch
from kpi_pipeline.warehouse.kpi_sql import (
    FIGURES,
    FIGURES_SQL,
    INPUT_TABLES,
    compute_into_stage,
    create_input_sql,
)
from kpi_pipeline.warehouse.schema import STAGE, check_batch, load_statements

TERMINAL_OK = "FINISHED"
TERMINAL_FAILED = frozenset({"FAILED", "ABORTED"})
# "Busy" and server-side errors are retryable. ActiveSessionsExceededException (submit) and
# ActiveWaitingRequestsExceededException (describe) are capacity limits, not configuration
# mistakes, and any 5xx (e.g. BatchExecuteStatementException, an "environmental error") is
# the service's trouble: they were reported as ConfigurationError (fatal, "check the
# cluster/workgroup...") before.
_TRANSIENT = {
    "ThrottlingException",
    "InternalServerException",
    "ActiveStatementsExceededException",
    "ActiveSessionsExceededException",
    "ActiveWaitingRequestsExceededException",
}


class RedshiftDataApiWarehouse:
    def __init__(
        self,
        settings: WarehouseSettings,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.redshift_copy_role_arn or not settings.redshift_database:
            raise ConfigurationError("Redshift needs REDSHIFT_DATABASE and REDSHIFT_COPY_ROLE_ARN")
        self._settings = settings
        self._client = client or aws.client("redshift-data")
        self._sleep = sleep

    def replace_dates(self, batch: KpiBatch, loaded_at: dt.datetime) -> int:
        table = self._settings.warehouse_table
        before, after = load_statements(table, batch, loaded_at, redshift=True)
        copy = [self._copy_sql(STAGE, f"s3://{batch.bucket}/{batch.prefix}")]
        statements = before + (copy if batch.has_parts else []) + after
        description = self._run(statements, "music-kpi-load")
        inserts = [i for i, sql in enumerate(statements) if sql.startswith(f"INSERT INTO {table} ")]
        sub_statements = description.get("SubStatements") or []
        if len(sub_statements) == len(statements):
            return sum(int(sub_statements[i].get("ResultRows", 0)) for i in inserts)
        return int(description.get("ResultRows", 0))

    def compute_date(self, job: DateJob) -> dict[str, int]:
        statements = [
            *(create_input_sql(table) for table in INPUT_TABLES),
            *(
                self._copy_sql(table, f"s3://{job.bucket}/{job.manifests[table]}", manifest=True)
                for table in INPUT_TABLES
            ),
            *compute_into_stage(job.kpi_date, job.run_id, job.stage_table),
            FIGURES_SQL,
        ]
        description = self._run(statements, f"music-kpi-transform-{job.kpi_date.isoformat()}")
        sub_statements = description.get("SubStatements") or []
        if len(sub_statements) != len(statements):
            raise WarehouseStatementFailed(
                f"Redshift ran {len(sub_statements)} of the {len(statements)} statements"
            )
        try:
            result = self._client.get_statement_result(Id=sub_statements[-1]["Id"])
        except ClientError as exc:
            raise self._translate(exc, "reading the figures") from exc
        except BotoCoreError as exc:
            raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
        (record,) = result["Records"]
        return {
            name: int(field.get("longValue", 0))
            for name, field in zip(FIGURES, record, strict=True)
        }

    def _run(self, statements: list[str], name: str) -> dict[str, Any]:
        check_batch(statements)
        return self._wait(self._submit(statements, name))

    def _copy_sql(self, table: str, url: str, *, manifest: bool = False) -> str:
        """COPY of Parquet: columns by position; a manifest lists each object to read (its
        ``meta.content_length`` included), a bare path is a key prefix COPY lists."""
        role = self._settings.redshift_copy_role_arn or ""
        return f"COPY {table} FROM '{url}' IAM_ROLE '{role}' FORMAT AS PARQUET" + (
            " MANIFEST" if manifest else ""
        )

    def _target(self) -> dict[str, str]:
        s = self._settings
        target: dict[str, str] = {"Database": s.redshift_database or ""}
        if s.redshift_workgroup:
            target["WorkgroupName"] = s.redshift_workgroup
        else:
            target["ClusterIdentifier"] = s.redshift_cluster_id or ""
        if s.redshift_secret_arn:
            target["SecretArn"] = s.redshift_secret_arn
        elif s.redshift_db_user:
            target["DbUser"] = s.redshift_db_user
        return target

    def _submit(self, statements: list[str], name: str) -> str:
        try:
            response = self._client.batch_execute_statement(
                Sqls=statements, StatementName=name, **self._target()
            )
        except ClientError as exc:
            raise self._translate(exc, "submitting a batch") from exc
        except BotoCoreError as exc:
            raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
        return str(response["Id"])

    def _wait(self, statement_id: str) -> dict[str, Any]:
        polls = self._settings.redshift_max_polls
        for poll in range(polls):
            try:
                description: dict[str, Any] = self._client.describe_statement(Id=statement_id)
            except (ClientError, BotoCoreError) as exc:
                # We lose sight of the batch: cancel it, so a retry never runs beside it.
                self._cancel(statement_id)
                if isinstance(exc, ClientError):
                    raise self._translate(exc, "polling a batch") from exc
                raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
            status = description.get("Status", "")
            if status == TERMINAL_OK:
                return description
            if status in TERMINAL_FAILED:
                error = str(description.get("Error", "no error message"))
                if "serializable isolation violation" in error.lower():
                    # Another transaction touched the table at the same time: a retry succeeds.
                    raise WarehouseUnavailable(f"Redshift batch {status}: {error}")
                raise WarehouseStatementFailed(f"Redshift batch {status}: {error}")
            if poll < polls - 1:
                self._sleep(self._settings.redshift_poll_seconds)
        # Still running at the cap: cancel it, so the retry Step Functions makes does not run
        # beside it (a load replaces whole dates, a date remakes its stage table: running
        # either again is safe).
        self._cancel(statement_id)
        raise WarehouseUnavailable(
            f"Redshift batch {statement_id} not finished after {polls} polls; cancelled"
        )

    def _cancel(self, statement_id: str) -> None:
        # It may have just finished or failed: the retry replaces the dates either way.
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.cancel_statement(Id=statement_id)

    @staticmethod
    def _translate(exc: ClientError, what: str) -> Exception:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT or status >= 500:
            return WarehouseUnavailable(f"Redshift Data API {code} while {what}")
        return ConfigurationError(
            f"Redshift Data API {code} while {what}: check the cluster/workgroup, database, "
            "user and the function's permissions"
        )
