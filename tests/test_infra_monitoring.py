"""Alerts, alarms, the dashboard and each function's runtime settings, as synthesized.

The state machine's own logging level and tracing flag are asserted in
``test_infra_workflow.py``; here: where its logs go, and everything around it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from infra.stack import PipelineStack
from infra.steps import ALL_STEPS
from kpi_pipeline import metric_names
from tests.cdk_apps import context_for, synth, template_of

pytestmark = pytest.mark.cdk

STEP_IDS = [step.state for step in ALL_STEPS]


def ref(stack: PipelineStack, construct: Any) -> dict[str, str]:
    return {"Ref": stack.get_logical_id(construct.node.default_child)}


def logical_id(stack: PipelineStack, construct: Any) -> str:
    return stack.get_logical_id(construct.node.default_child)


def dashboard_text(template: Template) -> str:
    """The dashboard's JSON text (an Fn::Join), its tokens replaced by ``<LogicalId>``."""
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    separator, parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"]
    return separator.join(part if isinstance(part, str) else token(part) for part in parts)


def dashboard_body(template: Template) -> dict[str, Any]:
    return json.loads(dashboard_text(template))


def token(value: dict[str, Any]) -> str:
    if "Ref" in value:
        return f"<{value['Ref']}>"
    (logical, attribute) = value["Fn::GetAtt"]
    return f"<{logical}.{attribute}>"


def widgets_by_title(template: Template) -> dict[str, dict[str, Any]]:
    return {w["properties"]["title"]: w["properties"] for w in dashboard_body(template)["widgets"]}


@pytest.fixture(scope="module")
def prod():
    return template_of("prod")


@pytest.fixture(scope="module")
def dev():
    return template_of("dev")


# --- alerts ----------------------------------------------------------------------------------
def alert_function(stack: PipelineStack) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id(stack, stack.functions.functions["alert"]), "Arn"]}


def test_every_end_of_this_machines_executions_reaches_the_alert_function(prod):
    """Timeouts and aborts included, which no Catch sees; successes too (an empty source,
    refused files, and the end of the incidents of earlier failures)."""
    stack, template = prod
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.states"],
                "detail-type": ["Step Functions Execution Status Change"],
                "detail": {
                    "status": ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
                    "stateMachineArn": [ref(stack, stack.state_machine)],
                },
            },
            "State": "ENABLED",
            "Targets": [Match.object_like({"Arn": alert_function(stack)})],
        },
    )


def test_the_alarms_no_run_is_behind_reach_the_alert_function(prod, dev):
    stack, template = prod
    alarms = [
        {"Fn::GetAtt": [logical_id(stack, alarm), "Arn"]}
        for alarm in stack.monitoring.runless_alarms
    ]
    assert len(alarms) == 2  # no success for the schedule's window, no plays for 36 hours
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.cloudwatch"],
                "detail-type": ["CloudWatch Alarm State Change"],
                "resources": alarms,
                "detail": {"state": {"value": ["ALARM", "OK"]}},
            },
            "Targets": [Match.object_like({"Arn": alert_function(stack)})],
        },
    )
    dev_stack, dev_template = dev  # its schedule is off: no such alarm, no such rule
    assert dev_stack.monitoring.runless_alarms == []
    dev_template.resource_properties_count_is(
        "AWS::Events::Rule", {"EventPattern": {"source": ["aws.cloudwatch"]}}, 0
    )


def test_only_the_alert_function_publishes_and_never_through_a_topic_policy(prod):
    """Issue 20, item 7: a topic policy letting events.amazonaws.com publish lets any rule of
    the account page on-call. No rule targets the topic; the alert function publishes with
    its own role, and the alarms' own action is its failure."""
    stack, template = prod
    policies = template.find_resources("AWS::SNS::TopicPolicy")
    principals = [
        statement.get("Principal")
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert {"Service": "events.amazonaws.com"} not in principals
    topic = ref(stack, stack.alert_topic)
    for rule in template.find_resources("AWS::Events::Rule").values():
        assert topic not in [t["Arn"] for t in rule["Properties"]["Targets"]]
    publishers = {
        tuple(policy["Properties"]["Roles"][0].values())
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "sns:Publish" in statement["Action"]
    }
    assert publishers == {(logical_id(stack, stack.functions.roles["alert"]),)}
    acting = [
        alarm["Properties"]["AlarmDescription"]
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("AlarmActions")
    ]
    assert sorted(acting) == [
        "An alert could not be delivered: it is kept in the alert dead-letter queue "
        "(docs/runbook.md, The alert function failed)",
        "The alert function failed: an alert may not have been sent (its logs say which)",
    ]


def test_the_alert_functions_own_failure_alarms_straight_to_the_topic(prod):
    stack, template = prod
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [
                {"Name": "FunctionName", "Value": ref(stack, stack.functions.functions["alert"])}
            ],
            "Statistic": "Sum",
            "Period": 300,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "AlarmActions": [ref(stack, stack.alert_topic)],
        },
    )


