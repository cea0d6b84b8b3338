"""Transform: the KPIs of the dates the warehouse lacks."""

from __future__ import annotations

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
    assert plan["content_keys"] == sorted([sha256(STREAMS_DAY), sha256(STREAMS_NEXT_DAY)])

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
    assert read_json(cloud.s3, "runs/run-2/load_plan.json") == {"content_keys": [], "kpi_dates": []}
