"""One Lambda function per step, each with its own role granted only what it needs."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import PipelineConfig
from infra.steps import ALL_STEPS, Step
from infra.storage import PipelineStorage

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"
RUNTIME = lambda_.Runtime.PYTHON_3_12


def _pascal(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))


class PipelineFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        storage: PipelineStorage,
        layers: list[lambda_.ILayerVersion],
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._storage = storage
        self.source_secret = self._source_secret()
        code = lambda_.Code.from_asset(
            str(LAMBDAS_DIR), exclude=["**/__pycache__", "**/*.pyc", "**/.mypy_cache"]
        )
        network = self._network()
        self.functions: dict[str, lambda_.Function] = {}
        for step in ALL_STEPS:
            sizing = config.function(step.key)
            log_group = logs.LogGroup(
                self, f"{_pascal(step.key)}Logs", retention=logs.RetentionDays.THREE_MONTHS
            )
            function = lambda_.Function(
                self,
                f"{_pascal(step.key)}Function",
                description=step.description,
                runtime=RUNTIME,
                architecture=lambda_.Architecture.X86_64,
                handler=step.handler,
                code=code,
                layers=layers,
                memory_size=sizing.memory_mb,
                timeout=Duration.seconds(sizing.timeout_seconds),
                environment=self._environment(step),
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                **(network if step.in_vpc and network else {}),  # type: ignore[arg-type]
            )
            self.functions[step.key] = function
        self._grant()

    # --- configuration --------------------------------------------------------------------
    def _environment(self, step: Step) -> dict[str, str]:
        c = self._config
        env = {
            "POWERTOOLS_SERVICE_NAME": "music-kpi-pipeline",
            "POWERTOOLS_METRICS_NAMESPACE": "MusicKpiPipeline",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "PIPELINE_ENV": c.name,
        }
        if "storage" in step.settings:
            env |= {
                "DATA_BUCKET": self._storage.data_bucket.bucket_name,
                "LANDING_BUCKET": self._storage.landing_bucket.bucket_name,
                "LANDING_PREFIX": c.landing.prefix,
            }
        if "source" in step.settings:
            env["SOURCE_SECRET_ARN"] = c.source.secret
            env["SOURCE_PORT"] = str(c.source.port)
            env["EXTRACT_BATCH_SIZE"] = str(c.extract_batch_size)
            if c.source.host:
                env["SOURCE_HOST"] = c.source.host
            if c.source.database:
                env["SOURCE_DATABASE"] = c.source.database
        if "ingest" in step.settings:
            env["MAX_FILES_PER_RUN"] = str(c.max_files_per_run)
        if "warehouse" in step.settings:
            w = c.warehouse
            env["WAREHOUSE_KIND"] = w.kind
            env["WAREHOUSE_TABLE"] = w.table
            optional = {
                "REDSHIFT_DATABASE": w.database,
                "REDSHIFT_CLUSTER_ID": w.cluster_id,
                "REDSHIFT_DB_USER": w.db_user,
                "REDSHIFT_WORKGROUP": w.workgroup,
                "REDSHIFT_SECRET_ARN": w.secret_arn,
                "REDSHIFT_COPY_ROLE_ARN": w.copy_role_arn,
            }
            env |= {name: value for name, value in optional.items() if value}
        return env

    def _source_secret(self) -> secretsmanager.ISecret:
        secret = self._config.source.secret
        if secret.startswith("arn:"):
            return secretsmanager.Secret.from_secret_complete_arn(self, "SourceSecret", secret)
        return secretsmanager.Secret.from_secret_name_v2(self, "SourceSecret", secret)

    def _network(self) -> dict[str, object] | None:
        n = self._config.network
        if n is None:
            return None
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id=n.vpc_id,
            availability_zones=n.availability_zones,
            private_subnet_ids=n.private_subnet_ids,
        )
        return {
            "vpc": vpc,
            "vpc_subnets": ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            "security_groups": [
                ec2.SecurityGroup.from_security_group_id(self, f"SecurityGroup{i}", sg)
                for i, sg in enumerate(n.security_group_ids)
            ],
        }

    # --- permissions ------------------------------------------------------------------------
    def _grant(self) -> None:
        f = self.functions
        data = self._storage.data_bucket
        landing = self._storage.landing_bucket
        prefix = self._config.landing.prefix

        self.source_secret.grant_read(f["check_source"])
        self.source_secret.grant_read(f["extract_rds"])
        data.grant_put(f["extract_rds"], "snapshots/*")
        data.grant_put(f["extract_rds"], "quarantine/source/*")

        landing.grant_read(f["list_files"], f"{prefix}*")
        data.grant_put(f["list_files"], "runs/*")

        ingest = f["ingest_file"]
        landing.grant_read(ingest, f"{prefix}*")
        for readable in ("snapshots/*", "ledger/*"):
            data.grant_read(ingest, readable)
        for writable in ("curated/*", "quarantine/rows/*", "ledger/*", "runs/*"):
            data.grant_put(ingest, writable)

        transform = f["transform"]
        for readable in ("runs/*", "curated/*", "snapshots/*"):
            data.grant_read(transform, readable)
        for writable in ("runs/*", "kpis/*"):
            data.grant_put(transform, writable)

        load = f["load"]
        for readable in ("runs/*", "ledger/*", "kpis/*"):
            data.grant_read(load, readable)
        data.grant_put(load, "ledger/*")
        self._grant_warehouse(load)

        archive = f["archive"]
        landing.grant_read(archive, f"{prefix}*")
        landing.grant_delete(archive, f"{prefix}*")
        data.grant_read(archive, "runs/*")
        for writable in ("archive/*", "quarantine/files/*", "runs/*"):
            data.grant_put(archive, writable)

    def _grant_warehouse(self, function: lambda_.Function) -> None:
        w = self._config.warehouse
        if w.kind != "redshift":
            return
        stack = Stack.of(self)
        if w.workgroup:
            target = stack.format_arn(
                service="redshift-serverless", resource="workgroup", resource_name="*"
            )
            credentials = iam.PolicyStatement(
                actions=["redshift-serverless:GetCredentials"], resources=[target]
            )
        else:
            target = stack.format_arn(
                service="redshift",
                resource="cluster",
                resource_name=w.cluster_id,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            credentials = iam.PolicyStatement(
                actions=["redshift:GetClusterCredentials"],
                resources=[
                    stack.format_arn(
                        service="redshift",
                        resource="dbuser",
                        resource_name=f"{w.cluster_id}/{w.db_user}",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    ),
                    stack.format_arn(
                        service="redshift",
                        resource="dbname",
                        resource_name=f"{w.cluster_id}/{w.database}",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    ),
                ],
            )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["redshift-data:BatchExecuteStatement", "redshift-data:ExecuteStatement"],
                resources=[target],
            )
        )
        # Statement ids are not ARNs: describing one can only be scoped to the caller's own
        # statements, which the Data API enforces itself.
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["redshift-data:DescribeStatement"], resources=["*"])
        )
        if w.secret_arn:
            secretsmanager.Secret.from_secret_complete_arn(
                self, "WarehouseSecret", w.secret_arn
            ).grant_read(function)
        else:
            function.add_to_role_policy(credentials)