def test_the_alert_topic_is_encrypted_with_a_key_its_publishers_may_use(prod):
    """Encrypted at rest, with a key whose policy lets this account's CloudWatch alarms
    use it (a service principal needs the key policy's word, not an IAM grant)."""
    stack, template = prod
    topic = template.to_json()["Resources"][logical_id(stack, stack.alert_topic)]
    key_ref = topic["Properties"]["KmsMasterKeyId"]
    (key_id,) = key_ref["Fn::GetAtt"][:1]
    key = template.to_json()["Resources"][key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [
        s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch and set(cloudwatch[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": stack.account}}
    # The alert function publishes: SNS needs the key on its behalf, and only SNS may use it.
    role = logical_id(stack, stack.functions.roles["alert"])
    statements = [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Condition": {"StringEquals": {"kms:ViaService": "sns.eu-west-1.amazonaws.com"}},
        "Effect": "Allow",
        "Resource": {"Fn::GetAtt": [key_id, "Arn"]},
    } in statements


def test_the_failed_executions_alarm_sums_failed_timed_out_and_aborted(prod):
    stack, template = prod
    metrics = Capture()
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Metrics": metrics,
            "Threshold": 1,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            # its runs alerted one by one (the alert function); it shows on the dashboard
            "AlarmActions": Match.absent(),
        },
    )
    (expression,) = [m for m in metrics.as_array() if "Expression" in m]
    assert expression["ReturnData"] is True
    inputs = {m["Id"]: m["MetricStat"] for m in metrics.as_array() if "MetricStat" in m}
    assert sorted(expression["Expression"].replace(" ", "").split("+")) == sorted(inputs)
    assert sorted(stat["Metric"]["MetricName"] for stat in inputs.values()) == [
        "ExecutionsAborted",
        "ExecutionsFailed",
        "ExecutionsTimedOut",
    ]
    for stat in inputs.values():
        assert stat["Stat"] == "Sum"
        assert stat["Metric"]["Namespace"] == "AWS/States"
        assert stat["Metric"]["Dimensions"] == [
            {"Name": "StateMachineArn", "Value": ref(stack, stack.state_machine)}
        ]


def no_success_alarm(template: Template) -> dict[str, Any]:
    (alarm,) = template.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"MetricName": "ExecutionsSucceeded"}}
    ).values()
    return dict(alarm["Properties"])


def test_prod_alarms_when_no_run_succeeded_over_its_daily_schedule_and_two_hours(prod):
    stack, template = prod
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/States",
            "MetricName": "ExecutionsSucceeded",
            "Dimensions": [{"Name": "StateMachineArn", "Value": ref(stack, stack.state_machine)}],
            "Statistic": "Sum",
            "Period": 3600,
            "EvaluationPeriods": 26,
            "DatapointsToAlarm": 26,
            "ComparisonOperator": "LessThanThreshold",
            "Threshold": 1,
            "TreatMissingData": "breaching",
            "AlarmActions": Match.absent(),  # the alert function tells (EventBridge)
        },
    )


@pytest.mark.parametrize(
    ("expression", "hours"),
    [("cron(0 2 ? * MON-FRI *)", 74), ("rate(6 hours)", 8), ("cron(0 2 ? * SUN *)", 168)],
)
def test_the_missed_run_alarm_waits_for_the_longest_gap_of_the_schedule(expression, hours):
    """A weekday schedule leaves three days between Friday's run and Monday's: a fixed
    26-hour window alarmed every weekend. (CloudWatch evaluates at most 7 days.)"""
    _, template = synth(context_for("prod", schedule={"expression": expression}))
    alarm = no_success_alarm(template)
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (hours, hours)


def test_a_dead_feed_alarms_when_no_play_was_loaded_for_a_day_and_a_half(prod):
    """Runs that end no_new_files or no_rds_data succeed: with the feed stopped, every
    daily run succeeded and nobody was told."""
    _stack, template = prod
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": metric_names.NAMESPACE,
            "MetricName": metric_names.PLAYS_LOADED,
            "Dimensions": [{"Name": "service", "Value": metric_names.SERVICE}],
            "Statistic": "Sum",
            "Period": 3600,
            "EvaluationPeriods": 36,
            "DatapointsToAlarm": 36,
            "ComparisonOperator": "LessThanThreshold",
            "Threshold": 1,
            "TreatMissingData": "breaching",
            "AlarmActions": Match.absent(),  # the alert function tells (EventBridge)
        },
    )


