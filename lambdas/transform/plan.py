"""PlanTransform: the dates this run recomputes, written for the TransformDates Map."""

from __future__ import annotations

from kpi_pipeline.contracts import TransformRequest, TransformResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import StorageSettings, TransformEngineSettings, load
from kpi_pipeline.storage import Storage
from kpi_pipeline.transform_plan import plan_transform


@step_handler("PlanTransform", TransformRequest)
def handler(request: TransformRequest) -> TransformResult:
    return plan_transform(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engines=load(TransformEngineSettings),
    )
