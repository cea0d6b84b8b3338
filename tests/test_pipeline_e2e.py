"""The synthesized state machine end to end: moto runs it, real PostgreSQL on both ends,
and every number compared with the independent reference computation."""

from __future__ import annotations

import csv
import datetime as dt

import psycopg2
import psycopg2.extensions
import pytest

from kpi_pipeline.errors import StorageUnavailable
from local_runner.sample_data import write_stream_file
from tests.harness import SAMPLE_CONFIG as CONFIG
from tests.harness import assert_matches_reference
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e


def test_a_run_computes_exactly_the_reference_kpis(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)

    execution = harness.run("first")

    assert execution.status == "SUCCEEDED", execution.cause
    summary = execution.output
    reference = compute_reference(sample.users_csv, sample.songs_csv, sample.stream_files)
    assert summary["status"] == "loaded"
    assert summary["run_id"] == "first"
    assert summary["files_processed"] == len(sample.stream_files) - len(reference.files_quarantined)
    assert summary["files_quarantined"] == len(reference.files_quarantined) == 1
    assert summary["files_quarantined_by_reason"] == {"missing_columns": 1}
    assert summary["plays_valid"] == reference.plays_valid
    assert summary["duplicates"] == reference.duplicates
    assert summary["rows_quarantined"] == reference.rows_quarantined
    assert set(summary["rows_quarantined"]) == {
        "malformed_row",
        "invalid_user_id",
        "missing_track_id",
        "invalid_listen_time",
        "unknown_user_id",
        "unknown_track_id",
    }
    dates = sorted({r["kpi_date"] for r in reference.genre_rows})
    assert summary["kpi_dates"] == [d.isoformat() for d in dates]

    rows = harness.warehouse()
    assert summary["kpi_rows_loaded"] == len(rows)
    assert_matches_reference(rows, reference)
    assert {r["run_id"] for r in rows} == {"first"}

    # every landing file left landing: accepted ones archived, the bad one quarantined
    landing_bucket, prefix = harness.landing
    assert harness.keys(landing_bucket, prefix) == []
    archived = harness.keys(harness.data_bucket, "archive/run_id=first/")
    assert len(archived) == summary["files_processed"]
    quarantined = harness.keys(harness.data_bucket, "quarantine/files/run_id=first/")
    assert quarantined == [
        "quarantine/files/run_id=first/streams_bad_header.csv",
        "quarantine/files/run_id=first/streams_bad_header.csv.reason.json",
    ]
    assert execution.states_entered()[:7] == [
        "StartRun",
        "CheckRequest",
        "Preflight?",
        "AcquireLock",
        "CheckSourceData",
        "HasSourceData?",
        "ExtractRds",
    ]
    # the end is counted and its outcome kept (two branches of one Parallel, in any order)
    entered = execution.states_entered()
    assert entered[-5] == "RecordRunOutcome" and entered[-2:] == ["ReleaseLock", "RunComplete"]
    assert sorted(entered[-4:-2]) == ["RecordRunOutcomeDocument", "RecordRunOutcomeMetrics"]
    outcome = harness.local.read_json(harness.data_bucket, "runs/outcomes/first.json")
    assert outcome == summary


def test_the_warehouse_engine_computes_the_reference_kpis_beside_the_lambda_engine(
    auto_harness, sample
):
    """transform.engine "auto": the two big days are computed inside the warehouse (COPY of
    their manifests, SQL), the small one by DuckDB; one load, the reference's every value."""
    harness = auto_harness
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)

    execution = harness.run("auto")

    assert execution.status == "SUCCEEDED", execution.cause
    summary = execution.output
    assert summary["kpi_dates"] == ["2024-06-24", "2024-06-25", "2024-06-26"]
    assert summary["kpi_dates_in_warehouse"] == 2
    reference = compute_reference(sample.users_csv, sample.songs_csv, sample.stream_files)
    rows = harness.warehouse()
    assert summary["kpi_rows_loaded"] == len(rows)
    assert_matches_reference(rows, reference)
    assert summary["plays_without_song"] == 0
    # A Parquet part for the small day only; the big days' manifests, one per input.
    parts = harness.keys(harness.data_bucket, "kpis/run_id=auto/")
    assert [p.rsplit("/", 1)[1] for p in parts] == ["part-2024-06-24.parquet"]
    manifests = [
        k.split("/manifests/")[1]
        for k in harness.keys(harness.data_bucket, "runs/auto/transform/")
        if "/manifests/" in k
    ]
    assert sorted(manifests) == [
        f"kpi_date={day}/{table}.manifest"
        for day in ("2024-06-25", "2024-06-26")
        for table in ("wh_curated_plays", "wh_song_artists", "wh_songs")
    ]


