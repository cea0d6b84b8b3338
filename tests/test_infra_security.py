"""Least privilege as synthesized: each role's exact grants, the buckets, the environments.

Policies are compared as sets of grants ``(action, resource, condition)``, with tokens
written the way cdk-nag prints them (``<Logical.Arn>``, ``<AWS::Partition>``), so the CDK's
merging of statements (``@aws-cdk/aws-iam:minimizePolicies``) does not matter but any
added, widened or missing permission does.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.stack import PipelineStack
from infra.steps import ALL_STEPS, Step
from kpi_pipeline import settings as step_settings
from kpi_pipeline.warehouse.kpi_sql import INPUT_TABLES
from tests.cdk_apps import CDK_CONTEXT, context_for, synth, template_of

pytestmark = pytest.mark.cdk

Grant = tuple[str, str, str]  # action, resource, condition (JSON, "" if none)

PROD: dict[str, Any] = CDK_CONTEXT["environments"]["prod"]
STEP = {step.key: step for step in ALL_STEPS}
PROD_SECRET = PROD["source"]["secret"]
PROD_LANDING = f"arn:<AWS::Partition>:s3:::{PROD['landing']['bucket_name']}"
PROD_PREFIX = PROD["landing"]["prefix"]
READ = ("s3:GetObject",)
WRITE = ("s3:AbortMultipartUpload", "s3:PutObject")
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",  # AWSLambdaVPCAccessExecutionRole's since 2024
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
SETTINGS_MODELS = {
    "storage": step_settings.StorageSettings,
    "source": step_settings.SourceSettings,
    "ingest": step_settings.IngestSettings,
    "engine": step_settings.EngineSettings,
    "warehouse": step_settings.WarehouseSettings,
    "transform_engine": step_settings.TransformEngineSettings,
    "requests": step_settings.RequestSettings,
    "lock": step_settings.LockSettings,
    "alerts": step_settings.AlertSettings,
}
EVERY_FUNCTION_ENV = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "PIPELINE_ENV",
    "PIPELINE_STEP",
    "EPHEMERAL_STORAGE_MB",  # Lambda does not tell a function its /tmp size
}


# --- helpers -------------------------------------------------------------------------------
def text(value: Any) -> str:
    """A CloudFormation value as cdk-nag prints it."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return f"<{logical_id}.{attribute}>"
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(text(part) for part in parts)
    if "Fn::Select" in value:  # as cdk-nag prints any other intrinsic: its JSON
        return json.dumps(value, separators=(",", ":"))
    raise AssertionError(f"unexpected token {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def logical_id(stack: PipelineStack, construct: Any) -> str:
    return stack.get_logical_id(construct.node.default_child)


def policies_of(template: Template, role_ref: Any) -> dict[str, Any]:
    return template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([role_ref])}}
    )


