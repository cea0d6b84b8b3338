#!/usr/bin/env python3
"""CDK entry point: ``cdk synth -c env=dev`` (cdk.json lists the environments)."""

from __future__ import annotations

import sys
from pathlib import Path

# The Lambda code's shared package is importable by the infra (error names, for Retry).
sys.path.insert(0, str(Path(__file__).resolve().parent / "lambdas"))

import aws_cdk as cdk

from infra.app import build_app
from infra.config import ConfigError


def main() -> None:
    try:
        app, _ = build_app(cdk.App())
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    app.synth()


if __name__ == "__main__":
    main()
