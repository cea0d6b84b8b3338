"""Load: replace the touched dates of music_kpi_metrics in one warehouse transaction."""

from __future__ import annotations

from kpi_pipeline import loading
from kpi_pipeline.contracts import LoadRequest, LoadResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import StorageSettings, WarehouseSettings, load
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import open_warehouse


@step_handler("Load", LoadRequest)
def handler(request: LoadRequest) -> LoadResult:
    return loading.load_kpis(
        request,
        warehouse=open_warehouse(load(WarehouseSettings)),
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
    )
