"""TransformInWarehouse and Load with the warehouse engine (PostgreSQL standing in for
Redshift, reading S3 the way COPY does), against the Lambda engine on the same inputs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from extract_s3.handler import list_new_files
from kpi_pipeline import settings as pipeline_settings
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.warehouse.schema import KPI_COLUMNS
from tests.handlers.support import (
    CONTEXT,
    DATA_BUCKET,
    RUN,
    STREAMS_DAY,
    STREAMS_NEXT_DAY,
    event,
    ingest_manifest,
    keys,
    load,
    plan_transform,
    put_landing,
    read_json,
    read_kpis,
    sha256,
    transform,
    transform_date,
    warehouse_rows,
)
from tests.harness import stage_rows

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
COMPARED = tuple(c.name for c in KPI_COLUMNS if c.name != "run_id")  # run ids differ


def use_engine(monkeypatch: pytest.MonkeyPatch, engine: str, min_plays: int | None = None) -> None:
    monkeypatch.setenv("TRANSFORM_ENGINE", engine)
    if min_plays is not None:
        monkeypatch.setenv("WAREHOUSE_ENGINE_MIN_PLAYS", str(min_plays))
    pipeline_settings.clear_cache()  # as a function configured so, from its cold start


def comparable(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    def value(row: dict[str, Any], name: str) -> Any:
        found = row[name]
        return round(found, 9) if isinstance(found, float) else found

    return sorted(
        (tuple(value(r, n) for n in COMPARED) for r in rows),
        key=lambda t: tuple((v is None, str(v)) for v in t),
    )


def ingest_both_days(cloud: Any, snapshot: dict[str, Any]) -> None:
    put_landing(cloud.s3, "day.csv", STREAMS_DAY)
    put_landing(cloud.s3, "next_day.csv", STREAMS_NEXT_DAY)
    ingest_manifest(RUN, list_new_files(event("list_new_files"), CONTEXT), snapshot)


def test_the_warehouse_engine_loads_the_rows_the_lambda_engine_computes(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_both_days(cloud, snapshot)
    in_lambda = transform("run-lambda", snapshot)  # the same pending dates, planned twice
    use_engine(monkeypatch, "warehouse")

    in_warehouse = transform(RUN, snapshot)
    loaded = load(RUN, in_warehouse)

    assert in_warehouse["dates_in_warehouse"] == 2
    dates = read_json(cloud.s3, in_warehouse["dates_key"])
    assert [(d["engine"], d["plays"]) for d in dates] == [("warehouse", 3), ("warehouse", 1)]
    # No Parquet part: the rows went from the warehouse's stage table into the table.
    assert keys(cloud.s3, DATA_BUCKET, in_warehouse["kpi_prefix"]) == []
    rows = warehouse_rows(warehouse_dsn)
    assert loaded["rows_loaded"] == len(rows) == 5
    assert comparable(rows) == comparable(read_kpis(cloud.s3, in_lambda["kpi_prefix"]).to_pylist())
    assert {r["run_id"] for r in rows} == {RUN}
    # The figures of the run summary are the Lambda engine's.
    figures = ("genre_rows", "hourly_rows", "plays_in_kpis", "duplicates_across_files")
    assert [in_warehouse[f] for f in figures] == [in_lambda[f] for f in figures]
    # Load kept the batches it took (a load run again takes them again), one per date.
    kept = stage_rows(warehouse_dsn)
    assert [(d.isoformat(), attempt) for d, attempt, _ in kept] == [
        ("2024-06-25", in_warehouse["attempt"]),
        ("2024-06-26", in_warehouse["attempt"]),
    ]


def test_auto_sends_only_the_dates_above_the_threshold_to_the_warehouse(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_both_days(cloud, snapshot)
    expected = transform("run-lambda", snapshot)
    use_engine(monkeypatch, "auto", min_plays=2)  # the 25th has 3 plays, the 26th 1

    mixed = transform(RUN, snapshot)
    load(RUN, mixed)

    dates = read_json(cloud.s3, mixed["dates_key"])
    assert [(d["kpi_date"], d["engine"]) for d in dates] == [
        ("2024-06-25", "warehouse"),
        ("2024-06-26", "lambda"),
    ]
    assert read_kpis(cloud.s3, mixed["kpi_prefix"]).num_rows == 2  # the 26th's part only
    assert comparable(warehouse_rows(warehouse_dsn)) == comparable(
        read_kpis(cloud.s3, expected["kpi_prefix"]).to_pylist()
    )
    for content in (STREAMS_DAY, STREAMS_NEXT_DAY):
        assert read_json(cloud.s3, f"ledger/files/{sha256(content)}.json")["loaded_by_run"] == RUN


def test_the_manifest_lists_exactly_the_ledger_accepted_objects_with_their_sizes(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object under the date's prefix that no ledger entry names (an ingest that died
    before accepting its file) is not a play: COPY of the prefix would count it."""
    ingest_both_days(cloud, snapshot)
    day_prefix = "curated/plays/kpi_date=2024-06-25/"
    accepted = f"{day_prefix}{sha256(STREAMS_DAY)}.parquet"
    stale = cloud.s3.get_object(Bucket=DATA_BUCKET, Key=accepted)["Body"].read()
    cloud.s3.put_object(Bucket=DATA_BUCKET, Key=f"{day_prefix}{'0' * 64}.parquet", Body=stale)
    use_engine(monkeypatch, "warehouse")

    plan = plan_transform(RUN, snapshot)
    result = transform_date(RUN, plan, "2024-06-25", "warehouse")

    manifest = read_json(
        cloud.s3,
        f"runs/{RUN}/transform/attempt={plan['attempt']}/manifests/"
        "kpi_date=2024-06-25/wh_curated_plays.manifest",
    )
    size = cloud.s3.head_object(Bucket=DATA_BUCKET, Key=accepted)["ContentLength"]
    assert manifest == {
        "entries": [
            {
                "url": f"s3://{DATA_BUCKET}/{accepted}",
                "mandatory": True,
                "meta": {"content_length": size},
            }
        ]
    }
    assert (result["curated_rows"], result["plays_in_kpis"]) == (3, 3)
    assert result["engine"] == "warehouse"
    # The date's rows are a stage batch of its own (each computation has its own id).
    assert re.fullmatch(r"[0-9a-f]{32}", result["stage_batch"])


