"""AWS limits the local run enforces, at the sizes that reach them."""

from __future__ import annotations

import pytest

from local_runner.limits import PAYLOAD_LIMIT_BYTES
from tests.harness import SAMPLE_CONFIG, assert_matches_reference
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e

FILES = 1000  # the default max_files_per_run
LONG_NAME = "partner=" + "x" * 280  # S3 allows 1,024 bytes of key


def test_a_thousand_files_with_long_keys_keep_every_state_under_the_payload_limit(harness, sample):
    """Step Functions refuses any state input or output over 256 KiB. A manifest of 1,000
    long keys in the state, or the Map's collected per-file results, exceed it: the file
    list must live in S3 and only references and counts may travel between states."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    bucket, prefix = harness.landing
    body = sample.stream_files[0].read_bytes()
    s3 = harness.local.client("s3")
    keys = [f"{prefix}{LONG_NAME}/streams-{i:04d}.csv" for i in range(FILES)]
    for key in keys:  # one content under a thousand names: one ingest, 999 recognised
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    execution = harness.run("a-thousand-files")

    assert execution.status == "SUCCEEDED", execution.cause
    summary = execution.output
    assert (summary["files_processed"], summary["files_already_processed"]) == (1, FILES - 1)
    assert summary["files_deferred"] == 0
    assert summary["files_archived"] == FILES
    assert harness.keys(bucket, prefix) == []
    reference = compute_reference(sample.users_csv, sample.songs_csv, [sample.stream_files[0]])
    assert_matches_reference(harness.warehouse(), reference)
    checked = harness.local.payloads
    assert checked.measured > 4 * FILES  # the Map's iterations were measured too
    assert checked.largest is not None and checked.largest.size < PAYLOAD_LIMIT_BYTES


def test_each_function_runs_with_its_own_configured_tmp_size_and_memory(harness, sample):
    """In AWS every function has its own process: its /tmp size and memory from the
    template. The local run hands each invocation its own function's environment, so the
    scratch budget and DuckDB's memory limit are those of the function, not of the laptop."""
    from kpi_pipeline.settings import EngineSettings, ScratchSettings, load

    seen: dict[str, tuple[int | None, int | None, str]] = {}

    def record(handler):
        def wrapped(event, context):
            scratch, engine = load(ScratchSettings), load(EngineSettings)
            seen[context.function_name] = (
                scratch.ephemeral_storage_mb,
                engine.memory_limit_mb,
                scratch.work_dir,
            )
            return handler(event, context)

        return wrapped

    for suffix in ("ingest_file", "transform.handler.handler"):
        harness.wrap_handler(suffix, record)
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    assert harness.run().output["status"] == "loaded"

    functions = {f.name: f for f in harness.local.pipeline.functions}
    assert len(seen) == 2
    for name, (tmp_mb, duckdb_mb, work_dir) in seen.items():
        function = functions[name]
        assert tmp_mb == int(function.environment["EPHEMERAL_STORAGE_MB"]) > 512
        assert duckdb_mb == int(function.memory_mb * 0.6)
        assert name in work_dir  # a /tmp of its own


def test_a_date_whose_transform_fails_fails_the_distributed_map_and_loads_nothing(harness, sample):
    """AWS fails a Distributed Map whose failed children exceed its tolerated failures
    (zero unless set): States.ExceedToleratedFailureThreshold. moto counts the failed child
    and carries on, so the run went on to load the other dates and to replace the failed
    date's rows with nothing. The local run enforces AWS's rule: the run fails in
    TransformDates, nothing is loaded, and the next run loads every date."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)
    failing = SAMPLE_CONFIG.start_date.isoformat()
    broken = [True]

    def fail_one_date(handler):
        def transform(event, context):
            if broken[0] and event["kpi_date"] == failing:
                raise OSError("disk on fire")  # not retryable: the child fails
            return handler(event, context)

        return transform

    harness.wrap_handler("transform.handler.handler", fail_one_date)

    failed = harness.run("first")

    assert failed.status == "FAILED"
    assert failed.failed_state == "TransformDates"
    (alert,) = harness.local.alerts()
    assert (alert["failed_state"], alert["error"]) == (
        "TransformDates",
        "States.ExceedToleratedFailureThreshold",
    )
    assert harness.warehouse() == []
    assert harness.keys(harness.data_bucket, "ledger/pending/") != []

    broken[0] = False
    assert harness.run("second").output["status"] == "loaded"
    reference = compute_reference(sample.users_csv, sample.songs_csv, sample.stream_files)
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == []
