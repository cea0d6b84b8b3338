"""Typed contracts between the states: what each step receives and returns.

States pass references (S3 keys), counts and dates, never data: a state's payload is
limited to 256 KiB. Field names here are the state machine's JSON paths.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

# Any execution name Step Functions accepts: 1 to 80 characters, none of white space,
# brackets, wildcards, " # % \ ^ | ~ ` $ & , ; : / or control characters. S3 keys use a
# safe form of it (kpi_pipeline.layout.run_key).
RunId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=80,
        pattern=r"^[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]+$",
    ),
]


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class RunRequest(Contract):
    run_id: RunId


class LockToken(Contract):
    """The pipeline's lock as this execution took it: a step that writes shared state checks
    that the lock still names this execution with this token (kpi_pipeline.lock)."""

    execution: str = Field(min_length=1, max_length=2048)  # the execution's ARN
    fence: int = Field(ge=1)  # one more on every acquisition: newer runs hold larger ones


class ExtractRequest(RunRequest):
    """ExtractRds: the run, and the execution's input (``{"full_extract": true}`` asks for
    every table to be read whole, the reconciliation that finds deleted rows)."""

    execution_input: dict[str, Any] = Field(default_factory=dict)

    @property
    def full_extract(self) -> bool:
        return self.execution_input.get("full_extract") is True


# --- CheckRequest: what the execution asks for ------------------------------------------------

RunKind = Literal["daily", "recompute", "replay_quarantine", "revalidate", "preflight"]
Catalogue = Literal["pinned", "current"]


class CheckRequestInput(RunRequest):
    execution_input: Any = None  # the execution's input, as started


class RunOptions(Contract):
    """The execution's input, checked (kpi_pipeline.requests): a daily run, a recompute of
    a range of dates, a replay of quarantined rows, or a revalidation of accepted plays.
    ``date_from``/``date_to`` bound the dates (inclusive; a replay without them takes every
    date)."""

    kind: RunKind = "daily"
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    catalogue: Catalogue = "pinned"  # recompute: keep each date's pin, or re-pin to today's
    reasons: list[str] = Field(default_factory=list)  # replay: the row reasons re-checked

    def covers(self, kpi_date: dt.date) -> bool:
        return (self.date_from is None or kpi_date >= self.date_from) and (
            self.date_to is None or kpi_date <= self.date_to
        )


# --- CheckSourceData / ExtractRds -------------------------------------------------------------


class SourceCheck(Contract):
    users: int
    songs: int
    has_data: bool


class SnapshotRef(Contract):
    """The run's snapshot of the source tables, cleaned (see sql/staging)."""

    users_key: str
    songs_key: str


ExtractMode = Literal["full", "incremental"]


class SourceTableExtract(Contract):
    """How one source table was read, and the state that becomes the table's mark once the
    run is through (Archive writes it: see kpi_pipeline.source_state)."""

    mode: ExtractMode
    rows_read: int  # rows that crossed the wire from the source
    rows_changed: int  # rows new or different from the previous snapshot
    rows_deleted: int = 0  # a full extract: rows of the previous snapshot no longer there
    watermark: str | None = None  # the change column's largest value when it was read
    changed_column: str | None = None
    raw_key: str  # the table's rows as read and merged: the next increment's base
    full_at: str  # when the table was last read whole (ISO 8601, UTC)
    columns: list[str] = Field(default_factory=list)  # the raw snapshot's, in order
    key_unique: bool = True  # every row has a key, none twice: increments can merge by it


class SourceSnapshot(SnapshotRef):
    users: int
    songs: int
    source_rows_quarantined: dict[str, int] = Field(default_factory=dict)
    song_duplicate_pairs: int = 0
    tables: dict[str, SourceTableExtract] = Field(default_factory=dict)


# --- ListNewFiles / IngestStreams ----------------------------------------------------------------


class ManifestEntry(Contract):
    index: int
    key: str
    etag: str
    size: int


