"""One Lambda function per step, each with its own role granted only what it needs.

Roles are written out by hand rather than with CDK's ``grant*`` helpers, because those
grant action wildcards (``s3:GetObject*``, ``s3:List*``...). Every statement names exact
actions; resources are the narrowest ARNs AWS offers (object prefixes where keys are
generated per run), and each remaining wildcard is acknowledged in :mod:`infra.nag`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Acknowledgment, ArnFormat, Duration, Size, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import steps
from infra.config import EXTRACT_DUCKDB_MEMORY_MB, FunctionConfig, PipelineConfig
from infra.nag import acknowledge_prefixes
from infra.packaging import RUNTIME, PipelineLayers
from infra.steps import ALL_STEPS, Step
from infra.storage import PipelineStorage
from kpi_pipeline.metric_names import NAMESPACE, SERVICE

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"
READ = ("s3:GetObject",)
SECRET_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")  # what Secrets Manager appends to a name
WRITE = ("s3:PutObject", "s3:AbortMultipartUpload")
KEY_READ_WRITE = ("kms:Decrypt", "kms:GenerateDataKey")
CA_BUNDLE_IN_FUNCTION = "/opt/rds-ca/bundle.pem"  # source.ca_bundle, in its layer


@dataclass(frozen=True)
class LandingAccess:
    object_actions: tuple[str, ...]  # on the objects under the landing prefix
    list_under_prefix_only: bool  # else the whole bucket: a missing key is then a 404
    decrypts: bool  # reads objects: needs the landing key's Decrypt


# What each step does in the landing bucket: granted here, and printed for the owner of a
# landing bucket in another account (infra/landing_policy.py).
LANDING_ACCESS: dict[str, LandingAccess] = {
    "list_files": LandingAccess((), list_under_prefix_only=True, decrypts=False),
    "ingest_file": LandingAccess(READ, list_under_prefix_only=False, decrypts=True),
    "archive": LandingAccess(
        (*READ, "s3:DeleteObject"), list_under_prefix_only=False, decrypts=True
    ),
}


def pascal(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))


class PipelineFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        storage: PipelineStorage,
        layers: PipelineLayers,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._storage = storage
        code = lambda_.Code.from_asset(
            str(LAMBDAS_DIR), exclude=["**/__pycache__", "**/*.pyc", "**/.mypy_cache"]
        )
        placements = self._placements()
        self.copy_role = self._copy_role()
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        for step in ALL_STEPS:
            name = pascal(step.key)
            sizing = config.function(step.key)
            log_group = logs.LogGroup(
                self, f"{name}Logs", retention=logs.RetentionDays.THREE_MONTHS
            )
            self.log_groups[step.key] = log_group
            role = iam.Role(
                self,
                f"{name}Role",
                # A stable name: a landing bucket's owner in another account grants it.
                role_name=role_name(config, step),
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"{step.state}: {step.description}",
            )
            # Writing its own log group is all the logging a function needs.
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[log_group.log_group_arn],
                )
            )
            if step.key in placements:
                # What Lambda needs to attach the function to the VPC (the managed
                # AWSLambdaVPCAccessExecutionRole, written out); EC2 offers no narrower resource.
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=[
                            "ec2:CreateNetworkInterface",
                            "ec2:DescribeNetworkInterfaces",
                            "ec2:DescribeSubnets",
                            "ec2:DeleteNetworkInterface",
                            "ec2:AssignPrivateIpAddresses",
                            "ec2:UnassignPrivateIpAddresses",
                        ],
                        resources=["*"],
                    )
                )
            self.roles[step.key] = role
            self.functions[step.key] = lambda_.Function(
                self,
                f"{name}Function",
                description=step.description,
                runtime=RUNTIME,
                architecture=lambda_.Architecture.X86_64,
                handler=step.handler,
                code=code,
                layers=[
                    *layers.for_step(step.layers),
                    *([layers.ca_bundle] if layers.ca_bundle and "source" in step.settings else []),
                ],
                role=role,
                memory_size=sizing.memory_mb,
                timeout=Duration.seconds(sizing.timeout_seconds),
                ephemeral_storage_size=Size.mebibytes(sizing.ephemeral_storage_mb),
                environment=self._environment(step, sizing),
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                **placements.get(step.key, {}),  # type: ignore[arg-type]
            )
        self._grant()

    def _egress_only_group(self, vpc: ec2.IVpc, prefix_lists: dict[str, str]) -> ec2.ISecurityGroup:
        """A security group letting HTTPS out to these prefix lists and nothing else.

        Its rules are written inline on purpose: a group created without inline egress gets
        EC2's default rule (all traffic to anywhere), which separate egress resources, what
        CDK's ``add_egress_rule`` makes for a prefix list, add to rather than replace.
        """
        services = sorted(prefix_lists)
        group = ec2.CfnSecurityGroup(
            self,
            "ParsersSecurityGroup",
            vpc_id=vpc.vpc_id,
            group_description="Functions that parse landing files: HTTPS to "
            f"{' and '.join(services)} only",
            security_group_egress=[
                ec2.CfnSecurityGroup.EgressProperty(
                    ip_protocol="tcp",
                    from_port=443,
                    to_port=443,
                    destination_prefix_list_id=prefix_lists[service],
                    description=f"HTTPS to {service} (the region's prefix list)",
                )
                for service in services
            ],
        )
        return ec2.SecurityGroup.from_security_group_id(
            self, "ParsersGroup", group.attr_group_id, allow_all_outbound=False, mutable=False
        )

    # --- configuration --------------------------------------------------------------------
    def _environment(self, step: Step, sizing: FunctionConfig) -> dict[str, str]:
        c = self._config
        env = {
            "POWERTOOLS_SERVICE_NAME": SERVICE,
            "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "PIPELINE_ENV": c.name,
            # Lambda does not tell a function its /tmp size: the scratch space budgets it.
            "PIPELINE_STEP": step.key,
            "EPHEMERAL_STORAGE_MB": str(sizing.ephemeral_storage_mb),
        }
        if "storage" in step.settings:
            env |= {
                "DATA_BUCKET": self._storage.data_bucket.bucket_name,
                "LANDING_BUCKET": self._storage.landing_bucket.bucket_name,
                "LANDING_PREFIX": c.landing.prefix,
            }
        if "source" in step.settings:
            env["SOURCE_SECRET_ARN"] = c.source.secret
            env["SOURCE_OVERLAP_SECONDS"] = str(c.source.overlap_seconds)
            env["SOURCE_FULL_EXTRACT_EVERY_DAYS"] = str(c.source.full_extract_every_days)
            for table in ("users", "songs"):
                column = getattr(c.source, table).changed_column
                if column:
                    env[f"SOURCE_{table.upper()}_CHANGED_COLUMN"] = column
            env["SOURCE_SSLMODE"] = c.source.sslmode
            env["SOURCE_STATEMENT_TIMEOUT_SECONDS"] = str(c.source.statement_timeout_seconds)
            env["SOURCE_LOCK_TIMEOUT_SECONDS"] = str(c.source.lock_timeout_seconds)
            if c.source.ssl_root_cert:
                env["SOURCE_SSL_ROOT_CERT"] = c.source.ssl_root_cert
            elif c.source.ca_bundle:
                env["SOURCE_SSL_ROOT_CERT"] = CA_BUNDLE_IN_FUNCTION
            if c.source.port:
                env["SOURCE_PORT"] = str(c.source.port)
            if c.source.host:
                env["SOURCE_HOST"] = c.source.host
            if c.source.database:
                env["SOURCE_DATABASE"] = c.source.database
        if "lock" in step.settings:
            env["LOCK_TABLE"] = self._storage.lock_table.table_name
            env["WRITER_TIMEOUT_SECONDS"] = str(writer_timeout_seconds(c))
        if "transform_engine" in step.settings:
            env["TRANSFORM_ENGINE"] = c.transform.engine
            env["WAREHOUSE_ENGINE_MIN_PLAYS"] = str(c.transform.warehouse_min_plays)
            env["MAX_DATES_PER_RUN"] = str(c.max_dates_per_run)
        if step.key == "extract_rds":
            env["DUCKDB_MEMORY_LIMIT_MB"] = str(EXTRACT_DUCKDB_MEMORY_MB)
        if "ingest" in step.settings:
            env["MAX_FILES_PER_RUN"] = str(c.max_files_per_run)
            env["MAX_FILE_ATTEMPTS"] = str(c.max_file_attempts)
        if "requests" in step.settings:
            env["MAX_RECOMPUTE_DAYS"] = str(c.max_recompute_days)
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
                "REDSHIFT_COPY_ROLE_ARN": self.copy_role.role_arn,
            }
            env |= {name: value for name, value in optional.items() if value}
            if w.kind == "redshift":
                # Stop waiting for a batch a minute before the function's own timeout, so a
                # slow one ends as a retryable error (and is cancelled) rather than a timeout.
                env["REDSHIFT_POLL_SECONDS"] = "2"
                env["REDSHIFT_STOP_BEFORE_TIMEOUT_SECONDS"] = "60"
        return env

    def _placements(self) -> dict[str, dict[str, object]]:
        """Where the functions in the VPC place their network interfaces (by step key).

        The source steps use the configured security groups, which reach the database. The
        parsers get a group of their own that lets HTTPS out to the AWS services they call
        (the region's prefix lists of S3 and DynamoDB) and nothing else: no connection out
        of the VPC but to those two services (docs/deploy.md says what an endpoint policy
        and a DNS firewall add).
        """
        n = self._config.network
        if n is None:
            return {}
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id=n.vpc_id,
            availability_zones=n.availability_zones,
            private_subnet_ids=n.private_subnet_ids,
        )
        Validations.of(vpc).acknowledge(
            Acknowledgment(
                id="Annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId",
                reason="the functions only place their network interfaces in these subnets; "
                "routing belongs to the VPC's owner, not to this stack",
            )
        )
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        source_groups = [
            ec2.SecurityGroup.from_security_group_id(self, f"SecurityGroup{i}", sg)
            for i, sg in enumerate(n.security_group_ids)
        ]
        prefix_lists = {"s3": n.s3_prefix_list_id, "dynamodb": n.dynamodb_prefix_list_id}
        parser_groups: dict[frozenset[str], ec2.ISecurityGroup] = {}
        placements: dict[str, dict[str, object]] = {}
        for step in ALL_STEPS:
            if step.in_vpc:
                groups: list[ec2.ISecurityGroup] = list(source_groups)
            elif step.egress:
                if step.egress not in parser_groups:
                    parser_groups[step.egress] = self._egress_only_group(
                        vpc, {service: str(prefix_lists[service]) for service in step.egress}
                    )
                groups = [parser_groups[step.egress]]
            else:
                continue
            placements[step.key] = {"vpc": vpc, "vpc_subnets": subnets, "security_groups": groups}
        return placements

    def _grant(self) -> None:
        data = self._storage.data_bucket
        landing = self._storage.landing_bucket
        prefix = self._config.landing.prefix
        roles = self.roles

        # CheckRequest: has an execution of this name run before (a name comes back after
        # 90 days)? It lists the run's records, nothing else.
        # a name that ran before: its records, or what never expires (catalogue, archive)
        _list(roles["check_request"], data, "runs/", *NAME_KEYED_PREFIXES)

        for key in ("check_source", "extract_rds"):
            self._read_source_secret(roles[key])
        extract = roles["extract_rds"]
        _objects(extract, data, WRITE, "snapshots/", "quarantine/source/")
        # the tables' marks, and the raw snapshot an incremental read merges into
        _objects(extract, data, READ, "source/", "snapshots/")
        _list(extract, data)

        for step_key, access in LANDING_ACCESS.items():  # the same list a bucket owner grants
            if access.object_actions:
                _objects(roles[step_key], landing, access.object_actions, prefix, landing=True)
            _list(roles[step_key], landing, prefix if access.list_under_prefix_only else None)
        _list(roles["list_files"], data, "ledger/pending/")
        # the run's manifest and its file list only (runs/<run>/manifest*.json)
        _objects(roles["list_files"], data, WRITE, *LIST_FILES_RECORDS)

        # Reading a key that may be missing needs s3:ListBucket on its bucket: without it S3
        # answers 403 instead of 404, and "gone" would look like "forbidden".
        ingest = roles["ingest_file"]
        # catalogue/: each date's pinned snapshot, read to validate and written to pin.
        _objects(ingest, data, READ, "snapshots/", "ledger/", "catalogue/")
        _objects(ingest, data, WRITE, "curated/", "quarantine/rows/", "ledger/", "catalogue/")
        _objects(ingest, data, WRITE, "runs/*/ingest/")  # its file's result only
        _list(ingest, data)

        replay = roles["replay_quarantine"]
        # the quarantined rows, earlier replays' entries, each date's pin and today's snapshot;
        # a revalidation, the curated plays
        _objects(
            replay,
            data,
            READ,
            "quarantine/rows/",
            "ledger/",
            "catalogue/",
            "snapshots/",
            "curated/",
        )
        # a new content per file (curated plays, pending marker, ledger entry); its result; a
        # revalidation's moved plays (quarantined rows) and the curated objects without them
        _objects(replay, data, WRITE, "curated/", "ledger/", "catalogue/", "quarantine/rows/")
        _objects(replay, data, WRITE, "runs/*/replay.json", "runs/*/revalidate.json")
        _list(replay, data)

        plan = roles["plan_transform"]
        # catalogue/: a date accepted before pins existed is pinned to today's snapshot, and
        # a recompute with catalogue "current" re-pins its dates.
        _objects(plan, data, READ, "runs/", "ledger/", "snapshots/", "catalogue/")
        _objects(plan, data, WRITE, "catalogue/")
        # the run's plan, its dates per attempt, a recompute's details: no other record
        _objects(
            plan, data, WRITE, "runs/*/load_plan.json", "runs/*/transform/", "runs/*/recompute.json"
        )
        # Markers no load can ever clear (no ledger entry, or no valid play) are removed.
        _objects(plan, data, ("s3:DeleteObject",), "ledger/pending/")
        _list(plan, data)

        transform = roles["transform"]
        _objects(transform, data, READ, "runs/", "curated/", "catalogue/")
        # its own figures only: never a plan, a manifest or another run's record
        _objects(transform, data, WRITE, "runs/*/transform/", "kpis/")
        _list(transform, data)

        in_warehouse = roles["transform_in_warehouse"]
        # the plan and pins, the catalogue's sizes; the curated objects' sizes by listing
        _objects(in_warehouse, data, READ, "runs/", "catalogue/")
        # its manifests and figures only
        _objects(in_warehouse, data, WRITE, "runs/*/transform/")
        _list(in_warehouse, data)
        # it reads back the figures of its batch (GetStatementResult)
        self._grant_warehouse(in_warehouse, read_results=True)

        load = roles["load"]
        _objects(load, data, READ, "runs/", "ledger/", "kpis/")
        _objects(load, data, WRITE, "ledger/")
        _objects(load, data, ("s3:DeleteObject",), "ledger/pending/")
        _list(load, data)
        # its preflight reads back its privileges and what its COPY read (GetStatementResult)
        self._grant_warehouse(load, read_results=True)
        self._grant_copy_role()

        archive = roles["archive"]
        attempts = "quarantine/attempts/"  # files that failed to ingest (kpi_pipeline.attempts)
        _objects(archive, data, READ, "runs/", "archive/", "quarantine/files/", attempts)
        # source/: what the run read of the source is marked processed
        _objects(archive, data, WRITE, "archive/", "quarantine/files/", "source/", attempts)
        # the run's summary (a preflight's report) only
        _objects(archive, data, WRITE, "runs/*/summary.json", "runs/*/preflight.json")
        _list(archive, data)

        # The steps that write shared state check the lock still names their execution.
        for step in ALL_STEPS:
            if "lock" in step.settings:
                roles[step.key].add_to_policy(
                    iam.PolicyStatement(
                        actions=["dynamodb:GetItem"],
                        resources=[self._storage.lock_table.table_arn],
                    )
                )

        # Encrypted buckets: reading needs the key's Decrypt, writing its GenerateDataKey
        # (and Decrypt, to complete a multipart upload).
        landing_key = self._config.landing.kms_key_arn
        if landing_key:
            for step_key, access in LANDING_ACCESS.items():
                if access.decrypts:
                    _use_key(roles[step_key], landing_key, ("kms:Decrypt",))
        data_key = self._storage.data_key
        if data_key:
            for step_key, role in roles.items():
                # CheckSourceData and Alert never touch the bucket; CheckRequest only lists it
                if step_key not in ("check_source", "check_request", "alert"):
                    _use_key(role, data_key.key_arn, KEY_READ_WRITE)

    def _read_source_secret(self, role: iam.Role) -> None:
        _read_secret(role, self._config.source.secret, self._config.source.secret_kms_key_arn)

    def _grant_warehouse(self, role: iam.Role, *, read_results: bool = False) -> None:
        w = self._config.warehouse
        if w.kind != "redshift":
            return
        stack = Stack.of(self)
        if w.workgroup:
            # A workgroup's ARN ends with its id (warehouse.workgroup_id), not its name.
            target = stack.format_arn(
                service="redshift-serverless", resource="workgroup", resource_name=w.workgroup_id
            )
            credentials = ("redshift-serverless:GetCredentials", [target])
        else:
            target = stack.format_arn(
                service="redshift",
                resource="cluster",
                resource_name=w.cluster_id,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            credentials = (
                "redshift:GetClusterCredentials",
                [
                    stack.format_arn(
                        service="redshift",
                        resource=resource,
                        resource_name=f"{w.cluster_id}/{name}",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                    for resource, name in (("dbuser", w.db_user), ("dbname", w.database))
                ],
            )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["redshift-data:BatchExecuteStatement"],
                resources=[target],
            )
        )
        # Statement ids are not ARNs: scope describing, cancelling (and reading results of)
        # statements to our own.
        own = ["redshift-data:DescribeStatement", "redshift-data:CancelStatement"]
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[*own, "redshift-data:GetStatementResult"] if read_results else own,
                resources=["*"],
                conditions={
                    "StringEquals": {"redshift-data:statement-owner-iam-userid": "${aws:userid}"}
                },
            )
        )
        if w.secret_arn:
            _read_secret(role, w.secret_arn, w.secret_kms_key_arn)
        elif w.db_user or w.workgroup:
            action, resources = credentials
            role.add_to_policy(iam.PolicyStatement(actions=[action], resources=resources))

    def _copy_role(self) -> iam.IRole:
        """The role Redshift's COPY reads S3 with: the configured one, or one of the stack's.

        Redshift documents whom such a role trusts (redshift.amazonaws.com, and for
        Serverless redshift-serverless.amazonaws.com too) and how to restrict it to database
        users: ``sts:ExternalId`` names their ARNs. The stack's role trusts exactly the
        pipeline's two warehouse users (docs.aws.amazon.com/redshift/latest/mgmt/
        authorizing-redshift-service-database-users.html); no aws:SourceArn condition,
        which Redshift documents nowhere for this role and might not send.
        """
        w = self._config.warehouse
        if w.copy_role_arn:
            return iam.Role.from_role_arn(self, "RedshiftCopyRole", w.copy_role_arn)
        from infra.warehouse_setup import warehouse_users

        stack = Stack.of(self)
        region, account = stack.region, stack.account
        # A Serverless user's ARN names the workgroup's id (warehouse.workgroup_id).
        holder = (
            f"serverless-{account}-{w.workgroup_id}" if w.workgroup else w.cluster_id or "local"
        )
        external_ids = [
            f"arn:aws:redshift:{region}:{account}:dbuser:{holder}/{user}"
            for user in warehouse_users(self._config).distinct
        ]
        services = ["redshift.amazonaws.com"]
        if w.workgroup:
            services.append("redshift-serverless.amazonaws.com")
        return iam.Role(
            self,
            "RedshiftCopyRole",
            role_name=f"music-kpi-{self._config.name}-redshift-copy",
            description="Redshift COPY: reads the KPI parts, curated plays and catalogue",
            assumed_by=iam.CompositePrincipal(
                *(
                    iam.ServicePrincipal(
                        service, conditions={"StringLike": {"sts:ExternalId": external_ids}}
                    )
                    for service in services
                )
            ),
        )

    def _grant_copy_role(self) -> None:
        """Redshift's COPY reads with this role: let it read what it COPYs, and only that.

        The load's ``COPY ... FROM 's3://bucket/kpis/...'`` treats the path as a key prefix:
        Redshift lists it (s3:ListBucket, limited to that prefix), then gets each object. The
        warehouse engine's ``COPY ... MANIFEST`` gets its manifest, then each object it lists:
        a date's curated plays and its pinned catalogue.
        """
        copy_role = self.copy_role
        data = self._storage.data_bucket
        _objects(copy_role, data, READ, "kpis/", "curated/", "catalogue/", "runs/*/transform/")
        _list(copy_role, data, "kpis/")
        if self._storage.data_key:
            _use_key(copy_role, self._storage.data_key.key_arn, ("kms:Decrypt",))


def writer_timeout_seconds(config: PipelineConfig) -> int:
    """The longest a function of the pipeline runs, and a minute: a stopped run's functions
    are all over by then (the lock's take-over waits this long)."""
    return max(config.function(step.key).timeout_seconds for step in ALL_STEPS) + 60


def role_name(config: PipelineConfig, step: Step) -> str:
    """``music-kpi-<env>-<step>``: what a landing bucket's owner grants."""
    return steps.role_name(config.name, step)


def _use_key(role: iam.IRole, key_arn: str, actions: tuple[str, ...]) -> None:
    """Use a bucket's KMS key: only through S3 (kms:ViaService), never a direct call."""
    role.add_to_principal_policy(kms_via("s3", Stack.of(role).region, actions, key_arn))


def kms_via(
    service: str, region: str, actions: tuple[str, ...], key_arn: str
) -> iam.PolicyStatement:
    """A KMS grant usable only by ``service`` (s3, sns, secretsmanager) on the caller's
    behalf (kms:ViaService), never by a direct call."""
    return iam.PolicyStatement(
        actions=list(actions),
        resources=[key_arn],
        conditions={"StringEquals": {"kms:ViaService": f"{service}.{region}.amazonaws.com"}},
    )


def _read_secret(role: iam.Role, secret: str, kms_key_arn: str | None = None) -> None:
    """Allow reading one secret, configured by name, partial ARN or full ARN.

    IAM matches the secret's full ARN, which ends with "-" and six random characters that
    Secrets Manager appends: a name becomes ``secret:NAME-??????``, and so does an ARN
    without that suffix (a name in an ARN is not valid in a policy; a partial ARN is denied).
    """
    if not secret.startswith("arn:"):
        secret = Stack.of(role).format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{secret}-??????",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
    elif not SECRET_SUFFIX.search(secret):
        secret = f"{secret}-??????"
    role.add_to_policy(
        iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secret])
    )
    if kms_key_arn:
        # A secret encrypted with a customer-managed key: Secrets Manager decrypts it with
        # the caller's rights, and only through Secrets Manager.
        region = Stack.of(role).region
        role.add_to_policy(kms_via("secretsmanager", region, ("kms:Decrypt",), kms_key_arn))


