"""Typed configuration of the Lambda steps, read once from the environment.

Logic never reads ``os.environ``: a handler calls one of the ``*_settings()`` functions
below (cached, so validation happens on the cold start) and passes the model on. Each step
asks only for what it needs, so a function's environment carries only its own settings.
A missing or malformed value fails fast with a :class:`ConfigurationError` that names the
variable and says what it should hold.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Annotated, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kpi_pipeline.errors import ConfigurationError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_BUCKET = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"

BucketName = Annotated[str, Field(pattern=_BUCKET)]


class _EnvModel(BaseModel):
    """A settings model whose fields are read from upper-case environment variables."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        values = {name: env[name.upper()] for name in cls.model_fields if name.upper() in env}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(cls, exc)) from None


def _describe(model: type[BaseModel], exc: ValidationError) -> str:
    """One line per bad variable: its name, what is wrong and what it should hold."""
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]).upper() if error["loc"] else "(settings)"
        field = model.model_fields.get(str(error["loc"][0])) if error["loc"] else None
        hint = f" ({field.description})" if field and field.description else ""
        problem = "is not set" if error["type"] == "missing" else error["msg"]
        # Never echo the offending value: it may be a secret.
        lines.append(f"{name} {problem}{hint}")
    return "Invalid configuration: " + "; ".join(lines)


class StorageSettings(_EnvModel):
    """Where the pipeline reads landing files and keeps everything it writes."""

    data_bucket: BucketName = Field(description="S3 bucket for snapshots, curated data, ledger")
    landing_bucket: BucketName = Field(description="S3 bucket where stream CSV files land")
    landing_prefix: str = Field(
        default="landing/", description="key prefix of new stream files, ending with '/'"
    )

    @model_validator(mode="after")
    def _prefix_is_a_folder(self) -> Self:
        if self.landing_prefix and not self.landing_prefix.endswith("/"):
            raise ValueError("LANDING_PREFIX must end with '/' (e.g. 'landing/')")
        return self


class ScratchSettings(_EnvModel):
    """The function's scratch space (Lambda's /tmp) and how large it is."""

    work_dir: str = Field(default="/tmp", description="local scratch directory")  # noqa: S108
    ephemeral_storage_mb: int | None = Field(
        default=None, ge=512, le=10240, description="the function's /tmp size (EphemeralStorage)"
    )
    pipeline_step: str | None = Field(default=None, description="the step's key in cdk.json")


class SourceSettings(_EnvModel):
    """The operational PostgreSQL (RDS) holding ``users`` and ``songs``."""

    source_secret_arn: str = Field(
        description="Secrets Manager secret (ARN or name) with the RDS credentials as JSON"
    )
    source_host: str | None = Field(default=None, description="overrides the secret's host")
    source_port: int | None = Field(default=None, ge=1, le=65535, description="overrides port")
    source_database: str | None = Field(default=None, description="overrides the secret's dbname")
    source_connect_timeout: int = Field(default=10, ge=1, le=300, description="seconds")
    # TLS: 'require' encrypts (RDS accepts it by default); 'verify-full' also checks the
    # server's certificate against source_ssl_root_cert (the RDS CA bundle).
    source_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = (
        Field(default="require", description="libpq sslmode: require or verify-full in AWS")
    )
    source_ssl_root_cert: str | None = Field(
        default=None, description="CA bundle path for verify-ca/verify-full"
    )
    source_statement_timeout_seconds: int = Field(default=900, ge=1, le=3600)
    source_lock_timeout_seconds: int = Field(default=30, ge=1, le=3600)

    source_users_changed_column: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="a timestamp column of users updated on every change: incremental extract",
    )
    source_songs_changed_column: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="a timestamp column of songs updated on every change: incremental extract",
    )
    source_overlap_seconds: int = Field(
        default=3600,
        ge=0,
        le=7 * 86400,
        description="an incremental extract re-reads this much before the watermark (rows "
        "committed late with an earlier change time, clock skew)",
    )
    source_full_extract_every_days: int = Field(
        default=7,
        ge=1,
        le=365,
        description="read a table whole at least this often: it finds deleted rows",
    )

    def changed_column(self, table: str) -> str | None:
        return {
            "users": self.source_users_changed_column,
            "songs": self.source_songs_changed_column,
        }[table]

    @model_validator(mode="after")
    def _verified_needs_a_ca(self) -> Self:
        if self.source_sslmode in {"verify-ca", "verify-full"} and not self.source_ssl_root_cert:
            raise ValueError(
                f"SOURCE_SSLMODE={self.source_sslmode} needs SOURCE_SSL_ROOT_CERT (the RDS CA "
                "bundle's path)"
            )
        return self


