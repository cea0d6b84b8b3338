"""What an alert says: one text for every kind of end that alerts, the same in e-mail, Slack
(AWS Chatbot) and PagerDuty (Events API v2).

An :class:`Alert` is built from what AWS tells of an end (an execution's status change and
its history, a CloudWatch alarm's state change); :func:`render` turns it into the text:
the environment, the run, the failed state, the error and its cause cut to a readable
length, links to the execution and to its logs in the console, and the runbook section for
that error (``docs/runbook.md``). The payloads for SNS (e-mail gets the text, Chatbot a
custom notification of the same text) and PagerDuty carry that text unchanged.

Pure functions: no AWS call here (the alert function, ``lambdas/alert/handler.py``, reads
and sends).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

# The events the alert function acts on (EventBridge's detail-types), and those it puts on
# the bus for PagerDuty (the PagerDuty rule's pattern: infra/alerts.py).
EXECUTION_CHANGE = "Step Functions Execution Status Change"
ALARM_CHANGE = "CloudWatch Alarm State Change"
PAGERDUTY_SOURCE = "music-kpi.alerts"
PAGERDUTY_DETAIL_TYPE = "PagerDuty Events API v2"

# The kinds of end that alert, and how loud each is in PagerDuty.
Kind = Literal[
    "failed",  # a state failed with an error (the run released the lock and stopped)
    "refused",  # CheckRequest refused the execution's input (InvalidRequest)
    "timed_out",  # the execution ran past its timeout
    "aborted",  # someone stopped the execution
    "no_rds_data",  # the source's users or songs are empty
    "files_rejected",  # files arrived and none gave a play
    "files_given_up",  # files that kept failing to ingest were quarantined (ingest_failed)
    "alarm",  # a CloudWatch alarm with no run behind it (no plays for 36 h, no success)
    "preflight",  # a preflight's test message
]
SEVERITY: dict[str, str] = {
    "failed": "error",
    "refused": "warning",
    "timed_out": "error",
    "aborted": "warning",
    "no_rds_data": "error",
    "files_rejected": "warning",
    "files_given_up": "warning",
    "alarm": "error",
    "preflight": "info",
}
# How a run ended that needs no one (kpi_pipeline.contracts.RunStatus): a successful run
# resolves the incidents of the failures before it.
HEALTHY_STATUSES = frozenset({"loaded", "no_new_files", "recomputed", "replayed", "revalidated"})
ALERTING_STATUSES = frozenset({"no_rds_data", "files_rejected"})

CAUSE_CHARS = 500  # a cause is cut here in the alert (the execution keeps all of it)
MAX_FILES_LISTED = 5
SUBJECT_CHARS = 100  # SNS's limit for an e-mail subject
SUMMARY_CHARS = 1024  # PagerDuty's limit for payload.summary
STATE_MACHINE_LOGS = "StateMachine"  # the key of the state machine's log group

# --- the runbook ---------------------------------------------------------------------------
# Each entry is a heading of docs/runbook.md (tests/test_alerts.py checks they exist).
RUNBOOK_FAILED = "A run failed in a step: what its error means"
RUNBOOK_BY_ERROR = {
    "InvalidRequest": "A request was refused: `InvalidRequest`",
    "IngestFailed": "A run failed with `IngestFailed`: a file could not be ingested",
    "CorruptObject": "A kept object cannot be read",
    "LockLost": "A step failed with `LockLost`",
}
# A cause that names its own section (an error name shared by several problems).
RUNBOOK_BY_CAUSE = {
    "the fence holds lock token": (
        'Every Load fails: "the fence holds lock token N, newer than this load\'s M"'
    ),
    "cannot see the transactions of": (
        'ExtractRds failed: "the source user ... cannot see the transactions of N other session(s)"'
    ),
}
RUNBOOK_BY_KIND = {
    "timed_out": "An execution was stopped, or failed half-way: redrive or a new execution?",
    "aborted": "An execution was stopped, or failed half-way: redrive or a new execution?",
    "no_rds_data": "A run ended `no_rds_data`: the source's users or songs are empty",
    "files_rejected": "A run ended `files_rejected`",
    "files_given_up": "A run failed with `IngestFailed`: a file could not be ingested",
    "preflight": "A run failed in a step: what its error means",
}
RUNBOOK_BY_ALARM = {
    "NoPlaysLoadedAlarm": "No play was loaded for a day and a half",
    "NoSuccessfulRunAlarm": "No run succeeded within the schedule's window",
}


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as -."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in {"L", "N"})
    return kept.replace(" ", "-")


def runbook_heading(kind: str, error: str | None, cause: str | None, alarm: str | None) -> str:
    """The runbook section of an end: by its cause, its error, its alarm, then its kind."""
    for fragment, heading in RUNBOOK_BY_CAUSE.items():
        if cause and fragment in cause:
            return heading
    if error in RUNBOOK_BY_ERROR:
        return RUNBOOK_BY_ERROR[error]
    for name, heading in RUNBOOK_BY_ALARM.items():
        if alarm and name in alarm:
            return heading
    return RUNBOOK_BY_KIND.get(kind, RUNBOOK_FAILED)


# --- the alert ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Where:
    """The deployment an alert is about: its environment, region and where things are."""

    environment: str
    region: str
    runbook_url: str = "docs/runbook.md"
    # The log group of each state whose function logs (and STATE_MACHINE_LOGS).
    log_groups: dict[str, str] = field(default_factory=dict)

    @property
    def pipeline(self) -> str:
        return f"music-kpi-{self.environment}"


@dataclass(frozen=True)
class Alert:
    kind: Kind
    headline: str  # what happened, in a few words (the title after the pipeline's name)
    where: Where
    dedup_key: str  # the execution's ARN, or the alarm's: one incident each
    run_id: str | None = None
    execution_arn: str | None = None
    status: str | None = None  # how the execution (or the run) ended
    failed_state: str | None = None
    error: str | None = None
    cause: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    alarm: str | None = None  # the alarm's name, for an alarm
    details: tuple[str, ...] = ()  # extra lines: the files rejected, the last run...

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]

    @property
    def title(self) -> str:
        return f"[{self.where.pipeline}] {self.headline}"

    @property
    def runbook(self) -> str:
        heading = runbook_heading(self.kind, self.error, self.cause, self.alarm)
        return f"{self.where.runbook_url}#{anchor(heading)}"

    @property
    def console_url(self) -> str:
        region = self.where.region
        if self.execution_arn:
            return (
                f"https://{region}.{console_domain(region)}/states/home?region={region}"
                f"#/v2/executions/details/{self.execution_arn}"
            )
        return (
            f"https://{region}.{console_domain(region)}/states/home?region={region}#/statemachines"
        )

    @property
    def logs_url(self) -> str | None:
        """The failed state's function logs (else the state machine's), filtered on the run."""
        groups = self.where.log_groups
        group = groups.get(self.failed_state or "") or groups.get(STATE_MACHINE_LOGS)
        if not group:
            return None
        region = self.where.region
        url = (
            f"https://{region}.{console_domain(region)}/cloudwatch/home?region={region}"
            f"#logsV2:log-groups/log-group/{_console_escape(group)}"
        )
        if self.run_id:
            url += f"/log-events$3FfilterPattern$3D{_console_escape(json.dumps(self.run_id))}"
        return url


def _console_escape(text: str) -> str:
    """How the CloudWatch console spells a value in its URL fragment (encoded twice, with
    '$' for '%')."""
    return quote(quote(text, safe=""), safe="").replace("%", "$")


def error_message(cause: str) -> str:
    """A failure's cause on one line: a Lambda error's errorMessage (not its JSON and stack
    trace), else the cause as it is."""
    text = cause
    try:
        parsed = json.loads(cause)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        text = str(parsed["errorMessage"])
    return " ".join(text.split())


def readable_cause(cause: str | None, limit: int = CAUSE_CHARS) -> str | None:
    """A cause as a person reads it: a Lambda error's message (not its JSON and stack
    trace), on one line, cut at ``limit`` characters saying how much was left out."""
    if not cause:
        return None
    text = error_message(cause)
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()}... ({len(text) - limit:,} more characters in the execution)"


# --- the text -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rendered:
    """One alert's text: its title (the first line, the e-mail's subject) and body."""

    title: str
    body: str
    subject: str

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.body}"


def render(alert: Alert) -> Rendered:
    """The alert's text, the same wherever it goes."""
    where = alert.where
    run = alert.run_id or "none"
    if alert.run_id and alert.started_at:
        run += f" (started {alert.started_at}" + (
            f", ended {alert.ended_at})" if alert.ended_at else ")"
        )
    lines = [
        ("Environment", f"{where.environment} ({where.pipeline}, {where.region})"),
        ("Last run" if alert.kind == "alarm" else "Run", run),
        ("Status", alert.status or "-"),
        ("Failed state", alert.failed_state or "-"),
        ("Error", alert.error or "-"),
        ("Cause", readable_cause(alert.cause) or "-"),
        *(("", detail) for detail in alert.details),
        ("Execution" if alert.execution_arn else "Console", alert.console_url),
        ("Logs", alert.logs_url or "-"),
        ("Runbook", alert.runbook),
    ]
    body = "\n".join(
        f"{label + ':' if label else '':<14}{value}".rstrip() for label, value in lines
    )
    return Rendered(title=alert.title, body=body, subject=_subject(alert.title))


