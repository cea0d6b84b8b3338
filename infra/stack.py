"""The pipeline's stack: one construct per concern, composed."""

from __future__ import annotations

from typing import Any

from aws_cdk import Aspects, CfnOutput, Duration, Fn, Stack, Tags
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.alerts import PipelineAlerts
from infra.checkov import CheckovSuppressions
from infra.config import PipelineConfig
from infra.functions import (
    KEY_READ_WRITE,
    PipelineFunctions,
    events_role,
    kms_via,
    writer_timeout_seconds,
)
from infra.monitoring import PipelineMonitoring
from infra.nag import acknowledge_findings
from infra.packaging import PipelineLayers
from infra.steps import ALERT, ALL_STEPS
from infra.storage import PipelineStorage
from infra.workflow import PipelineDefinition
from kpi_pipeline.alerts import console_domain
from kpi_pipeline.layout import Layout
from kpi_pipeline.metric_names import NAMESPACE


class PipelineStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: PipelineConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        name = f"music-kpi-{config.name}"
        self.pipeline_name = name
        # On every resource that takes tags: cost reports and IAM conditions can tell the
        # pipeline's resources, and an environment's, from the account's others.
        Tags.of(self).add("project", "music-kpi")
        Tags.of(self).add("environment", config.name)
        self.storage = PipelineStorage(self, "Storage", config=config)
        # Alerts may name runs and files: encrypted at rest, with a key this account's
        # CloudWatch alarms may use (a service principal needs the key policy's word); the
        # alert function publishes with its own role, granted by IAM (infra/alerts.py).
        self.alert_key = alert_key = kms.Key(
            self,
            "AlertKey",
            description=f"Encrypts the music-kpi-{config.name} alert topic",
            enable_key_rotation=True,
        )
        alert_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        self.alert_topic = sns.Topic(
            self,
            "AlertTopic",
            display_name=f"Music KPI pipeline ({config.name})",
            enforce_ssl=True,
            master_key=alert_key,
        )
        for email in config.alert_emails:
            self.alert_topic.add_subscription(subscriptions.EmailSubscription(email))
        # The topic's own policy replaces the default one: let this account's alarms publish.
        self.alert_topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.alert_topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )

        self.layers = PipelineLayers(self, "Layers", config=config)
        self.functions = PipelineFunctions(
            self, "Functions", config=config, storage=self.storage, layers=self.layers
        )
        definition = PipelineDefinition(
            self,
            "Definition",
            functions=dict(self.functions.functions),
            data_bucket=self.storage.data_bucket,
            lock_table=self.storage.lock_table,
            map_results_prefix=Layout.map_results_prefix(),
            transform_map_results_prefix=Layout.transform_map_results_prefix(),
            pipeline_name=name,
            ingest_concurrency=config.ingest_concurrency,
            transform_concurrency=config.transform_concurrency,
            # the longest a stopped run's function may still write, and a minute more
            takeover_grace_seconds=writer_timeout_seconds(config),
        )
        self.state_machine_logs = logs.LogGroup(
            self, "StateMachineLogs", retention=logs.RetentionDays.THREE_MONTHS
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            definition_body=sfn.DefinitionBody.from_chainable(definition.definition),
            timeout=Duration.hours(6),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.state_machine_logs,
                level=sfn.LogLevel.ALL,
                include_execution_data=True,
            ),
        )

        # The Distributed Map reads the file list and writes results in the data bucket.
        if self.storage.data_key:
            self.state_machine.add_to_role_policy(
                kms_via("s3", self.region, KEY_READ_WRITE, self.storage.data_key.key_arn)
            )
        # The run's end, counted by status (RecordRunOutcome): CloudWatch has no resource
        # for a metric, the namespace condition is the narrowest grant.
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
            )
        )

        # Daily, with a fixed input; a console start with {} runs exactly the same way.
        schedule_rule = f"{name}-daily"
        events.Rule(
            self,
            "DailySchedule",
            rule_name=schedule_rule,
            description="Starts the pipeline every day",
            schedule=events.Schedule.expression(config.schedule.expression),
            enabled=config.schedule.enabled,
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    input=events.RuleTargetInput.from_object({"trigger": "schedule"}),
                    role=events_role(
                        self, "ScheduleRole", schedule_rule, "Starts the pipeline daily"
                    ),
                )
            ],
        )
        self.monitoring = PipelineMonitoring(
            self,
            "Monitoring",
            config=config,
            state_machine=self.state_machine,
            functions=dict(self.functions.functions),
            alert_topic=self.alert_topic,
        )
        self.alerts = PipelineAlerts(
            self,
            "Alerts",
            config=config,
            function=self.functions.functions[ALERT.key],
            role=self.functions.roles[ALERT.key],
            topic=self.alert_topic,
            topic_key=alert_key,
            state_machine=self.state_machine,
            state_machine_logs=self.state_machine_logs,
            function_logs=dict(self.functions.log_groups),
            runless_alarms=self.monitoring.runless_alarms,
        )
        self._outputs(config)
        acknowledge_findings(self)
        Aspects.of(self).add(CheckovSuppressions())

    def _outputs(self, config: PipelineConfig) -> None:
        """Where an operator (and the local runner) finds each part after a deploy:
        ``aws cloudformation describe-stacks --stack-name <stack> --query
        'Stacks[0].Outputs'`` prints them (docs/runbook.md)."""
        region = self.region
        console = f"https://{region}.{console_domain(region)}"
        machine = self.state_machine.state_machine_arn
        outputs: dict[str, tuple[str, str]] = {
            "StateMachineArn": (machine, "the pipeline: start, redrive and stop it here"),
            "StateMachineConsoleUrl": (
                f"{console}/states/home?region={region}#/statemachines/view/{machine}",
                "its executions in the Step Functions console",
            ),
            "DataBucketName": (
                self.storage.data_bucket.bucket_name,
                "curated plays, snapshots, ledger, quarantine, runs/<run>/summary.json",
            ),
            "LandingBucketName": (
                self.storage.landing_bucket.bucket_name,
                "where stream CSV files land (under LandingPrefix)",
            ),
            "LandingPrefix": (config.landing.prefix, "the landing files' key prefix"),
            "AlertTopicArn": (self.alert_topic.topic_arn, "failed runs and alarms are sent here"),
            "DashboardUrl": (
                f"{console}/cloudwatch/home?region={region}#dashboards:name="
                f"{self.monitoring.dashboard.dashboard_name}",
                "the pipeline's CloudWatch dashboard",
            ),
            "LockTableName": (
                self.storage.lock_table.table_name,
                "the run lock (one item); never edit it by hand (docs/runbook.md)",
            ),
            "LogGroupNames": (
                Fn.join(", ", [g.log_group_name for g in self.functions.log_groups.values()]),
                "each step's log group, in the order " + ", ".join(s.state for s in ALL_STEPS),
            ),
        }
        if config.landing.kms_key_arn:
            outputs["LandingKmsKeyArn"] = (config.landing.kms_key_arn, "the landing bucket's key")
        if self.storage.data_key:
            outputs["DataKmsKeyArn"] = (self.storage.data_key.key_arn, "the data bucket's key")
        if config.warehouse.kind == "redshift" and not config.warehouse.copy_role_arn:
            outputs["CopyRoleArn"] = (
                self.functions.copy_role.role_arn,
                "attach this role to the Redshift cluster or namespace after a deploy",
            )
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
