"""Every kind of end that alerts, from real local runs: the synthesized state machine on
moto ends (fails, is refused, is stopped, finds an empty source, refused or given-up
files), EventBridge's "Execution Status Change" reaches the alert function as in AWS
(local_runner.aws), and what it sends is read back: the e-mail text, the Slack (AWS
Chatbot) notification and the PagerDuty event, which must be the same text, and the
PagerDuty events valid against the Events API v2 schema.

The environment here is the local one with ``alerts.pagerduty`` set: its PagerDuty rule's
pattern is created in moto with a queue standing for the API destination."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from infra.monitoring import no_plays_description
from local_runner.faults import LambdaOutOfMemory
from tests.json_schema import errors
from tests.test_pipeline_poison import failing_on

pytestmark = pytest.mark.e2e

SCHEMA = json.loads(
    (Path(__file__).parent / "fixtures" / "pagerduty_events_v2.schema.json").read_text()
)
ROUTING_KEY = "0123456789abcdef0123456789abcdef"  # the connection's body parameter, for tests
# Where the rendered alerts are written (make test keeps them under .cache): each kind's
# text as e-mail, Slack and PagerDuty would show it.
RENDERED = Path(os.environ.get("ALERT_TEXTS_DIR", Path(__file__).parent.parent / ".cache"))


@pytest.fixture(scope="session")
def pagerduty_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from local_runner.template import load_pipeline, synthesize

    changes = {"alerts": {"pagerduty": {"secret": "music-kpi/local/pagerduty"}}}
    return load_pipeline(synthesize(tmp_path_factory.mktemp("cdk.out-pd"), changes=changes))


@pytest.fixture
def pd_harness(pagerduty_pipeline, new_database, tmp_path, retry_sleeps):
    from tests.harness import running_harness

    with running_harness(pagerduty_pipeline, new_database, tmp_path) as h:
        yield h


def the_alert(harness: Any, kind: str) -> dict[str, Any]:
    """The one alert sent since the last look: the same text by e-mail, in Slack and in
    PagerDuty (a valid trigger event, one incident per execution)."""
    (alert,) = harness.local.alerts()
    (event,) = [e for e in harness.local.pagerduty_events() if e["event_action"] == "trigger"]
    text = alert["text"]
    assert alert["email"] == text
    assert alert["kind"] == kind
    assert alert["subject"] == text.splitlines()[0]
    assert errors({"routing_key": ROUTING_KEY, **event}, SCHEMA) == []
    assert event["payload"]["custom_details"]["text"] == text
    assert event["payload"]["summary"] == text.splitlines()[0]
    assert event["dedup_key"] == alert["dedup_key"]
    if kind != "alarm":  # one incident per execution
        assert alert["dedup_key"] == alert["execution_arn"]
    RENDERED.mkdir(parents=True, exist_ok=True)
    (RENDERED / f"alert-{kind}.txt").write_text(text + "\n")
    return alert


def line(alert: dict[str, Any], label: str) -> str:
    (found,) = [x for x in alert["text"].splitlines() if x.startswith(f"{label}:")]
    return found[len(label) + 1 :].strip()


def test_a_failed_state_alerts_with_its_error_cause_links_and_runbook(pd_harness, sample):
    harness = pd_harness
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.drop_source_column("songs", "track_genre")
    harness.put_streams(sample.stream_files[0])

    execution = harness.run("broken")

    assert execution.status == "FAILED"
    alert = the_alert(harness, "failed")
    assert alert["subject"] == "[music-kpi-local] run failed in CheckSourceData: SourceSchemaError"
    assert line(alert, "Environment") == "local (music-kpi-local, us-east-1)"
    assert line(alert, "Run").startswith("broken (started ")
    assert line(alert, "Failed state") == "CheckSourceData"
    assert line(alert, "Error") == "SourceSchemaError"
    assert "track_genre" in line(alert, "Cause") and "stackTrace" not in line(alert, "Cause")
    assert line(alert, "Execution").endswith(f"#/v2/executions/details/{execution.arn}")
    check_source_logs = harness.local.log_group_of("CheckSourceData")
    assert check_source_logs.replace("/", "$252F") in line(alert, "Logs")
    assert line(alert, "Logs").endswith("$3FfilterPattern$3D$2522broken$2522")
    assert line(alert, "Runbook") == "docs/runbook.md#a-run-failed-in-a-step-what-its-error-means"


def test_a_refused_request_alerts_naming_what_was_wrong(pd_harness, sample):
    harness = pd_harness
    harness.load_source(sample.users_csv, sample.songs_csv)

    execution = harness.run(
        "bad-request", {"recompute": {"from": "2024-06-26", "to": "2024-06-25"}}
    )

    assert (execution.status, execution.error) == ("FAILED", "InvalidRequest")
    alert = the_alert(harness, "refused")
    assert alert["subject"] == "[music-kpi-local] request refused: InvalidRequest"
    assert line(alert, "Failed state") == "CheckRequest"
    assert line(alert, "Cause") == "recompute.from (2024-06-26) is after recompute.to (2024-06-25)"
    assert line(alert, "Runbook") == "docs/runbook.md#a-request-was-refused-invalidrequest"


def test_an_empty_source_alerts_with_the_counts(pd_harness, sample, tmp_path):
    harness = pd_harness
    empty_songs = tmp_path / "songs.csv"
    empty_songs.write_text(sample.songs_csv.read_text().splitlines()[0] + "\n")
    harness.load_source(sample.users_csv, empty_songs)

    assert harness.run("empty").output["status"] == "no_rds_data"

    alert = the_alert(harness, "no_rds_data")
    assert line(alert, "Status") == "no_rds_data"
    assert line(alert, "Cause") == "users: 120 rows, songs: 0 rows in the source"
    assert line(alert, "Runbook").endswith(
        "#a-run-ended-no_rds_data-the-sources-users-or-songs-are-empty"
    )


def test_files_that_gave_no_play_alert_naming_each_file(pd_harness, sample, tmp_path):
    harness = pd_harness
    harness.load_source(sample.users_csv, sample.songs_csv)
    unknown = tmp_path / "streams_unknown_users.csv"
    unknown.write_text("user_id,track_id,listen_time\n999999,x,2024-06-25 10:00:00\n")
    no_header = tmp_path / "streams_no_header.csv"
    no_header.write_text("1,abc,2024-06-25 10:00:00\n")
    harness.put_streams(unknown, no_header)

    assert harness.run("refused-files").output["status"] == "files_rejected"

    alert = the_alert(harness, "files_rejected")
    assert alert["subject"] == (
        "[music-kpi-local] run ended files_rejected: 2 files arrived and none gave a play"
    )
    files = [x for x in alert["text"].splitlines() if "File streams/" in x or "File " in x]
    assert any(
        "streams_unknown_users.csv: every_row_quarantined (1 unknown_user_id)" in f for f in files
    )
    assert any("streams_no_header.csv: missing_columns" in f for f in files)
    assert line(alert, "Runbook").endswith("#a-run-ended-files_rejected")


def test_a_file_given_up_alerts_though_the_run_loaded(pd_harness, sample):
    harness = pd_harness
    harness.load_source(sample.users_csv, sample.songs_csv)
    good, doomed = sample.stream_files[0], sample.stream_files[1]
    harness.put_streams(good, doomed)
    harness.wrap_handler(
        "extract_s3.handler.ingest_file", failing_on(doomed.name, LambdaOutOfMemory())
    )

    assert harness.run("oom").output["status"] == "loaded"

    alert = the_alert(harness, "files_given_up")
    assert "1 file given up after failing to ingest" in alert["subject"]
    assert line(alert, "Cause") == "1 ingest_failed"
    assert f"{doomed.name}: ingest_failed (" in alert["text"]
    assert line(alert, "Runbook").endswith(
        "#a-run-failed-with-ingestfailed-a-file-could-not-be-ingested"
    )


def test_a_stopped_execution_alerts_with_the_state_it_was_in(pd_harness, sample):
    harness = pd_harness
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    entered, release = harness.hold("extract_s3.handler.list_new_files", run_id="stopped")
    stopped = harness.local.start("stopped")
    assert entered.wait(timeout=60)
    harness.local.stop(stopped, cause="stopped by the on-call for a test")

    assert harness.local.wait(stopped).status == "ABORTED"
    release.set()
    harness.local.await_zombies()

    alert = the_alert(harness, "aborted")
    assert alert["subject"] == "[music-kpi-local] run was stopped in ListNewFiles"
    assert line(alert, "Cause") == "stopped by the on-call for a test"


def test_no_plays_for_36_hours_alerts_naming_the_last_run(pd_harness, sample):
    """The dead-feed alarm has no run of its own: the alert names the last one. Its state
    change is what CloudWatch sends EventBridge for the alarm the schedule's stack has."""
    harness = pd_harness
    harness.load_source(sample.users_csv, sample.songs_csv)
    assert harness.run("quiet").output["status"] == "no_new_files"
    assert harness.local.alerts() == []  # a quiet day alone alerts nobody
    time.sleep(1.1)  # ListExecutions is eventually consistent (the alarm fires 36 h later)

    harness.local.alarm_changed(
        "MusicKpiPipeline-local-MonitoringNoPlaysLoadedAlarm1A2B3C4D-AbCdEfGhIjKl",
        no_plays_description(36),
        "Threshold Crossed: no datapoints were received for 36 periods and 36 missing "
        "datapoints were treated as [Breaching].",
    )

    alert = the_alert(harness, "alarm")
    assert alert["subject"] == "[music-kpi-local] No play was loaded in 36 hours"
    assert line(alert, "Last run").startswith("quiet (started ")
    assert line(alert, "Status") == "no_new_files"
    assert line(alert, "Runbook").endswith("#no-play-was-loaded-for-a-day-and-a-half")

    # Plays again: the alarm clears, its incident is resolved, and nobody is mailed.
    harness.local.alarm_changed(alert["alarm"], no_plays_description(36), "ok", state="OK")
    assert harness.local.alerts() == []
    (resolve,) = harness.local.pagerduty_events()
    assert resolve == {"event_action": "resolve", "dedup_key": alert["dedup_key"]}
    assert alert["dedup_key"].endswith(f":alarm:{alert['alarm']}")