def test_a_file_given_up_on_alarms(prod):
    """A file quarantined whole as ingest_failed (kpi_pipeline.attempts) alarms, whatever
    else its run loaded."""
    _stack, template = prod
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": metric_names.NAMESPACE,
            "MetricName": metric_names.FILES_QUARANTINED,
            "Dimensions": [
                {"Name": "reason", "Value": "ingest_failed"},
                {"Name": "service", "Value": metric_names.SERVICE},
                {"Name": "step", "Value": "Archive"},
            ],
            "Statistic": "Sum",
            "Threshold": 1,
            "AlarmActions": Match.absent(),  # its run alerted, naming the file
        },
    )


@pytest.mark.parametrize("status", ["no_rds_data", "files_rejected"])
def test_a_run_ending_with_nothing_usable_alarms(prod, status):
    """The source emptied, or files arrived and not one play was accepted: the run succeeds,
    and someone must look."""
    _stack, template = prod
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": metric_names.NAMESPACE,
            "MetricName": metric_names.RUNS_ENDED,
            "Dimensions": [
                {"Name": "service", "Value": metric_names.SERVICE},
                {"Name": "status", "Value": status},
            ],
            "Statistic": "Sum",
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": 1,
            "TreatMissingData": "notBreaching",
            "AlarmActions": Match.absent(),  # its run alerted, with the run
        },
    )
    template.resource_count_is("AWS::CloudWatch::Alarm", 8)  # AlertsLostAlarm too


def test_dev_has_no_missed_run_alarm_because_its_schedule_is_off(dev):
    _, template = dev
    template.resource_properties_count_is(
        "AWS::CloudWatch::Alarm", {"MetricName": "ExecutionsSucceeded"}, 0
    )
    template.resource_properties_count_is(
        "AWS::CloudWatch::Alarm", {"MetricName": metric_names.PLAYS_LOADED}, 0
    )
    template.resource_count_is("AWS::CloudWatch::Alarm", 6)  # AlertsLostAlarm too


def test_the_daily_schedule_is_disabled_in_dev_but_still_targets_the_machine(dev):
    stack, template = dev
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(0 2 * * ? *)",
            "State": "DISABLED",
            "Targets": [Match.object_like({"Arn": ref(stack, stack.state_machine)})],
        },
    )


# --- dashboard -------------------------------------------------------------------------------
def test_the_dashboard_shows_executions_durations_errors_and_throttles(prod):
    stack, template = prod
    template.has_resource_properties(
        "AWS::CloudWatch::Dashboard", {"DashboardName": "music-kpi-prod"}
    )
    widgets = widgets_by_title(template)
    machine = f"<{logical_id(stack, stack.state_machine)}>"
    executions = {m[1] for m in widgets["Executions"]["metrics"] if m[3] == machine}
    assert executions == {
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "ExecutionsTimedOut",
        "ExecutionsAborted",
    }
    assert [m[1] for m in widgets["Execution duration (ms)"]["metrics"]] == ["ExecutionTime"]
    functions = {f"<{logical_id(stack, fn)}>" for fn in stack.functions.functions.values()}
    for title, metric in (("Lambda errors", "Errors"), ("Lambda throttles", "Throttles")):
        rows = widgets[title]["metrics"]
        assert {(m[0], m[1]) for m in rows} == {("AWS/Lambda", metric)}
        assert {m[3] for m in rows} == functions, title
        assert [m[4]["label"] for m in rows] == STEP_IDS


def test_the_dashboard_shows_every_alarm(prod):
    stack, template = prod
    (alarms,) = [w for w in dashboard_body(template)["widgets"] if w["type"] == "alarm"]
    assert sorted(alarms["properties"]["alarms"]) == sorted(
        f"<{logical_id(stack, alarm)}.Arn>" for alarm in stack.monitoring.alarms
    )
    assert len(stack.monitoring.alarms) == 7


def test_the_dashboard_charts_the_pipelines_own_metrics(prod):
    _, template = prod
    text = dashboard_text(template)
    names = (
        metric_names.PLAYS_INGESTED,
        metric_names.ROWS_QUARANTINED,
        metric_names.FILES_PROCESSED,
        metric_names.KPI_ROWS_LOADED,
        metric_names.STEP_DURATION,
        metric_names.RUNS_ENDED,
        metric_names.PLAYS_LOADED,
        metric_names.FILES_IGNORED,  # non-CSV objects left in landing
        metric_names.FILES_UNREADABLE,  # archived objects left in landing
    )
    assert [name for name in names if not re.search(rf"\b{name}\b", text)] == []

    rows = [
        row
        for w in dashboard_body(template)["widgets"]
        for row in w["properties"].get("metrics", [])
    ]
    charted = {(row[0], row[1]) for row in rows if isinstance(row[0], str)}
    searches = [row[0]["expression"] for row in rows if isinstance(row[0], dict)]
    for name in names:
        if name == metric_names.ROWS_QUARANTINED:  # one line per reason, found by SEARCH
            assert any(
                f"{{{metric_names.NAMESPACE},reason,service,step}}" in search
                and f'MetricName="{name}"' in search
                for search in searches
            )
        elif name == metric_names.FILES_UNREADABLE:  # one line per reason
            assert any(f'MetricName="{name}"' in search for search in searches)
        elif name == metric_names.RUNS_ENDED:  # one line per status
            assert any(
                f"{{{metric_names.NAMESPACE},service,status}}" in search
                and f'MetricName="{name}"' in search
                for search in searches
            )
        else:
            assert (metric_names.NAMESPACE, name) in charted, name


