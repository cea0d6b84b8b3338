"""ReplayQuarantine: quarantined rows of the reasons asked for, checked again."""

from __future__ import annotations

from kpi_pipeline.contracts import ReplayRequest, ReplayResult
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
def handler(request: ReplayRequest) -> ReplayResult:
    check_lock(request.lock, load(LockSettings).lock_table)
    # Imported here, as IngestFile does: DuckDB and pyarrow are in this step's layers.
    from kpi_pipeline import replay

    return replay.replay_quarantine(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engine_settings=load(EngineSettings),
        scratch=load(ScratchSettings),
    ).in_state()  # its document lists every date
