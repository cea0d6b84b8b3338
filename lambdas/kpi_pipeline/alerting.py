"""The alert function's work: read what an end was, render it once, send it everywhere.

EventBridge invokes the function with an execution's status change (every end of the
pipeline's state machine) or an alarm's state change. The alert (kpi_pipeline.alerts) goes
to the alert topic, whose e-mail subscribers get its text and AWS Chatbot (Slack) a custom
notification of the same text; with ``alerts.pagerduty``, to PagerDuty as well.

PagerDuty: an EventBridge API destination, not an HTTP client here. This function puts the
Events API v2 event (without its routing key) on the event bus; a rule sends it to the
API destination, whose connection adds the routing key from its own secret, copied by
CloudFormation from the secret ``alerts.pagerduty.secret`` names. That is the least code
(one PutEvents call: no HTTP client, no retry loop, no timeout handling; EventBridge
retries a failed delivery for 24 hours), and the least privilege: this function never
reads the key, which never appears in cdk.json, the template or an environment variable.
An input transformer alone could not do it: it cannot cut a cause, choose the runbook
section of an error, or know which incidents a successful run resolves.

One incident per failed execution (its ARN is the dedup key); the next successful run
resolves those of every failure since the previous successful run (ListExecutions, newest
first). An alarm's incident (no run behind it) is its ARN's, resolved when it clears.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from kpi_pipeline import alerts
from kpi_pipeline.alerts import (
    ALARM_CHANGE,
    EXECUTION_CHANGE,
    PAGERDUTY_DETAIL_TYPE,
    PAGERDUTY_SOURCE,
    Alert,
    Where,
)
from kpi_pipeline.aws import client
from kpi_pipeline.contracts import (
    AlertEvent,
    AlertSent,
    PreflightCheck,
    PreflightRequest,
    PreflightResult,
)
from kpi_pipeline.observability import logger
from kpi_pipeline.settings import AlertSettings

ENDED_BADLY = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
MAX_WALKED = 300  # executions looked at for the failures a successful run resolves
RESOLVE_WINDOW = dt.timedelta(days=7)  # how far back a success resolves incidents
MAX_HISTORY_PAGES = 20


def where(settings: AlertSettings) -> Where:
    return Where(
        environment=settings.pipeline_env,
        region=settings.aws_region,
        runbook_url=settings.runbook_url,
        log_groups=dict(json.loads(settings.alert_log_groups)),
    )


def deliver(event: AlertEvent, settings: AlertSettings) -> AlertSent:
    """Tell whoever must know how an execution ended, or that an alarm fired (or cleared)."""
    resolves: list[str] = []
    alert: Alert | None = None
    if event.detail_type == EXECUTION_CHANGE:
        alert, resolves = _execution(event.detail, settings)
    elif event.detail_type == ALARM_CHANGE:
        alert, resolves = _alarm(event, settings)
    else:
        logger.warning("not an event the alert function acts on", extra={"type": event.detail_type})
    sent = AlertSent()
    if alert is not None:
        publish(alert, settings)
        rendered = alerts.render(alert)
        logger.info("alert sent", extra={"kind": alert.kind, "title": rendered.title})
        sent = AlertSent(kind=alert.kind, title=rendered.title)
    if settings.pagerduty_events:
        events = [alerts.pagerduty_trigger(alert)] if alert is not None else []
        events += [alerts.pagerduty_resolve(key) for key in resolves]
        put_pagerduty_events(events, settings)
        sent = sent.model_copy(
            update={"pagerduty": [f"{e['event_action']} {e['dedup_key']}" for e in events]}
        )
    return sent


def publish(alert: Alert, settings: AlertSettings) -> None:
    """The alert topic: e-mail gets the text, AWS Chatbot (Slack) the same as a notification."""
    client("sns").publish(**alerts.sns_publish(alert, settings.alert_topic_arn))


def put_pagerduty_events(events: list[dict[str, Any]], settings: AlertSettings) -> None:
    """Hand each Events API v2 event to the PagerDuty rule (ten per PutEvents call)."""
    for start in range(0, len(events), 10):
        entries = [
            {
                "Source": PAGERDUTY_SOURCE,
                "DetailType": PAGERDUTY_DETAIL_TYPE,
                "Detail": json.dumps(event),
                "EventBusName": settings.event_bus,
            }
            for event in events[start : start + 10]
        ]
        answer = client("events").put_events(Entries=entries)
        if answer.get("FailedEntryCount"):
            failed = [e for e in answer["Entries"] if e.get("ErrorCode")]
            raise RuntimeError(f"EventBridge refused {len(failed)} PagerDuty event(s): {failed}")


# --- an execution's end -------------------------------------------------------------------------
def _execution(detail: dict[str, Any], settings: AlertSettings) -> tuple[Alert | None, list[str]]:
    status = str(detail.get("status"))
    arn = str(detail["executionArn"])
    if status in ENDED_BADLY:
        return alerts.execution_alert(detail, where(settings), history(arn), None), []
    if status != "SUCCEEDED":
        return None, []  # RUNNING, PENDING_REDRIVE: not an end
    summary = _output(arn, detail.get("output"))
    alert = alerts.execution_alert(detail, where(settings), [], summary)
    healthy = summary is not None and summary.get("status") in alerts.HEALTHY_STATUSES
    if alert is None and healthy and settings.pagerduty_events:
        return None, failures_since_last_success(detail)
    return alert, []


def history(execution_arn: str) -> list[dict[str, Any]]:
    """The execution's events, oldest first (where it failed, or where it was stopped): read
    newest first, so that a long history's last pages, where the failure is, are read."""
    sfn = client("stepfunctions")
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(MAX_HISTORY_PAGES):
        page = sfn.get_execution_history(
            executionArn=execution_arn,
            maxResults=1000,
            reverseOrder=True,
            includeExecutionData=True,
            **({"nextToken": token} if token else {}),
        )
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            break
    return sorted(events, key=lambda event: int(event["id"]))  # ids count up from the start