def test_a_date_pinned_to_a_catalogue_without_song_tracks_names_the_setting_to_use(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_both_days(cloud, snapshot)
    use_engine(monkeypatch, "warehouse")
    plan = plan_transform(RUN, snapshot)
    pin = read_json(cloud.s3, "catalogue/dates/kpi_date=2024-06-25.json")
    tracks = pin["songs_key"].replace("catalogue/songs/", "catalogue/song_tracks/")
    cloud.s3.delete_object(Bucket=DATA_BUCKET, Key=tracks)  # pinned before they existed

    with pytest.raises(DataGateError, match=r"without .*song_tracks.*transform.engine 'lambda'"):
        transform_date(RUN, plan, "2024-06-25", "warehouse")


def test_load_refuses_a_warehouse_date_whose_kpis_were_never_computed(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_both_days(cloud, snapshot)
    use_engine(monkeypatch, "warehouse")
    plan = plan_transform(RUN, snapshot)
    transform_date(RUN, plan, "2024-06-25", "warehouse")  # the 26th's child never ran

    with pytest.raises(
        DataGateError, match=r"no KPIs computed in the warehouse for \['2024-06-26'\]"
    ):
        load(RUN, plan)
    assert [(d.isoformat(), a) for d, a, _ in stage_rows(warehouse_dsn)] == [
        ("2024-06-25", plan["attempt"])
    ]


def test_a_date_with_data_written_before_redshifts_parquet_rules_is_computed_in_lambda(
    snapshot: dict[str, Any], cloud: Any, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgraded deployment's older curated plays (ZSTD, a UTC-adjusted listen_time) are
    never COPYed: their dates go to the Lambda engine, whatever transform.engine says."""
    ingest_both_days(cloud, snapshot)
    key = f"ledger/files/{sha256(STREAMS_DAY)}.json"
    entry = read_json(cloud.s3, key)
    assert entry["copy_format"] == 2
    del entry["copy_format"]  # as an entry of the earlier version reads
    cloud.s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=json.dumps(entry))
    use_engine(monkeypatch, "warehouse")

    plan = plan_transform(RUN, snapshot)

    dates = read_json(cloud.s3, plan["dates_key"])
    assert [(d["kpi_date"], d["engine"]) for d in dates] == [
        ("2024-06-25", "lambda"),
        ("2024-06-26", "warehouse"),
    ]
