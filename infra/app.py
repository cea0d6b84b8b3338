"""Builds the CDK app for the environment chosen with ``-c env=NAME``."""

from __future__ import annotations

import aws_cdk as cdk

from infra.config import PipelineConfig, load_config
from infra.stack import PipelineStack


def build_app(app: cdk.App) -> tuple[cdk.App, PipelineStack]:
    """Add the pipeline stack of the chosen environment; raises ConfigError if invalid."""
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
    return app, stack
