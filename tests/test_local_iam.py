"""The local IAM check: calls are allowed or denied as AWS would, by the caller's policy."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from local_runner.iam import IamCheck, Permission, Principal, allowed, enforced

BUCKET = "data-bucket"
READER_KEY = "LOCALREADER"
STATEMENTS = (
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/kpis/*"},
    {
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{BUCKET}",
        "Condition": {"StringLike": {"s3:prefix": ["kpis/*"]}},
    },
    {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{BUCKET}/runs/*"},
    {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/runs/x*"},
)


@pytest.fixture
def s3():
    check = IamCheck({READER_KEY: Principal("Reader", STATEMENTS)}, "us-east-1", "123456789012")
    with mock_aws(), enforced(check):
        admin = boto3.client("s3", region_name="us-east-1")
        admin.create_bucket(Bucket=BUCKET)
        admin.put_object(Bucket=BUCKET, Key="kpis/run_id=1/part-0.parquet", Body=b"kpis")
        admin.put_object(Bucket=BUCKET, Key="ledger/files/a.json", Body=b"{}")
        reader = boto3.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id=READER_KEY,
            aws_secret_access_key="local",
        )
        yield reader, check


def denied(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    return caught.value.response["Error"]["Message"]


def test_allowed_calls_go_through_and_are_counted(s3):
    reader, check = s3
    assert reader.get_object(Bucket=BUCKET, Key="kpis/run_id=1/part-0.parquet")["Body"].read()
    listed = reader.list_objects_v2(Bucket=BUCKET, Prefix="kpis/run_id=1/")
    assert listed["KeyCount"] == 1
    assert ("Reader", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/kpis/run_id=1/part-0.parquet") in (
        check.verified
    )
    assert check.violations == []


def test_a_call_outside_the_policy_is_denied_naming_principal_action_and_resource(s3):
    reader, check = s3
    message = denied(lambda: reader.get_object(Bucket=BUCKET, Key="ledger/files/a.json"))
    assert "Reader is not allowed s3:GetObject" in message
    assert f"arn:aws:s3:::{BUCKET}/ledger/files/a.json" in message
    assert [(v.principal, v.action) for v in check.violations] == [("Reader", "s3:GetObject")]


def test_listing_is_allowed_only_under_the_condition_prefix(s3):
    reader, _ = s3
    denied(lambda: reader.list_objects_v2(Bucket=BUCKET, Prefix="ledger/"))
    denied(lambda: reader.list_objects_v2(Bucket=BUCKET))  # no prefix: the condition fails


def test_an_explicit_deny_wins_over_an_allow(s3):
    reader, _ = s3
    reader.put_object(Bucket=BUCKET, Key="runs/ok.json", Body=b"{}")
    denied(lambda: reader.put_object(Bucket=BUCKET, Key="runs/x.json", Body=b"{}"))


def test_a_missing_key_read_without_list_rights_is_403_not_404():
    statements = (
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"},
    )
    check = IamCheck({READER_KEY: Principal("Reader", statements)}, "us-east-1", "123456789012")
    with mock_aws(), enforced(check):
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        reader = boto3.client(
            "s3", region_name="us-east-1", aws_access_key_id=READER_KEY, aws_secret_access_key="x"
        )
        message = denied(lambda: reader.get_object(Bucket=BUCKET, Key="missing.json"))
    assert "without s3:ListBucket" in message


def test_callers_without_a_principal_are_not_checked(s3):
    _, check = s3
    admin = boto3.client("s3", region_name="us-east-1")
    admin.get_object(Bucket=BUCKET, Key="ledger/files/a.json")
    assert check.violations == []


def test_an_unknown_operation_is_refused_rather_than_let_through(s3):
    reader, _ = s3
    message = denied(lambda: reader.get_bucket_tagging(Bucket=BUCKET))
    assert "does not know which permission s3:GetBucketTagging needs" in message


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        (
            "arn:aws:secretsmanager:r:1:secret:name-??????",
            "arn:aws:secretsmanager:r:1:secret:name-AbCdEf",
            True,
        ),
        (
            "arn:aws:secretsmanager:r:1:secret:name-??????",
            "arn:aws:secretsmanager:r:1:secret:name-AbCdE",
            False,
        ),
        (
            "arn:aws:secretsmanager:r:1:secret:name",
            "arn:aws:secretsmanager:r:1:secret:name-AbCdEf",
            False,
        ),
        ("arn:aws:lambda:r:1:function:f:*", "arn:aws:lambda:r:1:function:f", False),
        ("arn:aws:lambda:r:1:function:f", "arn:aws:lambda:r:1:function:f", True),
    ],
)
def test_resources_match_with_iam_wildcards(pattern, resource, expected):
    statements = ({"Effect": "Allow", "Action": "x:Do", "Resource": pattern},)
    assert allowed(statements, Permission("x:Do", resource)) is expected


# --- KMS through the service that uses the key ------------------------------------------------

KEY = "arn:aws:kms:us-east-1:123456789012:key/alerts"
PUBLISH_VIA = {
    "Effect": "Allow",
    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
    "Resource": KEY,
    "Condition": {"StringEquals": {"kms:ViaService": "sns.us-east-1.amazonaws.com"}},
}


@pytest.mark.parametrize(
    ("key_statement", "allowed_to_publish"),
    [
        (PUBLISH_VIA, True),
        (None, False),  # sns:Publish alone: SNS cannot encrypt the message for the caller
        (
            PUBLISH_VIA
            | {"Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}},
            False,
        ),
    ],
    ids=["key-via-sns", "no-key", "key-via-s3-only"],
)
def test_publishing_to_an_encrypted_topic_needs_its_key_through_sns(
    key_statement, allowed_to_publish
):
    with mock_aws():
        admin = boto3.client("sns", region_name="us-east-1")
        topic = admin.create_topic(Name="alerts")["TopicArn"]
        statements = [{"Effect": "Allow", "Action": "sns:Publish", "Resource": topic}]
        if key_statement:
            statements.append(key_statement)
        check = IamCheck(
            {"LOCALPUBLISHER": Principal("Publisher", tuple(statements))},
            "us-east-1",
            "123456789012",
            topic_keys={topic: KEY},
        )
        publisher = boto3.client(
            "sns",
            region_name="us-east-1",
            aws_access_key_id="LOCALPUBLISHER",
            aws_secret_access_key="local",
        )
        with enforced(check):
            if allowed_to_publish:
                publisher.publish(TopicArn=topic, Message="run failed")
            else:
                assert "Publisher is not allowed kms:" in denied(
                    lambda: publisher.publish(TopicArn=topic, Message="run failed")
                )


def test_an_s3_key_grant_limited_to_sns_does_not_serve_s3():
    statements = (
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"},
        PUBLISH_VIA,
    )
    check = IamCheck(
        {"LOCALREADER": Principal("Reader", statements)},
        "us-east-1",
        "123456789012",
        bucket_keys={BUCKET: KEY},
    )
    with mock_aws(), enforced(check):
        admin = boto3.client("s3", region_name="us-east-1")
        admin.create_bucket(Bucket=BUCKET)
        admin.put_object(Bucket=BUCKET, Key="a.json", Body=b"{}")
        reader = boto3.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id="LOCALREADER",
            aws_secret_access_key="local",
        )
        assert "Reader is not allowed kms:Decrypt" in denied(
            lambda: reader.get_object(Bucket=BUCKET, Key="a.json")
        )


def test_condition_keys_are_matched_whatever_their_case():
    """IAM compares condition key names case-insensitively: a grant spelled
    kms:viaservice still holds only through that service."""
    lower = PUBLISH_VIA | {
        "Condition": {"StringEquals": {"kms:viaservice": "s3.us-east-1.amazonaws.com"}}
    }
    via_sns = Permission("kms:Decrypt", KEY, (("kms:ViaService", "sns.us-east-1.amazonaws.com"),))
    via_s3 = Permission("kms:Decrypt", KEY, (("kms:ViaService", "s3.us-east-1.amazonaws.com"),))
    assert not allowed((lower,), via_sns)
    assert allowed((lower,), via_s3)
