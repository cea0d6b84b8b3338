"""Redshift warehouse adapter, through the Redshift Data API.

Each call is one ``BatchExecuteStatement``, which Redshift runs as a single transaction:

- the load: stage the run's Parquet parts with ``COPY``, delete the dates being replaced,
  insert the parts' rows and the stage table's batches of those dates, clear their stage
  rows. Readers never see a half-loaded date.
- a date of the warehouse engine: ``COPY`` exactly the objects its manifests list (never a
  prefix) into temporary tables, compute its KPIs (``sql/warehouse/date_kpis.sql``), add
  them to the stage table as this batch, and read back its figures.

A batch carries a ``ClientToken`` derived from what it does (the run's attempt, the date or
the load) and a submission number: a retried invocation submits the same token and is
handed the batch already running or finished instead of running it twice; only a batch
that failed is submitted again, under the next number. Each batch is polled until it ends
(FINISHED, FAILED or ABORTED) or until shortly before the function would time out, when it
is cancelled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kpi_pipeline import aws
from kpi_pipeline.errors import ConfigurationError, WarehouseStatementFailed, WarehouseUnavailable
from kpi_pipeline.observability import logger, remaining_seconds
from kpi_pipeline.settings import WarehouseSettings
from kpi_pipeline.warehouse import DateJob, KpiBatch
from kpi_pipeline.warehouse.kpi_sql import (
    FIGURES,
    FIGURES_SQL,
    INPUT_TABLES,
    compute_into_stage,
    create_input_sql,
    date_kpi_statements,
    kpi_rows_sql,
    select_values_sql,
)
from kpi_pipeline.warehouse.schema import (
    PARTS,
    check_batch,
    create_parts_sql,
    load_statements,
    stage_table,
)

TERMINAL_OK = "FINISHED"
TERMINAL_FAILED = frozenset({"FAILED", "ABORTED"})
# A batch that had failed when a retried invocation found it is submitted again under the
# next number: more numbers than Step Functions makes attempts of a step.
SUBMISSIONS = 8
DEFAULT_SECONDS = 900.0  # the wait when no Lambda context says how long is left
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


def batch_id(*parts: object) -> str:
    """A stable id of 32 hex digits for a unit of work (its token, its stage rows)."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:32]


def copy_sql(table: str, url: str, role_arn: str, *, manifest: bool = False) -> str:
    """COPY of Parquet: columns by position; a manifest lists each object to read (its
    ``meta.content_length`` included), a bare path is a key prefix COPY lists."""
    return f"COPY {table} FROM '{url}' IAM_ROLE '{role_arn}' FORMAT AS PARQUET" + (
        " MANIFEST" if manifest else ""
    )


def load_batch(
    table: str, batch: KpiBatch, loaded_at: dt.datetime, copy_role_arn: str
) -> list[str]:
    """Every statement of the load's batch, in order."""
    before, after = load_statements(table, batch, loaded_at, redshift=True)
    copy = [copy_sql(PARTS, f"s3://{batch.bucket}/{batch.prefix}", copy_role_arn)]
    return before + (copy if batch.has_parts else []) + after


def compute_batch(table: str, job: DateJob, batch: str, copy_role_arn: str) -> list[str]:
    """Every statement of a date's batch ``batch``, in order; the last one reads its
    figures. The same text for the same batch id, however often it is submitted."""
    return [
        *input_batch(job, copy_role_arn),
        *compute_into_stage(
            job.kpi_date, job.run_id, stage_table(table), attempt=job.attempt, batch_id=batch
        ),
        FIGURES_SQL,
    ]


def input_batch(job: DateJob, copy_role_arn: str) -> list[str]:
    """The date's inputs: its temporary tables, filled by COPY from its manifests."""
    return [
        *(create_input_sql(t) for t in INPUT_TABLES),
        *(
            copy_sql(t, f"s3://{job.bucket}/{job.manifests[t]}", copy_role_arn, manifest=True)
            for t in INPUT_TABLES
        ),
    ]


