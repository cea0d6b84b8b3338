"""CheckRequest: the execution's input, checked before the run takes the lock."""

from __future__ import annotations

from kpi_pipeline.contracts import CheckRequestInput, RunOptions
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.requests import check_name_unused, check_request, check_run_id
from kpi_pipeline.settings import RequestSettings, StorageSettings, load
from kpi_pipeline.storage import Storage


@step_handler("CheckRequest", CheckRequestInput)
def handler(request: CheckRequestInput) -> RunOptions:
    check_run_id(request.run_id)
    options = check_request(
        request.execution_input, max_recompute_days=load(RequestSettings).max_recompute_days
    )
    if options.kind != "preflight":  # a preflight keeps nothing of its own to collide with
        check_name_unused(request.run_id, Storage(), Layout.from_settings(load(StorageSettings)))
    return options
