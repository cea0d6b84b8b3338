"""What an operator looks up after a deploy: the stack's outputs and its tags."""

from __future__ import annotations

import pytest

from infra.steps import ALL_STEPS
from tests.cdk_apps import template_of

pytestmark = pytest.mark.cdk


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_the_stack_outputs_where_to_look_for_everything_an_operator_needs(env_name):
    _, template = template_of(env_name)
    outputs = template.to_json()["Outputs"]
    for name in (
        "StateMachineArn",
        "StateMachineConsoleUrl",
        "DataBucketName",
        "LandingBucketName",
        "AlertTopicArn",
        "DashboardUrl",
        "LockTableName",
        "LogGroupNames",
    ):
        assert name in outputs, name
        assert outputs[name].get("Description"), f"{name} says what it is"
    # one log group per function, named in the output in the state machine's order
    joined = outputs["LogGroupNames"]["Value"]["Fn::Join"]
    assert joined[0] == ", " and len(joined[1]) == len(ALL_STEPS)


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_taggable_resource_carries_the_project_and_environment_tags(env_name):
    _, template = template_of(env_name)
    resources = template.to_json()["Resources"]
    tagged = {
        "AWS::Lambda::Function",
        "AWS::S3::Bucket",
        "AWS::StepFunctions::StateMachine",
        "AWS::DynamoDB::Table",
        "AWS::SNS::Topic",
        "AWS::IAM::Role",
        "AWS::KMS::Key",
        "AWS::Logs::LogGroup",
    }
    seen = 0
    for logical_id, resource in resources.items():
        if resource["Type"] not in tagged:
            continue
        tags = resource["Properties"].get("Tags", [])
        if isinstance(tags, dict):  # StateMachine, DynamoDB: a list of {Key, Value} too
            tags = [{"Key": k, "Value": v} for k, v in tags.items()]
        pairs = {t["Key"]: t["Value"] for t in tags}
        assert pairs.get("project") == "music-kpi", logical_id
        assert pairs.get("environment") == env_name, logical_id
        seen += 1
    assert seen > 20


def test_every_role_eventbridge_assumes_trusts_only_its_own_rule():
    """A role trusted by events.amazonaws.com alone can be used by any rule of the account
    whose creator may pass it: each such role names its rule (aws:SourceArn) and account."""
    _, template = template_of("prod")
    resources = template.to_json()["Resources"]
    rules = {
        resource["Properties"]["Name"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Events::Rule" and "Name" in resource["Properties"]
    }
    trusted = 0
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for statement in resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            if statement["Principal"].get("Service") != "events.amazonaws.com":
                continue
            trusted += 1
            condition = statement.get("Condition", {}).get("StringEquals", {})
            assert condition.get("aws:SourceAccount") == "222222222222", logical_id
            source = condition.get("aws:SourceArn")
            assert source, f"{logical_id} trusts every rule of the account"
            rule_name = source["Fn::Join"][1][-1].split("rule/")[-1]
            assert rule_name in rules, logical_id
    assert trusted == 2  # the daily schedule, and PagerDuty's API destination
