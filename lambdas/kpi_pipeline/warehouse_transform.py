"""TransformInWarehouse: the KPIs of one date of the plan, computed inside the warehouse.

The date's inputs are listed in COPY manifests, object by object, never as a prefix: the
curated objects the plan lists for the date (a stale object under the same prefix, written
by an ingest that died before its ledger entry, is never read), and the songs and artists
of the catalogue the date is pinned to. The warehouse then COPYs them, runs
``sql/warehouse/date_kpis.sql`` and adds the rows to the stage table as its batch, all in one
transaction; Load moves them into ``music_kpi_metrics`` with the other dates, in its own
single transaction. No DuckDB or pyarrow here: this runs in a small function.
"""

from __future__ import annotations

from kpi_pipeline.contracts import TransformDateRequest, TransformDateResult
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.observability import logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.storage import Storage
from kpi_pipeline.transform_plan import PlannedDate, planned_date
from kpi_pipeline.warehouse import DateJob, Warehouse
from kpi_pipeline.warehouse.redshift import batch_id


def compute_date_in_warehouse(
    request: TransformDateRequest,
    *,
    warehouse: Warehouse,
    storage: Storage,
    layout: Layout,
) -> TransformDateResult:
    planned = planned_date(request, storage=storage, layout=layout)
    inputs = _inputs(planned, storage, layout)
    manifests = {}
    for table, objects in inputs.items():
        key = layout.warehouse_manifest_key(
            request.run_id, request.attempt, planned.kpi_date, table
        )
        storage.put_json(layout.data_bucket, key, copy_manifest(layout.data_bucket, objects))
        manifests[table] = key
    job = DateJob(
        kpi_date=planned.kpi_date,
        run_id=request.run_id,
        bucket=layout.data_bucket,
        manifests=manifests,
        attempt=request.attempt,
        # The same for every invocation of this date of this attempt: a retried invocation
        # finds the batch a timed-out one started (kpi_pipeline.warehouse.redshift).
        work_id=batch_id(request.run_id, request.attempt, planned.kpi_date.isoformat()),
    )
    figures, committed = warehouse.compute_date(job)
    result = TransformDateResult.model_validate(
        {
            "kpi_date": planned.kpi_date,
            "engine": "warehouse",
            "stage_batch": committed,
            **figures,
        }
    )
    # Written once the stage table is committed: Load takes a date whose result it finds.
    storage.put_json(
        layout.data_bucket,
        layout.transform_result_key(request.run_id, request.attempt, planned.kpi_date),
        result.model_dump(mode="json"),
    )
    logger.info("KPIs computed in the warehouse", extra=result.model_dump(mode="json"))
    return result


def copy_manifest(bucket: str, objects: dict[str, int]) -> dict[str, object]:
    """A Redshift COPY manifest: each object, mandatory, with the exact size Parquet needs."""
    return {
        "entries": [
            {"url": f"s3://{bucket}/{key}", "mandatory": True, "meta": {"content_length": size}}
            for key, size in sorted(objects.items())
        ]
    }


def _inputs(planned: PlannedDate, storage: Storage, layout: Layout) -> dict[str, dict[str, int]]:
    """The objects of each input table (kpi_sql.INPUT_TABLES), with their sizes."""
    sizes = Ledger(storage, layout).curated_sizes(planned.kpi_date)
    missing = [c for c in planned.contents if c not in sizes]
    if missing:
        raise FileNotFoundError(f"curated plays the ledger lists are missing: {missing[:5]}")
    catalogue = {
        "wh_songs": layout.song_tracks_key(planned.songs_key),
        "wh_song_artists": layout.song_artists_key(planned.songs_key),
    }
    found = dict(
        zip(
            catalogue,
            parallel(lambda key: storage.size(layout.data_bucket, key), catalogue.values()),
            strict=True,
        )
    )
    absent = [catalogue[t] for t, size in found.items() if size is None]
    if absent:
        raise DataGateError(
            f"{planned.kpi_date} is pinned to a catalogue without {absent} (pinned before the "
            "extract wrote them): compute it with transform.engine 'lambda'"
        )
    return {
        "wh_curated_plays": {
            layout.curated_plays_key(planned.kpi_date, c): sizes[c] for c in planned.contents
        },
        **{table: {catalogue[table]: int(size or 0)} for table, size in found.items()},
    }
