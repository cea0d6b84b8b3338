"""Two executions at once: the schedule and a console start, a second apart.

AWS documents ListExecutions as eventually consistent, and the local run emulates that
(here with no bound at all: an execution never shows up in another's listing). Whatever
the interleaving, only one execution may touch the data; the other ends ``already_running``,
and after the next daily run the warehouse equals the reference computed from every file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runner.sample_data import write_stream_file
from tests.harness import SAMPLE_CONFIG, Harness, assert_matches_reference, running_harness
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e

DAY = SAMPLE_CONFIG.start_date


@pytest.fixture
def harness(pipeline, new_database, tmp_path, retry_sleeps) -> Iterator[Harness]:
    with running_harness(pipeline, new_database, tmp_path, list_executions_lag_seconds=3600) as h:
        yield h


@pytest.fixture
def two_files(tmp_path) -> tuple[Path, Path]:
    """Two files of the same date D: the second lands while the first run is under way."""
    (tmp_path / "in").mkdir()
    f1 = write_stream_file(
        tmp_path / "in" / "streams_f1.csv", config=SAMPLE_CONFIG, day=DAY, plays=400, seed=21
    )
    f2 = write_stream_file(
        tmp_path / "in" / "streams_f2.csv", config=SAMPLE_CONFIG, day=DAY, plays=600, seed=22
    )
    return f1, f2


def finish(harness: Harness, sample, files) -> None:
    """The next daily run, then: every file counted once, the warehouse as the reference."""
    after = harness.run("next-day")
    assert after.status == "SUCCEEDED", after.cause
    reference = compute_reference(sample.users_csv, sample.songs_csv, list(files))
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == []
    assert harness.keys(*harness.landing) == []


def test_two_starts_a_second_apart_never_let_an_older_plan_overwrite_a_newer_load(
    harness, sample, two_files
):
    """Run A lists f1; f2 lands; run B starts and lists f1 and f2. A transforms D from f1 and
    is slow to load; B must not load D meanwhile, or A's older plan (1 file) would replace
    B's (2 files) and nothing would ever repair D."""
    f1, f2 = two_files
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    a_ingesting, release_a_ingest = harness.hold("extract_s3.handler.ingest_file", run_id="A")
    b_ingesting, release_b_ingest = harness.hold("extract_s3.handler.ingest_file", run_id="B")
    a_loading, release_a_load = harness.hold("load.handler.handler", run_id="A")
    a = harness.local.start("A")
    assert a_ingesting.wait(timeout=60)  # A has listed f1

    harness.put_streams(f2)
    b = harness.local.start("B")
    harness.wait_until(lambda: b_ingesting.is_set() or harness.local.finished(b))
    release_a_ingest.set()  # A ingests f1 first, and transforms D from it
    assert a_loading.wait(timeout=60)
    release_b_ingest.set()  # B: f1 already processed, f2 new; D from both
    b_done = harness.local.wait(b)
    release_a_load.set()  # A's plan (f1 only) reaches the warehouse last
    a_done = harness.local.wait(a)

    assert a_done.output["status"] == "loaded"
    assert b_done.output["status"] == "already_running"
    assert "ExtractRds" not in b_done.states_entered()
    finish(harness, sample, [f1, f2])


def test_a_start_while_the_first_run_is_between_transform_and_load_touches_nothing(
    harness, sample, two_files
):
    f1, f2 = two_files
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    a_loading, release_a_load = harness.hold("load.handler.handler", run_id="A")
    a = harness.local.start("A")
    assert a_loading.wait(timeout=60)

    harness.put_streams(f2)
    b_done = harness.local.wait(harness.local.start("B"))
    release_a_load.set()
    a_done = harness.local.wait(a)

    assert b_done.output["status"] == "already_running"
    assert a_done.output["status"] == "loaded"
    assert {r["run_id"] for r in harness.warehouse()} == {"A"}
    finish(harness, sample, [f1, f2])


