"""``make preflight ENV=dev``: start the deployed state machine with ``{"preflight": true}``,
wait for it, and print every check (kpi_pipeline.preflight) with what to fix.

It needs the deployer's AWS credentials (the same as ``make deploy``) and the stack's
outputs; it starts one execution named ``preflight-<UTC time>`` and changes nothing else.
Exit status: 0 when every check passed, 1 when one failed, 2 when it could not run.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from infra.config import ConfigError, PipelineConfig, load_config
from infra.warehouse_setup import REPO

EXIT_PASSED, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def report_lines(report: dict[str, Any]) -> list[str]:
    """The preflight's checks, one line each, and what to fix where one failed (shared with
    ``make run PREFLIGHT=1``)."""
    lines = [f"Result: {report['status']} ({str(report['summary']).split(';')[0]})"]
    for check in report["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(f"  {mark}  {check['check']} [{check['step']}]")
        lines.append(f"          {check['detail']}")
        if not check["ok"]:
            lines.append(f"          fix: {check['fix']}")
    return lines


def run_preflight(
    config: PipelineConfig,
    *,
    session: Any,
    say: Callable[[str], None] = print,
    poll_seconds: float = 3.0,
    timeout_seconds: float = 900.0,
) -> int:
    """Start the preflight of ``config``'s deployed stack and print its checks."""
    outputs = _stack_outputs(session, config)
    sfn = session.client("stepfunctions", region_name=config.region)
    name = f"preflight-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    execution = sfn.start_execution(
        stateMachineArn=outputs["StateMachineArn"],
        name=name,
        input=json.dumps({"preflight": True}),
    )["executionArn"]
    say(f"Preflight of {config.stack_name}: execution {name}")
    deadline = time.monotonic() + timeout_seconds
    while True:
        description = sfn.describe_execution(executionArn=execution)
        if description["status"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            say(f"error: the preflight is still running after {timeout_seconds:.0f} s")
            return EXIT_UNUSABLE
        time.sleep(poll_seconds)
    report = _report(session, config, outputs, description, name)
    if report is None:
        say(f"Result: the preflight failed before its checks were gathered: {description}")
        return EXIT_FAILED
    for line in report_lines(report):
        say(line)
    say(f"  report        s3://{outputs['DataBucketName']}/{report['report_key']}")
    return EXIT_PASSED if report["status"] == "preflight_passed" else EXIT_FAILED


def _stack_outputs(session: Any, config: PipelineConfig) -> dict[str, str]:
    cloudformation = session.client("cloudformation", region_name=config.region)
    (stack,) = cloudformation.describe_stacks(StackName=config.stack_name)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _report(
    session: Any,
    config: PipelineConfig,
    outputs: dict[str, str],
    description: dict[str, Any],
    name: str,
) -> dict[str, Any] | None:
    if description.get("status") == "SUCCEEDED" and description.get("output"):
        return dict(json.loads(description["output"]))
    s3 = session.client("s3", region_name=config.region)
    try:
        body = s3.get_object(Bucket=outputs["DataBucketName"], Key=f"runs/{name}/preflight.json")
    except s3.exceptions.NoSuchKey:
        return None
    return dict(json.loads(body["Body"].read()))


def main(argv: list[str], session: Any | None = None) -> int:
    env_name = argv[0] if argv else "dev"
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    try:
        config = load_config(context, env_name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if config.local:
        print("error: the local environment's preflight is `make run PREFLIGHT=1`", file=sys.stderr)
        return EXIT_UNUSABLE
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return run_preflight(config, session=session or boto3.session.Session())
    except NoCredentialsError:
        print(
            "error: no AWS credentials: sign in to the environment's account first (the same "
            "credentials `make deploy` uses; `aws sts get-caller-identity` should answer)",
            file=sys.stderr,
        )
    except (ClientError, BotoCoreError) as exc:
        print(
            f"error: {exc} (is {config.stack_name} deployed in {config.region}, and may your "
            "credentials start its state machine?)",
            file=sys.stderr,
        )
    return EXIT_UNUSABLE


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
