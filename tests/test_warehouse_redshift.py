"""RedshiftDataApiWarehouse against botocore's Stubber, and the warehouse settings.

moto's redshift-data never runs SQL, so the Data API is stubbed: the tests pin the exact
request (statements, target, names) and how the adapter reads the statement's progress.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from kpi_pipeline.errors import (
    RETRYABLE_ERRORS,
    ConfigurationError,
    WarehouseStatementFailed,
    WarehouseUnavailable,
)
from kpi_pipeline.settings import WarehouseSettings
from kpi_pipeline.warehouse import DateJob, KpiBatch, open_warehouse
from kpi_pipeline.warehouse.kpi_sql import FIGURES_SQL, INPUT_TABLES, date_kpi_statements
from kpi_pipeline.warehouse.redshift import RedshiftDataApiWarehouse, batch_id
from kpi_pipeline.warehouse.schema import (
    StageBatch,
    check_batch,
    create_parts_sql,
    insert_into_stage_sql,
)

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/redshift-copy"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:redshift-abc123"
STATEMENT_ID = "d9b6c0c9-0747-4bf4-b142-e8883df0b3d1"
BATCH = KpiBatch(
    "kpi-data",
    "kpis/run_id=run-7/attempt=0a1b2c3d4e5f/",
    [dt.date(2024, 6, 25), dt.date(2024, 6, 24), dt.date(2024, 6, 25)],
)
LOADED_AT = dt.datetime(2024, 6, 26, 3, 4, 5, tzinfo=dt.UTC)
NOW = dt.datetime(2024, 6, 26, 3, 4, 7, tzinfo=dt.UTC)  # the adapter's clock
KPI_NAMES = (
    "kpi_type, kpi_date, track_genre, listen_count, avg_track_duration_sec, popularity_index, "
    "most_popular_track, most_popular_track_id, stream_hour, unique_listeners, top_artists, "
    "track_diversity_index, run_id"
)
EXPECTED_SQLS = [
    create_parts_sql(),
    "COPY kpi_parts FROM 's3://kpi-data/kpis/run_id=run-7/attempt=0a1b2c3d4e5f/' "
    f"IAM_ROLE '{ROLE_ARN}' FORMAT AS PARQUET",
    "DELETE FROM music_kpi_metrics WHERE kpi_date IN ('2024-06-24', '2024-06-25')",
    f"INSERT INTO music_kpi_metrics ({KPI_NAMES}, loaded_at) "
    f"SELECT {KPI_NAMES}, TIMESTAMP '2024-06-26 03:04:05' FROM kpi_parts",
    # the stage rows of the replaced dates, every attempt's, and any a week old
    "DELETE FROM music_kpi_metrics_stage WHERE kpi_date IN ('2024-06-24', '2024-06-25')",
    "DELETE FROM music_kpi_metrics_stage WHERE computed_at < TIMESTAMP '2024-06-19 03:04:05'",
]
LOAD_WORK = ("load", BATCH.prefix, "2024-06-24,2024-06-25", LOADED_AT.isoformat())
LOAD_TOKEN = batch_id(*LOAD_WORK, 0)
PROVISIONED = {
    "WAREHOUSE_KIND": "redshift",
    "REDSHIFT_DATABASE": "analytics",
    "REDSHIFT_CLUSTER_ID": "kpi-cluster",
    "REDSHIFT_DB_USER": "loader",
    "REDSHIFT_COPY_ROLE_ARN": ROLE_ARN,
    "REDSHIFT_POLL_SECONDS": "0.25",
}
SERVERLESS = {
    "WAREHOUSE_KIND": "redshift",
    "REDSHIFT_DATABASE": "analytics",
    "REDSHIFT_WORKGROUP": "kpi-workgroup",
    "REDSHIFT_COPY_ROLE_ARN": ROLE_ARN,
    "REDSHIFT_POLL_SECONDS": "0.25",
}
PROVISIONED_TARGET = {
    "Database": "analytics",
    "ClusterIdentifier": "kpi-cluster",
    "DbUser": "loader",
}


@pytest.fixture
def client() -> Any:
    return boto3.client("redshift-data", region_name=REGION)


@pytest.fixture
def stub(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def adapter(
    client: Any,
    sleeps: list[float],
    base: dict[str, str] = PROVISIONED,
    seconds_left: float | None = 900,
    **env: str,
) -> RedshiftDataApiWarehouse:
    """The adapter, on a clock that moves only when it sleeps, in a function that has
    ``seconds_left`` before it times out."""
    settings = WarehouseSettings.from_env({**base, **env})
    return RedshiftDataApiWarehouse(
        settings,
        client=client,
        sleep=sleeps.append,
        clock=lambda: sum(sleeps),
        seconds_left=lambda: seconds_left,
        now=lambda: NOW,
    )


def expect_submit(
    stub: Stubber,
    target: dict[str, str] | None = None,
    token: str = LOAD_TOKEN,
    created_at: dt.datetime | None = None,
) -> None:
    stub.add_response(
        "batch_execute_statement",
        {"Id": STATEMENT_ID, "CreatedAt": created_at or NOW},
        {
            "Sqls": EXPECTED_SQLS,
            "StatementName": "music-kpi-load",
            "ClientToken": token,
            **(target or PROVISIONED_TARGET),
        },
    )


def expect_status(stub: Stubber, status: str, **fields: Any) -> None:
    stub.add_response(
        "describe_statement", {"Id": STATEMENT_ID, "Status": status, **fields}, {"Id": STATEMENT_ID}
    )


def finished(insert_rows: int) -> dict[str, Any]:
    """A FINISHED description whose sub-statements are the six of the load: parts table,
    COPY, DELETE, INSERT, and the two DELETEs of stage rows."""
    return sub_statements([0, 250, 117, insert_rows, 0, 0])


def sub_statements(rows: list[int]) -> dict[str, Any]:
    """A description's sub-statements, finished, with the rows each wrote."""
    return {
        "SubStatements": [
            {"Id": f"{STATEMENT_ID}:{n}", "Status": "FINISHED", "ResultRows": count}
            for n, count in enumerate(rows, start=1)
        ]
    }


