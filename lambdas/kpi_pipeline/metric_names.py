"""Names of the pipeline's CloudWatch metrics, shared by the handlers and the dashboard."""

SERVICE = "music-kpi-pipeline"
NAMESPACE = "MusicKpiPipeline"

PLAYS_INGESTED = "PlaysIngested"
DUPLICATE_PLAYS = "DuplicatePlays"
ROWS_QUARANTINED = "RowsQuarantined"
FILES_PROCESSED = "FilesProcessed"
FILES_ALREADY_PROCESSED = "FilesAlreadyProcessed"
FILES_QUARANTINED = "FilesQuarantined"
SOURCE_ROWS_EXTRACTED = "SourceRowsExtracted"
KPI_ROWS_LOADED = "KpiRowsLoaded"
STEP_DURATION = "StepDuration"