class ManifestSummary(Contract):
    """ListNewFiles' output: the manifest's keys and counts. The file list itself stays in
    S3 (``files_key``, a JSON array the IngestStreams Distributed Map reads): a thousand
    long keys would not fit a state's 256 KiB."""

    manifest_key: str
    files_key: str
    results_prefix: str  # where each file's ingest result goes (the Map's Catch writes there)
    file_count: int
    files_deferred: int = 0  # beyond this run's file limit: next run
    files_ignored: int = 0  # not CSV: left in place
    # In GLACIER or DEEP_ARCHIVE: cannot be read, left in place (by reason)
    files_unreadable: int = 0
    files_unreadable_by_reason: dict[str, int] = Field(default_factory=dict)
    pending_contents: int = 0  # accepted earlier, not in the warehouse yet (a failed load)


class Manifest(ManifestSummary):
    """The frozen manifest of a run, as kept in S3 (``manifest_key``)."""

    files: list[ManifestEntry]


class IngestRequest(Contract):
    run_id: RunId
    file: ManifestEntry
    snapshot: SnapshotRef
    lock: LockToken | None = None  # the state machine's; None outside it (tests, tools)


# "failed": the IngestFile task itself failed after its retries (recorded by the Map's Catch).
# "unreadable": its storage class keeps it from being read (GLACIER...): left in landing.
FileOutcome = Literal[
    "processed", "already_processed", "quarantined", "skipped", "unreadable", "failed"
]


class IngestResult(Contract):
    index: int
    key: str
    etag: str
    size: int
    outcome: FileOutcome
    content_key: str | None = None
    reason: str | None = None  # why a file was quarantined or skipped
    detail: str | None = None
    plays_valid: int = 0
    duplicates: int = 0
    rows_quarantined: dict[str, int] = Field(default_factory=dict)
    kpi_dates: list[dt.date] = Field(default_factory=list)
    kpi_date_count: int = 0
    ingested_by_run: str | None = None  # for already-processed content
    loaded_by_run: str | None = None

    def in_state(self) -> Self:
        """As the state machine receives it: at most STATE_DATES of its dates."""
        return self.model_copy(update=_dates_in_state(self.kpi_dates, self.kpi_date_count))


# --- Transform / Load ------------------------------------------------------------------------


class TransformRequest(Contract):
    run_id: RunId
    snapshot: SnapshotRef
    request: RunOptions = RunOptions()  # a recompute plans its range, not the pending markers
    lock: LockToken | None = None  # the state machine's; None outside it (tests, tools)


class RecomputeReport(Contract):
    """What a recompute replaced: the range asked for (its dates recomputed are
    TransformResult.kpi_dates), how many dates had no accepted play (left as they are) and
    how many are pinned to this run's catalogue. Per date, in ``details_key``
    (``runs/<run>/recompute.json``): the dates without plays and the run each re-pinned
    date had its catalogue from. Counts only in the state: a range of a thousand dates
    must keep every state far under 256 KiB."""

    date_from: dt.date
    date_to: dt.date
    catalogue: Catalogue
    dates_without_plays: int = 0
    repinned: int = 0
    details_key: str | None = None


class TransformResult(Contract):
    """PlanTransform's plan (the figures are 0), or the run's totals (Archive adds up each
    date's :class:`TransformDateResult`)."""

    kpi_prefix: str | None  # the KPI parts of this run, in the warehouse schema
    kpi_dates: list[dt.date]
    kpi_date_count: int
    plan_version: int | None = None
    attempt: str | None = None  # each plan's parts and results have their own prefix
    dates_key: str | None = None  # the dates, one item each, that TransformDates reads
    dates_in_warehouse: int = 0  # of kpi_dates, those the warehouse engine computes
    genre_rows: int = 0
    hourly_rows: int = 0
    plays_in_kpis: int = 0
    duplicates_across_files: int = 0
    plays_without_song: int = 0
    recompute: RecomputeReport | None = None


# A plan's attempt: 12 hex digits (PlanTransform's), part of keys and of SQL literals.
Attempt = Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]


class TransformDateRequest(Contract):
    """One item of the TransformDates Map: compute one date of the plan."""

    run_id: RunId
    kpi_date: dt.date
    plan_version: int
    attempt: Attempt


Engine = Literal["lambda", "warehouse"]


class TransformDateResult(Contract):
    kpi_date: dt.date
    engine: Engine = "lambda"
    # warehouse engine: the stage table's batch holding the date's rows (what Load takes)
    stage_batch: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    genre_rows: int
    hourly_rows: int
    curated_rows: int  # the rows of the date's curated objects, duplicates across files too
    plays_in_kpis: int
    plays_without_song: int


