"""Transform: the KPIs of the dates the warehouse lacks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extract_s3.handler import list_new_files
from kpi_pipeline.warehouse.arrow import KPI_SCHEMA
from tests.handlers.support import (
    CONTEXT,
    DATA_BUCKET,
    DAY,
    LANDING,
    LANDING_BUCKET,
    NEXT_DAY,
    NO_LISTEN_TIME,
    RUN,
    STREAMS_DAY,
    STREAMS_NEXT_DAY,
    event,
    ingest_manifest,
    keys,
    load,
    put_landing,
    read_json,
    read_parquet,
    sha256,
    transform,
)

# A handler rejecting its event never reaches its metrics: Powertools then warns.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def test_transform_computes_the_kpis_of_the_dates_this_run_ingested(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    put_landing(cloud.s3, "bad.csv", NO_LISTEN_TIME)
    ingested = ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    assert sorted(r["outcome"] for r in ingested) == ["processed", "processed", "quarantined"]

    result = transform(RUN, snapshot)

    assert result["kpi_dates"] == ["2024-06-25", "2024-06-26"]
    assert result["kpi_date_count"] == 2
    assert result["kpi_key"] == f"kpis/run_id={RUN}/music_kpi_metrics.parquet"
    assert (result["genre_rows"], result["hourly_rows"], result["plays_in_kpis"]) == (3, 2, 4)
    plan = read_json(cloud.s3, f"runs/{RUN}/load_plan.json")
    assert plan["contents_by_date"] == {
        "2024-06-25": [sha256(STREAMS_DAY)],
        "2024-06-26": [sha256(STREAMS_NEXT_DAY)],
    }
    assert plan["pending"] == sorted([sha256(STREAMS_DAY), sha256(STREAMS_NEXT_DAY)])

    kpis = read_parquet(cloud.s3, result["kpi_key"])
    assert kpis.schema.equals(KPI_SCHEMA)
    rows = {
        (r["kpi_date"], r["kpi_type"], r["track_genre"] or r["stream_hour"]): r
        for r in kpis.to_pylist()
    }
    assert set(rows) == {
        (DAY, "genre", "pop"),
        (DAY, "genre", "dance"),
        (DAY, "hourly", 10),
        (NEXT_DAY, "genre", "pop"),
        (NEXT_DAY, "hourly", 8),
    }
    # KPIS.md's worked example, figure by figure.
    pop, dance, hour_10 = (
        rows[DAY, "genre", "pop"],
        rows[DAY, "genre", "dance"],
        rows[DAY, "hourly", 10],
    )
    assert (pop["listen_count"], pop["avg_track_duration_sec"]) == (3, 210.0)
    assert pop["popularity_index"] == pytest.approx(100 * (0.5 + 0.5 * (200 / 3) / 100))
    assert (pop["most_popular_track"], pop["most_popular_track_id"]) == ("Song A", "A")
    assert (dance["listen_count"], dance["avg_track_duration_sec"]) == (2, 180.0)
    assert dance["popularity_index"] == pytest.approx(100 * (0.5 * 2 / 3 + 0.4))
    assert (hour_10["listen_count"], hour_10["unique_listeners"]) == (3, 2)
    assert hour_10["top_artists"] == "Y"
    assert hour_10["track_diversity_index"] == pytest.approx(2 / 3)
    assert {r["run_id"] for r in rows.values()} == {RUN}


def test_transform_recomputes_dates_of_content_ingested_earlier_but_never_loaded(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    # run-1 ingested the 25th and then failed: nothing was transformed nor loaded, and the
    # file was never archived, so run-2 finds it again beside a new file for the 26th.
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    outcomes = [r["outcome"] for r in ingest_manifest("run-2", manifest, snapshot)]
    assert outcomes == ["already_processed", "processed"]

    result = transform("run-2", snapshot)

    assert result["kpi_dates"] == ["2024-06-25", "2024-06-26"]
    kpis = read_parquet(cloud.s3, result["kpi_key"]).to_pylist()
    pop_day = next(r for r in kpis if r["kpi_date"] == DAY and r["track_genre"] == "pop")
    assert pop_day["listen_count"] == 3  # the plays run-1 accepted
    assert {r["run_id"] for r in kpis} == {"run-2"}


def test_transform_with_no_new_content_plans_no_date_and_writes_no_kpi_file(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    load("run-1", transform("run-1", snapshot))
    cloud.s3.delete_object(Bucket=LANDING_BUCKET, Key=LANDING + "day.csv")
    # run-2: the same, already loaded content under a new name, and a file quarantined whole.
    put_landing(cloud.s3, "day-resent.csv", STREAMS_DAY)
    put_landing(cloud.s3, "bad.csv", NO_LISTEN_TIME)
    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    outcomes = [r["outcome"] for r in ingest_manifest("run-2", manifest, snapshot)]
    assert outcomes == ["quarantined", "already_processed"]

    result = transform("run-2", snapshot)

    assert result["kpi_date_count"] == 0
    assert result["kpi_dates"] == []
    assert result["kpi_key"] is None
    assert keys(cloud.s3, DATA_BUCKET, "kpis/run_id=run-2/") == []
    assert read_json(cloud.s3, "runs/run-2/load_plan.json") == {
        "version": 1,
        "kpi_dates": [],
        "contents_by_date": {},
        "pending": [],
    }


def test_transform_reads_only_the_curated_objects_the_ledger_lists_for_each_content(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    """An ingest wrote curated plays of the 25th and the 26th, then died before its ledger
    entry; the same content, ingested again after a source change, had no valid play on the
    25th: its ledger lists only the 26th, yet the stale object of the 25th stays. A later
    file of the 25th must not bring those phantom plays into the KPIs."""
    both_days = STREAMS_DAY + STREAMS_NEXT_DAY.split("\n", 1)[1]
    put_landing(cloud.s3, "both.csv", both_days)
    ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    ledger_key = f"ledger/files/{sha256(both_days)}.json"
    entry = read_json(cloud.s3, ledger_key)
    # what the second ingest recorded: nothing accepted on the 25th
    cloud.s3.put_object(
        Bucket=DATA_BUCKET,
        Key=ledger_key,
        Body=json.dumps({**entry, "kpi_dates": [NEXT_DAY.isoformat()]}).encode(),
    )
    cloud.s3.delete_object(Bucket=LANDING_BUCKET, Key=LANDING + "both.csv")
    put_landing(cloud.s3, "late.csv", "user_id,track_id,listen_time\n2,B,2024-06-25 12:00:00\n")
    ingest_manifest(
        "run-2", list_new_files(event("list_new_files", run_id="run-2"), CONTEXT), snapshot
    )

    result = transform("run-2", snapshot)

    kpis = read_parquet(cloud.s3, result["kpi_key"]).to_pylist()
    pop_day = next(r for r in kpis if r["kpi_date"] == DAY and r["track_genre"] == "pop")
    assert pop_day["listen_count"] == 1  # the late file's play only
    pop_next = next(r for r in kpis if r["kpi_date"] == NEXT_DAY and r["track_genre"] == "pop")
    assert pop_next["listen_count"] == 1


def test_transform_clears_pending_markers_that_can_never_be_loaded(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    """A file accepted with no valid play has no date to load; a marker whose ingest died
    before its ledger entry (the file since gone from landing) has no accepted content.
    Neither may stay pending: every later run would go through Map, Transform and Archive
    and never end no_new_files."""
    put_landing(
        cloud.s3, "unknown_users.csv", "user_id,track_id,listen_time\n9,A,2024-06-25 10:00:00\n"
    )
    ingested = ingest_manifest(
        "run-1", list_new_files(event("list_new_files", run_id="run-1"), CONTEXT), snapshot
    )
    assert ingested[0]["outcome"] == "processed" and ingested[0]["plays_valid"] == 0
    orphan = "ledger/pending/" + "0" * 64 + ".json"
    cloud.s3.put_object(
        Bucket=DATA_BUCKET,
        Key=orphan,
        Body=json.dumps(
            {"content_key": "0" * 64, "run_id": "died", "kpi_dates": ["2024-06-25"]}
        ).encode(),
    )

    result = transform("run-1", snapshot)

    assert result["kpi_date_count"] == 0
    assert keys(cloud.s3, DATA_BUCKET, "ledger/pending/") == []
    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    assert manifest["pending_contents"] == 0
