"""Transform: the KPIs of the dates the warehouse lacks."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract_s3.handler import list_new_files
from kpi_pipeline import planning
from kpi_pipeline import settings as pipeline_settings
from kpi_pipeline.errors import DataGateError, ScratchSpaceExhausted
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
    fill_tmp,
    ingest_manifest,
    keys,
    load,
    plan_transform,
    put_landing,
    read_json,
    read_kpis,
    read_parquet,
    sha256,
    transform,
    transform_date,
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
    assert re.fullmatch(rf"kpis/run_id={RUN}/attempt=[0-9a-f]{{12}}/", result["kpi_prefix"])
    # One unit of work a date: the dates the Map reads, each with its engine and its
    # accepted plays (from the ledger), one KPI part each.
    assert read_json(cloud.s3, result["dates_key"]) == [
        {"kpi_date": "2024-06-25", "engine": "lambda", "plays": 3},
        {"kpi_date": "2024-06-26", "engine": "lambda", "plays": 1},
    ]
    assert result["dates_in_warehouse"] == 0
    assert keys(cloud.s3, DATA_BUCKET, result["kpi_prefix"]) == [
        f"{result['kpi_prefix']}part-2024-06-25.parquet",
        f"{result['kpi_prefix']}part-2024-06-26.parquet",
    ]
    assert (result["genre_rows"], result["hourly_rows"], result["plays_in_kpis"]) == (3, 2, 4)
    plan = read_json(cloud.s3, f"runs/{RUN}/load_plan.json")
    assert plan["contents_by_date"] == {
        "2024-06-25": [sha256(STREAMS_DAY)],
        "2024-06-26": [sha256(STREAMS_NEXT_DAY)],
    }
    assert plan["pending"] == sorted([sha256(STREAMS_DAY), sha256(STREAMS_NEXT_DAY)])

    kpis = read_kpis(cloud.s3, result["kpi_prefix"])
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
    # docs/kpis.md's worked example, figure by figure.
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
    kpis = read_kpis(cloud.s3, result["kpi_prefix"]).to_pylist()
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
    assert result["kpi_prefix"] is None
    assert keys(cloud.s3, DATA_BUCKET, "kpis/run_id=run-2/") == []
    assert read_json(cloud.s3, "runs/run-2/load_plan.json") == {
        "version": 1,
        "kpi_dates": [],
        "contents_by_date": {},
        "pending": [],
        "partial": {},
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

    kpis = read_kpis(cloud.s3, result["kpi_prefix"]).to_pylist()
    pop_day = next(r for r in kpis if r["kpi_date"] == DAY and r["track_genre"] == "pop")
    assert pop_day["listen_count"] == 1  # the late file's play only
    pop_next = next(r for r in kpis if r["kpi_date"] == NEXT_DAY and r["track_genre"] == "pop")
    assert pop_next["listen_count"] == 1


def test_transform_clears_pending_markers_that_can_never_be_loaded(
    snapshot: dict[str, Any], cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file accepted with no valid play has no date to load; a marker whose ingest died
    before its ledger entry (the file since gone from landing) has no accepted content,
    once no ingest can still be writing it (16 minutes). Neither may stay pending: every
    later run would go through Map, Transform and Archive and never end no_new_files."""
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
    # Young, it may be an ingest of a failed run still at work: kept.
    assert keys(cloud.s3, DATA_BUCKET, "ledger/pending/") == [orphan]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=17)
    monkeypatch.setattr(planning, "_now", lambda: later)
    assert transform("run-1b", snapshot)["kpi_date_count"] == 0
    assert keys(cloud.s3, DATA_BUCKET, "ledger/pending/") == []
    manifest = list_new_files(event("list_new_files", run_id="run-2"), CONTEXT)
    assert manifest["pending_contents"] == 0


def ingest_days(cloud: Any, snapshot: dict[str, Any], days: int) -> None:
    """A backlog: one file per day, each with a few hundred plays."""
    for day in range(days):
        date = dt.date(2024, 6, 20 + day)
        rows = "".join(
            f"{1 + i % 2},{'AB'[i % 3 == 0]},{date} {i % 24:02d}:{i % 60:02d}:00\n"
            for i in range(300)
        )
        put_landing(cloud.s3, f"day-{day}.csv", "user_id,track_id,listen_time\n" + rows)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)


