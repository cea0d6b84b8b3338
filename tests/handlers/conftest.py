"""Fixtures of the handler tests: moto's S3 and Secrets Manager, a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from extract_rds.handler import extract_tables
from kpi_pipeline import aws as pipeline_aws
from kpi_pipeline.observability import logger as pipeline_logger
from local_runner.databases import dsn_to_secret, source_reader
from tests.handlers.support import (
    CONTEXT,
    DATA_BUCKET,
    LANDING,
    LANDING_BUCKET,
    PASSWORD,
    SECRET_ID,
    SONGS,
    USERS,
    CurrentStdout,
    event,
    load_typed_source,
)


@pytest.fixture
def cloud(aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """moto's S3 with the two buckets, and the storage settings of every step."""
    for bucket in (DATA_BUCKET, LANDING_BUCKET):
        aws.s3.create_bucket(Bucket=bucket)
    # The pipeline's clients are moto's: building fresh boto3 sessions in every test would
    # re-parse botocore's service models each time (about a second per test).
    monkeypatch.setitem(pipeline_aws._clients, "s3", aws.s3)
    monkeypatch.setitem(pipeline_aws._clients, "secretsmanager", aws.secrets)
    monkeypatch.setenv("DATA_BUCKET", DATA_BUCKET)
    monkeypatch.setenv("LANDING_BUCKET", LANDING_BUCKET)
    monkeypatch.setenv("LANDING_PREFIX", LANDING)
    monkeypatch.setenv("WORK_DIR", str(tmp_path / "lambda-tmp"))
    return aws


@pytest.fixture
def source_dsn(cloud: Any, new_database: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty source database, and its RDS-style secret (with a password) in moto."""
    dsn = new_database("source")
    # The extract's own role, as in RDS (the test server trusts it, password or not).
    secret = {**dsn_to_secret(source_reader(dsn)), "password": PASSWORD}
    cloud.secrets.create_secret(Name=SECRET_ID, SecretString=json.dumps(secret))
    monkeypatch.setenv("SOURCE_SECRET_ARN", SECRET_ID)
    monkeypatch.setenv("SOURCE_SSLMODE", "disable")  # the test server speaks no TLS
    return dsn


@pytest.fixture
def world(source_dsn: str, tmp_path: Path) -> str:
    """The source holds the worked example's users and songs (typed columns, as in RDS)."""
    load_typed_source(source_dsn, tmp_path, USERS, SONGS)
    return source_dsn


@pytest.fixture
def snapshot(world: str) -> dict[str, Any]:
    """ExtractRds's output for the run ``RUN``."""
    return extract_tables(event("extract_rds"), CONTEXT)


@pytest.fixture
def warehouse_dsn(new_database: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A warehouse set up as an administrator sets it up (infra/warehouse_setup.sql)."""
    from local_runner.databases import apply_warehouse_setup

    dsn = new_database("warehouse")
    apply_warehouse_setup(dsn)
    monkeypatch.setenv("WAREHOUSE_KIND", "postgres")
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    return dsn


@pytest.fixture
def captured_logs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """capsys, with the pipeline's log lines in it.

    The Powertools logger keeps the ``sys.stdout`` of import time, which capsys never sees:
    its handler writes to the current ``sys.stdout`` instead for the test's duration.
    """
    monkeypatch.setattr(pipeline_logger.registered_handler, "stream", CurrentStdout())
    return capsys
