"""Where alerts go, as synthesized (infra/alerts.py): AWS Chatbot's Slack channel on the alert
topic, PagerDuty through an EventBridge API destination, each only when set; the prod
example in cdk.json sets both."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.stack import PipelineStack
from kpi_pipeline.alerts import PAGERDUTY_DETAIL_TYPE, PAGERDUTY_SOURCE
from tests.cdk_apps import CDK_CONTEXT, context_for, synth, template_of

pytestmark = pytest.mark.cdk

PROD = CDK_CONTEXT["environments"]["prod"]
SLACK_AND_PAGERDUTY = {
    "AWS::Chatbot::SlackChannelConfiguration",
    "AWS::Events::Connection",
    "AWS::Events::ApiDestination",
}


def logical_id(stack: PipelineStack, construct: Any) -> str:
    return stack.get_logical_id(construct.node.default_child)


def resources(template: Any, kind: str) -> dict[str, Any]:
    return {k: r for k, r in template.to_json()["Resources"].items() if r["Type"] == kind}


@pytest.fixture(scope="module")
def prod():
    return template_of("prod")


@pytest.fixture(scope="module")
def prod_without_alerts():
    return synth(context_for("prod", alerts={}))


def test_slack_is_aws_chatbots_channel_on_the_alert_topic_and_may_run_nothing(prod):
    stack, template = prod
    (channel,) = resources(template, "AWS::Chatbot::SlackChannelConfiguration").values()
    properties = channel["Properties"]
    assert properties["SlackWorkspaceId"] == PROD["alerts"]["slack"]["workspace_id"]
    assert properties["SlackChannelId"] == PROD["alerts"]["slack"]["channel_id"]
    assert properties["SnsTopicArns"] == [{"Ref": logical_id(stack, stack.alert_topic)}]
    assert properties["ConfigurationName"] == "music-kpi-prod-alerts"
    assert properties["UserRoleRequired"] is False
    # The guardrail caps every member at reading CloudWatch ...
    (guardrail,) = properties["GuardrailPolicies"]
    assert json.dumps(guardrail).endswith(':iam::aws:policy/CloudWatchReadOnlyAccess"]]}')
    # ... and the channel's role grants nothing: no command runs from Slack.
    role_id = properties["IamRoleArn"]["Fn::GetAtt"][0]
    role = template.to_json()["Resources"][role_id]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "chatbot.amazonaws.com"},
        }
    ]
    assert "ManagedPolicyArns" not in role["Properties"]
    assert "Policies" not in role["Properties"]
    attached = [
        name
        for name, policy in resources(template, "AWS::IAM::Policy").items()
        if {"Ref": role_id} in policy["Properties"].get("Roles", [])
    ]
    assert attached == []


def test_pagerduty_goes_through_an_api_destination_holding_the_key_from_its_secret(prod):
    stack, template = prod
    secret = PROD["alerts"]["pagerduty"]["secret"]
    reference = f"{{{{resolve:secretsmanager:{secret}:SecretString:::}}}}"
    (connection,) = resources(template, "AWS::Events::Connection").values()
    auth = connection["Properties"]["AuthParameters"]
    # The routing key, in the body as the Events API v2 wants it, is a dynamic reference:
    # CloudFormation copies it into the connection's own secret, the template never has it.
    assert auth["InvocationHttpParameters"]["BodyParameters"] == [
        {"IsValueSecret": True, "Key": "routing_key", "Value": reference}
    ]
    assert auth["ApiKeyAuthParameters"]["ApiKeyValue"] == reference
    (destination_id, destination), *_ = resources(template, "AWS::Events::ApiDestination").items()
    assert destination["Properties"]["InvocationEndpoint"] == (
        "https://events.pagerduty.com/v2/enqueue"
    )
    assert destination["Properties"]["HttpMethod"] == "POST"
    (rule,) = [
        r
        for r in resources(template, "AWS::Events::Rule").values()
        if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [destination_id, "Arn"]}
    ]
    assert rule["Properties"]["EventPattern"] == {
        "source": [PAGERDUTY_SOURCE],
        "detail-type": [PAGERDUTY_DETAIL_TYPE],
        "account": [PROD["account"]],
    }
    (target,) = rule["Properties"]["Targets"]
    assert target["InputPath"] == "$.detail"  # the event the alert function rendered
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    # The alert function puts the events, and never reads the key.
    alert = template.to_json()["Resources"][logical_id(stack, stack.functions.functions["alert"])]
    assert alert["Properties"]["Environment"]["Variables"]["PAGERDUTY_EVENTS"] == "true"
    role = {"Ref": logical_id(stack, stack.functions.roles["alert"])}
    actions = {
        action
        for policy in resources(template, "AWS::IAM::Policy").values()
        if role in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert "events:PutEvents" in actions
    assert not [a for a in actions if a.startswith("secretsmanager:")]
    # The secret is named in the connection only: nowhere else in the template.
    text = json.dumps(template.to_json())
    assert text.count(secret) == 2


def test_neither_set_adds_no_resource_and_each_adds_only_its_own(prod, prod_without_alerts):
    _, with_both = prod
    _, without = prod_without_alerts
    both = with_both.to_json()["Resources"]
    neither = without.to_json()["Resources"]
    assert not {r["Type"] for r in neither.values()} & SLACK_AND_PAGERDUTY
    assert set(neither) <= set(both)
    added = {name: both[name]["Type"] for name in set(both) - set(neither)}
    assert sorted(added.values()) == sorted(
        [
            "AWS::Chatbot::SlackChannelConfiguration",
            "AWS::IAM::Role",  # the Slack channel's, with no permission
            "AWS::Events::Connection",
            "AWS::Events::ApiDestination",
            "AWS::Events::Rule",  # the alert function's PagerDuty events, to PagerDuty
            "AWS::IAM::Role",  # EventBridge's, to invoke the API destination
            "AWS::IAM::Policy",  # events:InvokeApiDestination on it
        ]
    )
    # and the rest is the same (but the alert function's PagerDuty switch and grant, and
    # the dead-letter queue's policy letting PagerDuty's rule in too)
    changed = [name for name in neither if both[name] != neither[name]]
    assert {both[name]["Type"] for name in changed} <= {
        "AWS::Lambda::Function",
        "AWS::IAM::Policy",
        "AWS::SQS::QueuePolicy",
    }


def test_the_alert_function_has_no_pagerduty_rights_without_pagerduty(prod_without_alerts):
    stack, template = prod_without_alerts
    alert = template.to_json()["Resources"][logical_id(stack, stack.functions.functions["alert"])]
    assert "PAGERDUTY_EVENTS" not in alert["Properties"]["Environment"]["Variables"]
    assert "events:PutEvents" not in json.dumps(template.to_json())


def test_an_alert_that_cannot_be_delivered_is_kept_and_alarms(prod):
    """An alert the function failed to handle twice, an event EventBridge could not hand to
    it, and a PagerDuty event the API destination could not deliver (a 4xx, a rotated key,
    24 h of retries) land in one dead-letter queue; a message there alarms to the topic."""
    stack, template = prod
    (queue_id,) = resources(template, "AWS::SQS::Queue")
    queue = template.to_json()["Resources"][queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    dead_letters = {"Fn::GetAtt": [queue_id, "Arn"]}

    (invoke_config,) = resources(template, "AWS::Lambda::EventInvokeConfig").values()
    assert invoke_config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == (
        dead_letters
    )
    rules = resources(template, "AWS::Events::Rule").values()
    event_targets = [
        t for r in rules if "EventPattern" in r["Properties"] for t in r["Properties"]["Targets"]
    ]
    assert len(event_targets) == 3  # executions, alarms, PagerDuty
    assert all(t["DeadLetterConfig"]["Arn"] == dead_letters for t in event_targets)

    (alarm,) = [
        a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue_id, "QueueName"]}
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"].startswith("GreaterThanOrEqual")
    assert alarm["AlarmActions"] == [{"Ref": logical_id(stack, stack.alert_topic)}]