def _subject(title: str) -> str:
    """An e-mail subject SNS accepts: printable ASCII, one line, at most 100 characters."""
    ascii_only = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    one_line = re.sub(r"[^\x20-\x7e]+", " ", ascii_only).strip()
    return one_line if len(one_line) <= SUBJECT_CHARS else one_line[: SUBJECT_CHARS - 3] + "..."


# --- where it goes --------------------------------------------------------------------------
def context(alert: Alert) -> dict[str, str]:
    """The alert's facts, one string each (Chatbot's additionalContext, PagerDuty's details)."""
    facts = {
        "environment": alert.where.environment,
        "kind": alert.kind,
        "run_id": alert.run_id,
        "status": alert.status,
        "failed_state": alert.failed_state,
        "error": alert.error,
        "execution_arn": alert.execution_arn,
        "alarm": alert.alarm,
        "dedup_key": alert.dedup_key,
        "console_url": alert.console_url,
        "logs_url": alert.logs_url,
        "runbook_url": alert.runbook,
    }
    return {key: value for key, value in facts.items() if value}


def chatbot_notification(alert: Alert) -> dict[str, Any]:
    """AWS Chatbot's custom notification: the title, and the body as its description."""
    rendered = render(alert)
    return {
        "version": "1.0",
        "source": "custom",
        "id": alert.dedup_key,
        "content": {
            "textType": "client-markdown",
            "title": rendered.title,
            "description": rendered.body,
        },
        "metadata": {
            "threadId": alert.dedup_key,
            "summary": rendered.title,
            "eventType": alert.kind,
            "relatedResources": [arn for arn in (alert.execution_arn,) if arn],
            "additionalContext": context(alert),
        },
    }


