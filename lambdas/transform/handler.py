"""Transform: KPIs of every touched date, computed by DuckDB from all curated plays."""

from __future__ import annotations

from kpi_pipeline import kpis
from kpi_pipeline.contracts import TransformRequest, TransformResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import EngineSettings, ScratchSettings, StorageSettings, load
from kpi_pipeline.storage import Storage


@step_handler("Transform", TransformRequest)
def handler(request: TransformRequest) -> TransformResult:
    return kpis.compute_kpis(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engine_settings=load(EngineSettings),
        scratch=load(ScratchSettings),
    )
