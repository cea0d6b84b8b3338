"""Load: the warehouse and the ledger after a load."""

from __future__ import annotations

from typing import Any

import pytest

from extract_s3.handler import list_new_files
from tests.handlers.support import (
    CONTEXT,
    DAY,
    NEXT_DAY,
    RUN,
    STREAMS_DAY,
    STREAMS_NEXT_DAY,
    event,
    ingest_manifest,
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
