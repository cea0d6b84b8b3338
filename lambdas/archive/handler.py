"""Archive: move the manifest's files out of landing and write the run summary."""

from __future__ import annotations

from kpi_pipeline import archiving, preflight
from kpi_pipeline.contracts import (
    ArchiveRequest,
    PreflightReport,
    PreflightReportRequest,
    RunSummary,
)
from kpi_pipeline.layout import Layout
from kpi_pipeline.lock import check_lock
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import IngestSettings, LockSettings, StorageSettings, load
from kpi_pipeline.storage import Storage


def _preflight(request: PreflightReportRequest) -> PreflightReport:
    return preflight.report(request, Storage(), Layout.from_settings(load(StorageSettings)))


@step_handler(
    "Archive", ArchiveRequest, preflight=_preflight, preflight_model=PreflightReportRequest
)
def handler(request: ArchiveRequest) -> RunSummary:
    check_lock(request.lock, load(LockSettings).lock_table)
    return archiving.archive_run(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        max_file_attempts=load(IngestSettings).max_file_attempts,
    )
