"""Transform: the KPIs of one date of the plan, computed by DuckDB (a TransformDates item)."""

from __future__ import annotations

from kpi_pipeline import kpis, preflight
from kpi_pipeline.contracts import (
    PreflightRequest,
    PreflightResult,
    TransformDateRequest,
    TransformDateResult,
)
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.scratch import open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings, StorageSettings, load
from kpi_pipeline.storage import Storage


def _preflight(request: PreflightRequest) -> PreflightResult:
    with open_scratch(load(ScratchSettings), "preflight") as space:
        return preflight.lambda_engine(
            request.run_id,
            Storage(),
            Layout.from_settings(load(StorageSettings)),
            space.path / "example",
            "Transform",
        )


@step_handler("Transform", TransformDateRequest, preflight=_preflight)
def handler(request: TransformDateRequest) -> TransformDateResult:
    return kpis.compute_date(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engine_settings=load(EngineSettings),
        scratch=load(ScratchSettings),
    )
