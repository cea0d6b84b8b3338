"""cdk-nag (AwsSolutions) runs on every synth; each finding is fixed or acknowledged here.

An acknowledgment names one exact finding (rule and resource) on one construct, with the
reason it stands. Findings are named the way cdk-nag prints them, e.g.
``AwsSolutions-IAM5[Resource::<DataBucketB1B922FA.Arn>/runs/*]``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_cdk import Acknowledgment, ArnFormat, CfnElement, Stack, Token, Validations
from constructs import IConstruct

from infra.steps import ALL_STEPS
from kpi_pipeline.layout import Layout

if TYPE_CHECKING:
    from infra.stack import PipelineStack

PREFIX_REASON = (
    "objects under the '{prefix}' prefix: the keys are generated per run and per file "
    "content, so a key prefix is the narrowest scope S3 offers"
)
LANDING_REASON = (
    "stream files under the landing prefix '{prefix}': their names are chosen upstream, so "
    "the prefix is the narrowest scope S3 offers"
)


PLUGIN = "AwsSolutions"


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge the finding ``AwsSolutions-<finding>`` on ``scope`` and its children."""
    Validations.of(scope).acknowledge(
        Acknowledgment(id=f"{PLUGIN}::{PLUGIN}-{finding}", reason=reason)
    )


def as_nag_text(scope: IConstruct, value: str) -> str:
    """How cdk-nag prints a (possibly tokenized) ARN: ``<Logical.Attr>``, ``<AWS::Partition>``."""
    return _render(Stack.of(scope).resolve(value))


def acknowledge_prefixes(
    scope: IConstruct, bucket_arn: str, prefixes: tuple[str, ...], *, landing: bool = False
) -> None:
    arn = as_nag_text(scope, bucket_arn)
    reason = LANDING_REASON if landing else PREFIX_REASON
    for prefix in prefixes:
        acknowledge(scope, f"IAM5[Resource::{arn}/{prefix}*]", reason.format(prefix=prefix))


def _render(resolved: Any) -> str:
    if isinstance(resolved, str):
        return resolved
    if isinstance(resolved, dict) and "Ref" in resolved:
        return f"<{resolved['Ref']}>"
    if isinstance(resolved, dict) and "Fn::GetAtt" in resolved:
        logical_id, attribute = resolved["Fn::GetAtt"]
        return f"<{logical_id}.{attribute}>"
    if isinstance(resolved, dict) and "Fn::Join" in resolved:
        separator, parts = resolved["Fn::Join"]
        return str(separator).join(_render(part) for part in parts)
    raise ValueError(f"cannot render {resolved!r} for cdk-nag")


def acknowledge_findings(stack: PipelineStack) -> None:
    """The findings that belong to the stack as a whole (the rest sit beside their grants)."""
    for step_key, role in stack.functions.roles.items():
        in_vpc = stack.config.network is not None and step_key in {
            step.key for step in ALL_STEPS if step.in_vpc or step.egress
        }
        reason = (
            "X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level "
            "permissions (added by CDK for active tracing)"
        )
        if in_vpc:
            reason += (
                "; the ENI actions Lambda needs to run in the VPC (ec2:CreateNetworkInterface, "
                "DescribeNetworkInterfaces, DeleteNetworkInterface...) accept no narrower resource"
            )
        talks_to_redshift = step_key in {"load", "transform_in_warehouse"}
        if talks_to_redshift and stack.config.warehouse.kind == "redshift":
            reason += (
                "; Redshift Data API statement ids are not ARNs: DescribeStatement and "
                "CancelStatement are limited to the caller's own statements by the "
                "redshift-data:statement-owner-iam-userid condition"
            )
        acknowledge(role, "IAM5[Resource::*]", reason)

    machine_role = stack.state_machine.role
    machine_cfn = stack.state_machine.node.default_child
    assert isinstance(machine_cfn, CfnElement)
    acknowledge(
        machine_role,
        "IAM5[Resource::*]",
        "X-Ray tracing and CloudWatch Logs delivery (logs:CreateLogDelivery, "
        "PutResourcePolicy, DescribeLogGroups...) have no resource-level permissions; "
        "CDK adds them for tracing_enabled and LogLevel.ALL; cloudwatch:PutMetricData has "
        "none either and is limited to the pipeline's namespace by a condition",
    )
    # The Map's Catch records a failed file's result under the run's prefix; the
    # Distributed Map reads the file list there and writes its result manifests; every end
    # of a run keeps its outcome document.
    acknowledge_prefixes(
        machine_role,
        stack.storage.data_bucket.bucket_arn,
        (
            "runs/",  # the Distributed Maps' item lists (read)
            "runs/*/ingest/",  # a failed file's result (written)
            Layout.outcomes_prefix,
            Layout.map_results_prefix(),
            Layout.transform_map_results_prefix(),
        ),
    )
    # The Distributed Map's child executions (CDK's DistributedMapPolicy).
    machine_name = json.dumps(
        {"Fn::Select": [6, {"Fn::Split": [":", {"Ref": stack.get_logical_id(machine_cfn)}]}]},
        separators=(",", ":"),
    )
    region = stack.region if not Token.is_unresolved(stack.region) else "<AWS::Region>"
    account = stack.account if not Token.is_unresolved(stack.account) else "<AWS::AccountId>"
    for children in (f"{machine_name}:*", f"{machine_name}/*:*"):
        acknowledge(
            stack.state_machine,
            f"IAM5[Resource::arn:<AWS::Partition>:states:{region}:{account}:execution:{children}]",
            "the Distributed Map starts, describes and stops its own child executions, whose "
            "names are generated per map run; only this state machine's executions are named",
        )
    for function in stack.functions.functions.values():
        arn = as_nag_text(machine_role, function.function_arn)
        acknowledge(
            machine_role,
            f"IAM5[Resource::{arn}:*]",
            "the Lambda task integration may invoke the function's versions and aliases "
            "(<arn>:*); only the pipeline's own functions are named",
        )
    executions = stack.format_arn(
        service="states",
        resource="execution",
        resource_name=f"{stack.pipeline_name}:*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    acknowledge(
        machine_role,
        f"IAM5[Resource::{as_nag_text(machine_role, executions)}]",
        "DescribeExecution of the lock's holder: execution ARNs end with a run id unknown at "
        "deploy time; only this state machine's executions are named",
    )
