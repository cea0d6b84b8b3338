"""Per-environment configuration, read from ``cdk.json`` context and validated at synth.

``cdk synth -c env=prod`` picks ``context.environments.prod``. Every value is checked here,
before any construct is built, and a bad one stops the synth with a message naming the
setting and what it should hold. Nothing here calls AWS.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from infra import schedule

ARN_ROLE = r"^arn:aws[a-z\-]*:iam::\d{12}:role/[\w+=,.@/\-]+$"
BUCKET = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"
SM_NAME_OR_ARN = (  # a pattern for Secrets Manager names or ARNs
    r"^(arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:[\w/+=.@\-]+|[\w/+=.@\-]+)$"
)
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
KMS_KEY_ARN = r"^arn:aws[a-z\-]*:kms:[a-z0-9\-]+:\d{12}:key/[A-Za-z0-9\-]+$"
STEPS = (
    "check_request",
    "check_source",
    "extract_rds",
    "list_files",
    "ingest_file",
    "replay_quarantine",
    "plan_transform",
    "transform",
    "transform_in_warehouse",
    "load",
    "archive",
    "alert",
)


class ConfigError(ValueError):
    """The environment's configuration is missing or malformed."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# S3's safe key characters (and '=' for partition-style folders), no IAM wildcard or
# policy variable: the landing prefix is written into grants as it is.
LITERAL_PREFIX = r"(?:[A-Za-z0-9!_.'()=-]+/)+"


class LandingConfig(_Model):
    """Where stream CSV files land: an existing bucket (by name) or one the stack creates."""

    bucket_name: Annotated[str, Field(pattern=BUCKET)] | None = None
    prefix: str = "landing/"
    # The customer-managed KMS key the landing bucket encrypts with, if any.
    kms_key_arn: Annotated[str, Field(pattern=KMS_KEY_ARN)] | None = None
    # The account that owns the landing bucket, when it is not the stack's: its owner must
    # grant the pipeline's roles (`make landing-policy ENV=...` prints the statements).
    owner_account: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None

    @model_validator(mode="after")
    def _prefix(self) -> Self:
        if not self.prefix.endswith("/") or self.prefix.startswith("/"):
            raise ValueError("landing.prefix must look like 'landing/' (no leading '/')")
        if not re.fullmatch(LITERAL_PREFIX, self.prefix):
            raise ValueError(
                f"landing.prefix {self.prefix!r} may hold letters, digits and ! - _ . ' ( ) = "
                "in non-empty folders ending with '/': it goes into IAM grants, where * and ? "
                "are wildcards and ${...} a policy variable"
            )
        if (self.kms_key_arn or self.owner_account) and not self.bucket_name:
            raise ValueError(
                "landing.kms_key_arn and landing.owner_account describe an existing bucket: "
                "set landing.bucket_name too"
            )
        return self


class DataBucketConfig(_Model):
    """The pipeline's own bucket: S3-managed keys, or a customer-managed KMS key the stack
    creates (rotated yearly) for those who must control and audit every decryption."""

    encryption: Literal["s3_managed", "kms"] = "s3_managed"


class SourceTableConfig(_Model):
    # A timestamp (or date) column the source updates on every insert and update of a row:
    # the table is then read incrementally, from its watermark on.
    changed_column: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None