def test_step_durations_are_charted_for_every_step_with_the_handlers_dimensions(prod):
    _, template = prod
    rows = widgets_by_title(template)["Step duration (ms, max)"]["metrics"]
    assert [row[:6] for row in rows] == [
        [
            metric_names.NAMESPACE,
            metric_names.STEP_DURATION,
            "service",
            metric_names.SERVICE,
            "step",
            step.state,
        ]
        for step in ALL_STEPS
    ]


# --- logs, tracing, runtime, sizing --------------------------------------------------------
def test_state_machine_logs_go_to_its_own_log_group_with_retention(prod):
    stack, template = prod
    function_groups = {logical_id(stack, fn.log_group) for fn in stack.functions.functions.values()}
    destination = Capture()
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "LoggingConfiguration": Match.object_like(
                {"Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": destination}}]}
            )
        },
    )
    (log_group, attribute) = destination.as_object()["Fn::GetAtt"]
    assert attribute == "Arn"
    assert log_group not in function_groups
    assert template.to_json()["Resources"][log_group]["Properties"]["RetentionInDays"] > 0


@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_every_function_traces_logs_to_its_own_group_and_runs_python_3_14(prod, step):
    stack, template = prod
    function = stack.functions.functions[step.key]
    resources = template.to_json()["Resources"]
    properties = resources[logical_id(stack, function)]["Properties"]
    assert properties["TracingConfig"] == {"Mode": "Active"}
    assert properties["Runtime"] == "python3.14"
    assert properties["Architectures"] == ["x86_64"]
    assert properties["Handler"] == step.handler
    log_group = properties["LoggingConfig"]["LogGroup"]["Ref"]
    assert resources[log_group]["Type"] == "AWS::Logs::LogGroup"
    assert resources[log_group]["Properties"]["RetentionInDays"] == 90


def test_no_two_functions_share_a_log_group(prod):
    _, template = prod
    groups = [
        f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for f in template.find_resources("AWS::Lambda::Function").values()
    ]
    assert len(groups) == len(set(groups)) == len(ALL_STEPS)


@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_prod_functions_get_the_default_memory_and_timeout_of_their_step(prod, step):
    stack, template = prod
    sizing = stack.config.function(step.key)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": step.handler,
            "MemorySize": sizing.memory_mb,
            "Timeout": sizing.timeout_seconds,
        },
    )


def test_prod_sizing_is_the_documented_default():
    stack, _ = template_of("prod")
    assert "functions" not in context_for("prod")["environments"]["prod"]
    sizes = {
        key: (stack.config.function(key).memory_mb, stack.config.function(key).timeout_seconds)
        for key in (step.key for step in ALL_STEPS)
    }
    assert sizes == {
        "check_request": (256, 30),
        "check_source": (512, 60),
        "extract_rds": (3008, 900),
        "list_files": (512, 120),
        "ingest_file": (2048, 900),
        "replay_quarantine": (2048, 900),
        "plan_transform": (1024, 900),
        "transform": (3008, 900),
        "transform_in_warehouse": (512, 900),
        "load": (1024, 900),
        "archive": (512, 600),
        "alert": (256, 60),
    }


def test_a_configured_size_reaches_the_function_and_its_redshift_poll_cap():
    """One extra synth: Load resized in cdk.json context (dev, Redshift Serverless)."""
    _, template = synth(
        context_for("dev", functions={"load": {"memory_mb": 1536, "timeout_seconds": 300}})
    )
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "load.handler.handler",
            "MemorySize": 1536,
            "Timeout": 300,
            "Environment": {
                "Variables": Match.object_like(
                    # Waiting stops a minute before the timeout, however many polls it took.
                    {"REDSHIFT_POLL_SECONDS": "2", "REDSHIFT_STOP_BEFORE_TIMEOUT_SECONDS": "60"}
                )
            },
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": "transform.handler.handler", "MemorySize": 3008, "Timeout": 900},
    )
