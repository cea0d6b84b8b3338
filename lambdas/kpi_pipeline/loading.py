"""Load: replace the touched dates in the warehouse, then record what was loaded.

After the warehouse commits, every accepted content the load covered is marked loaded in
the ledger and its pending marker is removed, so later runs do not recompute its dates.
A failure before that point leaves the markers: the next run loads those dates again.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from kpi_pipeline.contracts import LoadRequest, LoadResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import KPI_ROWS_LOADED, count, logger
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import KpiBatch, Warehouse


def load_kpis(
    request: LoadRequest, *, warehouse: Warehouse, storage: Storage, layout: Layout
) -> LoadResult:
    loaded_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    batch = KpiBatch(layout.data_bucket, request.kpi_key, request.kpi_dates)
    rows = warehouse.replace_dates(batch, loaded_at)
    count(KPI_ROWS_LOADED, rows)
    logger.info("KPIs loaded", extra={"rows": rows, "kpi_dates": len(request.kpi_dates)})
    _mark_loaded(storage, layout, request.run_id)
    return LoadResult(rows_loaded=rows, kpi_dates=request.kpi_dates, loaded_at=loaded_at)


def _mark_loaded(storage: Storage, layout: Layout, run_id: str) -> None:
    plan = storage.get_json(layout.data_bucket, layout.load_plan_key(run_id)) or {}

    def mark(content_key: str) -> None:
        key = layout.ledger_key(content_key)
        entry = storage.get_json(layout.data_bucket, key)
        if entry is not None and entry.get("loaded_by_run") != run_id:
            storage.put_json(layout.data_bucket, key, {**entry, "loaded_by_run": run_id})
        storage.delete(layout.data_bucket, layout.pending_key(content_key))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(mark, plan.get("content_keys", [])))
