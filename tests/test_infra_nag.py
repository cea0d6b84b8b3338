"""cdk-nag's AwsSolutions checks: clean in every environment, each exception explained.

Acknowledgments are recorded twice, as found by experiment: on the acknowledging construct
as ``aws:cdk:acknowledged-rules`` metadata (``{rule id: reason}``), and in the cloud
assembly's ``validation-report.json``, whose AwsSolutions report lists ``violations`` (the
unacknowledged findings, which make synthesis raise) and ``suppressedViolations`` (each
with ``acknowledgedId``, ``acknowledgedAt`` and ``reason``). ``Template.from_stack``
synthesizes into the app's ``outdir``, so the cached templates come with their report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import Validations

import infra.nag
from infra.app import build_app
from infra.stack import PipelineStack
from tests.cdk_apps import context_for, template_of

pytestmark = pytest.mark.cdk

ENVIRONMENTS = ["prod", "dev", "local"]
PLACEHOLDERS = ("todo", "tbd", "fixme", "xxx", "placeholder", "lorem", "n/a", "because")


def nag_report(outdir: str | Path) -> dict[str, Any]:
    report = json.loads((Path(outdir) / "validation-report.json").read_text())
    (plugin,) = [p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    return plugin


def acknowledgments(stack: PipelineStack) -> dict[tuple[str, str], str]:
    """(construct path, rule id) -> reason, as recorded on the constructs."""
    key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    return {
        (construct.node.path, rule): reason
        for construct in stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == key
        for rule, reason in entry.data.items()
    }


def aws_solutions(acks: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    return {(path, rule): reason for (path, rule), reason in acks.items() if "AwsSolutions" in rule}


def is_a_real_reason(reason: str) -> bool:
    words = reason.split()
    return (
        len(reason) > 40
        and len(words) >= 6
        and not any(placeholder == reason.strip().lower() for placeholder in PLACEHOLDERS)
        and not any(word.lower().strip(".:") in {"todo", "tbd", "fixme"} for word in words)
    )


@pytest.mark.parametrize("env_name", ENVIRONMENTS)
def test_synthesis_leaves_no_unacknowledged_aws_solutions_finding(env_name):
    stack, _ = template_of(env_name)
    report = nag_report(stack.node.root.outdir)
    assert report["conclusion"] == "success"
    assert report["violations"] == []
    # The checks did run and found the acknowledged wildcards.
    assert report["suppressedViolations"]


@pytest.mark.parametrize("env_name", ENVIRONMENTS)
def test_every_acknowledgment_on_the_constructs_gives_a_real_reason(env_name):
    stack, _ = template_of(env_name)
    acks = acknowledgments(stack)
    assert aws_solutions(acks), "no AwsSolutions acknowledgment recorded"
    vague = {key: reason for key, reason in acks.items() if not is_a_real_reason(reason)}
    assert vague == {}


@pytest.mark.parametrize("env_name", ENVIRONMENTS)
def test_every_suppressed_finding_names_its_acknowledgment_and_reason(env_name):
    stack, _ = template_of(env_name)
    acks = acknowledgments(stack)
    for finding in nag_report(stack.node.root.outdir)["suppressedViolations"]:
        key = (finding["acknowledgedAt"], finding["acknowledgedId"])
        assert key in acks, finding["ruleName"]
        assert finding["acknowledgedId"] == f"AwsSolutions::{finding['ruleName']}"
        assert finding["reason"] == acks[key]
        assert is_a_real_reason(finding["reason"])


def test_the_only_exceptions_are_wildcard_resources():
    """IAM5 (wildcard resource) is the one rule acknowledged, but for SQS3 on the alert
    path's dead-letter queue (a dead-letter queue of its own would be one more)."""
    stack, _ = template_of("prod")
    found = nag_report(stack.node.root.outdir)["suppressedViolations"]
    rules = {f["ruleName"] for f in found}
    assert {rule.split("[")[0] for rule in rules} == {"AwsSolutions-IAM5", "AwsSolutions-SQS3"}
    assert all(
        rule.startswith("AwsSolutions-IAM5[Resource::") for rule in rules if "SQS3" not in rule
    )
    sqs3 = {f["acknowledgedAt"] for f in found if f["ruleName"] == "AwsSolutions-SQS3"}
    assert len(sqs3) == 1 and "DeadLetterQueue" in next(iter(sqs3))


@pytest.mark.parametrize("env_name", ENVIRONMENTS)
def test_every_acknowledgment_suppresses_a_real_finding(env_name):
    stack, _ = template_of(env_name)
    used = {
        (finding["acknowledgedAt"], finding["acknowledgedId"])
        for finding in nag_report(stack.node.root.outdir)["suppressedViolations"]
    }
    stale = sorted(set(aws_solutions(acknowledgments(stack))) - used)
    assert stale == []


def test_removing_one_acknowledgment_makes_synthesis_fail_on_that_finding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """The guard works: drop the Transform role's 'kpis/' prefix acknowledgment only.

    (``infra.stack`` binds ``acknowledge_findings`` by name, so patching it in
    ``infra.nag`` would change nothing; ``infra.nag.acknowledge`` is looked up at call time
    by ``acknowledge_prefixes`` and ``acknowledge_findings``.)
    """
    local, _ = template_of("local")  # cached before the patch: it stays the real one
    data_bucket = local.get_logical_id(local.storage.data_bucket.node.default_child)
    original = infra.nag.acknowledge
    dropped: list[str] = []

    def all_but_one(scope, finding: str, reason: str) -> None:
        if scope.node.path.endswith("/Functions/TransformRole") and finding.endswith("/kpis/*]"):
            dropped.append(finding)
            return
        original(scope, finding, reason)

    monkeypatch.setattr(infra.nag, "acknowledge", all_but_one)
    app, _ = build_app(cdk.App(context=context_for("local"), outdir=str(tmp_path)))
    with pytest.raises(RuntimeError, match=r"^ValidationFailed") as caught:
        app.synth()

    (finding,) = dropped
    assert finding == f"IAM5[Resource::<{data_bucket}.Arn>/kpis/*]"
    assert f"Acknowledge with 'AwsSolutions::AwsSolutions-{finding}'" in str(caught.value)
    report = nag_report(tmp_path)
    assert report["conclusion"] == "failure"
    (violation,) = report["violations"]
    assert violation["ruleName"] == f"AwsSolutions-{finding}"
    assert [c["constructPath"] for c in violation["violatingConstructs"]] == [
        "MusicKpiPipeline-local/Functions/TransformRole/DefaultPolicy/Resource"
    ]
