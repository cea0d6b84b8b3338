"""ListNewFiles and IngestFile against moto S3."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from extract_s3.handler import ingest_file, list_new_files
from kpi_pipeline import settings as pipeline_settings
from kpi_pipeline.contracts import IngestResult
from kpi_pipeline.errors import ScratchSpaceExhausted
from local_runner.limits import PAYLOAD_LIMIT_BYTES
from tests.handlers.support import (
    CONTEXT,
    DATA_BUCKET,
    LANDING,
    LANDING_BUCKET,
    NO_LISTEN_TIME,
    RUN,
    STREAMS_DAY,
    STREAMS_NEXT_DAY,
    event,
    fill_tmp,
    ingest_manifest,
    keys,
    manifest_files,
    object_versions,
    put_landing,
    read_json,
    read_parquet,
    sha256,
    snapshot_ref,
)

# A handler rejecting its event never reaches its metrics: Powertools then warns.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def test_list_new_files_takes_only_csv_files_under_the_landing_prefix(cloud: Any) -> None:
    s3 = cloud.s3
    put_landing(s3, "b.csv", STREAMS_DAY)
    put_landing(s3, "2024/06/A.CSV", STREAMS_NEXT_DAY)
    put_landing(s3, "notes.txt", "not streams")
    put_landing(s3, "streams.csv.gz", b"\x1f\x8b")
    put_landing(s3, "folder/", b"")  # a console "folder" placeholder
    s3.put_object(Bucket=LANDING_BUCKET, Key="elsewhere/c.csv", Body=STREAMS_DAY.encode())

    manifest = list_new_files(event("list_new_files"), CONTEXT)

    def head(key: str) -> dict[str, Any]:
        found = s3.head_object(Bucket=LANDING_BUCKET, Key=key)
        return {"etag": found["ETag"].strip('"'), "size": found["ContentLength"]}

    assert "files" not in manifest  # the list stays in S3: the state carries its key
    assert manifest["files_key"] == f"runs/{RUN}/manifest_files.json"
    files = manifest_files(manifest)
    assert files == [
        {"index": 0, "key": "landing/2024/06/A.CSV", **head("landing/2024/06/A.CSV")},
        {"index": 1, "key": "landing/b.csv", **head("landing/b.csv")},
    ]
    assert files[1]["size"] == len(STREAMS_DAY)
    assert (manifest["file_count"], manifest["files_deferred"], manifest["files_ignored"]) == (
        2,
        0,
        2,
    )
    assert manifest["manifest_key"] == f"runs/{RUN}/manifest.json"
    written = read_json(s3, manifest["manifest_key"])
    assert written["run_id"] == RUN
    assert written["files"] == files
    assert written["files_ignored"] == 2
    # Listing moves nothing: every object is still where it landed.
    assert keys(s3, LANDING_BUCKET) == [
        "elsewhere/c.csv",
        "landing/2024/06/A.CSV",
        "landing/b.csv",
        "landing/folder/",
        "landing/notes.txt",
        "landing/streams.csv.gz",
    ]


def test_list_new_files_takes_the_oldest_files_first_and_defers_the_rest(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a backlog larger than max_files_per_run, files used to be taken by key: a file
    named late in the alphabet could wait forever. Oldest first, then by key."""
    for name in ("s3.csv", "s1.csv", "s4.csv", "s2.csv"):  # landed in this order
        put_landing(cloud.s3, name, STREAMS_DAY + f"1,A,2024-06-25 12:00:0{name[1]}\n")
        time.sleep(1.05)  # S3's LastModified counts whole seconds
    monkeypatch.setenv("MAX_FILES_PER_RUN", "3")

    manifest = list_new_files(event("list_new_files"), CONTEXT)

    assert [f["key"] for f in manifest_files(manifest)] == [
        "landing/s3.csv",
        "landing/s1.csv",
        "landing/s4.csv",
    ]
    assert (manifest["file_count"], manifest["files_deferred"]) == (3, 1)
    assert read_json(cloud.s3, manifest["manifest_key"])["files_deferred"] == 1