def statements_of(template: Template, role_ref: Any) -> list[dict[str, Any]]:
    return [
        statement
        for policy in policies_of(template, role_ref).values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def grants(statements: list[dict[str, Any]]) -> set[Grant]:
    out = set()
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        condition = (
            json.dumps(statement["Condition"], sort_keys=True) if "Condition" in statement else ""
        )
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                out.add((action, text(resource), condition))
    return out


def allow(actions: tuple[str, ...], *resources: str, condition: dict[str, Any] | None = None):
    cond = json.dumps(condition, sort_keys=True) if condition else ""
    return {(action, resource, cond) for action in actions for resource in resources}


def role_grants(env_name: str, step: Step) -> set[Grant]:
    stack, template = template_of(env_name)
    role = stack.functions.roles[step.key]
    return grants(statements_of(template, {"Ref": logical_id(stack, role)}))


def function_properties(env_name: str, step: Step) -> dict[str, Any]:
    return function_properties_of(*template_of(env_name), step)


def function_properties_of(stack: PipelineStack, template: Template, step: Step) -> dict[str, Any]:
    resources = template.to_json()["Resources"]
    return resources[logical_id(stack, stack.functions.functions[step.key])]["Properties"]


def expected_prod_grants(stack: PipelineStack, step: Step) -> set[Grant]:
    data = f"<{logical_id(stack, stack.storage.data_bucket)}.Arn>"
    log_group = f"<{logical_id(stack, stack.functions.functions[step.key].log_group)}.Arn>"

    def objects(actions, bucket, *prefixes):
        return allow(actions, *(f"{bucket}/{prefix}*" for prefix in prefixes))

    landing_list = allow(("s3:ListBucket",), PROD_LANDING)
    data_list = allow(("s3:ListBucket",), data)
    base = allow(("logs:CreateLogStream", "logs:PutLogEvents"), log_group) | allow(
        ("xray:PutTelemetryRecords", "xray:PutTraceSegments"), "*"
    )
    secret = allow(("secretsmanager:GetSecretValue",), PROD_SECRET)
    region_account = f"{PROD['region']}:{PROD['account']}"
    cluster = PROD["warehouse"]["cluster_id"]
    redshift = f"arn:<AWS::Partition>:redshift:{region_account}"
    # Load's batch and the warehouse engine's: on the cluster, as its database user.
    data_api = (
        allow(("redshift-data:BatchExecuteStatement",), f"{redshift}:cluster:{cluster}")
        | allow(
            ("redshift-data:DescribeStatement", "redshift-data:CancelStatement"),
            "*",
            condition={
                "StringEquals": {"redshift-data:statement-owner-iam-userid": "${aws:userid}"}
            },
        )
        | allow(
            ("redshift:GetClusterCredentials",),
            f"{redshift}:dbuser:{cluster}/{PROD['warehouse']['db_user']}",
            f"{redshift}:dbname:{cluster}/{PROD['warehouse']['database']}",
        )
    )
    # the results of its own batches: the warehouse engine's figures, the preflight's checks
    results = allow(
        ("redshift-data:GetStatementResult",),
        "*",
        condition={"StringEquals": {"redshift-data:statement-owner-iam-userid": "${aws:userid}"}},
    )
    lock_table = f"<{logical_id(stack, stack.storage.lock_table)}.Arn>"
    lock = allow(("dynamodb:GetItem",), lock_table)  # is the lock still this execution's?
    by_step = {
        # the execution's input, and whether its name has records already (a name is
        # taken again 90 days after its execution closed)
        "check_request": allow(
            ("s3:ListBucket",),
            data,
            condition={
                "StringLike": {
                    "s3:prefix": ["runs/*", "catalogue/songs/run_id=*", "archive/run_id=*"]
                }
            },
        ),
        "check_source": secret,
        "extract_rds": secret
        | objects(WRITE, data, "snapshots/", "quarantine/source/")
        | objects(READ, data, "source/", "snapshots/")  # marks, and the increments' base
        | data_list,
        "list_files": allow(
            ("s3:ListBucket",),
            PROD_LANDING,
            condition={"StringLike": {"s3:prefix": [f"{PROD_PREFIX}*"]}},
        )
        | allow(
            ("s3:ListBucket",),
            data,
            condition={"StringLike": {"s3:prefix": ["ledger/pending/*"]}},
        )
        # issue 20, item 3: each step writes its own records of runs/, no other
        | objects(WRITE, data, "runs/*/manifest.json", "runs/*/manifest_files.json"),
        "ingest_file": lock
        | objects(READ, PROD_LANDING, PROD_PREFIX)
        | landing_list
        | objects(READ, data, "snapshots/", "ledger/", "catalogue/")
        | objects(WRITE, data, "curated/", "quarantine/rows/", "ledger/", "catalogue/")
        | objects(WRITE, data, "runs/*/ingest/")
        | data_list,
        # the quarantined rows, earlier replays, pins and today's snapshot; a new content;
        # a revalidation reads the curated plays, and moves those invalid now to quarantine
        "replay_quarantine": lock
        | objects(READ, data, "quarantine/rows/", "ledger/", "catalogue/", "snapshots/", "curated/")
        | objects(WRITE, data, "curated/", "ledger/", "catalogue/", "quarantine/rows/")
        | objects(WRITE, data, "runs/*/replay.json", "runs/*/revalidate.json")
        | data_list,
        "plan_transform": lock
        | objects(READ, data, "runs/", "ledger/", "snapshots/", "catalogue/")
        | objects(WRITE, data, "catalogue/")
        | objects(
            WRITE, data, "runs/*/load_plan.json", "runs/*/transform/", "runs/*/recompute.json"
        )
        | objects(("s3:DeleteObject",), data, "ledger/pending/")
        | data_list,
        "transform": objects(READ, data, "runs/", "curated/", "catalogue/")
        | objects(WRITE, data, "runs/*/transform/", "kpis/")
        | data_list,
        "transform_in_warehouse": objects(READ, data, "runs/", "catalogue/")
        | objects(WRITE, data, "runs/*/transform/")
        | data_list
        | data_api
        | results,
        "load": lock
        | objects(READ, data, "runs/", "ledger/", "kpis/")
        | objects(WRITE, data, "ledger/")
        | objects(("s3:DeleteObject",), data, "ledger/pending/")
        | data_list
        | data_api
        | results,
        "archive": lock
        | objects((*READ, "s3:DeleteObject"), PROD_LANDING, PROD_PREFIX)
        | landing_list
        | objects(READ, data, "runs/", "archive/", "quarantine/files/", "quarantine/attempts/")
        | objects(WRITE, data, "archive/", "quarantine/files/", "source/", "quarantine/attempts/")
        | objects(WRITE, data, "runs/*/summary.json", "runs/*/preflight.json")
        | data_list,
        # Alert: how an execution ended (its history and output), the executions since the
        # last success; one message to the encrypted topic; PagerDuty's events to the bus.
        # Never the data bucket, never the PagerDuty key.
        "alert": allow(("sns:Publish",), f"<{logical_id(stack, stack.alert_topic)}>")
        | allow(
            ("kms:Decrypt", "kms:GenerateDataKey"),
            f"<{logical_id(stack, stack.alert_key)}.Arn>",
            condition={"StringEquals": {"kms:ViaService": "sns.eu-west-1.amazonaws.com"}},
        )
        | allow(
            ("states:ListExecutions",),
            f"arn:<AWS::Partition>:states:{region_account}:stateMachine:music-kpi-prod",
        )
        | allow(
            ("states:DescribeExecution", "states:GetExecutionHistory"),
            f"arn:<AWS::Partition>:states:{region_account}:execution:music-kpi-prod:*",
        )
        | allow(
            ("events:PutEvents",),
            f"arn:<AWS::Partition>:events:{region_account}:event-bus/default",
        )
        # an event it failed on twice, kept in the alert dead-letter queue (CDK's
        # SqsDestination grants the queue's send actions)
        | allow(
            ("sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"),
            f"<{logical_id(stack, stack.alerts.dead_letters)}.Arn>",
        ),
    }
    return base | by_step[step.key]


@pytest.fixture(scope="module")
def prod():
    return template_of("prod")


STEP_IDS = [step.state for step in ALL_STEPS]


# --- IAM -----------------------------------------------------------------------------------
def test_no_policy_in_any_environment_grants_a_wildcard_action():
    for env_name in ("prod", "dev", "local"):
        _, template = template_of(env_name)
        policies = template.find_resources("AWS::IAM::Policy")
        assert policies
        wildcards = {
            (name, action)
            for name, policy in policies.items()
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            for action in as_list(statement.get("Action", []))
            if "*" in action
        }
        assert wildcards == set(), env_name
        assert not any(
            "NotAction" in statement
            for policy in policies.values()
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        )


@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_each_function_role_has_exactly_the_grants_its_step_needs(prod, step):
    stack, _ = prod
    # Network-interface rights are Lambda's VPC requirement, checked on their own below.
    actual = {grant for grant in role_grants("prod", step) if grant[0] not in ENI_ACTIONS}
    expected = expected_prod_grants(stack, step)
    assert sorted(actual - expected) == [], "granted but not needed"
    assert sorted(expected - actual) == [], "needed but not granted"


@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_each_function_has_its_own_lambda_role_without_managed_policies(prod, step):
    stack, template = prod
    role_id = logical_id(stack, stack.functions.roles[step.key])
    role = template.to_json()["Resources"][role_id]
    assert "ManagedPolicyArns" not in role["Properties"]
    assert "Policies" not in role["Properties"]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
        }
    ]
    assert function_properties("prod", step)["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}
    # Only the function's own default policy is attached to its role.
    assert len(policies_of(template, {"Ref": role_id})) == 1


def test_twelve_function_roles_one_per_step(prod):
    stack, template = prod
    assert len({logical_id(stack, role) for role in stack.functions.roles.values()}) == 12
    lambda_roles = template.find_resources(
        "AWS::IAM::Role",
        {
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Statement": [
                        Match.object_like({"Principal": {"Service": "lambda.amazonaws.com"}})
                    ]
                }
            }
        },
    )
    assert set(lambda_roles) == {logical_id(stack, role) for role in stack.functions.roles.values()}


