"""CheckSourceData and ExtractRds: the users and songs tables of the source PostgreSQL."""

from __future__ import annotations

from kpi_pipeline import source
from kpi_pipeline.contracts import RunRequest, SourceCheck, SourceSnapshot
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


@step_handler("CheckSourceData", RunRequest)
def check_source(request: RunRequest) -> SourceCheck:
    return source.check_source(_source_database())


@step_handler("ExtractRds", RunRequest)
def extract_tables(request: RunRequest) -> SourceSnapshot:
    # Imported here: DuckDB is in this step's layers only, not in CheckSourceData's.
    from kpi_pipeline import extract

    return extract.extract_snapshot(
        request.run_id,
        db=_source_database(),
        batch_size=load(SourceSettings).extract_batch_size,
        storage=Storage(),
        layout=Layout.from_settings(load(StorageSettings)),
        engine_settings=load(EngineSettings),
        scratch=load(ScratchSettings),
    )
