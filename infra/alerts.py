"""Where alerts go: the alert function, what invokes it, and the optional Slack and
PagerDuty targets (``alerts`` in cdk.json).

Every end of an execution and every alarm without a run behind it reach the alert function
through EventBridge; it renders one text (kpi_pipeline.alerts) and sends it:

- to the alert topic: its e-mail subscribers get the text, and with ``alerts.slack``, AWS
  Chatbot posts the same text to the Slack channel (a custom notification);
- with ``alerts.pagerduty``, to PagerDuty's Events API v2 through an EventBridge API
  destination whose connection holds the integration key (kpi_pipeline.alerting says why
  this mechanism).

Neither Slack nor PagerDuty adds a resource unless it is set.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, SecretValue, Stack
from aws_cdk import aws_chatbot as chatbot
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import PagerDutyConfig, PipelineConfig, SlackConfig
from infra.functions import KEY_READ_WRITE, events_role, kms_via
from infra.nag import acknowledge, as_nag_text
from infra.steps import ALL_STEPS, INGEST_FILE, TRANSFORM
from kpi_pipeline.alerts import (
    ALARM_CHANGE,
    EXECUTION_CHANGE,
    PAGERDUTY_DETAIL_TYPE,
    PAGERDUTY_SOURCE,
    STATE_MACHINE_LOGS,
)

PAGERDUTY_ENDPOINT = "https://events.pagerduty.com/v2/enqueue"
# What Slack members may do through AWS Chatbot: read CloudWatch (the most a guardrail lets
# any member do), and the channel's role grants nothing at all, so no command runs.
CHATBOT_GUARDRAIL = "CloudWatchReadOnlyAccess"
# The states whose failures come from a function's child executions (Distributed Maps).
MAP_STATES = {"IngestStreams": INGEST_FILE, "TransformDates": TRANSFORM}


class PipelineAlerts(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        function: lambda_.Function,
        role: iam.Role,
        topic: sns.ITopic,
        topic_key: kms.IKey,
        state_machine: sfn.StateMachine,
        state_machine_logs: logs.ILogGroup,
        function_logs: dict[str, logs.ILogGroup],
        runless_alarms: list[cw.Alarm],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # By name, not by reference: the state machine invokes this function (its preflight),
        # so a reference back would be a dependency cycle.
        machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=f"music-kpi-{config.name}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"music-kpi-{config.name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        log_groups = {step.state: function_logs[step.key].log_group_name for step in ALL_STEPS}
        log_groups |= {
            state: function_logs[step.key].log_group_name for state, step in MAP_STATES.items()
        }
        log_groups[STATE_MACHINE_LOGS] = state_machine_logs.log_group_name
        for name, value in {
            "ALERT_TOPIC_ARN": topic.topic_arn,
            "STATE_MACHINE_ARN": machine_arn,
            "RUNBOOK_URL": config.alerts.runbook_url,
            "ALERT_LOG_GROUPS": stack.to_json_string(log_groups),
        }.items():
            function.add_environment(name, value)

        # What it reads: how an execution ended (its history, its output), the executions
        # since the last success; what it writes: one message to the encrypted topic.
        role.add_to_policy(
            iam.PolicyStatement(actions=["sns:Publish"], resources=[topic.topic_arn])
        )
        role.add_to_policy(kms_via("sns", stack.region, KEY_READ_WRITE, topic_key.key_arn))
        role.add_to_policy(
            iam.PolicyStatement(actions=["states:ListExecutions"], resources=[machine_arn])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:GetExecutionHistory"],
                resources=[executions],
            )
        )
        acknowledge(
            role,
            f"IAM5[Resource::{as_nag_text(role, executions)}]",
            "how an execution ended (its history, its output): execution ARNs end with a run "
            "id unknown at deploy time; only this state machine's executions are named",
        )

        # What could not be delivered is kept, and alarms straight to the topic: an event
        # EventBridge could not hand to the function, one the function failed on twice, a
        # PagerDuty event the API destination could not deliver (a 4xx is not retried).
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.dead_letters,
            "SQS3",
            "the dead-letter queue of the alert path itself: a message in it alarms",
        )
        function.configure_async_invoke(
            on_failure=destinations.SqsDestination(self.dead_letters), retry_attempts=2
        )
        self.lost_alarm = cw.Alarm(
            self,
            "AlertsLostAlarm",
            alarm_description="An alert could not be delivered: it is kept in the alert "
            "dead-letter queue (docs/runbook.md, The alert function failed)",
            metric=self.dead_letters.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=Duration.minutes(5)
            ),
            threshold=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.lost_alarm.add_alarm_action(cw_actions.SnsAction(topic))

        # Every end of this state machine's executions (not its Map runs' children): the
        # function decides what alerts. Timeouts and aborts included, which no Catch sees.
        events.Rule(
            self,
            "ExecutionEndedRule",
            description="Every end of the pipeline's executions, to the alert function",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=[EXECUTION_CHANGE],
                detail={
                    "status": ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
                    "stateMachineArn": [state_machine.state_machine_arn],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    function, retry_attempts=8, dead_letter_queue=self.dead_letters
                )
            ],
        )
        # The alarms no run is behind (no success, no plays): firing and clearing.
        if runless_alarms:
            events.Rule(
                self,
                "AlarmChangedRule",
                description="The pipeline's alarms without a run, to the alert function",
                event_pattern=events.EventPattern(
                    source=["aws.cloudwatch"],
                    detail_type=[ALARM_CHANGE],
                    resources=[alarm.alarm_arn for alarm in runless_alarms],
                    detail={"state": {"value": ["ALARM", "OK"]}},
                ),
                targets=[
                    targets.LambdaFunction(
                        function, retry_attempts=8, dead_letter_queue=self.dead_letters
                    )
                ],
            )

        self.slack = (
            self._slack(config, config.alerts.slack, topic) if config.alerts.slack else None
        )
        self.pagerduty = (
            self._pagerduty(config, config.alerts.pagerduty, function, role)
            if config.alerts.pagerduty
            else None
        )

    def _slack(
        self, config: PipelineConfig, slack: SlackConfig, topic: sns.ITopic
    ) -> chatbot.SlackChannelConfiguration:
        """AWS Chatbot posts the topic's messages (custom notifications: the alert's text) to
        the channel. Least privilege: the channel's role has no permission and the guardrail
        is read-only, so nobody runs a command from Slack."""
        channel_role = iam.Role(
            self,
            "SlackChannelRole",
            assumed_by=iam.ServicePrincipal("chatbot.amazonaws.com"),
            description="AWS Chatbot's role for the alert channel: no permission at all",
        )
        return chatbot.SlackChannelConfiguration(
            self,
            "SlackChannel",
            slack_channel_configuration_name=f"music-kpi-{config.name}-alerts",
            slack_workspace_id=slack.workspace_id,
            slack_channel_id=slack.channel_id,
            notification_topics=[topic],
            role=channel_role,
            guardrail_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(CHATBOT_GUARDRAIL)],
            user_role_required=False,
            logging_level=chatbot.LoggingLevel.NONE,
        )

    def _pagerduty(
        self,
        config: PipelineConfig,
        pagerduty: PagerDutyConfig,
        function: lambda_.Function,
        role: iam.Role,
    ) -> events.ApiDestination:
        """PagerDuty's Events API v2 through an API destination: the function puts each
        event on the default bus, a rule sends its detail to PagerDuty, and the connection
        adds the routing key, read by CloudFormation from the configured secret (a dynamic
        reference: the template names the secret, never the key)."""
        key = SecretValue.secrets_manager(pagerduty.secret, json_field=pagerduty.json_field)
        connection = events.Connection(
            self,
            "PagerDutyConnection",
            description=f"PagerDuty Events API v2 for music-kpi-{config.name}: the routing key",
            # The API needs the key in the body; a connection needs an authorization too.
            authorization=events.Authorization.api_key("X-Routing-Key", key),
            body_parameters={"routing_key": events.HttpParameter.from_secret(key)},
        )
        destination = events.ApiDestination(
            self,
            "PagerDutyDestination",
            description="PagerDuty Events API v2 (enqueue)",
            connection=connection,
            endpoint=PAGERDUTY_ENDPOINT,
            http_method=events.HttpMethod.POST,
            rate_limit_per_second=10,
        )
        stack = Stack.of(self)
        rule_name = f"music-kpi-{config.name}-pagerduty"
        events.Rule(
            self,
            "PagerDutyRule",
            rule_name=rule_name,
            description="The alert function's PagerDuty events, to PagerDuty",
            event_pattern=events.EventPattern(
                source=[PAGERDUTY_SOURCE],
                detail_type=[PAGERDUTY_DETAIL_TYPE],
                account=[stack.account],
            ),
            targets=[
                targets.ApiDestination(
                    destination,
                    event_role=events_role(
                        self, "PagerDutyEventsRole", rule_name, "Sends alerts to PagerDuty"
                    ),
                    event=events.RuleTargetInput.from_event_path("$.detail"),
                    retry_attempts=185,
                    max_event_age=Duration.hours(24),
                    dead_letter_queue=self.dead_letters,
                )
            ],
        )
        function.add_environment("PAGERDUTY_EVENTS", "true")
        bus = stack.format_arn(service="events", resource="event-bus", resource_name="default")
        role.add_to_policy(iam.PolicyStatement(actions=["events:PutEvents"], resources=[bus]))
        return destination