def test_only_archive_deletes_landing_files_and_only_load_and_plan_pending_markers():
    deletes = {
        step.state: sorted(
            resource
            for action, resource, _ in role_grants("prod", step)
            if action == "s3:DeleteObject"
        )
        for step in ALL_STEPS
    }
    stack, _ = template_of("prod")
    pending = f"<{logical_id(stack, stack.storage.data_bucket)}.Arn>/ledger/pending/*"
    expected = {step.state: [] for step in ALL_STEPS}
    expected["Archive"] = [f"{PROD_LANDING}/{PROD_PREFIX}*"]
    expected["Load"] = [pending]
    expected["PlanTransform"] = [pending]  # markers no load can ever clear
    assert deletes == expected


def test_list_files_lists_only_the_landing_prefix_and_the_pending_markers():
    grants = {
        g[1]: json.loads(g[2])
        for g in role_grants("prod", STEP["list_files"])
        if g[0] == "s3:ListBucket"
    }
    assert grants[PROD_LANDING] == {"StringLike": {"s3:prefix": ["streams/*"]}}
    (data,) = set(grants) - {PROD_LANDING}
    assert grants[data] == {"StringLike": {"s3:prefix": ["ledger/pending/*"]}}


@pytest.mark.parametrize("env_name", ["prod", "dev"])
def test_only_the_source_steps_read_the_source_secret(env_name):
    secret = {
        "prod": PROD_SECRET,
        # Configured by name: Secrets Manager appends "-" and six random characters.
        "dev": "arn:<AWS::Partition>:secretsmanager:eu-west-1:111111111111:secret:"
        "music-kpi/dev/rds-??????",
    }[env_name]
    readers = {
        step.key: sorted(
            r for a, r, _ in role_grants(env_name, step) if a == "secretsmanager:GetSecretValue"
        )
        for step in ALL_STEPS
    }
    assert readers == {
        step.key: ([secret] if step.key in {"check_source", "extract_rds"} else [])
        for step in ALL_STEPS
    }


