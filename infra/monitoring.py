"""Alerts and the dashboard: failed runs, missing runs, and the pipeline's own numbers."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import PipelineConfig
from infra.steps import ALL_STEPS, INGEST_FILE, LOAD
from kpi_pipeline import metric_names as m
from kpi_pipeline.metric_names import NAMESPACE, SERVICE

FAILED_STATUSES = ["FAILED", "TIMED_OUT", "ABORTED"]


def pipeline_metric(name: str, step: str, label: str | None = None) -> cw.Metric:
    """A metric the handlers emit (kpi_pipeline.observability), summed per day."""
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE, "step": step},
        statistic="Sum",
        period=Duration.days(1),
        label=label or name,
    )


class PipelineMonitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        state_machine: sfn.StateMachine,
        functions: dict[str, lambda_.Function],
        alert_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        alert = cw_actions.SnsAction(alert_topic)

        # Every execution that ends badly, including those no Catch can see (timeouts, aborts).
        events.Rule(
            self,
            "ExecutionFailedRule",
            description="Alerts on FAILED, TIMED_OUT and ABORTED executions",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "status": FAILED_STATUSES,
                    "stateMachineArn": [state_machine.state_machine_arn],
                },
            ),
            targets=[
                targets.SnsTopic(
                    alert_topic,
                    message=events.RuleTargetInput.from_text(
                        f"Music KPI pipeline ({config.name}): execution "
                        f"{events.EventField.from_path('$.detail.name')} ended "
                        f"{events.EventField.from_path('$.detail.status')}. "
                        f"{events.EventField.from_path('$.detail.executionArn')}"
                    ),
                )
            ],
        )

        failures = cw.MathExpression(
            expression="failed + timedout + aborted",
            using_metrics={
                "failed": state_machine.metric_failed(statistic="Sum"),
                "timedout": state_machine.metric_timed_out(statistic="Sum"),
                "aborted": state_machine.metric_aborted(statistic="Sum"),
            },
            period=Duration.minutes(5),
            label="Failed, timed out or aborted executions",
        )
        failed_alarm = cw.Alarm(
            self,
            "FailedExecutionsAlarm",
            alarm_description="A pipeline execution failed, timed out or was aborted",
            metric=failures,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        failed_alarm.add_alarm_action(alert)

        self.alarms = [failed_alarm]
        if config.schedule.enabled:
            hours = config.monitoring.no_success_alarm_hours
            stale_alarm = cw.Alarm(
                self,
                "NoSuccessfulRunAlarm",
                alarm_description=f"No pipeline execution succeeded in {hours} hours",
                metric=state_machine.metric_succeeded(statistic="Sum", period=Duration.hours(1)),
                threshold=1,
                evaluation_periods=hours,
                datapoints_to_alarm=hours,
                comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.BREACHING,
            )
            stale_alarm.add_alarm_action(alert)
            self.alarms.append(stale_alarm)

        self.dashboard = self._dashboard(config, state_machine, functions)

    def _dashboard(
        self,
        config: PipelineConfig,
        state_machine: sfn.StateMachine,
        functions: dict[str, lambda_.Function],
    ) -> cw.Dashboard:
        day = Duration.days(1)
        by_step = [(step, functions[step.key]) for step in ALL_STEPS]
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"music-kpi-{config.name}")
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=3),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Executions",
                left=[
                    state_machine.metric_started(statistic="Sum", period=day),
                    state_machine.metric_succeeded(statistic="Sum", period=day),
                    state_machine.metric_failed(statistic="Sum", period=day),
                    state_machine.metric_timed_out(statistic="Sum", period=day),
                    state_machine.metric_aborted(statistic="Sum", period=day),
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Execution duration (ms)",
                left=[state_machine.metric_time(statistic="Maximum", period=day)],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Lambda errors",
                left=[fn.metric_errors(period=day, label=step.state) for step, fn in by_step],
                width=12,
            ),
            cw.GraphWidget(
                title="Lambda throttles",
                left=[fn.metric_throttles(period=day, label=step.state) for step, fn in by_step],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Plays ingested and duplicates",
                left=[
                    pipeline_metric(m.PLAYS_INGESTED, INGEST_FILE.state),
                    pipeline_metric(m.DUPLICATE_PLAYS, INGEST_FILE.state),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Files",
                left=[
                    pipeline_metric(m.FILES_PROCESSED, INGEST_FILE.state),
                    pipeline_metric(m.FILES_ALREADY_PROCESSED, INGEST_FILE.state),
                ],
                right=[
                    cw.MathExpression(
                        expression=(
                            f"SEARCH('{{{NAMESPACE},reason,service,step}} "
                            f"MetricName=\"{m.FILES_QUARANTINED}\"', 'Sum', 86400)"
                        ),
                        label="Files quarantined by reason",
                        period=day,
                    )
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Rows quarantined by reason",
                left=[
                    cw.MathExpression(
                        expression=(
                            f"SEARCH('{{{NAMESPACE},reason,service,step}} "
                            f"MetricName=\"{m.ROWS_QUARANTINED}\"', 'Sum', 86400)"
                        ),
                        label="Rows quarantined",
                        period=day,
                    )
                ],
                width=8,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="KPI rows loaded",
                left=[pipeline_metric(m.KPI_ROWS_LOADED, LOAD.state)],
                width=8,
            ),
            cw.GraphWidget(
                title="Step duration (ms, max)",
                left=[
                    cw.Metric(
                        namespace=NAMESPACE,
                        metric_name=m.STEP_DURATION,
                        dimensions_map={"service": SERVICE, "step": step.state},
                        statistic="Maximum",
                        period=day,
                        label=step.state,
                    )
                    for step in ALL_STEPS
                ],
                width=16,
            ),
        )
        return dashboard
