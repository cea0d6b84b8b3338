"""The pipeline's Lambda steps: one function each, named in one place.

``settings`` lists the configuration groups a step reads (see
``lambdas/kpi_pipeline/settings.py``), so each function's environment carries only its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    key: str  # the step's key in cdk.json "functions"
    state: str  # the state name in the state machine
    handler: str  # module path under lambdas/ and function name
    description: str
    settings: frozenset[str]
    layers: frozenset[str]  # what it imports: "base", "duckdb", "psycopg2", "aws_sdk_pandas"
    in_vpc: bool = False  # talks to the RDS database
    # Parses what anyone may drop in the landing bucket: runs in the VPC behind a security
    # group of its own that lets HTTPS out to these AWS services only (their prefix lists).
    egress: frozenset[str] = frozenset()


# What a parser reaches: the buckets (S3) and the run lock (DynamoDB), through the VPC's
# gateway endpoints; Lambda itself carries its logs and traces.
PARSER_EGRESS = frozenset({"s3", "dynamodb"})

CHECK_REQUEST = Step(
    "check_request",
    "CheckRequest",
    "transform.request.handler",
    "Checks what the execution asks for (daily, recompute, replay...) before the lock",
    frozenset({"requests", "storage"}),
    frozenset({"base"}),
)
CHECK_SOURCE = Step(
    "check_source",
    "CheckSourceData",
    "extract_rds.handler.check_source",
    "Counts the users and songs rows of the source database",
    frozenset({"source"}),
    frozenset({"base", "psycopg2"}),
    in_vpc=True,
)
EXTRACT_RDS = Step(
    "extract_rds",
    "ExtractRds",
    "extract_rds.handler.extract_tables",
    "Snapshots users and songs to Parquet in S3 (COPY, whole or incremental)",
    frozenset({"source", "storage", "engine"}),
    frozenset({"base", "psycopg2", "duckdb"}),
    in_vpc=True,
)
LIST_FILES = Step(
    "list_files",
    "ListNewFiles",
    "extract_s3.handler.list_new_files",
    "Freezes the manifest of landing CSV files for this run",
    frozenset({"storage", "ingest"}),
    frozenset({"base"}),
)
INGEST_FILE = Step(
    "ingest_file",
    "IngestFile",
    "extract_s3.handler.ingest_file",
    "Validates one stream file into curated Parquet and quarantine",
    frozenset({"storage", "engine", "lock"}),
    frozenset({"base", "duckdb", "aws_sdk_pandas"}),
    egress=PARSER_EGRESS,
)
REPLAY_QUARANTINE = Step(
    "replay_quarantine",
    "ReplayQuarantine",
    "extract_s3.replay.handler",
    "Checks quarantined rows again (accepts once those valid now), or accepted plays",
    frozenset({"storage", "engine", "lock"}),
    frozenset({"base", "duckdb", "aws_sdk_pandas"}),
    egress=PARSER_EGRESS,
)
PLAN_TRANSFORM = Step(
    "plan_transform",
    "PlanTransform",
    "transform.plan.handler",
    "Plans the dates to recompute from the ledger and pins their catalogue",
    frozenset({"storage", "transform_engine", "lock"}),
    frozenset({"base"}),
)
TRANSFORM = Step(
    "transform",
    "Transform",
    "transform.handler.handler",
    "Computes the KPIs of one date with DuckDB",
    frozenset({"storage", "engine"}),
    frozenset({"base", "duckdb", "aws_sdk_pandas"}),
)
TRANSFORM_IN_WAREHOUSE = Step(
    "transform_in_warehouse",
    "TransformInWarehouse",
    "transform.warehouse.handler",
    "Computes the KPIs of one date inside the warehouse (COPY manifests, SQL)",
    frozenset({"storage", "warehouse"}),
    frozenset({"base"}),
)
LOAD = Step(
    "load",
    "Load",
    "load.handler.handler",
    "Replaces the touched dates of music_kpi_metrics in one transaction",
    frozenset({"storage", "warehouse", "lock"}),
    frozenset({"base"}),
)
ARCHIVE = Step(
    "archive",
    "Archive",
    "archive.handler.handler",
    "Moves the manifest's files to archive or quarantine and writes the run summary",
    frozenset({"storage", "lock", "ingest"}),
    frozenset({"base"}),
)

# Not a state of the run: EventBridge invokes it when an execution ends or an alarm fires
# (and the preflight, to prove the alert path). It renders every alert (kpi_pipeline.alerts)
# and sends it: the topic (e-mail, Slack through AWS Chatbot), PagerDuty.
ALERT = Step(
    "alert",
    "Alert",
    "alert.handler.handler",
    "Renders every alert and sends it: e-mail and Slack (the topic), PagerDuty",
    frozenset({"alerts"}),
    frozenset({"base"}),
)

ALL_STEPS: tuple[Step, ...] = (
    CHECK_REQUEST,
    CHECK_SOURCE,
    EXTRACT_RDS,
    LIST_FILES,
    INGEST_FILE,
    REPLAY_QUARANTINE,
    PLAN_TRANSFORM,
    TRANSFORM,
    TRANSFORM_IN_WAREHOUSE,
    LOAD,
    ARCHIVE,
    ALERT,
)


def role_name(env_name: str, step: Step) -> str:
    """``music-kpi-<env>-<step>``: the step's IAM role, named so that a landing bucket's owner
    can grant it, and (on Redshift Serverless) its database user, ``IAMR:<role name>``."""
    return f"music-kpi-{env_name}-{step.key.replace('_', '-')}"