SECRET_BY_NAME = (
    "arn:<AWS::Partition>:secretsmanager:eu-west-1:222222222222:secret:music-kpi/prod/dw-??????"
)
PARTIAL_SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:music-kpi/prod/dw"


@pytest.mark.parametrize(
    ("configured", "granted"),
    [
        # A name went verbatim into the policy: CloudFormation refused it (MalformedPolicyDocument).
        ("music-kpi/prod/dw", SECRET_BY_NAME),
        # An ARN without the six-character suffix deployed, and was denied at run time.
        (PARTIAL_SECRET_ARN, f"{PARTIAL_SECRET_ARN}-??????"),
        (f"{PARTIAL_SECRET_ARN}-AbCdEf", f"{PARTIAL_SECRET_ARN}-AbCdEf"),
    ],
    ids=["name", "partial-arn", "full-arn"],
)
def test_the_warehouse_secret_is_granted_by_the_arn_iam_sees(configured, granted):
    warehouse = {**PROD["warehouse"], "secret_arn": configured}
    warehouse.pop("db_user")
    stack, template = synth(context_for("prod", warehouse=warehouse))
    load_role = {"Ref": logical_id(stack, stack.functions.roles["load"])}
    readers = {r for a, r, _ in grants(statements_of(template, load_role)) if a.startswith("secr")}
    assert readers == {granted}
    environment = function_properties_of(stack, template, STEP["load"])["Environment"]
    assert environment["Variables"]["REDSHIFT_SECRET_ARN"] == configured  # the Data API takes both


def test_the_source_steps_run_in_the_configured_network_the_parsers_behind_their_own_group(prod):
    network = PROD["network"]
    _, template = prod
    (parsers_group,) = template.find_resources("AWS::EC2::SecurityGroup")
    for step in ALL_STEPS:
        properties = function_properties("prod", step)
        if step.in_vpc:
            assert properties["VpcConfig"] == {
                "SecurityGroupIds": network["security_group_ids"],
                "SubnetIds": network["private_subnet_ids"],
            }, step.state
        elif step.egress:
            assert properties["VpcConfig"] == {
                "SecurityGroupIds": [{"Fn::GetAtt": [parsers_group, "GroupId"]}],
                "SubnetIds": network["private_subnet_ids"],
            }, step.state
        else:
            assert "VpcConfig" not in properties, step.state
    assert {step.key for step in ALL_STEPS if step.in_vpc} == {"check_source", "extract_rds"}
    # The two steps that parse what anyone may drop in the landing bucket.
    assert {step.key for step in ALL_STEPS if step.egress} == {"ingest_file", "replay_quarantine"}


def test_the_parsers_may_reach_s3_and_dynamodb_over_https_and_nothing_else(prod):
    _, template = prod
    ((_, group),) = template.find_resources("AWS::EC2::SecurityGroup").items()
    properties = group["Properties"]
    assert properties["VpcId"] == PROD["network"]["vpc_id"]
    assert "SecurityGroupIngress" not in properties
    egress = sorted(
        (rule["IpProtocol"], rule["FromPort"], rule["ToPort"], rule["DestinationPrefixListId"])
        for rule in properties["SecurityGroupEgress"]
    )
    assert egress == sorted(
        [
            ("tcp", 443, 443, PROD["network"]["s3_prefix_list_id"]),
            ("tcp", 443, 443, PROD["network"]["dynamodb_prefix_list_id"]),
        ]
    )
    assert not template.find_resources("AWS::EC2::SecurityGroupEgress")
    assert not template.find_resources("AWS::EC2::SecurityGroupIngress")


@pytest.mark.parametrize(
    "step", [s for s in ALL_STEPS if s.in_vpc or s.egress], ids=lambda s: s.state
)
def test_functions_in_the_vpc_may_manage_their_network_interfaces(step):
    eni = {
        (action, resource)
        for action, resource, _ in role_grants("prod", step)
        if action in ENI_ACTIONS
    }
    assert eni == {(action, "*") for action in ENI_ACTIONS}


def test_no_function_outside_the_vpc_gets_network_interface_rights():
    for step in ALL_STEPS:
        if not (step.in_vpc or step.egress):
            assert not {g for g in role_grants("prod", step) if g[0].startswith("ec2:")}, step.state


def test_load_uses_a_serverless_workgroup_in_dev():
    redshift = {
        g
        for g in role_grants("dev", STEP["load"])
        if g[0].startswith(("redshift", "secretsmanager"))
    }
    # the one workgroup, by the id its ARN ends with: not every workgroup of the account
    workgroups = (
        "arn:<AWS::Partition>:redshift-serverless:eu-west-1:111111111111:"
        "workgroup/0b6f2b6e-8f3a-4d3c-9c1e-2a5d7e9f1c3b"
    )
    assert redshift == allow(
        ("redshift-data:BatchExecuteStatement", "redshift-serverless:GetCredentials"), workgroups
    ) | allow(
        (
            "redshift-data:DescribeStatement",
            "redshift-data:CancelStatement",
            "redshift-data:GetStatementResult",
        ),
        "*",
        condition={"StringEquals": {"redshift-data:statement-owner-iam-userid": "${aws:userid}"}},
    )


