"""Archive: moving exactly the manifest's files, and the run summary."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from extract_s3.handler import list_new_files
from kpi_pipeline import aws as pipeline_aws
from tests.handlers.support import (
    CONTEXT,
    DATA_BUCKET,
    LANDING_BUCKET,
    NO_LISTEN_TIME,
    RUN,
    STREAMS_DAY,
    STREAMS_NEXT_DAY,
    archive,
    event,
    ingest_manifest,
    keys,
    load,
    put_landing,
    read_bytes,
    read_json,
    transform,
)

# A handler rejecting its event never reaches its metrics: Powertools then warns.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def test_archive_moves_exactly_the_manifest_files_and_writes_the_summary(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    s3 = cloud.s3
    good = put_landing(s3, "day=2024-06-25/streams.csv", STREAMS_DAY)
    bad = put_landing(s3, "bad.csv", NO_LISTEN_TIME)
    changed = put_landing(s3, "changed.csv", STREAMS_NEXT_DAY)
    put_landing(s3, "notes.txt", "left alone")
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    put_landing(s3, "changed.csv", STREAMS_NEXT_DAY + "1,B,2024-06-26 09:00:00\n")
    put_landing(s3, "arrived-late.csv", STREAMS_NEXT_DAY)  # not in the manifest
    ingested = ingest_manifest(RUN, manifest, snapshot)
    # The manifest lists the oldest first: puts within one second tie (then by key), puts
    # across a second boundary do not, so the outcomes are compared by file.
    assert {r["key"].rsplit("/", 1)[-1]: r["outcome"] for r in ingested} == {
        "bad.csv": "quarantined",
        "changed.csv": "skipped",
        "streams.csv": "processed",
    }
    transformed = transform(RUN, snapshot)
    loaded = load(RUN, transformed)

    summary = archive(RUN, manifest, snapshot, transformed, loaded)

    assert summary.pop("source_tables") == snapshot["tables"]  # how each table was read
    # ...and what was read is marked processed: the next run's extract starts from it.
    marks = read_json(s3, "source/state.json")["tables"]
    assert {table: (m["raw_key"], m["run_id"]) for table, m in marks.items()} == {
        table: (read["raw_key"], RUN) for table, read in snapshot["tables"].items()
    }
    finished_at = summary.pop("finished_at")
    assert finished_at >= dt.datetime.now(dt.UTC).date().isoformat()
    assert summary == {
        "status": "loaded",
        "run_id": RUN,
        "kind": "daily",
        "started_at": None,  # the state machine passes $.run.started_at
        "recompute": None,
        "replay": None,
        "revalidation": None,
        "files_processed": 1,
        "files_already_processed": 0,
        "files_quarantined": 1,
        "files_skipped": 1,
        "files_unreadable": 0,
        "files_unreadable_by_reason": {},
        "files_failed": 0,
        "files_deferred": 0,
        "files_ignored": 1,
        "files_archived": 2,
        "plays_valid": 3,
        "duplicates": 1,
        "duplicates_across_files": 0,
        "rows_quarantined": {"unknown_user_id": 1},
        "files_quarantined_by_reason": {"missing_columns": 1},
        "source_users": 2,
        "source_songs": 3,
        "source_rows_quarantined": {},
        "source_song_duplicate_pairs": 0,
        "plays_without_song": 0,
        "kpi_dates": ["2024-06-25"],
        "kpi_rows_loaded": 3,
        "kpi_dates_in_warehouse": 0,
        # named even when other files loaded (status files_rejected only when none did)
        "rejected_files": [
            {
                "key": "landing/bad.csv",
                "reason": "missing_columns",
                "detail": "header lacks listen_time (has: user_id, track_id, played)",
            }
        ],
    }
    assert read_json(s3, f"runs/{RUN}/summary.json") == {
        **summary,
        "source_tables": snapshot["tables"],
        "finished_at": finished_at,
    }
    assert keys(s3, LANDING_BUCKET) == [
        "landing/arrived-late.csv",
        changed,
        "landing/notes.txt",
    ]
    assert b"09:00:00" in read_bytes(s3, LANDING_BUCKET, changed)  # the new version, intact
    assert keys(s3, DATA_BUCKET, "archive/") == [f"archive/run_id={RUN}/day=2024-06-25/streams.csv"]
    assert read_bytes(s3, DATA_BUCKET, f"archive/run_id={RUN}/day=2024-06-25/streams.csv") == (
        STREAMS_DAY.encode()
    )
    quarantined = f"quarantine/files/run_id={RUN}/bad.csv"
    assert keys(s3, DATA_BUCKET, "quarantine/files/") == [quarantined, quarantined + ".reason.json"]
    assert read_bytes(s3, DATA_BUCKET, quarantined) == NO_LISTEN_TIME.encode()
    reason = read_json(s3, quarantined + ".reason.json")
    assert (reason["key"], reason["reason"]) == (bad, "missing_columns")
    assert good not in keys(s3, LANDING_BUCKET)


@pytest.mark.parametrize(
    ("content", "outcome"),
    [(STREAMS_DAY, "processed"), (NO_LISTEN_TIME, "quarantined")],
    ids=["accepted", "quarantined"],
)
def test_archive_leaves_a_file_replaced_after_ingest_where_it_is(
    snapshot: dict[str, Any], cloud: Any, content: str, outcome: str
) -> None:
    s3 = cloud.s3
    key = put_landing(s3, "streams.csv", content)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    assert [r["outcome"] for r in ingest_manifest(RUN, manifest, snapshot)] == [outcome]
    transformed = transform(RUN, snapshot)
    newer = STREAMS_DAY + "2,B,2024-06-25 23:59:59\n"
    put_landing(s3, "streams.csv", newer)  # replaced between IngestFile and Archive

    summary = archive(RUN, manifest, snapshot, transformed, None)

    assert summary["files_archived"] == 0
    assert keys(s3, LANDING_BUCKET) == [key]
    assert read_bytes(s3, LANDING_BUCKET, key) == newer.encode()  # neither moved nor deleted
    # Nothing of that file in archive or quarantine, not even a reason without its file.
    assert keys(s3, DATA_BUCKET, "archive/") == []
    assert keys(s3, DATA_BUCKET, "quarantine/files/") == []


class ReplacedRightAfterCopy:
    """An S3 client through which a producer re-uploads a landing file just after Archive
    copied it and before Archive deletes it (the race the delete's ETag guards against)."""

    def __init__(self, s3: Any, new_body: str) -> None:
        self._s3 = s3
        self._new_body = new_body

    def copy(self, source: dict[str, str], bucket: str, key: str, **kwargs: Any) -> None:
        self._s3.copy(source, bucket, key, **kwargs)
        self._s3.put_object(Bucket=source["Bucket"], Key=source["Key"], Body=self._new_body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_archive_never_deletes_a_file_replaced_between_its_copy_and_its_delete(
    snapshot: dict[str, Any], cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = cloud.s3
    key = put_landing(s3, "streams.csv", STREAMS_DAY)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    ingest_manifest(RUN, manifest, snapshot)
    transformed = transform(RUN, snapshot)
    newer = STREAMS_DAY + "2,B,2024-06-25 23:59:59\n"
    monkeypatch.setitem(pipeline_aws._clients, "s3", ReplacedRightAfterCopy(s3, newer))

    summary = archive(RUN, manifest, snapshot, transformed, None)

    assert summary["files_archived"] == 0
    assert read_bytes(s3, LANDING_BUCKET, key) == newer.encode()  # waits for the next run


def test_archive_reports_files_rejected_when_no_file_gave_a_play(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    """Files arrived and every one was refused: not a quiet no_new_files (issue 17)."""
    put_landing(cloud.s3, "bad.csv", NO_LISTEN_TIME)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    ingest_manifest(RUN, manifest, snapshot)
    transformed = transform(RUN, snapshot)
    assert transformed["kpi_date_count"] == 0

    summary = archive(RUN, manifest, snapshot, transformed, None)

    assert summary["status"] == "files_rejected"
    assert summary["rejected_files"] == [
        {
            "key": "landing/bad.csv",
            "reason": "missing_columns",
            "detail": "header lacks listen_time (has: user_id, track_id, played)",
        }
    ]
    assert (summary["files_quarantined"], summary["files_archived"]) == (1, 1)
    assert (summary["kpi_dates"], summary["kpi_rows_loaded"]) == ([], 0)
    assert read_json(cloud.s3, f"runs/{RUN}/summary.json") == summary
    assert keys(cloud.s3, LANDING_BUCKET) == []
