"""The preflight ({"preflight": true}): the synthesized state machine runs each step's checks
with its own role against the embedded stand-ins; each kind of failure ends in a check that
says what to fix, and a preflight keeps nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from botocore.stub import ANY, Stubber

from infra import preflight as preflight_cli
from infra.config import load_config
from infra.warehouse_setup import REPO
from kpi_pipeline.warehouse import copy_parquet, kpi_sql, postgres, redshift
from local_runner.databases import dsn_to_secret
from tests.harness import running_harness

pytestmark = pytest.mark.e2e
PREFLIGHT = {"preflight": True}
CONTEXT = json.loads((REPO / "cdk.json").read_text())["context"]


def checks_of(harness: Any, execution: Any) -> dict[str, dict[str, Any]]:
    report = execution.output or harness.local.read_json(
        harness.data_bucket, f"runs/{execution.run_id}/preflight.json"
    )
    return {check["check"]: check for check in report["checks"]}


def failed(checks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: check for name, check in checks.items() if not check["ok"]}


def test_a_preflight_passes_and_keeps_nothing(harness: Any, sample: Any) -> None:
    harness.load_source(sample.users_csv, sample.songs_csv)
    keys = harness.put_streams(*sample.stream_files[:1])

    execution = harness.run("preflight-ok", PREFLIGHT)

    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["status"] == "preflight_passed"
    checks = checks_of(harness, execution)
    assert len(checks) == 18 and not failed(checks)
    # IngestFile reaches DynamoDB too (through the VPC's gateway endpoint, in AWS)
    (lock,) = [c for c in checks.values() if c["check"].startswith("lock: ")]
    assert lock["step"] == "IngestFile" and "read the run lock" in lock["detail"]
    steps = {check["step"] for check in checks.values()}
    assert steps == {
        "CheckSourceData",
        "ListNewFiles",
        "IngestFile",
        "Transform",
        "TransformInWarehouse",
        "Load",
        "Alert",  # a test alert, through the alert function as every alert goes
    }
    # It read the landing file, and moved nothing; it wrote no KPI row and left no stage
    # row; no run state (ledger, pins, curated plays, lock) changed.
    landing_bucket, prefix = harness.landing
    assert harness.keys(landing_bucket, prefix) == keys
    assert harness.warehouse() == []
    for prefix in ("ledger/", "curated/", "catalogue/", "archive/", "source/", "runs/outcomes/"):
        assert harness.keys(harness.data_bucket, prefix) == [], prefix
    assert [a["subject"] for a in harness.local.alerts()] == [
        "[music-kpi-local] preflight: the alert path works"
    ]


def test_a_missing_privilege_names_the_grant_and_the_setup_command(
    pipeline: Any, new_database: Any, tmp_path: Path, retry_sleeps: Any, sample: Any
) -> None:
    grant = 'GRANT SELECT, INSERT, DELETE ON music_kpi_metrics TO "IAMR:music-kpi-local-load"'
    with running_harness(
        pipeline,
        new_database,
        tmp_path,
        edit_setup=lambda setup: setup.replace(grant, grant.replace(", DELETE", "")),
    ) as harness:
        harness.load_source(sample.users_csv, sample.songs_csv)
        execution = harness.run("preflight-grant", PREFLIGHT)
        checks = failed(checks_of(harness, execution))

    assert execution.status == "FAILED" and execution.error == "PreflightFailed"
    (check,) = checks.values()
    assert check["step"] == "Load"
    assert check["detail"] == "as IAMR:music-kpi-local-load: lacks table_delete"
    assert "make warehouse-sql ENV=<env>" in check["fix"]
    assert str(execution.cause).startswith("17 of 18 checks passed; failed: warehouse: Load")


def test_a_reserved_word_in_the_kpi_sql_is_named(
    harness: Any, sample: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = kpi_sql.date_kpi_statements

    def with_top(kpi_date: dt.date, run_id: str) -> list[str]:
        statements = real(kpi_date, run_id)
        return [s.replace("top_track", "top") for s in statements]

    # The warehouse adapters' own names for it: what both send.
    monkeypatch.setattr(redshift, "date_kpi_statements", with_top)
    monkeypatch.setattr(postgres, "date_kpi_statements", with_top)
    harness.load_source(sample.users_csv, sample.songs_csv)

    execution = harness.run("preflight-sql", PREFLIGHT)

    (check,) = failed(checks_of(harness, execution)).values()
    assert check["step"] == "TransformInWarehouse"
    assert "Redshift would refuse statement" in check["detail"]
    assert "top.track_name" in check["detail"]
    assert "refused by Redshift" in check["fix"]


def test_parquet_in_a_codec_redshift_does_not_document_fails_the_copy(
    harness: Any, sample: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extract's and the ingest's writers, switched to ZSTD: COPY refuses their files."""
    monkeypatch.setattr(copy_parquet, "DUCKDB_PARQUET", "(FORMAT parquet, COMPRESSION zstd)")
    harness.load_source(sample.users_csv, sample.songs_csv)

    execution = harness.run("preflight-codec", PREFLIGHT)

    (check,) = failed(checks_of(harness, execution)).values()
    assert check["check"].startswith("warehouse engine: COPY of each input")
    assert (
        "is compressed with ZSTD: Redshift documents GZIP, SNAPPY, UNCOMPRESSED"
        in (check["detail"])
    )