# --- the request --------------------------------------------------------------------------------


def test_load_is_one_batch_of_the_six_statements_in_order(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    # EXPECTED_SQLS: temp parts table, COPY of the batch's files with the role, DELETE of
    # the batch's dates (deduplicated, sorted), INSERT stamped with loaded_at, DELETEs of
    # the dates' stage rows.
    # The stub refuses any other request: exact Sqls, StatementName and target.
    expect_submit(stub)
    expect_status(stub, "FINISHED", **finished(250))

    assert adapter(client, sleeps).replace_dates(BATCH, LOADED_AT) == 250
    assert sleeps == []


def test_the_load_creates_and_drops_no_table_but_its_temporary_one() -> None:
    """Issue 18, item 2: on Serverless each function is its own database user, and a table
    belongs to its creator; the warehouse setup creates the tables, the steps only write
    rows (and their own temporary tables)."""
    ddl = [sql for sql in EXPECTED_SQLS if sql.split()[0] in {"CREATE", "DROP", "ALTER"}]
    assert ddl == [create_parts_sql()]
    assert ddl[0].startswith("CREATE TEMP TABLE kpi_parts (")


@pytest.mark.parametrize("db_user", ["loader", ""], ids=["with-db-user", "without-db-user"])
def test_provisioned_cluster_with_a_secret_sends_the_secret_and_never_the_db_user(
    client: Any, stub: Stubber, sleeps: list[float], db_user: str
) -> None:
    expect_submit(
        stub,
        {"Database": "analytics", "ClusterIdentifier": "kpi-cluster", "SecretArn": SECRET_ARN},
    )
    expect_status(stub, "FINISHED", **finished(1))

    adapter(client, sleeps, REDSHIFT_DB_USER=db_user, REDSHIFT_SECRET_ARN=SECRET_ARN).replace_dates(
        BATCH, LOADED_AT
    )


def test_serverless_target_names_the_workgroup_and_no_cluster_or_user(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub, {"Database": "analytics", "WorkgroupName": "kpi-workgroup"})
    expect_status(stub, "FINISHED", **finished(1))

    adapter(client, sleeps, base=SERVERLESS).replace_dates(BATCH, LOADED_AT)


def test_serverless_target_with_a_secret_sends_the_secret_arn(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(
        stub, {"Database": "analytics", "WorkgroupName": "kpi-workgroup", "SecretArn": SECRET_ARN}
    )
    expect_status(stub, "FINISHED", **finished(1))

    adapter(client, sleeps, base=SERVERLESS, REDSHIFT_SECRET_ARN=SECRET_ARN).replace_dates(
        BATCH, LOADED_AT
    )


def test_custom_table_is_used_in_every_statement(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    table = "analytics.music_kpis"
    # The stage table lives beside the target: analytics.music_kpis_stage.
    sqls = [
        sql.replace("music_kpi_metrics_stage ", f"{table}_stage ").replace(
            "music_kpi_metrics ", f"{table} "
        )
        for sql in EXPECTED_SQLS
    ]
    assert sqls[2].startswith(f"DELETE FROM {table} WHERE")
    assert sqls[3].startswith(f"INSERT INTO {table} (")
    assert sqls[4].startswith(f"DELETE FROM {table}_stage WHERE")
    stub.add_response(
        "batch_execute_statement",
        {"Id": STATEMENT_ID},
        {
            "Sqls": sqls,
            "StatementName": "music-kpi-load",
            "ClientToken": LOAD_TOKEN,
            **PROVISIONED_TARGET,
        },
    )
    expect_status(stub, "FINISHED", **finished(1))

    adapter(client, sleeps, WAREHOUSE_TABLE=table).replace_dates(BATCH, LOADED_AT)


# --- the warehouse engine: one date computed inside Redshift -------------------------------------

JOB = DateJob(
    kpi_date=dt.date(2024, 6, 25),
    run_id="run-7",
    bucket="kpi-data",
    manifests={
        table: f"runs/run-7/transform/attempt=0a1b2c3d4e5f/manifests/kpi_date=2024-06-25/{table}"
        ".manifest"
        for table in INPUT_TABLES
    },
    attempt="0a1b2c3d4e5f",
    work_id=batch_id("run-7", "0a1b2c3d4e5f", "2024-06-25"),
)
COMPUTE_TOKEN = batch_id("compute", JOB.work_id, 0)
FIRST_BATCH = batch_id("batch", JOB.work_id, 0)  # the stage batch of the first submission


def test_a_date_is_one_batch_copying_each_manifest_then_adding_its_batch_to_the_stage(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    copies = [
        f"COPY {table} FROM 's3://kpi-data/{JOB.manifests[table]}' IAM_ROLE '{ROLE_ARN}' "
        "FORMAT AS PARQUET MANIFEST"
        for table in ("wh_curated_plays", "wh_songs", "wh_song_artists")
    ]
    sqls = [
        *(f"CREATE TEMP TABLE {table} ({columns})" for table, columns in INPUT_TABLES.items()),
        *copies,
        *date_kpi_statements(JOB.kpi_date, "run-7"),
        insert_into_stage_sql(
            "music_kpi_metrics_stage", "wh_kpis", JOB.attempt, batch_id("batch", JOB.work_id, 0)
        ),
        FIGURES_SQL,
    ]
    assert len(sqls) <= 40  # what one BatchExecuteStatement takes
    assert not [sql for sql in sqls if sql.startswith(("DROP", "CREATE TABLE"))]
    stub.add_response(
        "batch_execute_statement",
        {"Id": STATEMENT_ID, "CreatedAt": NOW},
        {
            "Sqls": sqls,
            "StatementName": "music-kpi-transform-2024-06-25",
            "ClientToken": COMPUTE_TOKEN,
            **PROVISIONED_TARGET,
        },
    )
    expect_status(stub, "STARTED")
    sub = [{"Id": f"{STATEMENT_ID}:{n}", "Status": "FINISHED"} for n in range(1, len(sqls) + 1)]
    expect_status(stub, "FINISHED", SubStatements=sub)
    # The figures come from the batch's last statement, by its sub-statement id.
    stub.add_response(
        "get_statement_result",
        {
            "Records": [[{"longValue": n} for n in (1_000_000, 999_000, 12, 114, 24)]],
            "TotalNumRows": 1,
        },
        {"Id": f"{STATEMENT_ID}:{len(sqls)}"},
    )

    figures, committed = adapter(client, sleeps).compute_date(JOB)

    assert committed == FIRST_BATCH
    assert figures == {
        "curated_rows": 1_000_000,
        "plays_in_kpis": 999_000,
        "plays_without_song": 12,
        "genre_rows": 114,
        "hourly_rows": 24,
    }
    assert sleeps == [0.25]


def test_a_date_still_computing_as_the_function_runs_out_of_time_is_cancelled(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    """Issue 17, item 2: the wait ends a minute (REDSHIFT_STOP_BEFORE_TIMEOUT_SECONDS)
    before the function would time out, whatever the number of polls."""
    stub.add_response("batch_execute_statement", {"Id": STATEMENT_ID, "CreatedAt": NOW})
    for _ in range(3):
        expect_status(stub, "STARTED")
    # Not cancelled: the retry submits the same token and waits for the same batch.

    with pytest.raises(WarehouseUnavailable, match="still running as the function's time ran"):
        adapter(client, sleeps, seconds_left=60.6).compute_date(JOB)
    assert sleeps == [0.25, 0.25]  # 60.6 s left, 60 s kept: 0.6 s of waiting


def test_a_failed_copy_of_a_date_fails_with_redshifts_message(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    message = "Manifest file is not in correct json format"
    stub.add_response("batch_execute_statement", {"Id": STATEMENT_ID, "CreatedAt": NOW})
    expect_status(stub, "FAILED", Error=message)

    with pytest.raises(WarehouseStatementFailed, match=message):
        adapter(client, sleeps).compute_date(JOB)


D24, D25 = dt.date(2024, 6, 24), dt.date(2024, 6, 25)
BATCHES = (StageBatch(D24, "1" * 32, 20), StageBatch(D25, "2" * 32, 30))


def stage_insert(batches: tuple[StageBatch, ...]) -> list[str]:
    """The row check and the INSERT of exactly these batches' rows of their dates."""
    ids = ", ".join(f"'{b.batch_id}'" for b in batches)
    dates = ", ".join(f"'{b.kpi_date}'" for b in batches)
    where = f"WHERE batch_id IN ({ids}) AND kpi_date IN ({dates})"
    rows = sum(b.rows for b in batches)
    return [
        f"SELECT CAST(CASE WHEN count(*) = {rows} THEN '0' ELSE 'the stage table lacks rows of "
        f"the batches this load takes' END AS INTEGER) AS stage_rows_present "
        f"FROM music_kpi_metrics_stage {where}",
        f"INSERT INTO music_kpi_metrics ({KPI_NAMES}, loaded_at) "
        f"SELECT {KPI_NAMES}, TIMESTAMP '2024-06-26 03:04:05' FROM music_kpi_metrics_stage "
        f"{where}",
    ]


def clear_stage(batches: tuple[StageBatch, ...]) -> list[str]:
    keep = ", ".join(f"'{b.batch_id}'" for b in batches)
    return [
        f"{EXPECTED_SQLS[4]} AND batch_id NOT IN ({keep})" if batches else EXPECTED_SQLS[4],
        EXPECTED_SQLS[5],
    ]


def test_a_load_of_warehouse_dates_only_copies_nothing_and_takes_their_batches(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    batch = KpiBatch(
        "kpi-data", BATCH.prefix, BATCH.kpi_dates, has_parts=False, stage_batches=BATCHES
    )
    sqls = [EXPECTED_SQLS[2], *stage_insert(BATCHES), *clear_stage(BATCHES)]
    stub.add_response(
        "batch_execute_statement",
        {"Id": STATEMENT_ID, "CreatedAt": NOW},
        {
            "Sqls": sqls,
            "StatementName": "music-kpi-load",
            "ClientToken": LOAD_TOKEN,
            **PROVISIONED_TARGET,
        },
    )
    expect_status(stub, "FINISHED", **sub_statements([117, 1, 50, 40, 0]))

    assert adapter(client, sleeps).replace_dates(batch, LOADED_AT) == 50


def test_a_load_of_both_engines_counts_the_rows_of_both_inserts(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    batch = KpiBatch("kpi-data", BATCH.prefix, BATCH.kpi_dates, stage_batches=BATCHES[1:])
    sqls = [*EXPECTED_SQLS[:4], *stage_insert(BATCHES[1:]), *clear_stage(BATCHES[1:])]
    stub.add_response(
        "batch_execute_statement",
        {"Id": STATEMENT_ID, "CreatedAt": NOW},
        {
            "Sqls": sqls,
            "StatementName": "music-kpi-load",
            "ClientToken": LOAD_TOKEN,
            **PROVISIONED_TARGET,
        },
    )
    expect_status(stub, "FINISHED", **sub_statements([0, 250, 117, 20, 1, 30, 30, 0]))

    assert adapter(client, sleeps).replace_dates(batch, LOADED_AT) == 50


def test_ten_thousand_dates_still_fit_one_data_api_batch(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    """The Data API takes 40 statements of at most 100,000 characters; moto checks neither.
    Issue 17, item 5: one DELETE naming 7,200 dates was refused, and every later load."""
    days = [dt.date(1, 1, 1) + dt.timedelta(days=n) for n in range(10_000)]
    batches = tuple(StageBatch(d, batch_id("run", d.isoformat()), 40) for d in days)
    batch = KpiBatch("kpi-data", BATCH.prefix, days, stage_batches=batches)
    sent: list[list[str]] = []
    client.meta.events.register(
        "provide-client-params.redshift-data.BatchExecuteStatement",
        lambda params, **_: sent.append(params["Sqls"]),
    )
    stub.add_response("batch_execute_statement", {"Id": STATEMENT_ID, "CreatedAt": NOW})
    expect_status(stub, "FINISHED")

    adapter(client, sleeps, WAREHOUSE_TABLE="analytics.kpis").replace_dates(batch, LOADED_AT)

    (sqls,) = sent
    assert len(sqls) <= 40
    assert max(len(sql) for sql in sqls) <= 100_000
    deletes = " ".join(sql for sql in sqls if sql.startswith("DELETE FROM analytics.kpis "))
    inserts = " ".join(sql for sql in sqls if sql.startswith("INSERT INTO analytics.kpis "))
    assert all(f"'{d.isoformat()}'" in deletes for d in days)
    assert all(f"'{b.batch_id}'" in inserts for b in batches)


def test_a_batch_the_data_api_would_refuse_is_refused_before_it_is_sent() -> None:
    with pytest.raises(ValueError, match="at most 40"):
        check_batch(["SELECT 1"] * 41)
    with pytest.raises(ValueError, match="at most 100,000"):
        check_batch(["SELECT '" + "x" * 100_000 + "'"])
    check_batch(["SELECT 1"] * 40)


# --- polling ------------------------------------------------------------------------------------


def test_finished_load_returns_the_rows_the_insert_wrote(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub)
    expect_status(stub, "FINISHED", **finished(42))

    assert adapter(client, sleeps).replace_dates(BATCH, LOADED_AT) == 42
    assert sleeps == []


def test_polls_until_finished_sleeping_the_configured_interval_between_polls(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub)
    for status in ("SUBMITTED", "PICKED", "STARTED"):
        expect_status(stub, status)
    expect_status(stub, "FINISHED", **finished(7))

    assert adapter(client, sleeps).replace_dates(BATCH, LOADED_AT) == 7
    assert sleeps == [0.25, 0.25, 0.25]


def test_failed_load_raises_statement_failed_with_redshift_error_message(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    message = "Spectrum Scan Error: S3 file is not a valid Parquet file"
    expect_submit(stub)
    expect_status(stub, "STARTED")
    expect_status(stub, "FAILED", Error=message)

    with pytest.raises(WarehouseStatementFailed, match="FAILED") as raised:
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)

    assert message in str(raised.value)
    assert not isinstance(raised.value, RETRYABLE_ERRORS)


def test_aborted_load_raises_statement_failed(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub)
    expect_status(stub, "ABORTED")

    with pytest.raises(WarehouseStatementFailed, match="ABORTED"):
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)


def test_load_still_running_as_the_function_runs_out_of_time_is_retryable(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    """Not cancelled: the retry submits the same token and waits for the same batch (a
    cancelled batch would start over on every attempt, and a long one never finish)."""
    expect_submit(stub)
    for _ in range(3):
        expect_status(stub, "STARTED")  # a fourth describe would find no stubbed response

    with pytest.raises(WarehouseUnavailable, match=f"{STATEMENT_ID} still running"):
        adapter(client, sleeps, seconds_left=60.5).replace_dates(BATCH, LOADED_AT)

    assert sleeps == [0.25, 0.25]  # between polls only, never past the deadline
    stub.assert_no_pending_responses()


def test_a_retried_load_finds_the_batch_its_timed_out_invocation_started(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    """Issue 17, item 2: the same work under the same ClientToken is the same batch: a
    retry waits for it rather than running the load twice."""
    earlier = NOW - dt.timedelta(minutes=14)
    expect_submit(stub, created_at=earlier)  # the Data API hands back the first batch
    expect_status(stub, "STARTED")
    expect_status(stub, "FINISHED", **finished(42))

    assert adapter(client, sleeps).replace_dates(BATCH, LOADED_AT) == 42


def test_a_batch_that_had_failed_before_the_retry_is_submitted_again_under_a_new_token(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    """It committed nothing: running it again is safe, and its token must change (the same
    token would hand back the failed batch for eight hours)."""
    expect_submit(stub, created_at=NOW - dt.timedelta(minutes=3))
    expect_status(stub, "FAILED", Error="ERROR: 1023 Serializable isolation violation")
    expect_submit(stub, token=batch_id(*LOAD_WORK, 1))
    expect_status(stub, "FINISHED", **finished(9))

    assert adapter(client, sleeps).replace_dates(BATCH, LOADED_AT) == 9


def test_a_batch_of_this_invocation_that_fails_is_not_submitted_again(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub)
    expect_status(stub, "FAILED", Error="ERROR: permission denied for relation music_kpi_metrics")

    with pytest.raises(WarehouseStatementFailed, match="permission denied"):
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)
    stub.assert_no_pending_responses()


# --- errors of the Data API ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("ActiveStatementsExceededException", 400),
        ("ActiveSessionsExceededException", 400),
        ("InternalServerException", 500),
        ("BatchExecuteStatementException", 500),
    ],
)
def test_busy_or_failing_service_on_submit_is_retryable(
    client: Any, stub: Stubber, sleeps: list[float], code: str, status: int
) -> None:
    stub.add_client_error(
        "batch_execute_statement", service_error_code=code, http_status_code=status
    )

    with pytest.raises(WarehouseUnavailable, match=f"{code} while submitting"):
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("ActiveWaitingRequestsExceededException", 400),
        ("InternalServerException", 500),
    ],
)
def test_busy_or_failing_service_while_polling_is_retryable(
    client: Any, stub: Stubber, sleeps: list[float], code: str, status: int
) -> None:
    expect_submit(stub)
    expect_status(stub, "STARTED")
    stub.add_client_error("describe_statement", service_error_code=code, http_status_code=status)

    with pytest.raises(WarehouseUnavailable, match=f"{code} while polling"):
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)


@pytest.mark.parametrize(
    ("code", "status"),
    [("ValidationException", 400), ("ResourceNotFoundException", 400), ("AccessDenied", 403)],
)
def test_request_errors_on_submit_are_configuration_errors(
    client: Any, stub: Stubber, sleeps: list[float], code: str, status: int
) -> None:
    stub.add_client_error(
        "batch_execute_statement",
        service_error_code=code,
        service_message="Cluster kpi-cluster not found",
        http_status_code=status,
    )

    with pytest.raises(ConfigurationError, match=f"{code} while submitting") as raised:
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)

    assert not isinstance(raised.value, RETRYABLE_ERRORS)


def test_validation_error_while_polling_is_a_configuration_error(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub)
    stub.add_client_error("describe_statement", service_error_code="ValidationException")

    with pytest.raises(ConfigurationError, match="ValidationException while polling"):
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)


def test_unreachable_endpoint_is_retryable(sleeps: list[float]) -> None:
    unreachable = boto3.client(
        "redshift-data",
        region_name=REGION,
        endpoint_url="http://127.0.0.1:1",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )

    with pytest.raises(WarehouseUnavailable, match="unreachable"):
        adapter(unreachable, sleeps).replace_dates(BATCH, LOADED_AT)


def test_open_warehouse_picks_the_redshift_adapter() -> None:
    warehouse = open_warehouse(WarehouseSettings.from_env(SERVERLESS))

    assert isinstance(warehouse, RedshiftDataApiWarehouse)


# --- settings -----------------------------------------------------------------------------------

# Every value carries a marker, so a message that echoes any of them is caught.
MARKED = {
    "WAREHOUSE_KIND": "redshift",
    "REDSHIFT_DATABASE": "db_marker",
    "REDSHIFT_CLUSTER_ID": "cluster-marker",
    "REDSHIFT_DB_USER": "user_marker",
    "REDSHIFT_COPY_ROLE_ARN": "arn:aws:iam::123456789012:role/marker",
    "WAREHOUSE_DSN": "postgresql://loader:marker-password@db.internal/kpis",
}


def test_marked_settings_are_valid_as_they_stand() -> None:
    settings = WarehouseSettings.from_env(MARKED)

    assert settings.redshift_cluster_id == "cluster-marker"
    assert settings.redshift_stop_before_timeout_seconds == 60


@pytest.mark.parametrize(
    ("change", "variables"),
    [
        ({"REDSHIFT_DATABASE": None}, ["REDSHIFT_DATABASE"]),
        ({"REDSHIFT_COPY_ROLE_ARN": None}, ["REDSHIFT_COPY_ROLE_ARN"]),
        ({"REDSHIFT_WORKGROUP": "wg-marker"}, ["REDSHIFT_CLUSTER_ID", "REDSHIFT_WORKGROUP"]),
        ({"REDSHIFT_CLUSTER_ID": None}, ["REDSHIFT_CLUSTER_ID", "REDSHIFT_WORKGROUP"]),
        ({"REDSHIFT_DB_USER": None}, ["REDSHIFT_DB_USER", "REDSHIFT_SECRET_ARN"]),
        ({"WAREHOUSE_TABLE": "kpis_marker; DROP TABLE users"}, ["WAREHOUSE_TABLE"]),
        ({"WAREHOUSE_KIND": "marker"}, ["WAREHOUSE_KIND"]),
        ({"WAREHOUSE_KIND": None}, ["WAREHOUSE_KIND"]),
        ({"REDSHIFT_STOP_BEFORE_TIMEOUT_SECONDS": "0"}, ["REDSHIFT_STOP_BEFORE_TIMEOUT_SECONDS"]),
        (
            {"REDSHIFT_CLUSTER_ID": None, "REDSHIFT_WORKGROUP": "wg-marker"},
            ["REDSHIFT_DB_USER", "Serverless", "IAMR:<role>"],
        ),
        ({"REDSHIFT_POLL_SECONDS": "marker"}, ["REDSHIFT_POLL_SECONDS"]),
    ],
    ids=[
        "no-database",
        "no-copy-role",
        "cluster-and-workgroup",
        "neither-cluster-nor-workgroup",
        "cluster-without-user-or-secret",
        "bad-table",
        "bad-kind",
        "no-kind",
        "no-time-kept",
        "workgroup-with-db-user",
        "poll-seconds-not-a-number",
    ],
)
def test_bad_settings_name_the_variable_and_never_echo_a_value(
    change: dict[str, str | None], variables: list[str]
) -> None:
    env = {name: value for name, value in {**MARKED, **change}.items() if value is not None}

    with pytest.raises(ConfigurationError) as raised:
        WarehouseSettings.from_env(env)

    message = str(raised.value)
    for variable in variables:
        assert variable in message
    assert "marker" not in message
    assert "db.internal" not in message


def test_a_serializable_isolation_conflict_is_retryable(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub)
    expect_status(
        stub,
        "FAILED",
        Error="ERROR: 1023 DETAIL: Serializable isolation violation on table - 123456",
    )

    with pytest.raises(WarehouseUnavailable, match="Serializable isolation violation"):
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)
    stub.assert_no_pending_responses()


def test_losing_sight_of_a_load_cancels_it_before_the_retry(
    client: Any, stub: Stubber, sleeps: list[float]
) -> None:
    expect_submit(stub)
    stub.add_client_error(
        "describe_statement",
        service_error_code="InternalServerException",
        http_status_code=500,
        expected_params={"Id": STATEMENT_ID},
    )
    stub.add_response("cancel_statement", {"Status": True}, {"Id": STATEMENT_ID})

    with pytest.raises(WarehouseUnavailable):
        adapter(client, sleeps).replace_dates(BATCH, LOADED_AT)
    stub.assert_no_pending_responses()
