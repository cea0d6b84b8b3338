"""Load: replace the touched dates of music_kpi_metrics in one warehouse transaction."""

from __future__ import annotations

from kpi_pipeline import loading, preflight
from kpi_pipeline.contracts import LoadRequest, LoadResult, PreflightRequest, PreflightResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.lock import check_lock
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import LockSettings, StorageSettings, WarehouseSettings, load
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import open_warehouse


def _preflight(request: PreflightRequest) -> PreflightResult:
    settings = load(WarehouseSettings)
    return preflight.load(
        request.run_id,
        open_warehouse(settings),
        settings.warehouse_table,
        Storage(),
        Layout.from_settings(load(StorageSettings)),
        "Load",
    )


@step_handler("Load", LoadRequest, preflight=_preflight)
def handler(request: LoadRequest) -> LoadResult:
    check_lock(request.lock, load(LockSettings).lock_table)
    return loading.load_kpis(
        request,
        warehouse=open_warehouse(load(WarehouseSettings)),
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
    )