def _output(execution_arn: str, output: Any) -> dict[str, Any] | None:
    """A succeeded execution's output (the run summary): the event's, else DescribeExecution's
    (EventBridge leaves out an output over 248 KiB)."""
    if not output:
        output = (
            client("stepfunctions").describe_execution(executionArn=execution_arn).get("output")
        )
    parsed = json.loads(output) if output else None
    return parsed if isinstance(parsed, dict) else None


def failures_since_last_success(detail: dict[str, Any]) -> list[str]:
    """The executions whose incidents a successful run resolves: every one that failed,
    timed out or was stopped, or succeeded and still alerted, that started within
    RESOLVE_WINDOW (ListExecutions, newest first; at most MAX_WALKED looked at); and the run
    itself when it is a redriven execution (it keeps its ARN, its incident's key).

    It does not stop at the previous success: ListExecutions may not have listed a run
    that had just failed when that success looked, and a late trigger may reopen an
    incident after its resolve. PagerDuty ignores a resolve of a resolved incident."""
    sfn = client("stepfunctions")
    keys = [detail["executionArn"]] if detail.get("redriveCount") else []
    since = dt.datetime.now(dt.UTC) - RESOLVE_WINDOW
    walked = 0
    pages = sfn.get_paginator("list_executions").paginate(
        stateMachineArn=detail["stateMachineArn"], PaginationConfig={"PageSize": 100}
    )
    for page in pages:
        for execution in page["executions"]:
            walked += 1
            arn, status = execution["executionArn"], execution["status"]
            if walked > MAX_WALKED or execution["startDate"] < since:
                return keys
            if arn == detail["executionArn"]:
                continue
            if status in ENDED_BADLY or (
                status == "SUCCEEDED" and alerts.summary_alerts(_output(arn, None) or {})
            ):
                keys.append(arn)
    return keys


# --- an alarm ----------------------------------------------------------------------------------
def _alarm(event: AlertEvent, settings: AlertSettings) -> tuple[Alert | None, list[str]]:
    state = (event.detail.get("state") or {}).get("value")
    alarm_arn = event.resources[0] if event.resources else str(event.detail.get("alarmName"))
    if state == "OK":
        return None, [alarm_arn] if settings.pagerduty_events else []
    if state != "ALARM":
        return None, []
    raw = event.model_dump(by_alias=True)
    return alerts.alarm_alert(raw, where(settings), last_run(settings.state_machine_arn)), []


def last_run(state_machine_arn: str) -> dict[str, Any] | None:
    """The newest execution, with its run's status when it succeeded (no_new_files...)."""
    sfn = client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=1)
    if not executions["executions"]:
        return None
    newest = dict(executions["executions"][0])
    if newest["status"] == "SUCCEEDED":
        summary = _output(newest["executionArn"], None) or {}
        newest["status"] = summary.get("status", newest["status"])
    return newest


# --- the preflight -----------------------------------------------------------------------------
ALERT_CHECK = "alerts: the alert topic takes a message"


def preflight(request: PreflightRequest, settings: AlertSettings) -> PreflightResult:
    """Publish a test alert through the path every alert takes (this function's role, the
    topic and its key, its e-mail and Slack subscribers). PagerDuty is left alone: a test
    would page someone."""
    alert = Alert(
        kind="preflight",
        headline="preflight: the alert path works",
        where=where(settings),
        dedup_key=f"preflight-{request.run_id}",
        run_id=request.run_id,
        status="preflight",
        cause="A preflight of the pipeline published this test message: failures will reach "
        "this topic's subscribers (e-mail, Slack). Nothing failed.",
    )
    try:
        publish(alert, settings)
    except Exception as exc:  # the check reports it, as every preflight check does
        check = PreflightCheck(
            check=ALERT_CHECK,
            step="Alert",
            ok=False,
            detail=f"{type(exc).__name__}: {exc}"[:1000],
            fix="check the topic's policy, its KMS key and the alert function's role",
        )
    else:
        check = PreflightCheck(
            check=ALERT_CHECK,
            step="Alert",
            ok=True,
            detail="a test message was published to the topic (e-mail, Slack)",
        )
    return PreflightResult(checks=[check])
