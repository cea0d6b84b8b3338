"""Transform: KPIs of every touched date, computed by DuckDB from all curated plays."""

from __future__ import annotations

from kpi_pipeline import kpis
from kpi_pipeline.contracts import TransformRequest, TransformResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import EngineSettings, StorageSettings, load
from kpi_pipeline.storage import Storage


@step_handler("Transform", TransformRequest)
def handler(request: TransformRequest) -> TransformResult:
    storage_settings = load(StorageSettings)
    return kpis.compute_kpis(
        request,
        storage=Storage(),
        layout=Layout.from_settings(storage_settings),
        engine_settings=load(EngineSettings),
        work_dir=storage_settings.work_dir,
    )