@pytest.mark.parametrize("env_name", ["prod", "dev", "local"])
def test_the_redshift_copy_role_may_list_the_kpi_prefix_and_read_what_copy_reads(env_name):
    """COPY FROM 's3://bucket/kpis/...' treats the path as a key prefix: Redshift lists it,
    then reads each object. With s3:GetObject alone every Load in AWS failed (Access Denied).
    The warehouse engine's COPY ... MANIFEST reads its manifest, then each object listed: a
    date's curated plays and its pinned catalogue. prod names an existing role; dev and local
    have the stack's (the local run holds COPY to its grants)."""
    stack, template = template_of(env_name)
    copy_role = stack.functions.copy_role
    if stack.config.warehouse.copy_role_arn:
        role_ref: Any = stack.config.warehouse.copy_role_arn.rsplit("/", 1)[1]
    else:
        role_ref = {"Ref": logical_id(stack, copy_role)}
    data = f"<{logical_id(stack, stack.storage.data_bucket)}.Arn>"
    read = ("kpis/", "curated/", "catalogue/", "runs/*/transform/")
    assert grants(statements_of(template, role_ref)) == allow(
        ("s3:GetObject",), *(f"{data}/{prefix}*" for prefix in read)
    ) | allow(("s3:ListBucket",), data, condition={"StringLike": {"s3:prefix": ["kpis/*"]}})


def test_the_stacks_copy_role_trusts_redshift_for_the_pipelines_users_only():
    """Issue 18, item 5: the COPY role lived outside the stack, its trust unknown. dev's is
    the stack's: Redshift (and Redshift Serverless) may assume it, for the pipeline's two
    database users only (sts:ExternalId, as Redshift documents restricting a role)."""
    stack, template = template_of("dev")
    role = template.find_resources(
        "AWS::IAM::Role", {"Properties": {"RoleName": "music-kpi-dev-redshift-copy"}}
    )
    ((_, resource),) = role.items()
    users = [
        f"arn:aws:redshift:eu-west-1:111111111111:dbuser:serverless-111111111111-0b6f2b6e-8f3a-4d3c-9c1e-2a5d7e9f1c3b/IAMR:{name}"
        for name in ("music-kpi-dev-transform-in-warehouse", "music-kpi-dev-load")
    ]
    statements = resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert {service for s in statements for service in as_list(s["Principal"]["Service"])} == {
        "redshift.amazonaws.com",
        "redshift-serverless.amazonaws.com",
    }
    for statement in statements:
        assert statement["Action"] == "sts:AssumeRole"
        assert statement["Condition"] == {"StringLike": {"sts:ExternalId": users}}
    load = function_properties_of(stack, template, STEP["load"])
    assert load["Environment"]["Variables"]["REDSHIFT_COPY_ROLE_ARN"] == {
        "Fn::GetAtt": [logical_id(stack, stack.functions.copy_role), "Arn"]
    }


def test_a_secret_under_a_customer_key_may_be_decrypted_through_secrets_manager_only():
    """Issue 18, item 4: a warehouse (or source) secret encrypted with a customer-managed key
    needs kms:Decrypt on that key, or every call fails."""
    key = "arn:aws:kms:eu-west-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    warehouse = {**PROD["warehouse"], "secret_arn": "music-kpi/prod/dw", "secret_kms_key_arn": key}
    warehouse.pop("db_user")
    source = {**PROD["source"], "secret_kms_key_arn": key}
    stack, template = synth(context_for("prod", warehouse=warehouse, source=source))
    via = {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}}
    for step in ("load", "transform_in_warehouse", "extract_rds", "check_source"):
        role = {"Ref": logical_id(stack, stack.functions.roles[step])}
        assert allow(("kms:Decrypt",), key, condition=via) <= grants(
            statements_of(template, role)
        ), step
    archive = {"Ref": logical_id(stack, stack.functions.roles["archive"])}
    assert not {g for g in grants(statements_of(template, archive)) if g[1] == key}


def test_the_local_environment_grants_no_redshift_rights():
    stack, template = template_of("local")
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert not any(a.startswith("redshift") for a in as_list(statement["Action"]))
    assert stack.config.warehouse.kind == "postgres"