class LoadRequest(Contract):
    run_id: RunId
    kpi_prefix: str
    kpi_dates: list[dt.date]
    plan_version: int | None = None  # the plan the KPI parts were computed from
    attempt: Attempt | None = None  # the plan's attempt: its dates, their engines, results
    lock: LockToken | None = None  # the state machine's; None outside it (tests, tools)


class LoadResult(Contract):
    rows_loaded: int = 0
    kpi_dates: list[dt.date] = Field(default_factory=list)
    loaded_at: dt.datetime | None = None
    skipped: bool = False  # no date to recompute: the load step did not run


# --- ReplayQuarantine ---------------------------------------------------------------------------


class ReplayRequest(Contract):
    run_id: RunId
    snapshot: SnapshotRef
    request: RunOptions
    lock: LockToken | None = None  # the state machine's; None outside it (tests, tools)


class ReplayResult(Contract):
    """Quarantined rows re-checked, by their quarantine reason; those now valid (accepted
    once, as new ledger contents); those still invalid, by the reason they fail now."""

    reasons: list[str]
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    quarantine_objects: int = 0  # quarantined-row objects read
    rows_rechecked: dict[str, int] = Field(default_factory=dict)
    rows_accepted: dict[str, int] = Field(default_factory=dict)
    rows_still_quarantined: dict[str, int] = Field(default_factory=dict)
    rows_replayed_before: int = 0  # accepted by an earlier replay: never counted twice
    plays_valid: int = 0  # the accepted rows, repeats of one play counted once
    contents: int = 0  # new ledger contents (one per quarantined file with accepted rows)
    kpi_dates: list[dt.date] = Field(default_factory=list)  # the accepted plays' dates
    kpi_date_count: int = 0

    def in_state(self) -> Self:
        """As the state machine receives it: at most STATE_DATES of its dates."""
        return self.model_copy(update=_dates_in_state(self.kpi_dates, self.kpi_date_count))


class RevalidateResult(Contract):
    """Accepted plays of a range of dates checked again against their dates' pins; those
    that fail now moved to the quarantine (kpi_pipeline.revalidate), counted by reason.
    ``plays_quarantined`` counts this run's moves (a retry's dead attempt's included);
    ``plays_quarantined_before``, those of earlier revalidations of the same dates."""

    date_from: dt.date
    date_to: dt.date
    contents_checked: int = 0  # curated objects (a file's plays of one date) read
    plays_checked: int = 0
    plays_quarantined: dict[str, int] = Field(default_factory=dict)
    plays_quarantined_before: int = 0
    kpi_dates: list[dt.date] = Field(default_factory=list)  # the dates plays left
    kpi_date_count: int = 0

    def in_state(self) -> Self:
        """As the state machine receives it: at most STATE_DATES of its dates."""
        return self.model_copy(update=_dates_in_state(self.kpi_dates, self.kpi_date_count))


# What a state carries of a result's dates: a file may hold a play on each of thousands of
# dates, 14 bytes each in JSON, and a state holds 256 KiB. Its S3 document lists them all.
STATE_DATES = 100


def _dates_in_state(dates: list[dt.date], count: int) -> dict[str, Any]:
    """The first STATE_DATES dates, and how many there are in all."""
    return {"kpi_dates": dates[:STATE_DATES], "kpi_date_count": max(count, len(dates))}


# --- Archive / summary ---------------------------------------------------------------------------


class ManifestCounts(Contract):
    """Of ListNewFiles' output, what Archive needs. A recompute or a replay has no manifest
    (``manifest_key`` None): no landing file is touched."""

    manifest_key: str | None = None
    files_deferred: int = 0
    files_ignored: int = 0
    files_unreadable_by_reason: dict[str, int] = Field(default_factory=dict)


class ArchiveRequest(Contract):
    run_id: RunId
    started_at: str | None = None  # the execution's start (ISO 8601)
    request: RunOptions = RunOptions()
    manifest: ManifestCounts = ManifestCounts()
    replay: ReplayResult | None = None  # read by Archive from the replay's result
    revalidation: RevalidateResult | None = None  # read by Archive from its result
    source: SourceSnapshot
    transform: TransformResult
    load: LoadResult = LoadResult(skipped=True)
    lock: LockToken | None = None  # the state machine's; None outside it (tests, tools)


