"""PlanTransform: the dates this run recomputes, written for the TransformDates Map."""

from __future__ import annotations

import datetime as dt

from kpi_pipeline.contracts import TransformRequest, TransformResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.lock import check_lock
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import LockSettings, StorageSettings, TransformEngineSettings, load
from kpi_pipeline.storage import Storage
from kpi_pipeline.transform_plan import plan_transform


@step_handler("PlanTransform", TransformRequest)
def handler(request: TransformRequest) -> TransformResult:
    lock = load(LockSettings)
    check_lock(request.lock, lock.lock_table)
    return plan_transform(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engines=load(TransformEngineSettings),
        writers_end_within=dt.timedelta(seconds=lock.writer_timeout_seconds),
    )
