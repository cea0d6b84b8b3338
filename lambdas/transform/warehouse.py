"""TransformInWarehouse: the KPIs of one date of the plan, computed inside the warehouse
(a TransformDates item whose date PlanTransform sent to the warehouse engine)."""

from __future__ import annotations

from kpi_pipeline import preflight
from kpi_pipeline.contracts import (
    PreflightRequest,
    PreflightResult,
    TransformDateRequest,
    TransformDateResult,
)
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import StorageSettings, WarehouseSettings, load
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import open_warehouse
from kpi_pipeline.warehouse_transform import compute_date_in_warehouse


def _preflight(request: PreflightRequest) -> PreflightResult:
    settings = load(WarehouseSettings)
    return preflight.warehouse_engine(
        request.run_id,
        open_warehouse(settings),
        settings.warehouse_table,
        Storage(),
        Layout.from_settings(load(StorageSettings)),
        "TransformInWarehouse",
    )


@step_handler("TransformInWarehouse", TransformDateRequest, preflight=_preflight)
def handler(request: TransformDateRequest) -> TransformDateResult:
    settings = load(WarehouseSettings)
    return compute_date_in_warehouse(
        request,
        warehouse=open_warehouse(settings),
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
    )