def test_the_kpis_are_the_same_whatever_the_extract_mode(harness, sample, tmp_path):
    """The local environment reads songs incrementally (updated_at): a first run reads them
    whole, the next from their watermark (users, ids only, are read whole: their key column
    is the whole read), one started with
    {"full_extract": true} whole again; the KPIs are the reference's every time."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)
    first = harness.run("full")
    (tmp_path / "more").mkdir()
    later = [
        write_stream_file(
            tmp_path / "more" / f"streams_{n}.csv",
            config=CONFIG,
            day=CONFIG.start_date + dt.timedelta(days=1 + n),
            plays=300,
            seed=70 + n,
        )
        for n in (1, 2)
    ]
    harness.put_streams(later[0])
    second = harness.run("incremental")
    harness.put_streams(later[1])
    third = harness.run("reconciliation", {"full_extract": True})

    modes = [
        {t: r["mode"] for t, r in run.output["source_tables"].items()}
        for run in (first, second, third)
    ]
    assert modes == [
        {"users": "full", "songs": "full"},
        {"users": "full", "songs": "incremental"},
        {"users": "full", "songs": "full"},
    ]
    # Nothing changed in the source: nothing counted as changed, nothing deleted.
    for run in (second, third):
        for read in run.output["source_tables"].values():
            assert (read["rows_changed"], read["rows_deleted"]) == (0, 0)
    assert all(run.output["status"] == "loaded" for run in (first, second, third))
    reference = compute_reference(
        sample.users_csv, sample.songs_csv, [*sample.stream_files, *later]
    )
    assert_matches_reference(harness.warehouse(), reference)


def test_rerunning_the_same_files_changes_nothing(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)
    assert harness.run("day-1").output["status"] == "loaded"
    before = harness.warehouse()

    harness.put_streams(*sample.stream_files)  # delivered again, same content
    again = harness.run("day-1-again")

    assert again.status == "SUCCEEDED"
    assert again.output["status"] == "no_new_files"
    assert again.output["files_already_processed"] == len(sample.stream_files) - 1
    assert again.output["plays_valid"] == 0
    assert again.output["kpi_rows_loaded"] == 0
    assert harness.warehouse() == before  # same rows, same run_id and loaded_at
    assert "Load" not in again.states_entered()
    assert harness.keys(*harness.landing) == []


def test_same_content_under_another_name_is_counted_once(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    first = sample.stream_files[0]
    harness.put_streams(first, first, as_names=["streams_a.csv", "streams_b.csv"])

    summary = harness.run().output

    assert summary["files_processed"] == 1
    assert summary["files_already_processed"] == 1
    reference = compute_reference(sample.users_csv, sample.songs_csv, [first])
    assert summary["plays_valid"] == reference.plays_valid
    assert_matches_reference(harness.warehouse(), reference)


def test_a_late_file_changes_its_date_to_what_on_time_would_give(harness, sample, tmp_path):
    harness.load_source(sample.users_csv, sample.songs_csv)
    on_time = [p for p in sample.stream_files if p.name != "streams_bad_header.csv"]
    harness.put_streams(*on_time)
    harness.run("daily")
    day_one = CONFIG.start_date
    day_two = day_one + dt.timedelta(days=1)
    rows_before = {(r["kpi_type"], r["kpi_date"]): r["run_id"] for r in harness.warehouse()}

    # a second file for day one arrives a day late, under a reused name
    (tmp_path / "late").mkdir()
    late = write_stream_file(
        tmp_path / "late" / "streams1.csv", config=CONFIG, day=day_one, plays=900, seed=99
    )
    harness.put_streams(late)
    execution = harness.run("late")

    assert execution.output["status"] == "loaded"
    assert execution.output["files_processed"] == 1
    touched = {dt.date.fromisoformat(d) for d in execution.output["kpi_dates"]}
    assert day_one in touched and day_two not in touched
    reference = compute_reference(sample.users_csv, sample.songs_csv, [*on_time, late])
    rows = harness.warehouse()
    assert_matches_reference(rows, reference)  # every date, as if all had come on time
    for row in rows:
        if row["kpi_date"] in touched:
            assert row["run_id"] == "late"
        else:
            assert row["run_id"] == rows_before[(row["kpi_type"], row["kpi_date"])]


def test_empty_source_table_ends_with_no_rds_data(harness, sample, tmp_path):
    empty_songs = tmp_path / "songs.csv"
    empty_songs.write_text(sample.songs_csv.read_text().splitlines()[0] + "\n")
    harness.load_source(sample.users_csv, empty_songs)
    harness.put_streams(sample.stream_files[0])

    execution = harness.run()

    assert execution.status == "SUCCEEDED"
    assert execution.output["status"] == "no_rds_data"
    assert execution.output["source_songs"] == 0
    assert "ExtractRds" not in execution.states_entered()
    assert harness.warehouse() == []
    assert len(harness.keys(*harness.landing)) == 1  # untouched


def test_no_landing_file_ends_with_no_new_files(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)

    execution = harness.run()

    assert execution.output["status"] == "no_new_files"
    assert "IngestStreams" not in execution.states_entered()
    assert harness.warehouse() == []


def test_a_failed_step_alerts_and_fails_the_execution(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.drop_source_column("songs", "track_genre")
    harness.put_streams(sample.stream_files[0])

    execution = harness.run("broken")

    assert execution.status == "FAILED"
    assert execution.error == "SourceSchemaError"
    assert "track_genre" in execution.cause
    assert execution.failed_state == "CheckSourceData"
    alerts = harness.local.alerts()
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["failed_state"] == "CheckSourceData"
    assert alert["run_id"] == "broken"
    assert alert["error"] == "SourceSchemaError"
    assert alert["subject"] == "[music-kpi-local] run failed in CheckSourceData: SourceSchemaError"
    assert alert["console_url"].endswith(execution.arn)
    entered = execution.states_entered()
    assert entered[-7:-3] == [
        "CheckSourceDataFailed",
        "DescribeFailure",
        "ReleaseLockAfterFailure",
        "RecordFailedRun",
    ]
    assert sorted(entered[-3:-1]) == ["RecordFailedRunDocument", "RecordFailedRunMetrics"]
    # the end reaches the alert function (EventBridge; here local_runner.aws): it alerted
    assert entered[-1] == "RunFailed"
    # the failure is kept where the report reads the runs
    outcome = harness.local.read_json(harness.data_bucket, "runs/outcomes/broken.json")
    assert outcome["status"] == "failed"
    assert (outcome["failed_state"], outcome["error"]) == ("CheckSourceData", "SourceSchemaError")


def test_transient_errors_are_retried_with_backoff_then_alerted(
    harness, sample, retry_sleeps, postgres
):
    harness.load_source(sample.users_csv, sample.songs_csv)
    source_name = psycopg2.extensions.parse_dsn(harness.source_dsn)["dbname"]
    conn = psycopg2.connect(postgres)
    conn.autocommit = True
    with conn.cursor() as cur:  # nobody may connect to the source database any more
        cur.execute(f'ALTER DATABASE "{source_name}" ALLOW_CONNECTIONS false')
    conn.close()

    execution = harness.run("unreachable")

    assert execution.status == "FAILED"
    assert execution.error == "SourceUnavailable"
    # MaxAttempts 4 means four retries; waits back off 2, 4, 8, 16 s with full jitter
    assert len(retry_sleeps) == 4
    for attempt, wait in enumerate(retry_sleeps):
        assert 0 <= wait <= 2 * 2**attempt
    assert harness.local.alerts()[0]["failed_state"] == "CheckSourceData"
    # The alert topic is encrypted: the alert function published with its key, through SNS.
    ((_, key),) = harness.local.pipeline.topic_keys.items()
    publisher_used = {(a, r) for p, a, r in harness.local.iam.verified if p == "Alert"}
    assert {("kms:GenerateDataKey", key), ("kms:Decrypt", key)} <= publisher_used


def fail_once(error: Exception, *, after_work: bool):
    """A handler wrapper whose first call raises ``error``: before doing anything, or
    after the real handler did all its work (as when a response is lost)."""

    def wrap(handler):
        calls = []

        def flaky(event, context):
            calls.append(event)
            if len(calls) == 1 and not after_work:
                raise error
            result = handler(event, context)
            if len(calls) == 1:
                raise error
            return result

        return flaky

    return wrap


def test_accepted_data_of_a_failed_run_is_loaded_by_the_next_run(harness, sample, tmp_path):
    harness.load_source(sample.users_csv, sample.songs_csv)
    first = sample.stream_files[0]
    harness.put_streams(first)
    harness.wrap_handler(
        "load.handler.handler", fail_once(RuntimeError("warehouse went away"), after_work=False)
    )
    failed = harness.run("fails-at-load")
    assert failed.status == "FAILED"
    assert failed.failed_state == "Load"
    assert harness.warehouse() == []
    assert len(harness.keys(harness.data_bucket, "ledger/pending/")) == 1

    # upstream replaces streams1.csv with the next day's content before the next run
    (tmp_path / "next").mkdir()
    replacement = write_stream_file(
        tmp_path / "next" / "streams1.csv",
        config=CONFIG,
        day=CONFIG.start_date + dt.timedelta(days=5),
        plays=700,
        seed=5,
    )
    harness.put_streams(replacement)
    execution = harness.run("next-day")

    assert execution.output["status"] == "loaded"
    reference = compute_reference(sample.users_csv, sample.songs_csv, [first, replacement])
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == []


def test_a_run_without_new_files_still_loads_what_a_failed_run_left(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    first = sample.stream_files[0]
    harness.put_streams(first)
    harness.wrap_handler(
        "load.handler.handler", fail_once(RuntimeError("warehouse went away"), after_work=False)
    )
    assert harness.run("fails-at-load").status == "FAILED"
    landing_bucket, prefix = harness.landing
    for key in harness.keys(landing_bucket, prefix):  # the file is taken away meanwhile
        harness.local.client("s3").delete_object(Bucket=landing_bucket, Key=key)

    execution = harness.run("catch-up")

    assert execution.output["status"] == "loaded"
    assert execution.output["files_processed"] == 0
    reference = compute_reference(sample.users_csv, sample.songs_csv, [first])
    assert_matches_reference(harness.warehouse(), reference)


def test_a_retried_ingest_still_counts_its_file_as_processed(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    first = sample.stream_files[0]
    harness.put_streams(first)
    # the first attempt gets everything written, then a transient error: Step Functions retries
    harness.wrap_handler(
        "extract_s3.handler.ingest_file",
        fail_once(StorageUnavailable("S3 SlowDown"), after_work=True),
    )

    summary = harness.run().output

    reference = compute_reference(sample.users_csv, sample.songs_csv, [first])
    assert summary["files_processed"] == 1
    assert summary["files_already_processed"] == 0
    assert summary["plays_valid"] == reference.plays_valid
    assert summary["duplicates"] == reference.duplicates
    assert summary["rows_quarantined"] == reference.rows_quarantined


def test_a_late_file_is_computed_with_the_catalogue_of_its_dates_first_computation(
    harness, sample, tmp_path
):
    harness.load_source(sample.users_csv, sample.songs_csv)
    day_one = CONFIG.start_date
    day_two = day_one + dt.timedelta(days=1)
    on_time = sample.stream_files[0]  # day one (and a few late rows of the day before)
    harness.put_streams(on_time)
    harness.run("day-one")

    # the catalogue changes: every popularity moves
    rows = list(csv.DictReader(sample.songs_csv.open(newline="")))
    for row in rows:
        row["popularity"] = str(100 - int(row["popularity"]))
    new_songs = tmp_path / "songs.csv"
    with new_songs.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    harness.load_source(sample.users_csv, new_songs)
    (tmp_path / "late").mkdir()
    late = write_stream_file(
        tmp_path / "late" / "streams_late.csv", config=CONFIG, day=day_one, plays=600, seed=41
    )
    next_day = sample.stream_files[1]  # day two (its late rows belong to day one)
    harness.put_streams(late, next_day)
    harness.run("day-two")

    everything = [on_time, late, next_day]
    with_old = compute_reference(sample.users_csv, sample.songs_csv, everything)
    with_new = compute_reference(sample.users_csv, new_songs, everything)
    rows = harness.warehouse()
    first_computed_on_day_one = {r["kpi_date"] for r in rows if r["run_id"] == "day-one"} | {
        day_one
    }
    assert day_one in {r["kpi_date"] for r in rows}
    # dates first computed in the first run keep that run's catalogue ...
    assert_matches_reference(rows, with_old, dates={day_one - dt.timedelta(days=1), day_one})
    # ... a date first computed now takes today's
    assert_matches_reference(rows, with_new, dates={day_two})
    assert first_computed_on_day_one


def test_a_file_without_a_valid_play_leaves_nothing_pending(harness, sample, tmp_path):
    """Accepted, but every row quarantined: nothing waits for the warehouse, so the next
    run without files ends at once (no_new_files) instead of going through every step."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    unknown = tmp_path / "streams_unknown_users.csv"
    unknown.write_text("user_id,track_id,listen_time\n999999,x,2024-06-25 10:00:00\n")
    harness.put_streams(unknown)

    first = harness.run("accepts-nothing")
    second = harness.run("next-day")

    assert first.output["files_processed"] == 1
    assert first.output["rows_quarantined"] == {"unknown_user_id": 1}
    assert harness.keys(harness.data_bucket, "ledger/pending/") == []
    assert second.output["status"] == "no_new_files"
    assert "IngestStreams" not in second.states_entered()


