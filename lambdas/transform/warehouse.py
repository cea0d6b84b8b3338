"""TransformInWarehouse: the KPIs of one date of the plan, computed inside the warehouse
(a TransformDates item whose date PlanTransform sent to the warehouse engine)."""

from __future__ import annotations

from kpi_pipeline.contracts import TransformDateRequest, TransformDateResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import StorageSettings, WarehouseSettings, load
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import open_warehouse
from kpi_pipeline.warehouse_transform import compute_date_in_warehouse


@step_handler("TransformInWarehouse", TransformDateRequest)
def handler(request: TransformDateRequest) -> TransformDateResult:
    settings = load(WarehouseSettings)
    return compute_date_in_warehouse(
        request,
        warehouse=open_warehouse(settings),
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
    )
