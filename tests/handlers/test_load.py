"""Load: the warehouse and the ledger after a load."""

from __future__ import annotations

from typing import Any

import pytest

from extract_s3.handler import list_new_files
from kpi_pipeline.errors import DataGateError, PlanOutdated
from tests.handlers.support import (
    CONTEXT,
    DATA_BUCKET,
    DAY,
    NEXT_DAY,
    RUN,
    STREAMS_DAY,
    STREAMS_NEXT_DAY,
    event,
    ingest_manifest,
    keys,
    load,
    put_landing,
    read_json,
    sha256,
    transform,
    warehouse_rows,
)

# A handler rejecting its event never reaches its metrics: Powertools then warns.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def test_load_replaces_the_dates_in_the_warehouse_and_marks_the_ledger(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    transformed = transform(RUN, snapshot)

    result = load(RUN, transformed)
    again = load(RUN, transformed)  # a Step Functions retry after a timeout

    rows = warehouse_rows(warehouse_dsn)
    assert result["rows_loaded"] == again["rows_loaded"] == len(rows) == 5
    assert result["kpi_dates"] == ["2024-06-25", "2024-06-26"]
    assert result["skipped"] is False
    assert {r["run_id"] for r in rows} == {RUN}
    assert all(r["loaded_at"] is not None for r in rows)
    pop = next(r for r in rows if r["kpi_date"] == DAY and r["track_genre"] == "pop")
    assert (pop["listen_count"], pop["most_popular_track"]) == (3, "Song A")
    assert pop["popularity_index"] == pytest.approx(100 * (0.5 + 0.5 * (200 / 3) / 100))
    hour_8 = next(r for r in rows if r["kpi_date"] == NEXT_DAY and r["stream_hour"] == 8)
    assert (hour_8["listen_count"], hour_8["unique_listeners"], hour_8["track_genre"]) == (
        1,
        1,
        None,
    )
    for content in (STREAMS_DAY, STREAMS_NEXT_DAY):
        assert read_json(cloud.s3, f"ledger/files/{sha256(content)}.json")["loaded_by_run"] == RUN


def test_load_refuses_a_plan_that_no_longer_covers_every_content_accepted_for_its_dates(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    """Run A plans 2024-06-25 from one file; another file of that date is accepted before A
    loads (a second run that got past the lock, or an operator's replay). Loading A's plan
    would replace the date with fewer plays than were accepted, and no pending marker would
    be left to repair it: A must not commit, and its markers stay for the recomputation."""
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(
        "run-a", list_new_files(event("list_new_files", run_id="run-a"), CONTEXT), snapshot
    )
    planned = transform("run-a", snapshot)
    put_landing(cloud.s3, "more.csv", "user_id,track_id,listen_time\n2,B,2024-06-25 12:00:00\n")
    ingest_manifest(
        "run-b", list_new_files(event("list_new_files", run_id="run-b"), CONTEXT), snapshot
    )

    with pytest.raises(PlanOutdated, match="2024-06-25"):
        load("run-a", planned)

    assert len(keys(cloud.s3, DATA_BUCKET, "ledger/pending/")) == 2
    replanned = transform("run-a", snapshot)  # what the state machine does on PlanOutdated
    load("run-a", replanned)
    pop = next(r for r in warehouse_rows(warehouse_dsn) if r["track_genre"] == "pop")
    assert pop["listen_count"] == 4
    assert keys(cloud.s3, DATA_BUCKET, "ledger/pending/") == []


def test_load_refuses_a_plan_with_a_date_whose_kpi_part_is_missing(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    """Load deletes each planned date's rows before inserting the KPI parts: a date without
    its part would lose its KPIs. Every date must have its part, or nothing is replaced."""
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    load(RUN, transform(RUN, snapshot))
    before = warehouse_rows(warehouse_dsn)
    late = "user_id,track_id,listen_time\n2,B,2024-06-25 09:00:00\n2,B,2024-06-26 09:00:00\n"
    put_landing(cloud.s3, "late.csv", late)
    ingest_manifest(
        "run-b", list_new_files(event("list_new_files", run_id="run-b"), CONTEXT), snapshot
    )
    planned = transform("run-b", snapshot)
    assert planned["kpi_dates"] == ["2024-06-25", "2024-06-26"]
    part = f"{planned['kpi_prefix']}part-2024-06-26.parquet"
    cloud.s3.delete_object(Bucket=DATA_BUCKET, Key=part)

    with pytest.raises(DataGateError, match=r"no KPI part .* \['2024-06-26'\]"):
        load("run-b", planned)

    assert warehouse_rows(warehouse_dsn) == before
    assert len(keys(cloud.s3, DATA_BUCKET, "ledger/pending/")) == 1  # recomputed next run


def test_load_refuses_parts_of_a_plan_that_is_no_longer_the_runs(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str
) -> None:
    """Load clears the pending markers of the run's current plan: the parts it loads must
    come from that plan, or markers of content the parts never saw would be cleared."""
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    first = transform(RUN, snapshot)
    transform(RUN, snapshot)  # plan 2

    with pytest.raises(DataGateError, match=r"from plan 1 .* now 2"):
        load(RUN, first)

    assert len(keys(cloud.s3, DATA_BUCKET, "ledger/pending/")) == 1