def test_list_new_files_keeps_the_oldest_while_streaming_a_long_listing(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20, item 11: the listing is never held whole. Of 25 files (put in key order,
    within a second or two) with 3 per run, the kept set is trimmed as it goes (twice
    max_files at most) and is still exactly the oldest; the other objects are counted."""
    for n in range(25):  # a second may turn meanwhile: the first put are the oldest
        put_landing(cloud.s3, f"s{n:02d}.csv", STREAMS_DAY)
    for n in range(12):
        put_landing(cloud.s3, f"notes-{n}.txt", "not a stream file")
    monkeypatch.setenv("MAX_FILES_PER_RUN", "3")

    manifest = list_new_files(event("list_new_files"), CONTEXT)

    assert [f["key"] for f in manifest_files(manifest)] == [
        "landing/s00.csv",
        "landing/s01.csv",
        "landing/s02.csv",
    ]
    assert (manifest["file_count"], manifest["files_deferred"]) == (3, 22)
    assert manifest["files_ignored"] == 12


def test_ingest_file_publishes_curated_plays_a_ledger_entry_and_its_result(
    snapshot: dict[str, Any], cloud: Any, tmp_path: Path
) -> None:
    s3 = cloud.s3
    put_landing(s3, "streams_2024-06-25.csv", STREAMS_DAY)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    content_key = sha256(STREAMS_DAY)

    result = ingest_file(
        event("ingest_file", file=manifest_files(manifest)[0], snapshot=snapshot_ref(snapshot)),
        CONTEXT,
    )

    assert result["outcome"] == "processed"
    assert result["content_key"] == content_key
    assert (result["plays_valid"], result["duplicates"]) == (3, 1)
    assert result["rows_quarantined"] == {"unknown_user_id": 1}
    assert result["kpi_dates"] == ["2024-06-25"]
    curated_key = f"curated/plays/kpi_date=2024-06-25/{content_key}.parquet"
    assert keys(s3, DATA_BUCKET, "curated/") == [curated_key]
    plays = read_parquet(s3, curated_key)
    played = sorted((r["user_id"], r["track_id"]) for r in plays.to_pylist())
    assert played == [(1, "A"), (1, "B"), (2, "A")]
    ledger = read_json(s3, f"ledger/files/{content_key}.json")
    assert ledger["run_id"] == RUN
    assert ledger["source_key"] == "landing/streams_2024-06-25.csv"
    assert ledger["kpi_dates"] == ["2024-06-25"]
    assert "loaded_by_run" not in ledger
    assert read_json(s3, f"runs/{RUN}/ingest/0.json") == result
    assert keys(s3, DATA_BUCKET, "quarantine/rows/") == [f"quarantine/rows/{content_key}.parquet"]
    assert list((tmp_path / "lambda-tmp").iterdir()) == []  # /tmp is left clean


def test_a_file_of_many_dates_answers_the_state_machine_within_its_payload_limit(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    """Issue 17: a file with a play on each of 20,000 dates returned every date to the Map
    (14 bytes each: 280 KB, past Step Functions' 256 KiB), and its ingest failed every run.
    The state gets the first 100 and the count; the result document lists them all."""
    days = [dt.date(2001, 1, 1) + dt.timedelta(days=n) for n in range(150)]
    body = "user_id,track_id,listen_time\n" + "".join(f"1,A,{d} 10:00:00\n" for d in days)
    put_landing(cloud.s3, "streams_many_dates.csv", body)
    manifest = list_new_files(event("list_new_files"), CONTEXT)

    result = ingest_file(
        event("ingest_file", file=manifest_files(manifest)[0], snapshot=snapshot_ref(snapshot)),
        CONTEXT,
    )

    assert (len(result["kpi_dates"]), result["kpi_date_count"]) == (100, 150)
    document = read_json(cloud.s3, f"runs/{RUN}/ingest/0.json")
    assert document["kpi_dates"] == [d.isoformat() for d in days]
    many = IngestResult.model_validate(
        {**document, "kpi_dates": [dt.date(1, 1, 1) + dt.timedelta(days=n) for n in range(20_000)]}
    )
    assert len(json.dumps(many.model_dump(mode="json"))) > PAYLOAD_LIMIT_BYTES
    assert len(json.dumps(many.in_state().model_dump(mode="json"))) < 10_000


def test_ingest_file_recognises_the_same_bytes_under_another_name(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    s3 = cloud.s3
    # With versioning, any rewrite of an accepted output would show as a second version.
    s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    put_landing(s3, "first.csv", STREAMS_DAY)
    first = ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    s3.delete_object(Bucket=LANDING_BUCKET, Key=LANDING + "first.csv")
    put_landing(s3, "resent-copy.csv", STREAMS_DAY)
    accepted_outputs = ("curated/", "quarantine/rows/", "ledger/")
    versions_before = {p: object_versions(s3, p) for p in accepted_outputs}

    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    (again,) = ingest_manifest("run-2", manifest, snapshot)

    assert first[0]["outcome"] == "processed"
    assert again["outcome"] == "already_processed"
    assert again["key"] == "landing/resent-copy.csv"
    assert again["content_key"] == first[0]["content_key"]
    assert again["ingested_by_run"] == "run-1"
    assert again["loaded_by_run"] is None
    assert again["kpi_dates"] == ["2024-06-25"]
    assert again["plays_valid"] == 0  # its plays were counted by run-1
    # Recognised from the ledger: nothing of run-1's outputs is validated or written again.
    assert {p: object_versions(s3, p) for p in accepted_outputs} == versions_before
    assert len(versions_before["curated/"]) == 1
    assert read_json(s3, "runs/run-2/ingest/0.json")["outcome"] == "already_processed"


def test_ingest_file_quarantines_a_file_without_the_required_columns(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    put_landing(cloud.s3, "bad_header.csv", NO_LISTEN_TIME)
    manifest = list_new_files(event("list_new_files"), CONTEXT)

    (result,) = ingest_manifest(RUN, manifest, snapshot)

    assert result["outcome"] == "quarantined"
    assert result["reason"] == "missing_columns"
    assert "listen_time" in result["detail"]
    assert result["kpi_dates"] == []
    assert keys(cloud.s3, DATA_BUCKET, "curated/") == []
    assert keys(cloud.s3, DATA_BUCKET, "ledger/") == []
    assert read_json(cloud.s3, f"runs/{RUN}/ingest/0.json")["reason"] == "missing_columns"


def test_ingest_file_skips_an_object_replaced_after_the_manifest(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    put_landing(cloud.s3, "streams.csv", STREAMS_DAY)
    manifest = list_new_files(event("list_new_files"), CONTEXT)
    put_landing(cloud.s3, "streams.csv", STREAMS_NEXT_DAY)  # same key, new bytes

    (result,) = ingest_manifest(RUN, manifest, snapshot)

    assert result["outcome"] == "skipped"
    assert result["reason"] == "changed_after_listing"
    assert result["etag"] == manifest_files(manifest)[0]["etag"]
    assert result["content_key"] is None
    assert keys(cloud.s3, DATA_BUCKET, "curated/") == []
    assert keys(cloud.s3, DATA_BUCKET, "ledger/") == []


def test_a_stream_file_too_large_for_the_functions_tmp_fails_naming_the_setting(
    snapshot: dict[str, Any], cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """IngestFile downloads the file and DuckDB spills next to it: a file larger than what
    /tmp holds was an OSError that no retry fixes. It now fails before downloading, with a
    message that says which setting to raise."""
    monkeypatch.setenv("EPHEMERAL_STORAGE_MB", "512")
    monkeypatch.setenv("PIPELINE_STEP", "ingest_file")
    pipeline_settings.clear_cache()  # as a function configured so, from its cold start
    body = STREAMS_DAY + "1,A,2024-06-25 12:00:00\n" * 40_000  # about 1 MB
    fill_tmp(tmp_path / "lambda-tmp", leave_free_bytes=len(body))
    put_landing(cloud.s3, "big.csv", body)
    (entry,) = manifest_files(list_new_files(event("list_new_files"), CONTEXT))

    with pytest.raises(ScratchSpaceExhausted) as raised:
        ingest_file(event("ingest_file", file=entry, snapshot=snapshot_ref(snapshot)), CONTEXT)

    message = str(raised.value)
    assert "functions.ingest_file.ephemeral_storage_mb" in message
    assert "landing/big.csv" in message and "512 MB" in message


def test_a_file_moved_to_an_archive_tier_after_the_listing_is_unreadable_not_failed(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    """Intelligent-Tiering's archive tiers do not show in a listing: GetObject then says
    InvalidObjectState. The file is left in place with its reason, the run goes on."""
    put_landing(cloud.s3, "cold.csv", STREAMS_DAY)
    (entry,) = manifest_files(list_new_files(event("list_new_files"), CONTEXT))
    cloud.s3.put_object(  # same bytes, same ETag: now archived
        Bucket=LANDING_BUCKET, Key=LANDING + "cold.csv", Body=STREAMS_DAY, StorageClass="GLACIER"
    )

    result = ingest_file(event("ingest_file", file=entry, snapshot=snapshot_ref(snapshot)), CONTEXT)

    assert (result["outcome"], result["reason"]) == ("unreadable", "archived_storage_class")
    assert keys(cloud.s3, DATA_BUCKET, "curated/") == []