def _objects(
    role: iam.IRole,
    bucket: s3.IBucket,
    actions: tuple[str, ...],
    *prefixes: str,
    landing: bool = False,
) -> None:
    """Allow ``actions`` on the objects under each prefix of ``bucket``."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=list(actions),
            resources=[bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes],
        )
    )
    acknowledge_prefixes(role, bucket.bucket_arn, prefixes, landing=landing)


# ListNewFiles' records, exactly: in IAM a * crosses '/', so "runs/*/manifest*" would cover
# the warehouse engine's COPY manifests (runs/<run>/transform/.../manifests/...) too.
LIST_FILES_RECORDS = ("runs/*/manifest.json", "runs/*/manifest_files.json")


# What a run keeps under its name beyond runs/ (which expires after 90 days, when Step
# Functions takes a name again): CheckRequest refuses a name found under any of them.
NAME_KEYED_PREFIXES = ("catalogue/songs/run_id=", "archive/run_id=")


def _list(role: iam.IRole, bucket: s3.IBucket, *prefixes: str | None) -> None:
    """Allow listing ``bucket`` (only under ``prefixes`` when any is given)."""
    wanted = [f"{prefix}*" for prefix in prefixes if prefix]
    conditions = {"StringLike": {"s3:prefix": wanted}} if wanted else None
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket.bucket_arn], conditions=conditions
        )
    )


def events_role(scope: Construct, construct_id: str, rule_name: str, description: str) -> iam.Role:
    """A role for an EventBridge rule's target that only that rule (by its ARN, in this
    account) may assume: trusting events.amazonaws.com alone would let any rule of the
    account whose creator may pass the role use it."""
    stack = Stack.of(scope)
    rule_arn = stack.format_arn(service="events", resource="rule", resource_name=rule_name)
    return iam.Role(
        scope,
        construct_id,
        description=description,
        assumed_by=iam.ServicePrincipal("events.amazonaws.com").with_conditions(
            {"StringEquals": {"aws:SourceAccount": stack.account, "aws:SourceArn": rule_arn}}
        ),
    )