class LockSettings(_EnvModel):
    """The DynamoDB table holding the pipeline's lock (one run at a time)."""

    lock_table: str | None = Field(
        default=None,
        min_length=3,
        max_length=255,
        description="the lock's DynamoDB table (LockTable)",
    )
    writer_timeout_seconds: int = Field(
        default=960,
        ge=60,
        le=3600,
        description="the longest a function that writes shared state may run (its timeout, "
        "and a minute): a pending marker without a ledger entry older than this is orphaned",
    )


class IngestSettings(_EnvModel):
    max_files_per_run: int = Field(
        default=1000,
        ge=1,
        le=10_000,  # the list lives in S3; the Distributed Map runs one child per file
        description="files taken into one run's manifest; the rest wait for the next run",
    )
    max_file_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="failed runs of a file (counted against it) before it is quarantined whole "
        "(cdk.json max_file_attempts)",
    )


class RequestSettings(_EnvModel):
    """What an operator may ask of one execution (kpi_pipeline.requests)."""

    max_recompute_days: int = Field(
        default=366,
        ge=1,
        le=1000,
        description="the most dates one recompute may replace (cdk.json max_recompute_days)",
    )


class EngineSettings(_EnvModel):
    """How much memory DuckDB may use before spilling to ``work_dir``."""

    duckdb_memory_limit_mb: int | None = Field(default=None, ge=128)
    aws_lambda_function_memory_size: int | None = Field(default=None, ge=128)
    duckdb_threads: int | None = Field(default=None, ge=1, le=64)

    @property
    def memory_limit_mb(self) -> int | None:
        if self.duckdb_memory_limit_mb:
            return self.duckdb_memory_limit_mb
        if self.aws_lambda_function_memory_size:
            # Leave room for Python, pyarrow buffers and the runtime itself.
            return int(self.aws_lambda_function_memory_size * 0.6)
        return None


TransformEngine = Literal["lambda", "warehouse", "auto"]


class TransformEngineSettings(_EnvModel):
    """Where PlanTransform sends each date: DuckDB in a Lambda, or SQL inside the warehouse."""

    transform_engine: TransformEngine = Field(
        default="lambda",
        description="'lambda' (DuckDB), 'warehouse' (SQL in Redshift) or 'auto' (the "
        "warehouse for a date with more accepted plays than WAREHOUSE_ENGINE_MIN_PLAYS)",
    )
    warehouse_engine_min_plays: int = Field(
        default=100_000_000,
        ge=0,
        description="with TRANSFORM_ENGINE=auto, a date with more accepted plays than this "
        "is computed in the warehouse",
    )

    max_dates_per_run: int = Field(
        default=1000,
        ge=1,
        le=2000,
        description="the most dates one run loads; the rest wait for the next runs, oldest "
        "first (cdk.json max_dates_per_run)",
    )

    def engine_for(self, plays: int) -> Literal["lambda", "warehouse"]:
        if self.transform_engine == "auto":
            return "warehouse" if plays > self.warehouse_engine_min_plays else "lambda"
        return self.transform_engine


