"""Synthesizing the CDK app in-process for template assertions (no network, no Docker)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.stack import PipelineStack

REPO = Path(__file__).resolve().parent.parent
CDK_CONTEXT: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"]


# A CA generated once for the tests (tests/tls_server.make_ca): what source.ca_bundle ships.
TEST_CA_BUNDLE = Path(__file__).resolve().parent / "fixtures" / "rds-ca-test.pem"


def context_for(env_name: str, **changes: Any) -> dict[str, Any]:
    """cdk.json's context for ``env_name``, with top-level settings of that env replaced."""
    context = copy.deepcopy(CDK_CONTEXT)
    context["env"] = env_name
    context["environments"][env_name].update(copy.deepcopy(changes))
    source = context["environments"][env_name]["source"]
    if source.get("ca_bundle"):  # `make rds-ca` fetches the real one; the tests ship this
        source["ca_bundle"] = str(TEST_CA_BUNDLE)
    context["aws:cdk:bundling-stacks"] = []
    return context


def synth(context: dict[str, Any]) -> tuple[PipelineStack, Template]:
    _, stack = build_app(cdk.App(context=context))
    return stack, Template.from_stack(stack)


@cache
def template_of(env_name: str) -> tuple[PipelineStack, Template]:
    return synth(context_for(env_name))


def definition(template: Template) -> dict[str, Any]:
    """The state machine's definition, with CloudFormation tokens as placeholders."""
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    (machine,) = machines.values()
    body = machine["Properties"]["DefinitionString"]
    if isinstance(body, dict):
        separator, parts = body["Fn::Join"]
        body = separator.join(
            part if isinstance(part, str) else f"<{_token_name(part)}>" for part in parts
        )
    return json.loads(body)


def _token_name(token: dict[str, Any]) -> str:
    if "Fn::GetAtt" in token:
        return str(token["Fn::GetAtt"][0])
    if "Ref" in token:
        return str(token["Ref"])
    return "token"
