"""Redshift warehouse adapter, through the Redshift Data API.

The whole load is one ``BatchExecuteStatement``, which Redshift runs as a single
transaction: create the table if needed, stage the run's Parquet with ``COPY``, delete the
dates being replaced, insert. Readers never see a half-loaded date. The statement is then
polled until it reaches a terminal state (FINISHED, FAILED or ABORTED), with a poll cap.
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
from kpi_pipeline.warehouse import KpiBatch
from kpi_pipeline.warehouse.schema import (
    STAGE,
    create_stage_sql,
    create_table_sql,
    delete_dates_sql,
    insert_from_stage_sql,
)

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
        statements = [
            create_table_sql(table, redshift=True),
            create_stage_sql(STAGE),
            self._copy_sql(batch),
            delete_dates_sql(table, batch.kpi_dates),
            insert_from_stage_sql(table, STAGE, loaded_at),
        ]
        statement_id = self._submit(statements)
        description = self._wait(statement_id)
        sub_statements = description.get("SubStatements") or []
        if len(sub_statements) == len(statements):
            return int(sub_statements[-1].get("ResultRows", 0))
        return int(description.get("ResultRows", 0))

    def _copy_sql(self, batch: KpiBatch) -> str:
        role = self._settings.redshift_copy_role_arn or ""
        return (
            f"COPY {STAGE} FROM 's3://{batch.bucket}/{batch.prefix}' "
            f"IAM_ROLE '{role}' FORMAT AS PARQUET"
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

    def _submit(self, statements: list[str]) -> str:
        try:
            response = self._client.batch_execute_statement(
                Sqls=statements, StatementName="music-kpi-load", **self._target()
            )
        except ClientError as exc:
            raise self._translate(exc, "submitting the load") from exc
        except BotoCoreError as exc:
            raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
        return str(response["Id"])

    def _wait(self, statement_id: str) -> dict[str, Any]:
        polls = self._settings.redshift_max_polls
        for poll in range(polls):
            try:
                description: dict[str, Any] = self._client.describe_statement(Id=statement_id)
            except (ClientError, BotoCoreError) as exc:
                # We lose sight of the load: cancel it, so a retry never runs beside it.
                self._cancel(statement_id)
                if isinstance(exc, ClientError):
                    raise self._translate(exc, "polling the load") from exc
                raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
            status = description.get("Status", "")
            if status == TERMINAL_OK:
                return description
            if status in TERMINAL_FAILED:
                error = str(description.get("Error", "no error message"))
                if "serializable isolation violation" in error.lower():
                    # Another transaction touched the table at the same time: a retry succeeds.
                    raise WarehouseUnavailable(f"Redshift load {status}: {error}")
                raise WarehouseStatementFailed(f"Redshift load {status}: {error}")
            if poll < polls - 1:
                self._sleep(self._settings.redshift_poll_seconds)
        # Still running at the cap: cancel it, so the retry Step Functions makes does not run
        # beside it (the load replaces whole dates, so running it again is safe).
        self._cancel(statement_id)
        raise WarehouseUnavailable(
            f"Redshift load {statement_id} not finished after {polls} polls; cancelled"
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