def test_an_unreachable_source_says_where_to_look(
    pipeline: Any, new_database: Any, tmp_path: Path, retry_sleeps: Any
) -> None:
    with running_harness(pipeline, new_database, tmp_path) as harness:
        secret = dsn_to_secret(harness.source_dsn) | {"host": "127.0.0.1", "port": 1}
        arn = harness.env["SOURCE_SECRET_ARN"]
        harness.local.client("secretsmanager").put_secret_value(
            SecretId=arn, SecretString=json.dumps(secret)
        )
        execution = harness.run("preflight-source", PREFLIGHT)
        checks = failed(checks_of(harness, execution))

    (check,) = checks.values()
    assert check["check"] == "source: reachable with the secret's credentials"
    assert check["detail"].startswith("SourceUnavailable: cannot connect to the source database")
    assert "security group" in check["fix"]


def test_a_source_user_that_cannot_see_other_sessions_is_told_the_grant(
    harness: Any, sample: Any
) -> None:
    """An incremental read caps its watermark at the oldest open transaction: its user must
    see every session's (pg_read_all_stats). The first run would fail; the preflight says."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    user = json.loads(
        harness.local.client("secretsmanager").get_secret_value(
            SecretId=harness.env["SOURCE_SECRET_ARN"]
        )["SecretString"]
    )["username"]
    conn = psycopg2.connect(harness.source_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"REVOKE pg_read_all_stats FROM {user}")
    finally:
        conn.close()

    execution = harness.run("preflight-sessions", PREFLIGHT)

    (check,) = failed(checks_of(harness, execution)).values()
    assert check["step"] == "CheckSourceData"
    assert check["detail"] == f"as {user}: cannot"
    assert f"GRANT pg_read_all_stats TO {user}" in check["fix"]


# --- make preflight ENV=...: the deployed state machine ------------------------------------------


def stubbed_session(report: dict[str, Any], status: str) -> tuple[Any, list[Stubber]]:
    """A boto3 session whose clients answer as a deployed stack would."""
    clients = {
        name: boto3.client(name, region_name="eu-west-1")
        for name in ("cloudformation", "stepfunctions", "s3")
    }
    stubs = {name: Stubber(client) for name, client in clients.items()}
    machine = "arn:aws:states:eu-west-1:111111111111:stateMachine:music-kpi-dev"
    stubs["cloudformation"].add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "MusicKpiPipeline-dev",
                    "CreationTime": dt.datetime(2026, 12, 1),
                    "StackStatus": "CREATE_COMPLETE",
                    "Outputs": [
                        {"OutputKey": "StateMachineArn", "OutputValue": machine},
                        {"OutputKey": "DataBucketName", "OutputValue": "music-dev-data"},
                    ],
                }
            ]
        },
        {"StackName": "MusicKpiPipeline-dev"},
    )
    execution = f"{machine.replace('stateMachine', 'execution')}:preflight"
    stubs["stepfunctions"].add_response(
        "start_execution",
        {"executionArn": execution, "startDate": dt.datetime(2026, 12, 6)},
        {"stateMachineArn": machine, "name": ANY, "input": '{"preflight": true}'},
    )
    description = {
        "executionArn": execution,
        "stateMachineArn": machine,
        "status": status,
        "startDate": dt.datetime(2026, 12, 6),
    }
    if status == "SUCCEEDED":
        description["output"] = json.dumps(report)
    stubs["stepfunctions"].add_response("describe_execution", description)
    if status != "SUCCEEDED":
        stubs["s3"].add_response("get_object", {"Body": _body(json.dumps(report))})
    for stub in stubs.values():
        stub.activate()

    class Session:
        def client(self, name: str, **_: Any) -> Any:
            return clients[name]

    return Session(), list(stubs.values())


def _body(text: str) -> Any:
    import io

    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(text.encode()), len(text))


REPORT = {
    "status": "preflight_failed",
    "run_id": "preflight-x",
    "kind": "preflight",
    "report_key": "runs/preflight-x/preflight.json",
    "summary": "1 of 2 checks passed; failed: ...",
    "checks": [
        {
            "check": "source: reachable",
            "step": "CheckSourceData",
            "ok": True,
            "detail": "16.2",
            "fix": "",
        },
        {
            "check": "warehouse: Load may replace dates",
            "step": "Load",
            "ok": False,
            "detail": "as IAMR:music-kpi-dev-load: lacks table_delete",
            "fix": "run `make warehouse-sql ENV=<env>` as the warehouse's administrator",
        },
    ],
}


@pytest.mark.parametrize(("status", "exit_code"), [("SUCCEEDED", 0), ("FAILED", 1)])
def test_make_preflight_starts_the_deployed_preflight_and_prints_its_checks(
    status: str, exit_code: int
) -> None:
    report = REPORT | (
        {"status": "preflight_passed", "checks": REPORT["checks"][:1]}
        if status == "SUCCEEDED"
        else {}
    )
    session, stubs = stubbed_session(report, status)
    printed: list[str] = []

    code = preflight_cli.run_preflight(
        load_config(CONTEXT, "dev"), session=session, say=printed.append, poll_seconds=0
    )

    assert code == exit_code
    text = "\n".join(printed)
    assert "Preflight of MusicKpiPipeline-dev: execution preflight-" in text
    assert f"Result: {report['status']}" in text
    if status == "FAILED":
        assert "FAIL  warehouse: Load may replace dates [Load]" in text
        assert "fix: run `make warehouse-sql ENV=<env>`" in text
    for stub in stubs:
        stub.assert_no_pending_responses()


def test_make_preflight_without_credentials_says_how_to_sign_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    assert preflight_cli.main(["dev"]) == 2
    assert "no AWS credentials: sign in to the environment's account" in capsys.readouterr().err
    assert preflight_cli.main(["local"]) == 2
    assert "make run PREFLIGHT=1" in capsys.readouterr().err