def test_the_state_machine_role_holds_the_lock_invokes_and_records_failures(prod):
    stack, template = prod
    role_id = logical_id(stack, stack.state_machine.role)
    actual = grants(statements_of(template, {"Ref": role_id}))
    functions = [f"<{logical_id(stack, fn)}.Arn>" for fn in stack.functions.functions.values()]
    executions = "arn:<AWS::Partition>:states:eu-west-1:222222222222:execution:music-kpi-prod:*"
    data = f"<{logical_id(stack, stack.storage.data_bucket)}.Arn>"
    machine_id = logical_id(stack, stack.state_machine)
    machine_name = json.dumps(
        {"Fn::Select": [6, {"Fn::Split": [":", {"Ref": machine_id}]}]}, separators=(",", ":")
    )
    own_executions = f"arn:<AWS::Partition>:states:eu-west-1:222222222222:execution:{machine_name}"
    table = "arn:<AWS::Partition>:dynamodb:eu-west-1:222222222222:table/" + (
        f"<{logical_id(stack, stack.storage.lock_table)}>"
    )
    metrics = (
        "cloudwatch:PutMetricData",
        "*",
        '{"StringEquals": {"cloudwatch:namespace": "MusicKpiPipeline"}}',
    )
    assert metrics in actual  # how each run ended: only into the pipeline's namespace
    service_wide = {g for g in actual if g[1] == "*"} - {metrics}
    assert {g[0] for g in service_wide} <= {
        "logs:CreateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:DescribeLogGroups",
        "logs:DescribeResourcePolicies",
        "logs:GetLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:UpdateLogDelivery",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    }
    assert actual - service_wide - {metrics} == (
        allow(("dynamodb:UpdateItem", "dynamodb:GetItem"), table)  # take, read, release
        | allow(("states:DescribeExecution",), executions)  # is the lock's holder running?
        # no sns:Publish: the alert function tells of every end (the preflight invokes it)
        | allow(("lambda:InvokeFunction",), *functions, *(f"{fn}:*" for fn in functions))
        # the Map's Catch writes a failed file's result where IngestFile writes it
        | allow(("s3:PutObject",), f"{data}/runs/*/ingest/*")
        # every end of a run keeps its outcome document
        | allow(("s3:PutObject",), f"{data}/runs/outcomes/*")
        # the Distributed Maps read the run's file and date lists, write their result
        # manifests under their own prefixes (CDK would grant the whole bucket), and run
        # their child executions
        | allow(("s3:GetObject",), f"{data}/runs/*")
        | allow(
            (
                "s3:PutObject",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:AbortMultipartUpload",
            ),
            f"{data}/runs/ingest-map-results/*",
            f"{data}/runs/transform-map-results/*",
        )
        | allow(("states:StartExecution",), f"<{machine_id}>")
        | allow(("states:DescribeExecution", "states:StopExecution"), f"{own_executions}:*")
        | allow(("states:RedriveExecution",), f"{own_executions}/*:*")  # redrive a map run
    )
    assert len(functions) == 12
    # The name the executions' ARN is built from is the state machine's real name.
    machine_resource = template.to_json()["Resources"][logical_id(stack, stack.state_machine)]
    assert machine_resource["Properties"]["StateMachineName"] == "music-kpi-prod"


# --- buckets -------------------------------------------------------------------------------
@pytest.mark.parametrize("env_name", ["prod", "local"])
def test_every_bucket_is_private_encrypted_versioned_and_tls_only(env_name):
    _, template = template_of(env_name)
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == (2 if env_name == "prod" else 3)  # local creates its landing bucket
    for name, bucket in buckets.items():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]["SSEAlgorithm"] in {"AES256", "aws:kms"}, name
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert bucket["DeletionPolicy"] == "Retain", name
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": name},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Principal": {"AWS": "*"},
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_data_and_created_landing_buckets_log_access_to_the_access_log_bucket():
    stack, template = template_of("local")
    logs = logical_id(stack, stack.storage.access_logs)
    resources = template.to_json()["Resources"]
    for bucket, prefix in (
        (stack.storage.data_bucket, "DataBucket/"),
        (stack.storage.landing_bucket, "LandingBucket/"),
    ):
        assert resources[logical_id(stack, bucket)]["Properties"]["LoggingConfiguration"] == {
            "DestinationBucketName": {"Ref": logs},
            "LogFilePrefix": prefix,
        }
    assert "LoggingConfiguration" not in resources[logs]["Properties"]


@pytest.mark.parametrize("env_name", ["prod", "local"])  # local: the stack creates landing
def test_every_versioned_bucket_removes_the_delete_markers_left_alone(env_name):
    """Load deletes pending markers and Archive deletes landing files: in a versioned bucket
    each leaves a delete marker that, once its versions expire, nothing ever removed."""
    _, template = template_of(env_name)
    for name, bucket in template.find_resources("AWS::S3::Bucket").items():
        rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        assert any(r.get("ExpiredObjectDeleteMarker") is True for r in rules), name
        assert any("NoncurrentVersionExpiration" in r for r in rules), name