def preflight_compute_batch(job: DateJob, copy_role_arn: str) -> list[str]:
    """A date's KPIs computed as a warehouse date is, read back instead of kept."""
    return [
        *input_batch(job, copy_role_arn),
        *date_kpi_statements(job.kpi_date, job.run_id),
        kpi_rows_sql(),
    ]


def preflight_parts_batch(batch: KpiBatch, copy_role_arn: str) -> list[str]:
    """The load's COPY of the parts, counted instead of loaded."""
    return [
        create_parts_sql(),
        copy_sql(PARTS, f"s3://{batch.bucket}/{batch.prefix}", copy_role_arn),
        f"SELECT count(*) AS parts_rows FROM {PARTS}",
    ]


class RedshiftDataApiWarehouse:
    def __init__(
        self,
        settings: WarehouseSettings,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seconds_left: Callable[[], float | None] = remaining_seconds,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        if not settings.redshift_copy_role_arn or not settings.redshift_database:
            raise ConfigurationError("Redshift needs REDSHIFT_DATABASE and REDSHIFT_COPY_ROLE_ARN")
        self._settings = settings
        self._client = client or aws.client("redshift-data")
        self._sleep = sleep
        self._clock = clock
        self._now = now
        left = seconds_left()
        wait = (DEFAULT_SECONDS if left is None else left) - (
            settings.redshift_stop_before_timeout_seconds
        )
        self._deadline = clock() + max(wait, 0.0)

    def replace_dates(self, batch: KpiBatch, loaded_at: dt.datetime) -> int:
        table = self._settings.warehouse_table
        role = self._settings.redshift_copy_role_arn or ""
        statements = load_batch(table, batch, loaded_at, role)
        # A load is idempotent (it replaces whole dates and keeps the batches it takes): its
        # token only keeps one invocation's batch from running twice.
        dates = ",".join(sorted({d.isoformat() for d in batch.kpi_dates}))
        work = ("load", batch.prefix, dates, loaded_at.isoformat())
        description = self._run(lambda _: statements, work, "music-kpi-load")
        inserts = [i for i, sql in enumerate(statements) if sql.startswith(f"INSERT INTO {table} ")]
        sub_statements = description.get("SubStatements") or []
        if len(sub_statements) == len(statements):
            return sum(int(sub_statements[i].get("ResultRows", 0)) for i in inserts)
        return int(description.get("ResultRows", 0))

    def compute_date(self, job: DateJob) -> tuple[dict[str, int], str]:
        table = self._settings.warehouse_table
        role = self._settings.redshift_copy_role_arn or ""
        # Each submission its own batch id, derived from its token: a retried invocation
        # handed the batch a timed-out one started gets that batch's id back with it.
        description = self._run(
            lambda submission: compute_batch(
                table, job, batch_id("batch", job.work_id, submission), role
            ),
            ("compute", job.work_id),
            f"music-kpi-transform-{job.kpi_date.isoformat()}",
        )
        committed = batch_id("batch", job.work_id, description["_submission"])
        sub_statements = description.get("SubStatements") or []
        if not sub_statements:
            raise WarehouseStatementFailed("Redshift reported no statement of the batch")
        try:
            result = self._client.get_statement_result(Id=sub_statements[-1]["Id"])
        except ClientError as exc:
            raise self._translate(exc, "reading the figures") from exc
        except BotoCoreError as exc:
            raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
        (record,) = result["Records"]
        figures = {
            name: int(field.get("longValue", 0))
            for name, field in zip(FIGURES, record, strict=True)
        }
        return figures, committed

    # --- the preflight: what a step may do, tried with its own identity, nothing kept -----

    def values(self, expressions: dict[str, str]) -> dict[str, Any]:
        """One row of named values (privileges, the collation) as this step's user sees them."""
        (row,) = self._read([select_values_sql(expressions)], "music-kpi-preflight")
        return row

    def preflight_compute(self, job: DateJob) -> list[dict[str, Any]]:
        role = self._settings.redshift_copy_role_arn or ""
        return self._read(preflight_compute_batch(job, role), "music-kpi-preflight-compute")

    def preflight_copy_parts(self, batch: KpiBatch) -> int:
        role = self._settings.redshift_copy_role_arn or ""
        (row,) = self._read(preflight_parts_batch(batch, role), "music-kpi-preflight-copy")
        return int(row["parts_rows"])

    def _read(self, statements: list[str], name: str) -> list[dict[str, Any]]:
        """Run a batch whose last statement is a SELECT; its rows, by column name. The batch
        keeps nothing: it writes temporary tables only, gone with its session."""
        # A token of its own: a read runs anew every time (a grant may have changed).
        description = self._run(lambda _: statements, (name, uuid.uuid4().hex), name)
        sub_statements = description.get("SubStatements") or [{"Id": description.get("Id")}]
        try:
            result = self._client.get_statement_result(Id=sub_statements[-1]["Id"])
        except ClientError as exc:
            raise self._translate(exc, "reading a result") from exc
        except BotoCoreError as exc:
            raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
        names = [column.get("name", "") for column in result.get("ColumnMetadata", [])]
        return [
            dict(zip(names, (_value(field) for field in record), strict=False))
            for record in result.get("Records", [])
        ]

    def _run(
        self, statements_for: Callable[[int], list[str]], work: tuple[str, ...], name: str
    ) -> dict[str, Any]:
        """Run the batch of ``work``: submitted under a token of the work and a submission
        number, so a retried invocation finds the batch its predecessor started (still
        running, or finished) instead of running it twice; a batch that failed before this
        invocation began (it committed nothing) is submitted again under the next number.
        ``statements_for(submission)`` is the same text for the same number. The description
        returned carries the number of the batch that finished (``_submission``)."""
        for submission in range(SUBMISSIONS):
            statements = statements_for(submission)
            check_batch(statements)
            token = batch_id(*work, submission)
            started = self._now()
            statement_id, created_at = self._submit(statements, name, token)
            description, error = self._wait(statement_id)
            if error is None:
                return {**description, "_submission": submission}
            earlier = created_at is not None and created_at < started - dt.timedelta(seconds=5)
            if not earlier or submission == SUBMISSIONS - 1:
                raise error
            logger.warning(
                "a batch this work submitted before had failed: submitting it again",
                extra={"statement_id": statement_id, "error": str(error)},
            )
        raise AssertionError("unreachable")

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

    def _submit(
        self, statements: list[str], name: str, token: str
    ) -> tuple[str, dt.datetime | None]:
        try:
            response = self._client.batch_execute_statement(
                Sqls=statements, StatementName=name, ClientToken=token, **self._target()
            )
        except ClientError as exc:
            raise self._translate(exc, "submitting a batch") from exc
        except BotoCoreError as exc:
            raise WarehouseUnavailable(f"Redshift Data API unreachable: {exc}") from exc
        created = response.get("CreatedAt")
        return str(response["Id"]), created if isinstance(created, dt.datetime) else None

    def _wait(self, statement_id: str) -> tuple[dict[str, Any], Exception | None]:
        """The batch's description once it ended, and the error it ended with (if any)."""
        while True:
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
                return description, None
            if status in TERMINAL_FAILED:
                error = str(description.get("Error", "no error message"))
                if "serializable isolation violation" in error.lower():
                    # Another transaction touched the table at the same time: a retry succeeds.
                    return description, WarehouseUnavailable(f"Redshift batch {status}: {error}")
                return description, WarehouseStatementFailed(f"Redshift batch {status}: {error}")
            pause = self._settings.redshift_poll_seconds
            if self._clock() + pause > self._deadline:
                break
            self._sleep(pause)
        # Still running when the function is about to time out: the retry Step Functions
        # makes submits the same token and is handed this batch, still running, to wait
        # for: a long batch is never cancelled and started over.
        raise WarehouseUnavailable(
            f"Redshift batch {statement_id} still running as the function's time ran out: "
            "the retry waits for it"
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


def _value(field: dict[str, Any]) -> Any:
    """A Data API field as Python: longValue, doubleValue, stringValue, booleanValue."""
    if field.get("isNull"):
        return None
    for kind in ("longValue", "doubleValue", "stringValue", "booleanValue"):
        if kind in field:
            return field[kind]
    return None
