"""CheckSourceData and ExtractRds: the users and songs tables of the source PostgreSQL."""

from __future__ import annotations

from kpi_pipeline import preflight, source
from kpi_pipeline.contracts import (
    ExtractRequest,
    PreflightRequest,
    PreflightResult,
    RunRequest,
    SourceCheck,
    SourceSnapshot,
)
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import (
    EngineSettings,
    ScratchSettings,
    SourceSettings,
    StorageSettings,
    load,
)
from kpi_pipeline.source import SourceDatabase, connection_params
from kpi_pipeline.storage import Storage


def _source_database() -> SourceDatabase:
    return SourceDatabase(connection_params(load(SourceSettings)))


def _source_preflight(request: PreflightRequest) -> PreflightResult:
    return preflight.source(load(SourceSettings), "CheckSourceData")


@step_handler("CheckSourceData", RunRequest, preflight=_source_preflight)
def check_source(request: RunRequest) -> SourceCheck:
    return source.check_source(_source_database())


@step_handler("ExtractRds", ExtractRequest)
def extract_tables(request: ExtractRequest) -> SourceSnapshot:
    # Imported here: DuckDB is in this step's layers only, not in CheckSourceData's.
    from kpi_pipeline import extract

    return extract.extract_snapshot(
        request.run_id,
        db=_source_database(),
        source=load(SourceSettings),
        full_extract=request.full_extract,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engine_settings=load(EngineSettings),
        scratch=load(ScratchSettings),
    )