def lock_item(harness: Harness) -> dict | None:
    """The lock item while held (a released lock keeps only its fence counter)."""
    (table,) = harness.local.pipeline.tables
    item = harness.local.client("dynamodb").get_item(
        TableName=table, Key={"lock_id": {"S": "pipeline"}}, ConsistentRead=True
    )
    found = item.get("Item")
    return found if found and "holder" in found else None


def fence(harness: Harness) -> int:
    (table,) = harness.local.pipeline.tables
    item = harness.local.client("dynamodb").get_item(
        TableName=table, Key={"lock_id": {"S": "pipeline"}}, ConsistentRead=True
    )
    return int(item.get("Item", {}).get("fence", {}).get("N", 0))


def test_every_end_releases_the_lock_and_every_acquisition_a_newer_token(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    assert harness.run("nothing-to-do").output["status"] == "no_new_files"
    assert lock_item(harness) is None
    assert fence(harness) == 1
    harness.put_streams(sample.stream_files[0])
    assert harness.run("loads").output["status"] == "loaded"
    assert lock_item(harness) is None
    assert fence(harness) == 2
    harness.put_streams(sample.stream_files[1])
    harness.wrap_handler("load.handler.handler", lambda handler: _raise)
    assert harness.run("fails").status == "FAILED"
    assert lock_item(harness) is None


def _raise(event, context):
    raise RuntimeError("the warehouse went away")


def test_a_lock_left_by_an_aborted_execution_is_taken_over(harness, sample):
    """An execution stopped by hand (ABORTED) or by its timeout runs no Catch and never
    releases the lock; the next run checks that the holder no longer runs and takes over."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    entered, release = harness.hold("extract_s3.handler.list_new_files", run_id="stopped")
    stopped = harness.local.start("stopped")
    assert entered.wait(timeout=60)
    harness.local.stop(stopped)  # ABORTED at once; its ListNewFiles goes on
    assert harness.local.wait(stopped).status == "ABORTED"
    assert lock_item(harness)["run_id"]["S"] == "stopped"
    release.set()

    execution = harness.run("next")

    assert execution.output["status"] == "loaded"
    entered = execution.states_entered()
    # the stopped run's functions may write until their timeout: the take-over waits
    assert entered.index("WaitOutHolderFunctions") < entered.index("TakeOverLock")
    assert fence(harness) == 2
    assert lock_item(harness) is None
    reference = compute_reference(sample.users_csv, sample.songs_csv, [sample.stream_files[0]])
    assert_matches_reference(harness.warehouse(), reference)


def test_content_accepted_between_transform_and_load_is_replanned_not_lost(
    harness, sample, two_files
):
    """Defence in depth behind the lock: if content of a planned date is accepted after the
    plan (a writer outside the lock), Load refuses the plan and PlanTransform plans again."""
    f1, f2 = two_files
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    bucket, _ = harness.landing

    def accept_f2_first(handler):
        calls = []

        def load(event, context):
            calls.append(event)
            if len(calls) == 1:  # another writer accepts f2 for the same date meanwhile
                (key,) = harness.put_streams(f2)
                head = harness.local.client("s3").head_object(Bucket=bucket, Key=key)
                harness.local.invoke_handler(
                    "extract_s3.handler.ingest_file",
                    {
                        "run_id": "outside-the-lock",
                        "file": {
                            "index": 0,
                            "key": key,
                            "etag": head["ETag"].strip('"'),
                            "size": head["ContentLength"],
                        },
                        "snapshot": {
                            "users_key": "snapshots/run_id=A/users.parquet",
                            "songs_key": "snapshots/run_id=A/songs.parquet",
                        },
                    },
                )
            return handler(event, context)

        return load

    harness.wrap_handler("load.handler.handler", accept_f2_first)
    execution = harness.run("A")

    assert execution.output["status"] == "loaded"
    entered = execution.states_entered()
    assert entered.count("PlanTransform") == entered.count("TransformDates") == 2
    assert entered.count("Load") == 2
    reference = compute_reference(sample.users_csv, sample.songs_csv, [f1, f2])
    assert_matches_reference(harness.warehouse(), reference)
    finish(harness, sample, [f1, f2])
