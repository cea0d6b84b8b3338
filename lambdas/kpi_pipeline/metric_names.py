"""Names of the pipeline's CloudWatch metrics, shared by the handlers and the dashboard."""

SERVICE = "music-kpi-pipeline"
NAMESPACE = "MusicKpiPipeline"

PLAYS_INGESTED = "PlaysIngested"
DUPLICATE_PLAYS = "DuplicatePlays"
ROWS_QUARANTINED = "RowsQuarantined"
FILES_PROCESSED = "FilesProcessed"
FILES_ALREADY_PROCESSED = "FilesAlreadyProcessed"
FILES_QUARANTINED = "FilesQuarantined"
FILES_IGNORED = "FilesIgnored"  # landing objects that are not CSV: left where they are
FILES_UNREADABLE = "FilesUnreadable"  # by reason (archived_storage_class): left in landing
SOURCE_ROWS_EXTRACTED = "SourceRowsExtracted"
KPI_ROWS_LOADED = "KpiRowsLoaded"
STEP_DURATION = "StepDuration"
# Emitted by the state machine at every end of a run (see infra/workflow.py).
RUNS_ENDED = "RunsEnded"  # dimension status: loaded, no_new_files, no_rds_data...
PLAYS_LOADED = "PlaysLoaded"  # the new plays a run brought into the warehouse
