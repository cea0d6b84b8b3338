"""Why a stream file or row was quarantined: the names the run summaries and quarantine use.

Kept apart from :mod:`kpi_pipeline.ingest` (DuckDB, pyarrow) so that small functions can
name them.
"""

from __future__ import annotations

from enum import StrEnum


class FileReason(StrEnum):
    """Why a whole file was quarantined."""

    NOT_UTF8 = "not_utf8"
    EMPTY_FILE = "empty_file"
    UNREADABLE_CSV = "unreadable_csv"
    MISSING_COLUMNS = "missing_columns"
    AMBIGUOUS_COLUMNS = "ambiguous_columns"
    # IngestFile failed on it in a way that repeats, or max_file_attempts runs
    # (kpi_pipeline.attempts): given up on, so that it cannot fail every run.
    INGEST_FAILED = "ingest_failed"


class RowReason(StrEnum):
    """Why a row was quarantined: the first rule of docs/kpis.md it breaks, in the spec's order."""

    MALFORMED_ROW = "malformed_row"
    INVALID_USER_ID = "invalid_user_id"
    MISSING_TRACK_ID = "missing_track_id"
    INVALID_LISTEN_TIME = "invalid_listen_time"
    UNKNOWN_USER_ID = "unknown_user_id"
    UNKNOWN_TRACK_ID = "unknown_track_id"


# Only these depend on the source snapshot a row is checked with: a replay of the
# quarantine (kpi_pipeline.replay) can turn them into plays; every other reason is decided
# by the row itself.
REPLAYABLE_REASONS = (RowReason.UNKNOWN_USER_ID.value, RowReason.UNKNOWN_TRACK_ID.value)