def sns_publish(alert: Alert, topic_arn: str) -> dict[str, Any]:
    """The SNS Publish call: e-mail receives the text; every other subscriber (AWS
    Chatbot's) the custom notification of the same text."""
    rendered = render(alert)
    message = {"default": json.dumps(chatbot_notification(alert)), "email": rendered.text}
    return {
        "TopicArn": topic_arn,
        "Subject": rendered.subject,
        "MessageStructure": "json",
        "Message": json.dumps(message),
    }


def pagerduty_trigger(alert: Alert) -> dict[str, Any]:
    """A PagerDuty Events API v2 'trigger' (without routing_key: the EventBridge connection
    adds it). One incident per execution (or alarm): its dedup_key."""
    rendered = render(alert)
    links = [
        {"href": url, "text": text}
        for url, text in (
            (alert.console_url, "Execution" if alert.execution_arn else "Step Functions"),
            (alert.logs_url, "Logs"),
            (alert.runbook, "Runbook"),
        )
        if url and url.startswith("https://")
    ]
    return {
        "event_action": "trigger",
        "dedup_key": alert.dedup_key,
        "payload": {
            "summary": rendered.title[:SUMMARY_CHARS],
            "source": alert.where.pipeline,
            "severity": alert.severity,
            "component": alert.failed_state or alert.alarm or "pipeline",
            "group": alert.where.environment,
            "class": alert.error or alert.kind,
            "timestamp": alert.ended_at or _now(),
            "custom_details": {"text": rendered.text, **context(alert)},
        },
        "client": f"Music KPI pipeline ({alert.where.environment})",
        "client_url": alert.console_url,
        "links": links,
    }