class SourceConfig(_Model):
    """The RDS PostgreSQL holding users and songs; credentials stay in Secrets Manager."""

    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)  # default: the secret's port
    database: str | None = None
    secret: Annotated[str, Field(pattern=SM_NAME_OR_ARN)] = Field(
        description="Secrets Manager secret name or ARN with username/password (RDS format)"
    )
    # The customer-managed KMS key the secret is encrypted with, if not AWS's own.
    secret_kms_key_arn: Annotated[str, Field(pattern=KMS_KEY_ARN)] | None = None
    # TLS to RDS: 'verify-full' (the default: encrypted, and the certificate checked for the
    # host against the RDS CA bundle), or 'require' (encrypted, unchecked: a deliberate
    # choice). The bundle: ca_bundle, a PEM file here the stack ships in a layer of its own
    # (`make rds-ca ENV=<env>` fetches the region's), or ssl_root_cert, its path in a layer
    # of yours.
    sslmode: Literal["disable", "require", "verify-ca", "verify-full"] = "verify-full"
    ssl_root_cert: str | None = None
    ca_bundle: str | None = None
    statement_timeout_seconds: int = Field(default=900, ge=1, le=3600)
    lock_timeout_seconds: int = Field(default=30, ge=1, le=3600)
    users: SourceTableConfig = SourceTableConfig()
    songs: SourceTableConfig = SourceTableConfig()
    # An incremental read starts this long before the watermark: a row committed late with
    # an earlier change time (a long transaction, clock skew) is still read.
    overlap_seconds: int = Field(default=3600, ge=0, le=7 * 86400)
    # Every table is read whole at least this often: the reconciliation that finds deletes.
    full_extract_every_days: int = Field(default=7, ge=1, le=365)

    @model_validator(mode="after")
    def _tls(self) -> Self:
        if self.sslmode in {"verify-ca", "verify-full"} and not (
            self.ssl_root_cert or self.ca_bundle
        ):
            raise ValueError(
                f"source.sslmode '{self.sslmode}' needs the RDS CA bundle: set source.ca_bundle "
                "to a PEM file here (`make rds-ca ENV=<env>` fetches the region's into "
                ".cache/rds-ca/), or source.ssl_root_cert to its path in a layer of yours"
            )
        if self.ca_bundle and self.ssl_root_cert:
            raise ValueError("set source.ca_bundle or source.ssl_root_cert, not both")
        return self


PREFIX_LIST = r"^pl-[0-9a-f]{8,17}$"


