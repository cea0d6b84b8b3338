"""ReplayQuarantine: quarantined rows of the reasons asked for, checked again; or, for
``{"revalidate": ...}``, accepted plays of a range of dates checked again."""

from __future__ import annotations

from kpi_pipeline.contracts import ReplayRequest, ReplayResult, RevalidateResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.lock import check_lock
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import (
    EngineSettings,
    LockSettings,
    ScratchSettings,
    StorageSettings,
    load,
)
from kpi_pipeline.storage import Storage


@step_handler("ReplayQuarantine", ReplayRequest)
def handler(request: ReplayRequest) -> ReplayResult | RevalidateResult:
    check_lock(request.lock, load(LockSettings).lock_table)
    # Imported here, as IngestFile does: DuckDB and pyarrow are in this step's layers.
    from kpi_pipeline import replay, revalidate

    operation = (
        revalidate.revalidate_plays
        if request.request.kind == "revalidate"
        else replay.replay_quarantine
    )
    return operation(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engine_settings=load(EngineSettings),
        scratch=load(ScratchSettings),
    ).in_state()  # its document lists every date
