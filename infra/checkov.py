"""checkov, an IaC scanner, runs on the synthesized dev and prod templates in ``make test``
(tests/test_infra_checkov.py). Each check that stays failed is suppressed here, on the
resources it concerns, with its reason: the template carries it (``Metadata.checkov.skip``),
so the scanner's report says why, and a new resource of another kind is never let through.
"""

from __future__ import annotations

from dataclasses import dataclass

import jsii
from aws_cdk import CfnResource, IAspect
from constructs import IConstruct

CHECKOV_VERSION = "3.3.30"  # pinned: a new release's new checks are a reviewed change
CFN_LINT_VERSION = "1.58.0"  # CloudFormation's schema and rules, installed beside it


@dataclass(frozen=True)
class Suppression:
    check: str
    resource_type: str
    reason: str
    logical_ids: tuple[str, ...] = ()  # only these resources (a prefix each); empty: all


SUPPRESSIONS: tuple[Suppression, ...] = (
    Suppression(
        "CKV_AWS_116",
        "AWS::Lambda::Function",
        "invoked synchronously by Step Functions, whose Retry and Catch handle every failure; "
        "a dead-letter queue only receives failed asynchronous invocations. The one function "
        "invoked asynchronously, Alert (by EventBridge), is retried by Lambda, its failures "
        "alarm straight to the topic (AlertsFailingAlarm) and its log keeps the event",
    ),
    Suppression(
        "CKV_AWS_115",
        "AWS::Lambda::Function",
        "concurrency is bounded by the run lock (one execution at a time) and each Map's "
        "MaxConcurrency; a reservation would take capacity from the account's pool",
    ),
    Suppression(
        "CKV_AWS_117",
        "AWS::Lambda::Function",
        "the functions that reach the RDS source, and those that parse landing files (behind "
        "a security group letting HTTPS out to S3 and DynamoDB only), run in the VPC; the "
        "others read only what the pipeline wrote and call AWS APIs (S3, DynamoDB, Step "
        "Functions' payloads, the Redshift Data API)",
    ),
    Suppression(
        "CKV_AWS_173",
        "AWS::Lambda::Function",
        "the environment holds names and ARNs only (secrets are read from Secrets Manager at "
        "run time), encrypted at rest with Lambda's own key",
    ),
    Suppression(
        "CKV_AWS_158",
        "AWS::Logs::LogGroup",
        "the logs carry ids and counts, never personal data or secrets (a canary test checks "
        "the password never reaches them); CloudWatch Logs encrypts them at rest",
    ),
    Suppression(
        "CKV_AWS_111",
        "AWS::IAM::Policy",
        "the network-interface actions Lambda needs to run in the VPC (ec2:CreateNetworkInterface"
        ", DeleteNetworkInterface...) accept no narrower resource",
        (
            "FunctionsCheckSourceRole",
            "FunctionsExtractRdsRole",
            "FunctionsIngestFileRole",
            "FunctionsReplayQuarantineRole",
        ),
    ),
    Suppression(
        "CKV_AWS_18",
        "AWS::S3::Bucket",
        "the access-log bucket itself: logging its own access would log forever",
        ("StorageAccessLogsBucket",),
    ),
    Suppression(
        "CKV_AWS_27",
        "AWS::SQS::Queue",
        "encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which this check "
        "does not recognise: it looks for a KMS key only. A KMS key would need EventBridge and "
        "Lambda in its key policy for a queue that holds alert events only",
        ("AlertsDeadLetterQueue",),
    ),
    Suppression(
        "CKV_AWS_119",
        "AWS::DynamoDB::Table",
        "the lock table holds one item (the holder's execution and a counter), encrypted at "
        "rest with DynamoDB's own key",
        ("StorageLockTable",),
    ),
)


@jsii.implements(IAspect)
class CheckovSuppressions:
    """Adds each :data:`SUPPRESSIONS` entry to the resources it concerns."""

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, CfnResource):
            return
        logical_id = node.stack.resolve(node.logical_id)
        skips = [
            {"id": s.check, "comment": s.reason}
            for s in SUPPRESSIONS
            if s.resource_type == node.cfn_resource_type
            and (not s.logical_ids or logical_id.startswith(s.logical_ids))
        ]
        if skips:
            node.add_metadata("checkov", {"skip": skips})
