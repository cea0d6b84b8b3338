"""What an alert says (kpi_pipeline.alerts), and the PagerDuty events it becomes, checked
against the Events API v2 schema (tests/fixtures/pagerduty_events_v2.schema.json). The
alerts of real runs are in tests/test_pipeline_alerts.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kpi_pipeline import alerts
from kpi_pipeline.alerts import Alert, Where, anchor, readable_cause, render
from tests.json_schema import errors

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "tests" / "fixtures" / "pagerduty_events_v2.schema.json").read_text())
ROUTING_KEY = "0123456789abcdef0123456789abcdef"  # what the connection adds: a test value
WHERE = Where(
    environment="prod",
    region="eu-west-1",
    runbook_url="https://git.example.com/music/blob/main/docs/runbook.md",
    log_groups={
        "CheckRequest": "/aws/lambda/music-kpi-prod-check-request",
        "StateMachine": "MusicKpiPipeline-prod-StateMachineLogs",
    },
)
ARN = "arn:aws:states:eu-west-1:222222222222:execution:music-kpi-prod:recompute-june"


def refused() -> Alert:
    return Alert(
        kind="refused",
        headline="request refused: InvalidRequest",
        where=WHERE,
        dedup_key=ARN,
        run_id="recompute-june",
        execution_arn=ARN,
        status="FAILED",
        failed_state="CheckRequest",
        error="InvalidRequest",
        cause=json.dumps(
            {
                "errorMessage": "recompute.from 2024-06-30 is after recompute.to 2024-06-01",
                "errorType": "InvalidRequest",
                "stackTrace": ['  File "/var/task/transform/request.py", line 12'],
            }
        ),
    )


def pagerduty_errors(event: dict) -> list[str]:
    return errors({"routing_key": ROUTING_KEY, **event}, SCHEMA)


def runbook_anchors() -> set[str]:
    text = (REPO / "docs" / "runbook.md").read_text()
    return {anchor(line[3:]) for line in text.splitlines() if line.startswith("## ")}


def test_every_runbook_entry_an_alert_links_to_is_a_section_of_the_runbook():
    headings = {
        alerts.RUNBOOK_FAILED,
        *alerts.RUNBOOK_BY_ERROR.values(),
        *alerts.RUNBOOK_BY_CAUSE.values(),
        *alerts.RUNBOOK_BY_KIND.values(),
        *alerts.RUNBOOK_BY_ALARM.values(),
    }
    missing = {h for h in headings if anchor(h) not in runbook_anchors()}
    assert missing == set()


def test_anchors_are_githubs():
    assert anchor("A run failed with `IngestFailed`: a file could not be ingested") == (
        "a-run-failed-with-ingestfailed-a-file-could-not-be-ingested"
    )
    assert anchor("An execution was stopped, or failed half-way: redrive?") == (
        "an-execution-was-stopped-or-failed-half-way-redrive"
    )


def test_a_lambda_errors_cause_reads_as_its_message_cut_to_a_readable_length():
    assert readable_cause(refused().cause) == (
        "recompute.from 2024-06-30 is after recompute.to 2024-06-01"
    )
    long = "a\n  very " + "long " * 400 + "cause"
    cut = readable_cause(long)
    assert cut is not None and "\n" not in cut
    assert cut.endswith(
        f"... ({len(' '.join(long.split())) - 500:,} more characters in the execution)"
    )
    assert len(cut) < 560


def test_the_text_has_every_fact_and_the_same_text_goes_everywhere():
    alert = refused()
    rendered = render(alert)
    text = rendered.text
    assert rendered.title == "[music-kpi-prod] request refused: InvalidRequest"
    for line in (
        "Environment:  prod (music-kpi-prod, eu-west-1)",
        "Run:          recompute-june",
        "Failed state: CheckRequest",
        "Error:        InvalidRequest",
        "Cause:        recompute.from 2024-06-30 is after recompute.to 2024-06-01",
        f"Execution:    https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1"
        f"#/v2/executions/details/{ARN}",
        "Runbook:      https://git.example.com/music/blob/main/docs/runbook.md"
        "#a-request-was-refused-invalidrequest",
    ):
        assert line in text.splitlines(), line
    (logs,) = [line for line in text.splitlines() if line.startswith("Logs:")]
    assert (
        "#logsV2:log-groups/log-group/$252Faws$252Flambda$252Fmusic-kpi-prod-check-request" in logs
    )
    assert logs.endswith("/log-events$3FfilterPattern$3D$2522recompute-june$2522")

    published = alerts.sns_publish(alert, "arn:aws:sns:eu-west-1:222222222222:alerts")
    message = json.loads(published["Message"])
    assert published["MessageStructure"] == "json"
    assert published["Subject"] == rendered.title
    assert message["email"] == text
    chatbot = json.loads(message["default"])
    assert (chatbot["version"], chatbot["source"]) == ("1.0", "custom")
    content = chatbot["content"]
    assert f"{content['title']}\n{content['description']}" == text
    trigger = alerts.pagerduty_trigger(alert)
    assert trigger["payload"]["custom_details"]["text"] == text
    assert trigger["payload"]["summary"] == rendered.title


def test_pagerduty_events_follow_the_events_api_v2_schema():
    trigger = alerts.pagerduty_trigger(refused())
    assert pagerduty_errors(trigger) == []
    assert trigger["dedup_key"] == ARN  # one incident per execution
    assert trigger["payload"]["severity"] == "warning"
    assert [link["text"] for link in trigger["links"]] == ["Execution", "Logs", "Runbook"]
    assert pagerduty_errors(alerts.pagerduty_resolve(ARN)) == []


def test_the_schema_validator_refuses_what_pagerduty_refuses():
    trigger = alerts.pagerduty_trigger(refused())
    assert pagerduty_errors({**trigger, "event_action": "open"})
    assert pagerduty_errors({k: v for k, v in trigger.items() if k != "payload"})
    assert pagerduty_errors({"event_action": "resolve"})  # resolving what?
    too_long = {**trigger["payload"], "summary": "x" * 1025}
    assert any("longer than 1024" in e for e in pagerduty_errors({**trigger, "payload": too_long}))
    assert pagerduty_errors({**trigger, "payload": {**trigger["payload"], "severity": "high"}})
    assert errors({"event_action": "trigger", **trigger}, SCHEMA)  # no routing key


def test_a_long_title_still_makes_a_valid_subject_and_summary():
    alert = Alert(
        kind="failed",
        headline="run failed in Load: " + "WarehouseStatementFailed ü " * 60,
        where=WHERE,
        dedup_key=ARN,
    )
    subject = render(alert).subject
    assert len(subject) <= 100 and re.fullmatch(r"[\x20-\x7e]+", subject)
    assert pagerduty_errors(alerts.pagerduty_trigger(alert)) == []


@pytest.mark.parametrize(
    ("error", "cause", "section"),
    [
        ("IngestFailed", "", "a-run-failed-with-ingestfailed-a-file-could-not-be-ingested"),
        ("CorruptObject", "", "a-kept-object-cannot-be-read"),
        ("SourceSchemaError", "", "a-run-failed-in-a-step-what-its-error-means"),
        (
            "WarehouseStatementFailed",
            "the fence holds lock token 7, newer than this load's 6",
            "every-load-fails-the-fence-holds-lock-token-n-newer-than-this-loads-m",
        ),
    ],
)
def test_each_error_links_to_its_own_runbook_section(error, cause, section):
    alert = Alert(kind="failed", headline="x", where=WHERE, dedup_key=ARN, error=error, cause=cause)
    assert alert.runbook.endswith(f"#{section}")
    assert section in runbook_anchors()


# --- which incidents a successful run resolves (against moto's Step Functions) ---------------

MACHINE = {
    "StartAt": "Ends",
    "States": {
        "Ends": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.fail", "BooleanEquals": True, "Next": "Broken"}],
            "Default": "Fine",
        },
        "Broken": {"Type": "Fail", "Error": "SourceUnavailable", "Cause": "down"},
        "Fine": {"Type": "Pass", "Result": {"status": "loaded"}, "End": True},
    },
}


@pytest.fixture
def machine(monkeypatch):
    import time

    import boto3
    from moto import mock_aws

    from kpi_pipeline import aws as pipeline_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
    mock.start()
    pipeline_aws.reset_clients()
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = sfn.create_state_machine(
        name="music-kpi-test",
        definition=json.dumps(MACHINE),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]

    def run(name: str, fail: bool) -> str:
        execution = sfn.start_execution(
            stateMachineArn=arn, name=name, input=json.dumps({"fail": fail})
        )["executionArn"]
        deadline = time.monotonic() + 30
        while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"{name} still running"
            time.sleep(0.05)
        time.sleep(1.1)  # moto's ListExecutions lags a second (local_runner.aws)
        return str(execution)

    yield arn, run
    pipeline_aws.reset_clients()
    mock.stop()


def test_a_redriven_execution_that_succeeds_resolves_its_own_incident(machine):
    from kpi_pipeline.alerting import failures_since_last_success

    state_machine, run = machine
    failed = run("daily-1", fail=True)
    # Redriven, it keeps its ARN, the incident's dedup key; EventBridge's detail counts it.
    detail = {"stateMachineArn": state_machine, "executionArn": failed, "redriveCount": 1}
    assert failed in failures_since_last_success(detail)


def test_a_failure_listed_late_is_resolved_by_a_later_success(machine):
    """ListExecutions may not show a run that just failed when the next success looks: the
    success after that must still resolve it, not stop at the first success."""
    from kpi_pipeline.alerting import failures_since_last_success

    state_machine, run = machine
    failed = run("daily-1", fail=True)
    run("daily-2", fail=False)  # its resolve missed daily-1 (listed late)
    later = run("daily-3", fail=False)
    detail = {"stateMachineArn": state_machine, "executionArn": later}
    assert failed in failures_since_last_success(detail)


@pytest.mark.parametrize(
    ("region", "domain"),
    [
        ("eu-west-1", "eu-west-1.console.aws.amazon.com"),
        ("cn-north-1", "cn-north-1.console.amazonaws.cn"),
        ("us-gov-west-1", "us-gov-west-1.console.amazonaws-us-gov.com"),
    ],
)
def test_console_links_are_in_the_regions_partition(region, domain):
    text = render(
        refused().__class__(
            **{
                **refused().__dict__,
                "where": WHERE.__class__(**{**WHERE.__dict__, "region": region}),
            }
        )
    ).text
    links = {host for host in re.findall(r"https://([^/]+)/", text) if "console" in host}
    assert links == {domain}