def pagerduty_resolve(dedup_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 'resolve' of the incident of ``dedup_key``."""
    return {"event_action": "resolve", "dedup_key": dedup_key}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- from what AWS tells ---------------------------------------------------------------------
def _when(value: Any) -> str | None:
    """An execution event's time (epoch milliseconds, or ISO 8601) as ISO 8601, UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        return moment.isoformat(timespec="seconds")
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="seconds")
    return str(value)


def described_failure(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What DescribeFailure recorded of the failure (the Catch path): the state that raised,
    its error and cause."""
    for event in reversed(history):
        details = event.get("stateExitedEventDetails") or {}
        if details.get("name") == "DescribeFailure":
            output = json.loads(details.get("output") or "{}")
            return {k: v for k, v in (output.get("alert") or {}).items() if v}
    return {}


def _ended_details(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The error and cause a stopped (or timed-out) execution's last event records."""
    for event in reversed(history):
        for key in ("executionAbortedEventDetails", "executionTimedOutEventDetails"):
            if event.get(key):
                return {k: v for k, v in event[key].items() if v}
    return {}


def last_state_in(history: list[dict[str, Any]]) -> str | None:
    """The state the execution entered last (where a timed-out or stopped one was)."""
    for event in reversed(history):
        details = event.get("stateEnteredEventDetails")
        if details:
            return str(details["name"])
    return None


def execution_alert(
    detail: dict[str, Any],
    where: Where,
    history: list[dict[str, Any]],
    summary: dict[str, Any] | None,
) -> Alert | None:
    """The alert of an execution's end (None: it ended well). ``detail`` is the
    "Step Functions Execution Status Change" event's; ``history`` its events (for a
    failure); ``summary`` its output (for a success)."""
    status = str(detail.get("status"))
    common: dict[str, Any] = {
        "where": where,
        "dedup_key": str(detail["executionArn"]),
        "run_id": detail.get("name"),
        "execution_arn": detail["executionArn"],
        "started_at": _when(detail.get("startDate")),
        "ended_at": _when(detail.get("stopDate")),
    }
    if status == "FAILED":
        described = described_failure(history)
        # What the Catch recorded first: the Fail state ends with it (error and cause paths).
        error = described.get("error") or detail.get("error") or "States.Runtime"
        state = described.get("failed_state") or last_state_in(history)
        refused = error == "InvalidRequest"
        return Alert(
            kind="refused" if refused else "failed",
            headline=f"request refused: {error}" if refused else f"run failed in {state}: {error}",
            status="FAILED",
            failed_state=state,
            error=error,
            cause=described.get("cause") or detail.get("cause"),
            **common,
        )
    if status in {"TIMED_OUT", "ABORTED"}:
        state = last_state_in(history)
        timed_out = status == "TIMED_OUT"
        ended = _ended_details(history)
        return Alert(
            kind="timed_out" if timed_out else "aborted",
            headline=f"run {'timed out' if timed_out else 'was stopped'} in {state}",
            status=status,
            failed_state=state,
            error=detail.get("error")
            or ended.get("error")
            or ("States.Timeout" if timed_out else "ExecutionAborted"),
            cause=detail.get("cause") or ended.get("cause"),
            **common,
        )
    if status != "SUCCEEDED" or not summary:
        return None
    return _run_alert(summary, common)


def summary_alerts(summary: dict[str, Any]) -> bool:
    """Whether a run that succeeded still alerts (its summary: status and given-up files)."""
    given_up = (summary.get("files_quarantined_by_reason") or {}).get("ingest_failed", 0)
    return summary.get("status") in ALERTING_STATUSES or int(given_up) > 0


def _run_alert(summary: dict[str, Any], common: dict[str, Any]) -> Alert | None:
    """A run that succeeded and still alerts: an empty source, files refused or given up."""
    status = str(summary.get("status"))
    notes = summary.get("rejected_files") or []
    given_up = int((summary.get("files_quarantined_by_reason") or {}).get("ingest_failed", 0))
    if status == "no_rds_data":
        return Alert(
            kind="no_rds_data",
            headline="run ended no_rds_data: the source's users or songs table is empty",
            status=status,
            failed_state="CheckSourceData",
            error="no_rds_data",
            cause=(
                f"users: {summary.get('source_users', 0):,} rows, songs: "
                f"{summary.get('source_songs', 0):,} rows in the source"
            ),
            **common,
        )
    if status == "files_rejected":
        count = len(notes)
        return Alert(
            kind="files_rejected",
            headline=f"run ended files_rejected: {count} file{'s' * (count != 1)} arrived "
            "and none gave a play",
            status=status,
            failed_state="IngestStreams",
            error="files_rejected",
            cause=_reasons(notes),
            details=_files(notes),
            **common,
        )
    if given_up:
        dropped = [n for n in notes if n.get("reason") == "ingest_failed"]
        return Alert(
            kind="files_given_up",
            headline=f"{given_up} file{'s' * (given_up != 1)} given up after failing to "
            "ingest (quarantined as ingest_failed)",
            status=status,
            failed_state="IngestStreams",
            error="ingest_failed",
            cause=_reasons(dropped),
            details=_files(dropped),
            **common,
        )
    return None


def _reasons(notes: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for note in notes:
        counts[str(note.get("reason"))] = counts.get(str(note.get("reason")), 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def _files(notes: list[dict[str, Any]]) -> tuple[str, ...]:
    listed = [
        f"File {note.get('key')}: {note.get('reason')}"
        + (f" ({readable_cause(note.get('detail'), 160)})" if note.get("detail") else "")
        for note in notes[:MAX_FILES_LISTED]
    ]
    if len(notes) > MAX_FILES_LISTED:
        listed.append(f"... and {len(notes) - MAX_FILES_LISTED} more (the run summary lists them)")
    return tuple(listed)


def alarm_alert(
    event: dict[str, Any], where: Where, last_run: dict[str, Any] | None
) -> Alert | None:
    """The alert of a CloudWatch alarm going to ALARM (None for another state). The alarm
    has no run: the alert names the last execution, if any."""
    detail = event["detail"]
    state = detail.get("state") or {}
    if state.get("value") != "ALARM":
        return None
    name = str(detail.get("alarmName"))
    description = str((detail.get("configuration") or {}).get("description") or name)
    headline = description.split(":", 1)[0].rstrip(".")
    run: dict[str, Any] = {}
    if last_run:  # the alarm's "run": the last execution, and how it ended
        run = {
            "run_id": last_run.get("name"),
            "execution_arn": last_run.get("executionArn"),
            "status": last_run.get("status"),
            "started_at": _when(last_run.get("startDate")),
            "ended_at": _when(last_run.get("stopDate")),
        }
    return Alert(
        kind="alarm",
        headline=headline,
        where=where,
        dedup_key=str((event.get("resources") or [name])[0]),
        error=name,
        cause=f"{description} (CloudWatch: {state.get('reason', '')})",
        alarm=name,
        **run,
    )


def console_domain(region: str) -> str:
    """The AWS console's domain in the region's partition."""
    if region.startswith("cn-"):
        return "console.amazonaws.cn"
    if region.startswith("us-gov-"):
        return "console.amazonaws-us-gov.com"
    return "console.aws.amazon.com"
