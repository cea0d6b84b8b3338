"""Archive: move exactly the manifest's files out of the landing area, then summarise.

A recompute or a replay of the quarantine has no manifest: nothing is moved, and the
summary says what it recomputed or accepted.

Accepted files (new or already processed) go to the archive prefix, files quarantined
whole go to the quarantine prefix with their reason beside them; what the run read of the
source is marked processed (:mod:`kpi_pipeline.source_state`). Only objects in the
manifest are touched, and only in the version the manifest froze; a file that changed
since then stays in landing for the next run.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TypeVar

from kpi_pipeline.attempts import attempts_so_far, error_message, give_up_on
from kpi_pipeline.contracts import (
    ArchiveRequest,
    FileCounts,
    IngestResult,
    ManifestEntry,
    RejectedFileNote,
    ReplayResult,
    RevalidateResult,
    RunStatus,
    RunSummary,
)
from kpi_pipeline.errors import IngestFailed
from kpi_pipeline.layout import Layout
from kpi_pipeline.listing import read_manifest
from kpi_pipeline.observability import logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.records import read_ingest_results
from kpi_pipeline.source_state import mark_processed
from kpi_pipeline.storage import Storage
from kpi_pipeline.transform_plan import transform_totals


def archive_run(
    request: ArchiveRequest, *, storage: Storage, layout: Layout, max_file_attempts: int = 3
) -> RunSummary:
    # First: a missing figure fails the step before any file is moved.
    totals = transform_totals(request.transform, request.run_id, storage=storage, layout=layout)
    run_id = request.run_id
    replay = _operation_result(
        request,
        "replay_quarantine",
        layout.replay_result_key(run_id),
        ReplayResult,
        storage,
        layout,
    )
    revalidation = _operation_result(
        request,
        "revalidate",
        layout.revalidate_result_key(run_id),
        RevalidateResult,
        storage,
        layout,
    )
    if request.manifest.manifest_key is None:  # a recompute or a replay: no landing file was taken
        files: list[ManifestEntry] = []
        results: dict[int, IngestResult] = {}
    else:
        files = read_manifest(storage, layout, request.manifest.manifest_key).files
        results = {r.index: r for r in read_ingest_results(storage, layout, request.run_id)}
    # A file that failed too often, or in a way that repeats, is quarantined whole.
    results |= give_up_on(
        [r for r in results.values() if r.outcome == "failed"],
        request.run_id,
        files_in_run=len(results),
        max_attempts=max_file_attempts,
        storage=storage,
        layout=layout,
    )

    def archive(entry: ManifestEntry) -> bool:
        result = results.get(entry.index)
        if result is None or result.outcome in {"skipped", "unreadable", "failed"}:
            return False  # not ingested in this version: leave it for the next run
        quarantined = result.outcome == "quarantined"
        if quarantined:
            destination = layout.quarantine_file_key(request.run_id, entry.key)
        else:
            destination = layout.archive_key(request.run_id, entry.key)
        moved = storage.move(
            layout.landing_bucket, entry.key, entry.etag, layout.data_bucket, destination
        )
        if moved not in {"moved", "already_moved"}:
            logger.warning("file not archived", extra={"key": entry.key, "outcome": moved})
            return False
        if quarantined:
            # Written once the file is there (a retry rewrites it): a file replaced after the
            # manifest stays in landing, and no reason may be left without its file.
            storage.put_json(
                layout.data_bucket,
                destination + ".reason.json",
                {"key": entry.key, "reason": result.reason, "detail": result.detail},
            )
        return True

    archived = sum(parallel(archive, files))  # thousands of files: in parallel
    summary = summarise(
        request.model_copy(
            update={"transform": totals, "replay": replay, "revalidation": revalidation}
        ),
        list(results.values()),
        files_archived=archived,
    )
    # The run is through (its load committed, or nothing was left to load): what it read of
    # the source is processed, and the next run reads from its watermarks.
    mark_processed(storage, layout, request.source, request.run_id)
    storage.put_json(
        layout.data_bucket, layout.summary_key(request.run_id), summary.model_dump(mode="json")
    )
    logger.info("run summary", extra={"summary": summary.model_dump(mode="json")})
    failed = [r for r in results.values() if r.outcome == "failed"]
    if failed:
        # Everything else is loaded and archived; fail the run so that someone looks.
        attempts = parallel(lambda r: attempts_so_far(r, storage, layout), failed)
        raise IngestFailed(
            f"{len(failed)} file(s) could not be ingested and stay in landing for the next "
            "run: "
            + "; ".join(
                f"{r.key}: {r.reason}: {error_message(r.detail)} (failed runs counted "
                f"against it: {n} of {max_file_attempts}, then it is quarantined)"
                for r, n in zip(failed, attempts, strict=True)
            )
        )
    return summary


_Result = TypeVar("_Result", ReplayResult, RevalidateResult)


def _operation_result(
    request: ArchiveRequest,
    kind: str,
    key: str,
    model: type[_Result],
    storage: Storage,
    layout: Layout,
) -> _Result | None:
    """What a replay or a revalidation wrote of itself under ``key`` (its step's state
    carries a share of its dates only); None for a run of another kind."""
    if request.request.kind != kind:
        return None
    document = storage.get_json(layout.data_bucket, key)
    if document is None:
        raise FileNotFoundError(f"the {kind} result of run {request.run_id} is missing")
    return model.model_validate(document)


def _status(request: ArchiveRequest, files: FileCounts) -> RunStatus:
    if request.request.kind == "recompute":
        return "recomputed"
    if request.request.kind == "replay_quarantine":
        return "replayed"
    if request.request.kind == "revalidate":
        return "revalidated"
    # Files arrived and not one was accepted, now or before: an alert (a producer sends what
    # the spec refuses), even when the run loaded dates an earlier run left pending.
    if files.rejected_files and not (files.plays_valid or files.files_already_processed):
        return "files_rejected"
    # "loaded": the warehouse was updated; else nothing new reached it.
    return "no_new_files" if request.load.skipped else "loaded"


MAX_NOTES = 50  # the summary is the execution's output: a state of 256 KiB at most


def rejected_files(results: list[IngestResult]) -> list[RejectedFileNote]:
    """The files that gave the run no play: quarantined whole, or accepted with every row
    quarantined. Not refused: content processed before (accepted then), a file left in
    landing (its storage class, a failure), a file of a header and no row (a quiet day)."""
    notes = []
    for r in results:
        if r.outcome == "quarantined":
            detail = r.detail[:300] if r.detail else None
            notes.append(RejectedFileNote(key=r.key, reason=r.reason or "", detail=detail))
        elif r.outcome == "processed" and r.plays_valid == 0 and r.rows_quarantined:
            rows = ", ".join(f"{n:,} {reason}" for reason, n in sorted(r.rows_quarantined.items()))
            notes.append(RejectedFileNote(key=r.key, reason="every_row_quarantined", detail=rows))
    return notes


def summarise(
    request: ArchiveRequest, results: list[IngestResult], *, files_archived: int
) -> RunSummary:
    files = file_counts(results, request.manifest.files_unreadable_by_reason)
    return RunSummary(
        status=_status(request, files),
        run_id=request.run_id,
        kind=request.request.kind,
        started_at=request.started_at,
        finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        recompute=request.transform.recompute,
        replay=request.replay.in_state() if request.replay else None,
        revalidation=request.revalidation.in_state() if request.revalidation else None,
        **files.model_dump(exclude={"rejected_files"}),
        rejected_files=files.rejected_files,
        files_deferred=request.manifest.files_deferred,
        files_ignored=request.manifest.files_ignored,
        files_archived=files_archived,
        duplicates_across_files=request.transform.duplicates_across_files,
        source_users=request.source.users,
        source_songs=request.source.songs,
        source_rows_quarantined=request.source.source_rows_quarantined,
        source_song_duplicate_pairs=request.source.song_duplicate_pairs,
        source_tables=request.source.tables,
        plays_without_song=request.transform.plays_without_song,
        kpi_dates=request.load.kpi_dates,
        kpi_rows_loaded=request.load.rows_loaded,
        kpi_dates_in_warehouse=request.transform.dates_in_warehouse
        if not request.load.skipped
        else 0,
    )


def file_counts(
    results: list[IngestResult], unreadable_at_listing: dict[str, int] | None = None
) -> FileCounts:
    """What the run's IngestFile results add up to: the summary's file and row counts, and
    (a failed run's summary) all that is known of a run that never reached Archive."""
    outcomes = Counter(r.outcome for r in results)
    unreadable = Counter(unreadable_at_listing or {}) + Counter(
        r.reason or "" for r in results if r.outcome == "unreadable"
    )
    rows_quarantined: Counter[str] = Counter()
    for result in results:
        rows_quarantined.update(result.rows_quarantined)
    quarantined = Counter(r.reason or "" for r in results if r.outcome == "quarantined")
    return FileCounts(
        files_processed=outcomes["processed"],
        files_already_processed=outcomes["already_processed"],
        files_quarantined=outcomes["quarantined"],
        files_skipped=outcomes["skipped"],
        files_unreadable=sum(unreadable.values()),
        files_unreadable_by_reason=dict(sorted(unreadable.items())),
        files_failed=outcomes["failed"],
        plays_valid=sum(r.plays_valid for r in results),
        duplicates=sum(r.duplicates for r in results),
        rows_quarantined=dict(sorted(rows_quarantined.items())),
        files_quarantined_by_reason=dict(sorted(quarantined.items())),
        rejected_files=rejected_files(results)[:MAX_NOTES],
    )
