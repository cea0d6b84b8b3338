"""Alarms and the dashboard: failed runs, missing runs, and the pipeline's own numbers.

What alerts: every end of an execution, told by the alert function with its run (failed,
refused, stopped, an empty source, files refused or given up: infra/alerts.py), and the
alarms no run is behind (no success, no plays), which reach the same function. The other
alarms stay on the dashboard without an action: the alert function already told of their
run. The alert function's own failures alarm straight to the topic.
"""

from __future__ import annotations

import math

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import PipelineConfig
from infra.schedule import longest_gap
from infra.steps import ALERT, ALL_STEPS, INGEST_FILE, LIST_FILES, LOAD
from kpi_pipeline import metric_names as m
from kpi_pipeline.metric_names import NAMESPACE, SERVICE
from kpi_pipeline.reasons import FileReason


def no_plays_description(hours: int) -> str:
    """The dead-feed alarm's description: the alert's headline is what comes before ':'."""
    return (
        f"No play was loaded in {hours} hours: the landing feed may have stopped (runs end "
        "no_new_files and succeed)"
    )


def pipeline_metric(name: str, step: str | None, label: str | None = None) -> cw.Metric:
    """A metric a step emits (kpi_pipeline.observability), summed per day, for a graph."""
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE, **({"step": step} if step else {})},
        statistic="Sum",
        period=Duration.days(1),
        label=label or name,
    )


def run_metric(name: str, **dimensions: str) -> cw.Metric:
    """A metric the state machine emits at the end of every run, summed per hour (alarms)."""
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE, **dimensions},
        statistic="Sum",
        period=Duration.hours(1),
    )


# CloudWatch evaluates an alarm over at most 7 days of hourly datapoints.
MAX_ALARM_HOURS = 7 * 24


def missed_run_window_hours(expression: str) -> int:
    """The schedule's longest gap between two runs plus two hours, at most 7 days."""
    gap = longest_gap(expression).total_seconds() / 3600
    return min(MAX_ALARM_HOURS, math.ceil(gap) + 2)


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
        # The alert path itself: an alert the function could not send (after Lambda's two
        # retries) alarms straight to the topic, as CloudWatch words it.
        alert_function = functions[ALERT.key]
        self.alerts_failing = self._on_any(
            "AlertsFailingAlarm",
            "The alert function failed: an alert may not have been sent (its logs say which)",
            alert_function.metric_errors(statistic="Sum", period=Duration.minutes(5)),
            alert,
        )
        self.alarms = [
            self.alerts_failing,
            self._on_any(
                "FailedExecutionsAlarm",
                "A pipeline execution failed, timed out or was aborted",
                failures,
            ),
            # A source emptied (or a wrong database): the run succeeds with no_rds_data.
            self._on_any(
                "NoRdsDataAlarm",
                "A run ended no_rds_data: the users or songs table is empty",
                run_metric(m.RUNS_ENDED, status="no_rds_data"),
            ),
            # Files arrived and not one play was accepted (all refused by the spec, or given
            # up on after failing to ingest): the run succeeds, its summary names the files.
            self._on_any(
                "FilesRejectedAlarm",
                "A run ended files_rejected: files arrived and none gave a play "
                "(the run summary's rejected_files says which and why)",
                run_metric(m.RUNS_ENDED, status="files_rejected"),
            ),
            # A file IngestFile could not get through was given up on (kpi_pipeline.attempts):
            # quarantined whole as ingest_failed, whatever else the run loaded.
            self._on_any(
                "FilesGivenUpAlarm",
                "A file failed to ingest too often (or ran out of memory twice) "
                "and was quarantined whole as ingest_failed: docs/runbook.md",
                cw.Metric(
                    namespace=NAMESPACE,
                    metric_name=m.FILES_QUARANTINED,
                    dimensions_map={
                        "service": SERVICE,
                        "step": "Archive",
                        "reason": FileReason.INGEST_FAILED.value,
                    },
                    statistic="Sum",
                    period=Duration.hours(1),
                ),
            ),
        ]

        # The alarms no run is behind: EventBridge hands their changes to the alert function.
        self.runless_alarms: list[cw.Alarm] = []
        if config.schedule.enabled:
            self.runless_alarms = self._schedule_alarms(config, state_machine)
            self.alarms += self.runless_alarms
        self.dashboard = self._dashboard(config, state_machine, functions)

    def _on_any(
        self,
        construct_id: str,
        description: str,
        metric: cw.IMetric,
        action: cw_actions.SnsAction | None = None,
    ) -> cw.Alarm:
        """An alarm that fires on the first occurrence in a period (none: all is well)."""
        alarm = cw.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        if action is not None:
            alarm.add_alarm_action(action)
        return alarm

    def _schedule_alarms(
        self, config: PipelineConfig, state_machine: sfn.StateMachine
    ) -> list[cw.Alarm]:
        """What a running schedule should produce: successful runs, and plays loaded.

        Both count hourly datapoints: every hour of the window must be empty to alarm, and
        no datapoint at all (the schedule stopped) counts as empty.
        """
        hours = config.monitoring.no_success_alarm_hours or missed_run_window_hours(
            config.schedule.expression
        )
        stale_alarm = cw.Alarm(
            self,
            "NoSuccessfulRunAlarm",
            alarm_description=(
                f"No pipeline execution succeeded in {hours} hours (the schedule's longest gap "
                "between two runs, plus two hours)"
            ),
            metric=state_machine.metric_succeeded(statistic="Sum", period=Duration.hours(1)),
            threshold=1,
            evaluation_periods=hours,
            datapoints_to_alarm=hours,
            comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.BREACHING,
        )
        dead_feed_hours = config.monitoring.no_plays_alarm_hours
        dead_feed = cw.Alarm(
            self,
            "NoPlaysLoadedAlarm",
            alarm_description=no_plays_description(dead_feed_hours),
            metric=run_metric(m.PLAYS_LOADED),
            threshold=1,
            evaluation_periods=dead_feed_hours,
            datapoints_to_alarm=dead_feed_hours,
            comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.BREACHING,
        )
        return [stale_alarm, dead_feed]

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
                    pipeline_metric(m.FILES_IGNORED, LIST_FILES.state, "Not CSV, left in landing"),
                ],
                right=[
                    cw.MathExpression(
                        expression=(
                            f"SEARCH('{{{NAMESPACE},reason,service,step}} "
                            f"MetricName=\"{name}\"', 'Sum', 86400)"
                        ),
                        label=label,
                        period=day,
                    )
                    for name, label in (
                        (m.FILES_QUARANTINED, "Files quarantined by reason"),
                        (m.FILES_UNREADABLE, "Files left unread by reason (GLACIER...)"),
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
                title="Runs by how they ended",
                left=[
                    cw.MathExpression(
                        expression=(
                            f"SEARCH('{{{NAMESPACE},service,status}} "
                            f"MetricName=\"{m.RUNS_ENDED}\"', 'Sum', 86400)"
                        ),
                        label="Runs",
                        period=day,
                    )
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Plays loaded (a flat line: the feed stopped)",
                left=[pipeline_metric(m.PLAYS_LOADED, None)],
                width=12,
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
