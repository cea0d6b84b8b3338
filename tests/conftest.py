"""Shared fixtures: a real PostgreSQL, moto's AWS, the synthesized pipeline."""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import psycopg2
import pytest
from moto import mock_aws
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from kpi_pipeline import aws as pipeline_aws
from kpi_pipeline import settings as pipeline_settings

REGION = "us-east-1"
# Before any jsii process starts: the CDK's Node.js runtime warns on end-of-life versions.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20,22")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded PostgreSQL server for the whole session; yields the admin DSN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def create_database(admin_dsn: str, prefix: str = "db") -> str:
    """A fresh, empty database on the server of ``admin_dsn``; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        # Strings compare byte by byte, as in Redshift and DuckDB, whatever the locale.
        cur.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    conn.close()
    return admin_dsn.replace("/postgres?", f"/{name}?")


@pytest.fixture
def new_database(postgres: str) -> Any:
    """A factory of fresh, empty databases on the session's server (returns their DSN)."""
    return lambda prefix="db": create_database(postgres, prefix)


@pytest.fixture(scope="session", autouse=True)
def _redshift_grammar() -> Iterator[None]:
    """Every statement any test makes the local warehouse run is first checked with
    Redshift's grammar (local_runner/redshift/grammar.py), as ``make run`` does."""
    from local_runner.redshift.grammar import redshift_grammar_enforced

    with redshift_grammar_enforced():
        yield


@pytest.fixture(autouse=True)
def _fresh_pipeline_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no cached settings or clients and fake AWS credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "MusicKpiPipeline")
    pipeline_settings.clear_cache()
    pipeline_aws.reset_clients()
    yield
    pipeline_settings.clear_cache()
    pipeline_aws.reset_clients()


