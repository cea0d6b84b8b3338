"""ListNewFiles and IngestStreams: stream CSV files from the S3 landing area."""

from __future__ import annotations

from kpi_pipeline import listing, preflight
from kpi_pipeline.contracts import (
    IngestRequest,
    IngestResult,
    ManifestSummary,
    PreflightRequest,
    PreflightResult,
    RunRequest,
)
from kpi_pipeline.layout import Layout
from kpi_pipeline.lock import check_lock
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import (
    EngineSettings,
    IngestSettings,
    LockSettings,
    ScratchSettings,
    StorageSettings,
    load,
)
from kpi_pipeline.storage import Storage


def _layout() -> Layout:
    return Layout.from_settings(load(StorageSettings))


def _listing_preflight(request: PreflightRequest) -> PreflightResult:
    return preflight.landing_listing(Storage(), _layout(), "ListNewFiles")


def _reading_preflight(request: PreflightRequest) -> PreflightResult:
    lock_table = load(LockSettings).lock_table
    return preflight.landing_reading(Storage(), _layout(), "IngestFile", lock_table)


@step_handler("ListNewFiles", RunRequest, preflight=_listing_preflight)
def list_new_files(request: RunRequest) -> ManifestSummary:
    return listing.list_new_files(
        request.run_id,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        max_files=load(IngestSettings).max_files_per_run,
    )


@step_handler("IngestFile", IngestRequest, preflight=_reading_preflight)
def ingest_file(request: IngestRequest) -> IngestResult:
    check_lock(request.lock, load(LockSettings).lock_table)
    # Imported here: DuckDB and pyarrow are in this step's layers only, not in ListNewFiles'.
    from kpi_pipeline import streams

    return streams.ingest_file(
        request,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engine_settings=load(EngineSettings),
        scratch=load(ScratchSettings),
    )