def test_the_data_bucket_moves_archive_to_cheaper_storage_and_expires_bookkeeping(prod):
    stack, template = prod
    bucket = template.to_json()["Resources"][logical_id(stack, stack.storage.data_bucket)]
    rules = {
        rule.get("Prefix", rule["Id"]): rule
        for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    assert all(rule["Status"] == "Enabled" for rule in rules.values())
    archive = rules["archive/"]
    assert [t["StorageClass"] for t in archive["Transitions"]] == ["STANDARD_IA", "GLACIER_IR"]
    days = [t["TransitionInDays"] for t in archive["Transitions"]]
    assert days == sorted(days)
    assert "ExpirationInDays" not in archive  # archived stream files are kept
    for prefix in ("snapshots/", "runs/", "kpis/"):
        assert rules[prefix]["ExpirationInDays"] > 0, prefix
    for prefix in ("curated/", "ledger/"):
        assert prefix not in rules  # the history KPIs are recomputed from
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0


# --- function environments ----------------------------------------------------------------
@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_each_function_is_sized_as_configured_and_knows_its_tmp_size(step):
    stack, _ = template_of("prod")
    sizing = stack.config.function(step.key)
    properties = function_properties("prod", step)
    assert properties["MemorySize"] == sizing.memory_mb
    assert properties["Timeout"] == sizing.timeout_seconds
    assert properties["EphemeralStorage"] == {"Size": sizing.ephemeral_storage_mb}
    variables = properties["Environment"]["Variables"]
    assert variables["EPHEMERAL_STORAGE_MB"] == str(sizing.ephemeral_storage_mb)
    assert variables["PIPELINE_STEP"] == step.key


@pytest.mark.parametrize("env_name", ["prod", "dev", "local"])
def test_no_function_environment_carries_a_password(env_name):
    _, template = template_of(env_name)
    for name, function in template.find_resources("AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        for key, value in variables.items():
            assert "password" not in key.lower(), (name, key)
            assert "password" not in json.dumps(value).lower(), (name, key)
        assert "WAREHOUSE_DSN" not in variables, name


@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_each_function_environment_carries_only_its_settings_groups(step):
    variables = function_properties("prod", step)["Environment"]["Variables"]
    own = {name.upper() for group in step.settings for name in SETTINGS_MODELS[group].model_fields}
    others = (
        {
            name.upper()
            for group, model in SETTINGS_MODELS.items()
            if group not in step.settings
            for name in model.model_fields
        }
        - own
        - EVERY_FUNCTION_ENV
    )
    assert set(variables) - EVERY_FUNCTION_ENV <= own
    assert not set(variables) & others
    assert set(variables) >= EVERY_FUNCTION_ENV
    assert variables["PIPELINE_ENV"] == "prod"


def test_archive_has_neither_source_nor_warehouse_settings():
    variables = function_properties("prod", STEP["archive"])["Environment"]["Variables"]
    assert not [v for v in variables if v.startswith(("SOURCE_", "WAREHOUSE_", "REDSHIFT_"))]
    assert {"DATA_BUCKET", "LANDING_BUCKET", "LANDING_PREFIX"} <= set(variables)


# --- KMS and a landing bucket of another account ---------------------------------------------
LANDING_KEY = "arn:aws:kms:eu-west-1:333333333333:key/0d6f4c1e-1111-2222-3333-444455556666"
VIA_S3 = {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}


@pytest.fixture(scope="module")
def with_kms():
    landing = {**PROD["landing"], "kms_key_arn": LANDING_KEY, "owner_account": "333333333333"}
    return synth(context_for("prod", landing=landing, data_bucket={"encryption": "kms"}))


def kms_grants(stack: PipelineStack, template: Template, role: Any) -> set[Grant]:
    ref = role if isinstance(role, str) else {"Ref": logical_id(stack, role)}
    return {g for g in grants(statements_of(template, ref)) if g[0].startswith("kms:")}


def test_a_kms_encrypted_landing_bucket_can_be_read_and_archived(with_kms):
    """Landing files under a customer-managed key: IngestFile's GetObject was denied (no
    kms:Decrypt), every file failed, every run failed."""
    stack, template = with_kms
    roles = stack.functions.roles
    data_key = f"<{logical_id(stack, stack.storage.data_key)}.Arn>"
    ingest = kms_grants(stack, template, roles["ingest_file"])
    assert allow(("kms:Decrypt",), LANDING_KEY, condition=VIA_S3) <= ingest
    archive = kms_grants(stack, template, roles["archive"])
    assert allow(("kms:Decrypt",), LANDING_KEY, condition=VIA_S3) <= archive  # the source
    assert allow(("kms:GenerateDataKey",), data_key, condition=VIA_S3) <= archive  # the copy
    for step in ("list_files", "check_source", "load"):  # none reads a landing object
        assert not {g for g in kms_grants(stack, template, roles[step]) if g[1] == LANDING_KEY}


def test_a_kms_encrypted_data_bucket_is_usable_by_every_reader_writer_and_the_copy_role(with_kms):
    stack, template = with_kms
    data_key = f"<{logical_id(stack, stack.storage.data_key)}.Arn>"
    bucket = template.to_json()["Resources"][logical_id(stack, stack.storage.data_bucket)]
    (rule,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["BucketKeyEnabled"] is True  # one KMS call per object, not per request
    for step in ALL_STEPS:
        found = {
            g
            for g in kms_grants(stack, template, stack.functions.roles[step.key])
            if g[1] == data_key
        }
        if step.key in ("check_source", "check_request", "alert"):  # no object read or written
            assert not found, step.state
            continue
        # issue 20, item 8: only through S3, never a direct Decrypt of another ciphertext
        assert found == allow(("kms:Decrypt", "kms:GenerateDataKey"), data_key, condition=VIA_S3), (
            step.state
        )
    configured = stack.config.warehouse.copy_role_arn
    copy_role = configured.rsplit("/", 1)[1] if configured else stack.functions.copy_role
    assert allow(("kms:Decrypt",), data_key, condition=VIA_S3) <= kms_grants(
        stack, template, copy_role
    )
    machine = kms_grants(stack, template, stack.state_machine.role)
    assert allow(("kms:Decrypt", "kms:GenerateDataKey"), data_key, condition=VIA_S3) <= machine


def test_roles_have_stable_names_that_a_bucket_owner_can_grant(with_kms):
    stack, template = with_kms
    for step in ALL_STEPS:
        role = template.to_json()["Resources"][logical_id(stack, stack.functions.roles[step.key])]
        assert role["Properties"]["RoleName"] == f"music-kpi-prod-{step.key.replace('_', '-')}"


# --- the Redshift Data API: what each step calls, granted -----------------------------------


def data_api_calls(operation: Any) -> set[str]:
    """The IAM actions of every Data API operation ``operation(adapter)`` makes, as the
    Redshift adapter makes them (answered by botocore's Stubber, recorded as sent)."""
    import boto3
    from botocore.stub import Stubber

    from kpi_pipeline.settings import WarehouseSettings
    from kpi_pipeline.warehouse.redshift import RedshiftDataApiWarehouse

    client = boto3.client("redshift-data", region_name="eu-west-1")
    called: set[str] = set()
    client.meta.events.register(
        "provide-client-params.redshift-data",
        lambda model, **_: called.add(f"redshift-data:{model.name}"),
    )
    settings = WarehouseSettings.from_env(
        {
            "WAREHOUSE_KIND": "redshift",
            "REDSHIFT_DATABASE": PROD["warehouse"]["database"],
            "REDSHIFT_CLUSTER_ID": PROD["warehouse"]["cluster_id"],
            "REDSHIFT_DB_USER": PROD["warehouse"]["db_user"],
            "REDSHIFT_COPY_ROLE_ARN": PROD["warehouse"]["copy_role_arn"],
        }
    )
    with Stubber(client) as stub:

        def answer(params: dict[str, Any], **_: Any) -> None:
            # Redshift ran the batch: one finished sub-statement per statement sent.
            sub = [
                {"Id": f"s:{n}", "Status": "FINISHED"} for n in range(1, len(params["Sqls"]) + 1)
            ]
            stub.add_response(
                "describe_statement", {"Id": "s", "Status": "FINISHED", "SubStatements": sub}
            )
            stub.add_response(
                "get_statement_result",
                {
                    "Records": [[{"longValue": 1}] * 5],
                    "ColumnMetadata": [{"name": n} for n in ("parts_rows", "b", "c", "d", "e")],
                    "TotalNumRows": 1,
                },
            )

        client.meta.events.register(
            "provide-client-params.redshift-data.BatchExecuteStatement", answer
        )
        stub.add_response(
            "batch_execute_statement", {"Id": "s", "CreatedAt": dt.datetime.now(dt.UTC)}
        )
        operation(RedshiftDataApiWarehouse(settings, client=client, sleep=lambda _: None))
    return called


def test_each_step_is_granted_every_data_api_call_its_adapter_makes(prod):
    """moto runs no Redshift and the local warehouse is PostgreSQL: no local run can find a
    Data API call the role lacks. GetStatementResult (the warehouse engine's figures) was
    one: every date computed in the warehouse would have failed with AccessDenied."""
    import datetime as dt

    from kpi_pipeline.warehouse import DateJob, KpiBatch

    day = dt.date(2024, 6, 25)
    job = DateJob(day, "run", "bucket", dict.fromkeys(INPUT_TABLES, "m"), "0a1b2c3d4e5f", "a" * 32)
    batch = KpiBatch("bucket", "kpis/", [day])
    values = {"temp": "has_database_privilege(current_database(), 'TEMP')"}
    for step_key, operation in (
        ("transform_in_warehouse", lambda a: a.compute_date(job)),
        ("transform_in_warehouse", lambda a: a.values(values)),  # the preflight's
        ("transform_in_warehouse", lambda a: a.preflight_compute(job)),
        ("load", lambda a: a.replace_dates(batch, dt.datetime.now(dt.UTC))),
        ("load", lambda a: a.values(values)),
        ("load", lambda a: a.preflight_copy_parts(batch)),
    ):
        granted = {action for action, _, _ in role_grants("prod", STEP[step_key])}
        called = data_api_calls(operation)
        assert called >= {"redshift-data:BatchExecuteStatement"}
        assert called <= granted, (step_key, sorted(called - granted))


def test_extract_rds_caps_duckdb_so_its_peak_stays_under_512_mb():
    """The snapshot spills to /tmp past the cap: memory does not grow with the tables."""
    variables = function_properties("prod", STEP["extract_rds"])["Environment"]["Variables"]
    engine = step_settings.EngineSettings.from_env(
        {**variables, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}
    )
    assert engine.memory_limit_mb == 256
    for step in ALL_STEPS:
        if step.key != "extract_rds":
            assert (
                "DUCKDB_MEMORY_LIMIT_MB"
                not in (function_properties("prod", step)["Environment"]["Variables"])
            )