@pytest.fixture
def aws() -> Iterator[SimpleNamespace]:
    """moto's AWS, with the clients tests need."""
    with mock_aws():
        yield SimpleNamespace(
            s3=boto3.client("s3", region_name=REGION),
            secrets=boto3.client("secretsmanager", region_name=REGION),
        )


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Step Functions Retry waits really sleep in moto: record the waits instead."""
    waits: list[float] = []
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=waits.append))
    return waits


@pytest.fixture(scope="session")
def synthesized_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local environment's CloudFormation template, synthesized once per session."""
    from local_runner.template import synthesize

    return synthesize(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def pipeline(synthesized_template: Path) -> Any:
    """The synthesized pipeline, resolved for local execution."""
    from local_runner.template import load_pipeline

    return load_pipeline(synthesized_template)


@pytest.fixture(scope="session")
def warehouse_engine_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The local environment synthesized with transform.engine "auto" and a threshold the
    sample's busiest dates pass (``tests.harness.WAREHOUSE_MIN_PLAYS``): both engines, one
    run, as ``make run ENGINE=auto`` would synthesize it."""
    from local_runner.template import load_pipeline, synthesize
    from tests.harness import WAREHOUSE_MIN_PLAYS

    changes = {"transform": {"engine": "auto", "warehouse_min_plays": WAREHOUSE_MIN_PLAYS}}
    return load_pipeline(synthesize(tmp_path_factory.mktemp("cdk.out-auto"), changes=changes))


@pytest.fixture(scope="session")
def capped_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The local environment synthesized with max_dates_per_run 5: a backlog of dates loads
    over several runs."""
    from local_runner.template import load_pipeline, synthesize

    out = tmp_path_factory.mktemp("cdk.out-capped")
    return load_pipeline(synthesize(out, changes={"max_dates_per_run": 5}))


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Sample users, songs and stream files (tests.harness.SAMPLE_CONFIG)."""
    from local_runner.sample_data import generate
    from tests.harness import SAMPLE_CONFIG

    return generate(tmp_path_factory.mktemp("sample"), SAMPLE_CONFIG)


@pytest.fixture
def harness(pipeline: Any, new_database: Any, tmp_path: Path, retry_sleeps: Any) -> Iterator[Any]:
    """The synthesized state machine on moto, with fresh source and warehouse databases."""
    from tests.harness import running_harness

    with running_harness(pipeline, new_database, tmp_path) as h:
        yield h


@pytest.fixture
def auto_harness(
    warehouse_engine_pipeline: Any, new_database: Any, tmp_path: Path, retry_sleeps: Any
) -> Iterator[Any]:
    """The harness, on the state machine synthesized with transform.engine "auto"."""
    from tests.harness import running_harness

    with running_harness(warehouse_engine_pipeline, new_database, tmp_path) as h:
        yield h


def env_of(**values: str) -> dict[str, str]:
    """Helper for tests that set pipeline settings through the environment."""
    return {**os.environ, **values}


# What the end-to-end tests found, reported at the end of the run. With pytest-xdist each
# worker writes its share here and the controller, which runs no test, prints the whole.
REPORTS = Path(__file__).resolve().parent.parent / ".cache" / "test-reports"


def _is_worker(config: Any) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _is_worker(session.config):
        shutil.rmtree(REPORTS, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from local_runner.redshift.grammar import CHECKED
    from tests.harness import IAM_VERIFIED, PAYLOADS
    from tests.test_crash_matrix import MATRIX
    from tests.test_zombie_matrix import ZOMBIE_MATRIX

    if _is_worker(session.config):
        REPORTS.mkdir(parents=True, exist_ok=True)
        worker = session.config.workerinput["workerid"]
        found = {
            "matrix": MATRIX,
            "zombies": ZOMBIE_MATRIX,
            "iam": sorted(IAM_VERIFIED),
            "payloads": PAYLOADS,
            "grammar": {"shapes": sorted(CHECKED.shapes), "statements": CHECKED.statements},
        }
        (REPORTS / f"{worker}.json").write_text(json.dumps(found))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The crash matrix, and how much the local IAM check verified (local_runner/iam.py)."""
    from local_runner.redshift.grammar import CHECKED
    from tests.harness import IAM_VERIFIED, PAYLOADS
    from tests.test_crash_matrix import (
        CRASH_POINTS,
        MATRIX,
        REPLAY_CRASH_POINTS,
        REVALIDATE_CRASH_POINTS,
        WAREHOUSE_CRASH_POINTS,
    )
    from tests.test_zombie_matrix import ZOMBIE_MATRIX, ZOMBIE_POINTS

    matrix, verified, zombies = dict(MATRIX), set(IAM_VERIFIED), dict(ZOMBIE_MATRIX)
    measured, largest = PAYLOADS["measured"], PAYLOADS["largest"]
    shapes, statements = set(CHECKED.shapes), CHECKED.statements
    for report in sorted(REPORTS.glob("*.json")):
        found = json.loads(report.read_text())
        shapes.update(found["grammar"]["shapes"])
        statements += found["grammar"]["statements"]
        matrix.update(found["matrix"])
        zombies.update(found.get("zombies", {}))
        verified.update(tuple(call) for call in found["iam"])
        measured += found["payloads"]["measured"]
        largest = max(largest, found["payloads"]["largest"])
    if matrix:
        points = (
            *map(str, (*CRASH_POINTS, *WAREHOUSE_CRASH_POINTS, *REPLAY_CRASH_POINTS)),
            *(f"{point} (revalidate)" for point in REVALIDATE_CRASH_POINTS),
        )
        order = {point: i for i, point in enumerate(points)}
        terminalreporter.write_line("crash matrix (point -> outcome):")
        for point, outcome in sorted(matrix.items(), key=lambda i: order[i[0].split(" [")[0]]):
            terminalreporter.write_line(f"  {point:<42} -> {outcome}")
    if zombies:
        order = {str(point): i for i, (point, _) in enumerate(ZOMBIE_POINTS)}
        terminalreporter.write_line("zombie matrix (a stopped run's write -> outcome):")
        for point, outcome in sorted(zombies.items(), key=lambda i: order.get(i[0], 99)):
            terminalreporter.write_line(f"  {point:<42} -> {outcome}")
    if measured:
        size, event, state, field = largest
        terminalreporter.write_line(
            f"state payloads: {measured:,} measured, the largest {size:,} bytes "
            f"({event} {state} {field}) of Step Functions' 262,144"
        )
    if statements:
        terminalreporter.write_line(
            f"Redshift grammar: {statements:,} warehouse statements checked, {len(shapes)} "
            "distinct (literals aside), each parsed with sqlfluff's redshift dialect"
        )
    if verified:
        principals = len({principal for principal, _, _ in verified})
        terminalreporter.write_line(
            f"local IAM check: {len(verified)} distinct (principal, action, resource) calls "
            f"of {principals} principals allowed by the synthesized policies, none denied"
        )