RunStatus = Literal[
    "loaded",
    "no_rds_data",
    "no_new_files",
    "already_running",
    "failed",
    "recomputed",  # a recompute ran (its dates in kpi_dates, what it replaced in recompute)
    "replayed",  # a replay of the quarantine ran (what it accepted in replay)
    "revalidated",  # accepted plays were checked again (what it moved in revalidation)
    # files arrived and not one play was accepted: every file quarantined whole, unreadable
    # or with every row quarantined (rejected_files says which and why); it alerts
    "files_rejected",
]


class RejectedFileNote(Contract):
    """A landing file that gave the run no play, and why (the run summary lists them)."""

    key: str
    reason: str  # a file reason (kpi_pipeline.reasons), or "every_row_quarantined"
    detail: str | None = None


class FileCounts(Contract):
    """What a run's IngestFile results add up to (kpi_pipeline.archiving.file_counts)."""

    files_processed: int = 0
    files_already_processed: int = 0
    files_quarantined: int = 0
    files_skipped: int = 0  # changed or deleted after the manifest was taken: next run
    files_unreadable: int = 0  # its storage class forbids reading it: left in landing
    files_unreadable_by_reason: dict[str, int] = Field(default_factory=dict)
    files_failed: int = 0  # ingestion failed after retries: left in landing, run alerts
    plays_valid: int = 0
    duplicates: int = 0
    rows_quarantined: dict[str, int] = Field(default_factory=dict)
    files_quarantined_by_reason: dict[str, int] = Field(default_factory=dict)
    # the files that gave no play and why (the first 50; the counts are above)
    rejected_files: list[RejectedFileNote] = Field(default_factory=list)


class RunSummary(FileCounts):
    status: RunStatus
    run_id: str
    kind: RunKind = "daily"
    started_at: str | None = None
    finished_at: str | None = None
    files_deferred: int = 0
    files_ignored: int = 0
    files_archived: int = 0
    duplicates_across_files: int = 0
    source_users: int = 0
    source_songs: int = 0
    source_rows_quarantined: dict[str, int] = Field(default_factory=dict)
    source_song_duplicate_pairs: int = 0
    source_tables: dict[str, SourceTableExtract] = Field(default_factory=dict)
    plays_without_song: int = 0
    kpi_dates: list[dt.date] = Field(default_factory=list)
    kpi_rows_loaded: int = 0
    kpi_dates_in_warehouse: int = 0  # of kpi_dates, those computed by the warehouse engine
    recompute: RecomputeReport | None = None
    replay: ReplayResult | None = None
    revalidation: RevalidateResult | None = None


# --- alerts: what EventBridge hands the alert function --------------------------------------------


class AlertEvent(Contract):
    """An EventBridge event the alert function acts on: an execution's status change, or a
    CloudWatch alarm's state change (kpi_pipeline.alerting)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    detail_type: str = Field(alias="detail-type")
    source: str
    region: str | None = None
    resources: list[str] = Field(default_factory=list)
    detail: dict[str, Any]


class AlertSent(Contract):
    """What the alert function sent: the alert's kind and title (none: nothing to tell), and
    each PagerDuty event ("trigger <dedup key>", "resolve <dedup key>")."""

    kind: str | None = None
    title: str | None = None
    pagerduty: list[str] = Field(default_factory=list)


# --- the preflight: {"preflight": true} ---------------------------------------------------------


class PreflightRequest(RunRequest):
    """A step asked to check, with its own identity, what it will need (and to keep nothing)."""

    preflight: Literal[True]


class PreflightCheck(Contract):
    check: str  # what was checked
    step: str  # whose identity checked it (the step's function and role)
    ok: bool
    detail: str  # what was found
    fix: str = ""  # what to do, when not ok


class PreflightResult(Contract):
    checks: list[PreflightCheck] = Field(default_factory=list)


class PreflightReportRequest(RunRequest):
    """Archive, at the end of a preflight: every branch's checks."""

    preflight: Literal[True]
    results: list[Any] = Field(default_factory=list)  # each branch's output (nested lists)


class PreflightReport(Contract):
    status: Literal["preflight_passed", "preflight_failed"]
    run_id: str
    kind: RunKind = "preflight"
    checks: list[PreflightCheck]
    report_key: str
    summary: str  # one line: how many passed, and the failed ones named
