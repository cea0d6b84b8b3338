"""Builds the CDK app for the environment chosen with ``-c env=NAME``."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import PipelineConfig, load_config
from infra.stack import PipelineStack


def build_app(app: cdk.App) -> tuple[cdk.App, PipelineStack]:
    """Add the pipeline stack of the chosen environment; raises ConfigError if invalid.

    cdk-nag's AwsSolutions checks run on every synthesis: an unacknowledged finding fails it.
    """
    config: PipelineConfig = load_config(
        {"environments": app.node.try_get_context("environments")},
        app.node.try_get_context("env"),
    )
    stack = PipelineStack(
        app,
        config.stack_name,
        config=config,
        env=cdk.Environment(account=config.account, region=config.region),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack
