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