def test_every_terminal_status_is_a_metric(harness, sample, tmp_path):
    """A run that ends no_new_files, no_rds_data or already_running succeeds: without a
    metric of its status, a feed that stopped went unnoticed."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    assert harness.run("nothing-new").output["status"] == "no_new_files"
    harness.put_streams(sample.stream_files[0])
    assert harness.run("loads").output["status"] == "loaded"
    empty_songs = tmp_path / "songs.csv"
    empty_songs.write_text(sample.songs_csv.read_text().splitlines()[0] + "\n")
    harness.load_source(sample.users_csv, empty_songs)
    assert harness.run("source-emptied").output["status"] == "no_rds_data"

    cloudwatch = harness.local.client("cloudwatch")
    ended = cloudwatch.list_metrics(Namespace="MusicKpiPipeline", MetricName="RunsEnded")
    statuses = {
        d["Value"] for m in ended["Metrics"] for d in m["Dimensions"] if d["Name"] == "status"
    }
    assert statuses == {"no_new_files", "loaded", "no_rds_data"}
    plays = cloudwatch.get_metric_statistics(
        Namespace="MusicKpiPipeline",
        MetricName="PlaysLoaded",
        Dimensions=[{"Name": "service", "Value": "music-kpi-pipeline"}],
        StartTime=dt.datetime(2020, 1, 1),
        EndTime=dt.datetime(2100, 1, 1),
        Period=86400 * 365,
        Statistics=["Sum", "SampleCount"],
    )["Datapoints"]
    reference = compute_reference(sample.users_csv, sample.songs_csv, [sample.stream_files[0]])
    assert sum(p["Sum"] for p in plays) == reference.plays_valid
    assert sum(p["SampleCount"] for p in plays) == 3  # one a run, zero when nothing loaded


def test_a_console_start_with_any_valid_execution_name_runs(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])

    execution = harness.run("rerun@2024-06-25")

    assert execution.output["status"] == "loaded", execution.cause
    assert execution.output["run_id"] == "rerun@2024-06-25"
    assert {r["run_id"] for r in harness.warehouse()} == {"rerun@2024-06-25"}
    archived = harness.keys(harness.data_bucket, "archive/")
    assert archived and all(k.startswith("archive/run_id=rerun_2024-06-25-") for k in archived)


def test_an_archived_landing_file_is_left_where_it_is_and_counted_not_failed(harness, sample):
    """A landing object in GLACIER or DEEP_ARCHIVE cannot be read (InvalidObjectState): it
    was recorded as failed and Archive failed the run, every day."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    good, archived = sample.stream_files[0], sample.stream_files[1]
    harness.put_streams(good)
    bucket, prefix = harness.landing
    harness.local.client("s3").put_object(
        Bucket=bucket,
        Key=f"{prefix}{archived.name}",
        Body=archived.read_bytes(),
        StorageClass="DEEP_ARCHIVE",
    )

    execution = harness.run("with-an-archived-file")
    again = harness.run("next-day")

    assert execution.status == "SUCCEEDED", execution.cause
    summary = execution.output
    assert summary["status"] == "loaded"
    assert summary["files_unreadable"] == 1
    assert summary["files_unreadable_by_reason"] == {"archived_storage_class": 1}
    assert summary["files_failed"] == 0
    assert harness.keys(bucket, prefix) == [f"{prefix}{archived.name}"]  # left in landing
    assert again.output["status"] == "no_new_files"
    assert again.output["files_unreadable"] == 1
    reference = compute_reference(sample.users_csv, sample.songs_csv, [good])
    assert_matches_reference(harness.warehouse(), reference)