class NetworkConfig(_Model):
    """The VPC the RDS-facing functions run in (private subnets reaching the database), and
    the parsers too, behind a security group of their own that lets HTTPS out to S3 and
    DynamoDB only: the region's managed prefix lists name those services' addresses."""

    vpc_id: Annotated[str, Field(pattern=r"^vpc-[0-9a-f]{8,17}$")]
    availability_zones: list[str] = Field(min_length=1)
    private_subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]] = Field(
        min_length=1
    )
    security_group_ids: list[Annotated[str, Field(pattern=r"^sg-[0-9a-f]{8,17}$")]] = Field(
        min_length=1
    )
    s3_prefix_list_id: Annotated[str | None, Field(pattern=PREFIX_LIST)] = None
    dynamodb_prefix_list_id: Annotated[str | None, Field(pattern=PREFIX_LIST)] = None

    @model_validator(mode="after")
    def _parsers_egress_is_named(self) -> Self:
        missing = [
            f"network.{name}"
            for name in ("s3_prefix_list_id", "dynamodb_prefix_list_id")
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(
                f"{' and '.join(missing)} required: the functions that parse landing files "
                "may reach S3 and DynamoDB only, named by the region's managed prefix lists. "
                "`aws ec2 describe-managed-prefix-lists --filters Name=prefix-list-name,"
                "Values=com.amazonaws.<region>.s3,com.amazonaws.<region>.dynamodb` prints "
                "their ids (pl-...); the private subnets need a route to both (gateway "
                "endpoints, docs/deploy.md)"
            )
        return self

    @model_validator(mode="after")
    def _one_subnet_per_zone(self) -> Self:
        if len(self.private_subnet_ids) != len(self.availability_zones):
            raise ValueError(
                "network.private_subnet_ids and network.availability_zones must pair up "
                "(one subnet per zone, same order)"
            )
        return self


UUID = r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$"


class WarehouseConfig(_Model):
    """The KPI warehouse: Redshift (provisioned or Serverless); 'postgres' is local only."""

    kind: Literal["redshift", "postgres"] = "redshift"
    database: str | None = None
    cluster_id: str | None = None
    db_user: str | None = None
    workgroup: str | None = None
    # The id its ARN ends with (`aws redshift-serverless get-workgroup --workgroup-name NAME
    # --query workgroup.workgroupId`): the grants name that one workgroup.
    workgroup_id: Annotated[str, Field(pattern=UUID)] | None = None
    secret_arn: Annotated[str, Field(pattern=SM_NAME_OR_ARN)] | None = None
    # The customer-managed KMS key secret_arn is encrypted with, if not AWS's own.
    secret_kms_key_arn: Annotated[str, Field(pattern=KMS_KEY_ARN)] | None = None
    # The role COPY reads S3 with, attached to the cluster or namespace: an existing one, or
    # none to have the stack create music-kpi-<env>-redshift-copy (then attach it).
    copy_role_arn: Annotated[str, Field(pattern=ARN_ROLE)] | None = None
    table: Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")] = "music_kpi_metrics"

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.kind == "postgres":
            return self
        missing = [name for name, value in (("database", self.database),) if not value]
        if missing:
            raise ValueError(f"warehouse needs {', '.join(missing)} for Redshift")
        if bool(self.cluster_id) == bool(self.workgroup):
            raise ValueError(
                "warehouse needs exactly one of cluster_id (provisioned) or workgroup (Serverless)"
            )
        if self.workgroup and not self.workgroup_id:
            raise ValueError(
                "warehouse.workgroup_id is needed with a workgroup: the id its ARN ends with "
                "(aws redshift-serverless get-workgroup --workgroup-name "
                f"{self.workgroup} --query workgroup.workgroupId), so that the grants name "
                "this workgroup, not every one of the account"
            )
        if self.workgroup and self.db_user:
            raise ValueError(
                "warehouse.db_user is for a provisioned cluster: on Serverless each function's "
                "database user is its IAM role (IAMR:<role name>), or set warehouse.secret_arn"
            )
        if self.secret_arn and not self.copy_role_arn:
            raise ValueError(
                "with warehouse.secret_arn, set warehouse.copy_role_arn: the role the stack "
                "would create trusts the pipeline's database users by name, and a secret's "
                "user is not known before the secret is read"
            )
        if self.cluster_id and not (self.db_user or self.secret_arn):
            raise ValueError(
                "a provisioned cluster needs warehouse.db_user or warehouse.secret_arn"
            )
        return self


class TransformConfig(_Model):
    """Where each date's KPIs are computed: DuckDB in a Lambda, or SQL inside Redshift."""

    # "lambda": every date in a Transform function (DuckDB); "warehouse": every date in the
    # warehouse (COPY + SQL, no data through Lambda); "auto": the warehouse for a date with
    # more accepted plays than warehouse_min_plays (counted from the ledger), else Lambda.
    engine: Literal["lambda", "warehouse", "auto"] = "lambda"
    # Sized from `make bench`: a Transform call handles ~2.8 billion plays in 15 minutes, but
    # a date's curated Parquet must fit a third of its /tmp (6 GB by default).
    warehouse_min_plays: int = Field(default=100_000_000, ge=0)


class ScheduleConfig(_Model):
    expression: str = "cron(0 2 * * ? *)"  # daily, 02:00 UTC
    enabled: bool = True

    @model_validator(mode="after")
    def _expression(self) -> Self:
        try:
            schedule.validate(self.expression)
        except schedule.ScheduleError as exc:
            raise ValueError(f"schedule.expression is not one EventBridge accepts: {exc}") from None
        return self


class LayersConfig(_Model):
    """The managed AWS SDK for pandas layer (pyarrow, numpy) the heavy steps run with."""

    # By default the layer of requirements.txt's awswrangler version for the region, read
    # from AWS's public SSM parameter at deploy time. Set an ARN to pin one explicitly.
    aws_sdk_pandas_arn: (
        Annotated[
            str, Field(pattern=r"^arn:aws[a-z\-]*:lambda:[a-z0-9\-]+:\d{12}:layer:[\w\-]+:\d+$")
        ]
        | None
    ) = None
    # Its unzipped size, for the 250 MB check of `make synth` (AWS documents ~154 MB).
    aws_sdk_pandas_unzipped_mb: float = Field(default=154.0, gt=0, lt=250)


class MonitoringConfig(_Model):
    # Alarm when no execution succeeded for this long; by default the schedule's longest
    # gap between two runs plus two hours (26 for a daily schedule, 74 for weekdays).
    no_success_alarm_hours: int | None = Field(default=None, ge=2, le=168)
    # Alarm when no play was loaded for this long: a feed that stopped (a day and a half).
    no_plays_alarm_hours: int = Field(default=36, ge=2, le=168)


class SlackConfig(_Model):
    """The Slack channel AWS Chatbot posts the alerts to (the workspace must first be
    authorised once in the AWS Chatbot console: docs/alerts.md)."""

    # The workspace (team) id: Chatbot's console shows it once authorised, T followed by
    # letters and digits.
    workspace_id: str
    # The channel's id, not its name: C... (public) or G... (private), from the channel's
    # details in Slack ("Copy channel ID"). A private channel must invite @aws first.
    channel_id: str

    @field_validator("workspace_id")
    @classmethod
    def _workspace(cls, value: str) -> str:
        if not re.fullmatch(r"T[0-9A-Z]{6,20}", value):
            raise ValueError(
                "a Slack workspace id looks like 'T0123ABCD' (T, then capitals and digits): "
                "the AWS Chatbot console shows it once the workspace is authorised"
            )
        return value

    @field_validator("channel_id")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not re.fullmatch(r"[CG][0-9A-Z]{6,20}", value):
            raise ValueError(
                "a Slack channel id looks like 'C0123ABCDEF' (C for a public channel, G for a "
                "private one, then capitals and digits), not its name: in Slack, the "
                "channel's details, 'Copy channel ID'"
            )
        return value


class PagerDutyConfig(_Model):
    """PagerDuty's Events API v2: the integration key stays in Secrets Manager, named here."""

    # The name or ARN of the secret holding the service's Events API v2 integration key
    # (the routing key). Never the key itself: it would land in cdk.json and the template.
    secret: str
    # When the secret is JSON, the field holding the key (else the whole secret is the key).
    json_field: Annotated[str, Field(pattern=r"^[\w.\-]+$")] | None = None

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if re.fullmatch(r"[0-9a-z]{32}", value):
            raise ValueError(
                "this looks like the integration key itself: put it in a Secrets Manager "
                "secret and give the secret's name or ARN (the key must never be in cdk.json)"
            )
        if not re.fullmatch(SM_NAME_OR_ARN, value):
            raise ValueError(
                "give the name or the ARN of a Secrets Manager secret holding the Events API "
                "v2 integration key (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
            )
        return value


class AlertsConfig(_Model):
    """Where alerts go besides the e-mail addresses of alert_emails: a Slack channel (AWS
    Chatbot), PagerDuty. Neither is deployed unless set."""

    slack: SlackConfig | None = None
    pagerduty: PagerDutyConfig | None = None
    # Where an alert's runbook entry links to: the runbook's page in your repository
    # (https://.../docs/runbook.md), or its path in the repository (the default).
    runbook_url: Annotated[str, Field(pattern=r"^(https://\S+|[\w./\-]+\.md)$")] = "docs/runbook.md"


class FunctionConfig(_Model):
    """One step's Lambda sizing. A value left out takes the step's own default."""

    memory_mb: int = Field(ge=128, le=10240)
    timeout_seconds: int = Field(ge=10, le=900)
    # Lambda's /tmp: 512 MB unless set, up to 10,240 MB. IngestFile keeps the stream file
    # and DuckDB's spill there, Transform a batch of dates' curated plays and the spill.
    ephemeral_storage_mb: int = Field(ge=512, le=10240)


class FunctionOverride(_Model):
    memory_mb: int | None = Field(default=None, ge=128, le=10240)
    timeout_seconds: int | None = Field(default=None, ge=10, le=900)
    ephemeral_storage_mb: int | None = Field(default=None, ge=512, le=10240)


# DuckDB's memory in ExtractRds: the snapshot is typed and de-duplicated within it, spilling
# to /tmp past it, so the step's peak stays under 512 MB whatever the tables' size (`make
# bench`: 432 MB for 2M users and 500k songs, 10% slower than with 1.8 GB).
EXTRACT_DUCKDB_MEMORY_MB = 256

# Sized from `make bench` with headroom: a 10M-play day, files of ~400 MB.
DEFAULT_FUNCTIONS: dict[str, FunctionConfig] = {
    "check_request": FunctionConfig(memory_mb=256, timeout_seconds=30, ephemeral_storage_mb=512),
    "check_source": FunctionConfig(memory_mb=512, timeout_seconds=60, ephemeral_storage_mb=512),
    "extract_rds": FunctionConfig(memory_mb=3008, timeout_seconds=900, ephemeral_storage_mb=2048),
    "list_files": FunctionConfig(memory_mb=512, timeout_seconds=120, ephemeral_storage_mb=512),
    "ingest_file": FunctionConfig(memory_mb=2048, timeout_seconds=900, ephemeral_storage_mb=4096),
    # Reads every quarantined-row object of accepted files: kept small by design (rows, not
    # files), with the ingest's memory and /tmp.
    "replay_quarantine": FunctionConfig(
        memory_mb=2048, timeout_seconds=900, ephemeral_storage_mb=4096
    ),
    # A recompute reads the ledger entries of up to max_recompute_days dates.
    "plan_transform": FunctionConfig(memory_mb=1024, timeout_seconds=900, ephemeral_storage_mb=512),
    "transform": FunctionConfig(memory_mb=3008, timeout_seconds=900, ephemeral_storage_mb=6144),
    # Writes three manifests and waits for one Data API batch: the warehouse does the work.
    "transform_in_warehouse": FunctionConfig(
        memory_mb=512, timeout_seconds=900, ephemeral_storage_mb=512
    ),
    "load": FunctionConfig(memory_mb=1024, timeout_seconds=900, ephemeral_storage_mb=512),
    "archive": FunctionConfig(memory_mb=512, timeout_seconds=600, ephemeral_storage_mb=512),
    # Reads an execution's history, publishes one message and one event.
    "alert": FunctionConfig(memory_mb=256, timeout_seconds=60, ephemeral_storage_mb=512),
}


class PipelineConfig(_Model):
    """Everything one environment of the pipeline needs to be synthesized."""

    name: str = Field(pattern=r"^[a-z][a-z0-9\-]{1,30}$")
    account: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] | None = None
    landing: LandingConfig = LandingConfig()
    data_bucket: DataBucketConfig = DataBucketConfig()
    source: SourceConfig
    network: NetworkConfig | None = None
    warehouse: WarehouseConfig
    transform: TransformConfig = TransformConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    alert_emails: list[Annotated[str, Field(pattern=EMAIL)]] = []
    alerts: AlertsConfig = AlertsConfig()
    layers: LayersConfig = LayersConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    functions: dict[str, FunctionOverride] = {}
    max_files_per_run: int = Field(default=1000, ge=1, le=10_000)
    # Failed runs of a file (it stays in landing and the run fails; outages are not counted)
    # before it is quarantined whole as ingest_failed; a failure that repeats (out of
    # memory twice, /tmp too small) is quarantined at once (kpi_pipeline.attempts).
    max_file_attempts: int = Field(default=3, ge=1, le=10)
    # The most dates one run loads (a state carries them, 13 bytes each; every statement
    # that lists them is chunked): a file with thousands of dates loads over several runs,
    # oldest first, and never delays an ordinary day's files.
    max_dates_per_run: int = Field(default=1000, ge=1, le=2000)
    ingest_concurrency: int = Field(default=10, ge=1, le=40)
    transform_concurrency: int = Field(default=10, ge=1, le=40)
    # The most dates one {"recompute": ...} execution may replace (a bigger range: split it).
    # At most 1,000: each date rides in a few states' lists (kpi_dates), 256 KiB each.
    max_recompute_days: int = Field(default=366, ge=1, le=1000)
    local: bool = False  # the laptop environment: no VPC, PostgreSQL warehouse

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        unknown = set(self.functions) - set(STEPS)
        if unknown:
            raise ValueError(f"functions has unknown steps {sorted(unknown)}; known: {STEPS}")
        if self.source.sslmode == "disable" and not self.local:
            raise ValueError(
                "source.sslmode 'disable' is for the local environment only: RDS is reached "
                "over TLS ('require' or 'verify-full')"
            )
        if self.warehouse.kind == "postgres" and not self.local:
            raise ValueError("warehouse.kind 'postgres' is for the local environment only")
        if not self.local and self.network is None:
            raise ValueError("network is required: the RDS-facing function runs in your VPC")
        if not self.local and (self.account is None or self.region is None):
            raise ValueError("account and region are required (the stack targets one of each)")
        return self

    def function(self, step: str) -> FunctionConfig:
        """The step's sizing: its defaults, with whatever the environment sets."""
        override = self.functions.get(step, FunctionOverride())
        return DEFAULT_FUNCTIONS[step].model_copy(update=override.model_dump(exclude_none=True))

    @property
    def stack_name(self) -> str:
        return f"MusicKpiPipeline-{self.name}"


def load_config(context: dict[str, Any] | None, env_name: str | None) -> PipelineConfig:
    """The validated configuration of ``env_name`` from the ``environments`` context."""
    environments = (context or {}).get("environments")
    if not isinstance(environments, dict) or not environments:
        raise ConfigError("cdk.json has no 'environments' context: add one per environment")
    if not env_name:
        raise ConfigError(
            f"choose an environment with -c env=NAME (one of: {', '.join(sorted(environments))})"
        )
    if env_name not in environments:
        raise ConfigError(
            f"unknown environment '{env_name}' (cdk.json has: {', '.join(sorted(environments))})"
        )
    try:
        return PipelineConfig.model_validate({"name": env_name, **environments[env_name]})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'environment'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"environment '{env_name}' in cdk.json is invalid: {problems}") from None
