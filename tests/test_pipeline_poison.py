"""Inputs that must never wedge the pipeline (issue 17): a file IngestFile cannot get
through is retried by the next runs, then quarantined whole; a day whose files are all
refused ends with a status that alerts; a failed run's summary keeps what it counted.
The synthesized state machine on moto, real PostgreSQL on both ends."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from kpi_pipeline.attempts import attempts_key
from kpi_pipeline.errors import ScratchSpaceExhausted
from local_runner.faults import LambdaOutOfMemory
from local_runner.run import _counts_so_far
from local_runner.sample_data import write_stream_file
from tests.harness import SAMPLE_CONFIG, assert_matches_reference
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e


def failing_on(name: str, error: Exception, calls: list[str] | None = None):
    """IngestFile, failing with ``error`` on the file called ``name`` (every attempt, each
    recorded in ``calls``)."""

    def wrap(handler):
        def ingest(event, context):
            if event["file"]["key"].endswith(name):
                if calls is not None:
                    calls.append(name)
                raise error
            return handler(event, context)

        return ingest

    return wrap


def reason_of(harness, run_id: str, name: str) -> dict:
    (key,) = [
        k
        for k in harness.keys(harness.data_bucket, f"quarantine/files/run_id={run_id}/")
        if k.endswith(f"{name}.reason.json")
    ]
    return harness.local.read_json(harness.data_bucket, key)


def test_a_file_that_keeps_failing_waits_in_landing_then_is_quarantined_after_three_runs(
    harness, sample, retry_sleeps
):
    """A poison file failed every run for good: it stayed in landing and Archive failed each
    run. Now each failure is counted; the third run quarantines it whole (ingest_failed)."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    good, doomed = sample.stream_files[0], sample.stream_files[1]
    harness.put_streams(good, doomed)
    harness.wrap_handler(
        "extract_s3.handler.ingest_file", failing_on(doomed.name, RuntimeError("parser crashed"))
    )
    bucket, prefix = harness.landing

    first = harness.run("first")

    assert first.status == "FAILED"
    assert (first.failed_state, first.error) == ("Archive", "IngestFailed")
    assert f"{doomed.name}: RuntimeError: parser crashed" in first.cause
    assert "failed runs counted against it: 1 of 3, then it is quarantined" in first.cause
    assert retry_sleeps == []  # not a transient error: recorded at once, no retry
    # the good file went all the way through ...
    assert_matches_reference(
        harness.warehouse(), compute_reference(sample.users_csv, sample.songs_csv, [good])
    )
    # ... the doomed one waits in landing, and the summary says so
    assert harness.keys(bucket, prefix) == [f"{prefix}{doomed.name}"]
    summary = harness.local.read_json(harness.data_bucket, "runs/first/summary.json")
    assert (summary["files_processed"], summary["files_failed"]) == (1, 1)
    assert harness.local.alerts()[0]["failed_state"] == "Archive"

    second = harness.run("second")
    assert (second.status, second.error) == ("FAILED", "IngestFailed")
    assert harness.keys(bucket, prefix) == [f"{prefix}{doomed.name}"]
    attempts = harness.local.read_json(harness.data_bucket, attempts_key(f"{prefix}{doomed.name}"))
    assert sorted(attempts["runs"]) == ["first", "second"]

    third = harness.run("third")

    assert third.status == "SUCCEEDED", third.cause
    assert third.output["status"] == "files_rejected"  # nothing else arrived: it alerts
    assert third.output["files_quarantined_by_reason"] == {"ingest_failed": 1}
    assert third.output["files_failed"] == 0
    assert harness.keys(bucket, prefix) == []
    reason = reason_of(harness, "third", doomed.name)
    assert reason["reason"] == "ingest_failed"
    assert "3 failed runs" in reason["detail"] and "parser crashed" in reason["detail"]
    assert harness.run("fourth").output["status"] == "no_new_files"


@pytest.mark.parametrize(
    "error",
    [
        LambdaOutOfMemory(),
        LambdaOutOfMemory("Runtime.ExitError"),
        MemoryError("DuckDB ran out of memory"),
        ScratchSpaceExhausted("the stream file needs 9 GB of /tmp; 4 GB free"),
    ],
    ids=["killed-out-of-memory", "killed-exit-error", "memory-error", "scratch-exhausted"],
)
def test_a_failure_that_repeats_on_every_attempt_quarantines_the_file_at_once(
    harness, sample, error
):
    """Out of memory (twice: the state machine retries it once, in a fresh sandbox), or /tmp
    too small for the file: the next run would fail the same way, so the file is
    quarantined whole at once, with the error, and the run goes through."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    good, doomed = sample.stream_files[0], sample.stream_files[1]
    harness.put_streams(good, doomed)
    calls: list[str] = []
    harness.wrap_handler("extract_s3.handler.ingest_file", failing_on(doomed.name, error, calls))

    execution = harness.run("once")

    assert execution.status == "SUCCEEDED", execution.cause
    summary = execution.output
    assert summary["status"] == "loaded"
    assert summary["files_quarantined_by_reason"] == {"ingest_failed": 1}
    assert [(n["key"], n["reason"]) for n in summary["rejected_files"]] == [
        (f"{harness.landing[1]}{doomed.name}", "ingest_failed")
    ]
    reason = reason_of(harness, "once", doomed.name)
    name = "Runtime.OutOfMemory" if isinstance(error, LambdaOutOfMemory) else type(error).__name__
    assert name in reason["detail"] and "repeats" in reason["detail"]
    tries = 1 if isinstance(error, ScratchSpaceExhausted) else 2
    assert len([f for f in calls if f == doomed.name]) == tries
    assert harness.keys(*harness.landing) == []
    assert_matches_reference(
        harness.warehouse(), compute_reference(sample.users_csv, sample.songs_csv, [good])
    )


def test_a_day_whose_files_are_all_refused_ends_files_rejected_naming_them(
    harness, sample, tmp_path
):
    """Every landing file refused (not UTF-8; every row unknown): the run ended no_new_files,
    as on a day without files, and nothing alerted."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    latin1 = tmp_path / "streams_latin1.csv"
    latin1.write_bytes(b"user_id,track_id,listen_time\n1,caf\xe9,2024-06-25 10:00:00\n")
    unknown = tmp_path / "streams_unknown_users.csv"
    unknown.write_text("user_id,track_id,listen_time\n999999,x,2024-06-25 10:00:00\n")
    quiet = tmp_path / "streams_quiet_day.csv"  # a header, no row: no refusal
    quiet.write_text("user_id,track_id,listen_time\n")
    harness.put_streams(latin1, unknown, quiet)

    execution = harness.run("refused")

    assert execution.status == "SUCCEEDED", execution.cause
    summary = execution.output
    assert summary["status"] == "files_rejected"
    prefix = harness.landing[1]
    notes = {n["key"]: n for n in summary["rejected_files"]}
    assert set(notes) == {f"{prefix}{latin1.name}", f"{prefix}{unknown.name}"}
    assert notes[f"{prefix}{latin1.name}"]["reason"] == "not_utf8"
    assert "UTF-8" in notes[f"{prefix}{latin1.name}"]["detail"]
    assert notes[f"{prefix}{unknown.name}"]["reason"] == "every_row_quarantined"
    assert notes[f"{prefix}{unknown.name}"]["detail"] == "1 unknown_user_id"