def test_the_next_successful_run_resolves_the_incidents_of_the_failures_before_it(
    pd_harness, sample
):
    harness = pd_harness
    harness.load_source(sample.users_csv, sample.songs_csv)
    failed = [
        harness.run(name, {"recompute": {"from": "2024-06-26", "to": "2024-06-25"}})
        for name in ("refused-1", "refused-2")
    ]
    harness.local.alerts()
    triggered = [e["dedup_key"] for e in harness.local.pagerduty_events()]
    assert triggered == [f.arn for f in failed]  # one incident per execution
    time.sleep(1.1)  # ListExecutions is eventually consistent (local_runner.aws: a second)

    assert harness.run("fine").output["status"] == "no_new_files"

    assert harness.local.alerts() == []
    resolved = harness.local.pagerduty_events()
    assert sorted(e["dedup_key"] for e in resolved) == sorted(f.arn for f in failed)
    assert {e["event_action"] for e in resolved} == {"resolve"}
    for event in resolved:
        assert errors({"routing_key": ROUTING_KEY, **event}, SCHEMA) == []
    # the next success resolves them again (within a week: a failure listed late, or a
    # trigger delivered late, is closed too); PagerDuty ignores a resolve of a resolved one
    time.sleep(1.1)
    assert harness.run("fine-again").output["status"] == "no_new_files"
    again = harness.local.pagerduty_events()
    assert sorted(e["dedup_key"] for e in again) == sorted(f.arn for f in failed)
    assert {e["event_action"] for e in again} == {"resolve"}