class WarehouseSettings(_EnvModel):
    """The KPI warehouse: Redshift through the Data API, or PostgreSQL for local runs."""

    warehouse_kind: Literal["redshift", "postgres"] = Field(
        description="'redshift' in AWS, 'postgres' for local runs and tests"
    )
    warehouse_table: str = Field(
        default="music_kpi_metrics", description="target table, optionally schema-qualified"
    )
    # Redshift (Data API)
    redshift_database: str | None = Field(default=None, description="Redshift database name")
    redshift_cluster_id: str | None = Field(default=None, description="provisioned cluster id")
    redshift_db_user: str | None = Field(default=None, description="database user (cluster)")
    redshift_workgroup: str | None = Field(default=None, description="Serverless workgroup")
    redshift_secret_arn: str | None = Field(default=None, description="optional credentials")
    redshift_copy_role_arn: str | None = Field(
        default=None, description="IAM role Redshift assumes to COPY from S3"
    )
    redshift_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    redshift_stop_before_timeout_seconds: int = Field(
        default=60,
        ge=5,
        le=600,
        description="stop waiting for a batch (and cancel it) this long before the function "
        "would time out",
    )
    # PostgreSQL (local)
    warehouse_dsn: str | None = Field(default=None, description="libpq connection string")

    @model_validator(mode="after")
    def _target_is_complete(self) -> Self:
        if not _IDENTIFIER.match(self.warehouse_table):
            raise ValueError("WAREHOUSE_TABLE must be a table name like 'analytics.kpis'")
        if self.warehouse_kind == "postgres":
            if not self.warehouse_dsn:
                raise ValueError("WAREHOUSE_DSN is required when WAREHOUSE_KIND=postgres")
            return self
        missing = [
            name
            for name, value in (
                ("REDSHIFT_DATABASE", self.redshift_database),
                ("REDSHIFT_COPY_ROLE_ARN", self.redshift_copy_role_arn),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"{', '.join(missing)} required when WAREHOUSE_KIND=redshift")
        if bool(self.redshift_cluster_id) == bool(self.redshift_workgroup):
            raise ValueError(
                "set exactly one of REDSHIFT_CLUSTER_ID (provisioned) or REDSHIFT_WORKGROUP "
                "(Serverless)"
            )
        if self.redshift_workgroup and self.redshift_db_user:
            raise ValueError(
                "REDSHIFT_DB_USER is for a provisioned cluster: on Serverless the database user "
                "is the function's IAM role (IAMR:<role>), or the secret's (REDSHIFT_SECRET_ARN)"
            )
        if self.redshift_cluster_id and not (self.redshift_db_user or self.redshift_secret_arn):
            raise ValueError("a provisioned cluster needs REDSHIFT_DB_USER or REDSHIFT_SECRET_ARN")
        return self


_Settings = TypeVar("_Settings", bound=_EnvModel)


# In AWS each function has a process and an environment of its own. The local runner runs
# every function in one process: it hands each invocation its function's environment here.
_invocation_environment: ContextVar[tuple[tuple[str, str], ...]] = ContextVar(
    "invocation_environment", default=()
)


@contextmanager
def invocation_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Within the block, settings read ``variables`` over the process's environment."""
    token = _invocation_environment.set(tuple(sorted(variables.items())))
    try:
        yield
    finally:
        _invocation_environment.reset(token)


class AlertSettings(_EnvModel):
    """Where alerts go, and what they link to (the alert function: kpi_pipeline.alerts)."""

    pipeline_env: str = Field(description="the environment's name in cdk.json")
    aws_region: str = Field(description="the region (the Lambda runtime sets it)")
    alert_topic_arn: str = Field(
        pattern=r"^arn:aws[a-z\-]*:sns:", description="the alert topic (e-mail, Slack)"
    )
    state_machine_arn: str = Field(
        pattern=r"^arn:aws[a-z\-]*:states:", description="the pipeline's state machine"
    )
    runbook_url: str = Field(
        default="docs/runbook.md", description="where the runbook's sections are linked"
    )
    alert_log_groups: str = Field(
        default="{}", description="JSON: each state's log group (and the state machine's)"
    )
    pagerduty_events: bool = Field(
        default=False, description="send PagerDuty Events API v2 events (alerts.pagerduty)"
    )
    event_bus: str = Field(default="default", description="the bus the PagerDuty rule is on")


def load(model: type[_Settings]) -> _Settings:
    """The settings of ``model`` from this function's environment, validated once."""
    return _load(model, _invocation_environment.get())


@cache
def _load(model: type[_Settings], overlay: tuple[tuple[str, str], ...]) -> _Settings:
    return model.from_env({**os.environ, **dict(overlay)})


def clear_cache() -> None:
    """Forget loaded settings (tests and the local runner change the environment)."""
    _load.cache_clear()
