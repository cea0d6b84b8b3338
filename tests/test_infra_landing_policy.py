"""The statements a landing bucket's owner in another account adds, from the config."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from infra.config import PipelineConfig
from infra.landing_policy import landing_policies
from tests.cdk_apps import CDK_CONTEXT, REPO, context_for, synth

KEY = "arn:aws:kms:eu-west-1:333333333333:key/0d6f4c1e-1111-2222-3333-444455556666"


def prod(**landing: str) -> PipelineConfig:
    settings = copy.deepcopy(CDK_CONTEXT["environments"]["prod"])
    settings["landing"].update(landing)
    return PipelineConfig.model_validate({"name": "prod", **settings})


def test_the_bucket_owner_grants_each_role_what_the_stack_grants_it():
    policies = landing_policies(prod(kms_key_arn=KEY, owner_account="333333333333"))
    bucket = "arn:aws:s3:::acme-music-prod-landing"
    grants = {
        (
            s["Principal"]["AWS"].rsplit("/", 1)[1],
            action,
            s["Resource"],
            json.dumps(s.get("Condition")),
        )
        for s in policies["bucket_policy_statements"]
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    prefix = '{"StringLike": {"s3:prefix": ["streams/*"]}}'
    assert grants == {
        ("music-kpi-prod-list-files", "s3:ListBucket", bucket, prefix),
        ("music-kpi-prod-ingest-file", "s3:ListBucket", bucket, "null"),
        ("music-kpi-prod-ingest-file", "s3:GetObject", f"{bucket}/streams/*", "null"),
        ("music-kpi-prod-archive", "s3:ListBucket", bucket, "null"),
        ("music-kpi-prod-archive", "s3:GetObject", f"{bucket}/streams/*", "null"),
        ("music-kpi-prod-archive", "s3:DeleteObject", f"{bucket}/streams/*", "null"),
    }
    key = policies["key_policy_statement"]
    assert key["Action"] == "kms:Decrypt"
    assert sorted(key["Principal"]["AWS"]) == [
        "arn:aws:iam::222222222222:role/music-kpi-prod-archive",
        "arn:aws:iam::222222222222:role/music-kpi-prod-ingest-file",
    ]
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}


def test_the_roles_named_there_are_the_roles_the_stack_creates():
    stack, template = synth(
        context_for(
            "prod", landing={**CDK_CONTEXT["environments"]["prod"]["landing"], "kms_key_arn": KEY}
        )
    )
    named = {
        role["Properties"]["RoleName"]
        for role in template.find_resources("AWS::IAM::Role").values()
        if "RoleName" in role["Properties"]
    }
    policies = landing_policies(stack.config)
    for statement in policies["bucket_policy_statements"]:
        assert statement["Principal"]["AWS"].rsplit("/", 1)[1] in named


def test_without_a_kms_key_there_is_no_key_statement():
    assert "key_policy_statement" not in landing_policies(prod())


@pytest.mark.cdk
def test_make_landing_policy_prints_them_as_json():
    done = subprocess.run(
        [sys.executable, "-m", "infra.landing_policy", "prod"],
        cwd=REPO,
        env={"PYTHONPATH": "lambdas", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["bucket_policy_statements"]