def test_a_backlog_is_transformed_a_date_at_a_time_within_the_functions_tmp(
    snapshot: dict[str, Any], cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Transform used to download every curated file of every pending date at once: a
    backlog of a couple of weeks filled /tmp. Each date is now a call of its own that needs
    room for that date only (a third of what is free), one KPI part each; the KPIs are the
    same."""
    ingest_days(cloud, snapshot, days=4)
    unbounded = read_kpis(cloud.s3, transform(RUN, snapshot)["kpi_prefix"])
    one_day = max(
        o["Size"]
        for o in cloud.s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix="curated/")["Contents"]
    )
    monkeypatch.setenv("EPHEMERAL_STORAGE_MB", "512")
    monkeypatch.setenv("PIPELINE_STEP", "transform")
    pipeline_settings.clear_cache()
    fill_tmp(tmp_path / "lambda-tmp", leave_free_bytes=3 * one_day + 100)  # one day a batch

    result = transform(RUN, snapshot)

    assert result["kpi_date_count"] == 4
    assert len(keys(cloud.s3, DATA_BUCKET, result["kpi_prefix"])) == 4
    batched = read_kpis(cloud.s3, result["kpi_prefix"])
    drop = ["run_id"]
    assert sorted(batched.drop(drop).to_pylist(), key=repr) == sorted(
        unbounded.drop(drop).to_pylist(), key=repr
    )


def test_a_date_too_large_for_the_functions_tmp_fails_naming_the_setting(
    snapshot: dict[str, Any], cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ingest_days(cloud, snapshot, days=1)
    monkeypatch.setenv("EPHEMERAL_STORAGE_MB", "512")
    monkeypatch.setenv("PIPELINE_STEP", "transform")
    pipeline_settings.clear_cache()
    fill_tmp(tmp_path / "lambda-tmp", leave_free_bytes=1000)

    with pytest.raises(ScratchSpaceExhausted, match=r"functions\.transform\.ephemeral_storage_mb"):
        transform(RUN, snapshot)


def test_a_date_of_a_superseded_plan_is_refused(snapshot: dict[str, Any], cloud: Any) -> None:
    """A TransformDates item names the plan it belongs to: once Load has asked for a new
    plan, an item of the old one (a redriven child, say) must not compute from a plan that
    no longer holds."""
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    first = plan_transform(RUN, snapshot)
    plan_transform(RUN, snapshot)  # the plan made again after PlanOutdated

    with pytest.raises(DataGateError, match="has plan 2, not plan 1"):
        transform_date(RUN, first, "2024-06-25")

    assert keys(cloud.s3, DATA_BUCKET, first["kpi_prefix"]) == []


def test_each_date_is_credited_to_the_artists_split_at_extract_and_pinned_with_its_catalogue(
    snapshot: dict[str, Any], cloud: Any
) -> None:
    """The artists are split once, at extract, kept beside the songs in the date's pinned
    catalogue, and read from there: the split is never redone (and never differs) per run."""
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)
    pin = read_json(cloud.s3, "catalogue/dates/kpi_date=2024-06-25.json")
    pinned = pin["songs_key"].replace("catalogue/songs/", "catalogue/song_artists/")
    assert read_parquet(cloud.s3, pinned).num_rows == 3  # (A, X), (A, Y), (B, Y)
    only_zed = pa.table({"track_id": ["A", "B"], "artist": ["Zed", "Zed"]})
    sink = pa.BufferOutputStream()
    pq.write_table(only_zed, sink)
    cloud.s3.put_object(Bucket=DATA_BUCKET, Key=pinned, Body=sink.getvalue().to_pybytes())

    kpis = read_kpis(cloud.s3, transform(RUN, snapshot)["kpi_prefix"])

    hourly = [r for r in kpis.to_pylist() if r["kpi_type"] == "hourly"]
    assert {r["top_artists"] for r in hourly} == {"Zed"}