def test_a_failed_runs_summary_keeps_what_its_files_gave(harness, sample):
    """A run that fails after its ingest (here in Transform) reported zero files and plays:
    its summary now says what IngestFile counted."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)

    def broken(handler):
        def transform(event, context):
            raise RuntimeError("the transform is broken")

        return transform

    harness.wrap_handler("transform.handler.handler", broken)
    execution = harness.run("breaks")

    assert execution.status == "FAILED"
    counts = _counts_so_far(harness.local, harness.data_bucket, "breaks")
    reference = compute_reference(sample.users_csv, sample.songs_csv, sample.stream_files)
    assert counts is not None
    assert counts["status"] == "failed"
    assert counts["plays_valid"] == reference.plays_valid
    assert counts["rows_quarantined"] == reference.rows_quarantined
    assert counts["files_quarantined"] == len(reference.files_quarantined)
    assert json.dumps(counts)  # a summary document as written


def corrupt(harness, key: str) -> None:
    """What a truncated upload or a bad restore leaves: bytes that are not the format."""
    harness.local.client("s3").put_object(
        Bucket=harness.data_bucket, Key=key, Body=b"not what was kept"
    )


def another_day(tmp_path, n: int):
    return write_stream_file(
        tmp_path / f"streams_more_{n}.csv",
        config=SAMPLE_CONFIG,
        day=SAMPLE_CONFIG.start_date + dt.timedelta(days=n),
        plays=100,
        seed=90 + n,
    )


def test_a_kept_source_object_that_cannot_be_read_never_wedges_the_extract(
    harness, sample, tmp_path
):
    """A corrupt raw snapshot (kept only to make the next read incremental) failed every run
    with DuckDB's "No magic bytes found", {"full_extract": true} included. Now the table is
    read whole instead; a corrupt marks document fails the run naming it and the way out,
    and {"full_extract": true} is that way out."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    first = harness.run("first")
    users_raw = first.output["source_tables"]["users"]["raw_key"]

    corrupt(harness, users_raw)
    more = [another_day(tmp_path, n) for n in (1, 2)]
    harness.put_streams(more[0])
    around = harness.run("reads-around-it")

    assert around.status == "SUCCEEDED", around.cause
    modes = {t: r["mode"] for t, r in around.output["source_tables"].items()}
    assert modes == {"users": "full", "songs": "incremental"}

    corrupt(harness, "source/state.json")
    harness.put_streams(more[1])
    refused = harness.run("marks-unreadable")

    assert (refused.status, refused.failed_state) == ("FAILED", "ExtractRds")
    assert refused.error == "CorruptObject"
    assert f"s3://{harness.data_bucket}/source/state.json is not a readable JSON" in refused.cause
    assert '{\\"full_extract\\": true}' in refused.cause  # the way out, in the JSON cause

    repaired = harness.run("reconciliation", {"full_extract": True})

    assert repaired.status == "SUCCEEDED", repaired.cause
    assert {r["mode"] for r in repaired.output["source_tables"].values()} == {"full"}
    files = [sample.stream_files[0], *more]
    reference = compute_reference(sample.users_csv, sample.songs_csv, files)
    assert_matches_reference(harness.warehouse(), reference)


def test_a_curated_object_that_cannot_be_read_fails_naming_it_and_what_to_do(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    first = harness.run("first")
    day = first.output["kpi_dates"][0]
    (curated,) = harness.keys(harness.data_bucket, f"curated/plays/kpi_date={day}/")

    corrupt(harness, curated)
    execution = harness.run("recompute", {"recompute": {"from": day, "to": day}})

    assert (execution.status, execution.failed_state) == ("FAILED", "TransformDates")
    # The date's child execution failed with the error that says what to do.
    (failure,) = [f for f in harness.local.failures if f[1] == "CorruptObject"]
    message = failure[2].splitlines()[-1]
    assert f"the curated plays s3://{harness.data_bucket}/{curated}" in message
    assert "is not a readable Parquet file" in message
    assert "restore its last good version" in message and "docs/runbook.md" in message
