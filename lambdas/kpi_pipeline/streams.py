"""IngestStreams (one Map iteration): one landing file, validated into curated Parquet.

The file is identified by the SHA-256 of its bytes (its *content key*): content already
accepted by an earlier run, or by another file of this run, under any name, is recognised,
counted as already processed and archived, never counted twice. A file delivered again
with new content under an old name is new content.

Order of writes, so that a crash anywhere leaves a state the next attempt handles:
curated and quarantined rows, then the *pending* marker (dates the warehouse still lacks;
none for content without a valid play), then the ledger entry (the proof of acceptance,
written only if absent). Transform reads only the curated objects ledger entries list and
clears markers no load can clear; Load removes the pending markers it loaded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from kpi_pipeline import engine
from kpi_pipeline.catalogue import pin_dates, snapshot_of_dates
from kpi_pipeline.contracts import IngestRequest, IngestResult, ManifestEntry, SnapshotRef
from kpi_pipeline.errors import ObjectArchived
from kpi_pipeline.ingest import AcceptedFile, Lineage, RejectedFile, Snapshot, validate_stream_file
from kpi_pipeline.kept import download_parquet
from kpi_pipeline.layout import Layout
from kpi_pipeline.listing import ARCHIVED_STORAGE_CLASS
from kpi_pipeline.observability import (
    DUPLICATE_PLAYS,
    FILES_ALREADY_PROCESSED,
    FILES_PROCESSED,
    FILES_QUARANTINED,
    FILES_UNREADABLE,
    PLAYS_INGESTED,
    ROWS_QUARANTINED,
    count,
    logger,
)
from kpi_pipeline.scratch import ScratchSpace, open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse.copy_parquet import COPY_FORMAT


def ingest_file(
    request: IngestRequest,
    *,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    scratch: ScratchSettings,
) -> IngestResult:
    entry = request.file
    with open_scratch(scratch, "ingest") as space:
        tmp = space.path
        local = tmp / "source.csv"
        # The file, DuckDB's copy of its rows and what it writes: at least twice its size.
        space.reserve(2 * entry.size, f"the stream file {entry.key} ({entry.size:,} bytes)")
        unreadable: str | None = None
        content_key: str | None = None
        try:
            content_key = storage.download_and_hash(
                layout.landing_bucket, entry.key, local, etag=entry.etag
            )
        except ObjectArchived as archived:
            unreadable = str(archived)
        if unreadable:
            # An archive tier the listing cannot see (Intelligent-Tiering's): left in place.
            result = IngestResult(
                **entry.model_dump(),
                outcome="unreadable",
                reason=ARCHIVED_STORAGE_CLASS,
                detail=unreadable,
            )
        elif content_key is None:
            result = IngestResult(
                **entry.model_dump(),
                outcome="skipped",
                reason="changed_after_listing",
                detail="the object was replaced or deleted after the manifest: next run",
            )
        elif previous := storage.get_json(layout.data_bucket, layout.ledger_key(content_key)):
            result = _from_ledger(request, content_key, previous)
        else:
            result = _ingest_new(
                request, content_key, local, space, storage, layout, engine_settings
            )

    result = result.model_copy(update={"kpi_date_count": len(result.kpi_dates)})
    storage.put_json(
        layout.data_bucket,
        layout.ingest_result_key(request.run_id, entry.index),
        result.model_dump(mode="json"),
    )
    _emit_metrics(result)
    logger.info(
        "file ingested",
        extra={"key": entry.key, "outcome": result.outcome, "reason": result.reason},
    )
    return result.in_state()


def _ingest_new(
    request: IngestRequest,
    content_key: str,
    local: Path,
    space: ScratchSpace,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
) -> IngestResult:
    tmp = space.path
    today = request.snapshot
    validated_with: dict[dt.date, SnapshotRef] = {}

    def snapshots_of(dates: list[dt.date]) -> dict[dt.date, Snapshot]:
        validated_with.update(snapshot_of_dates(storage, layout, dates, today))
        local = download_snapshots(set(validated_with.values()), storage, layout, tmp)
        return {d: local[ref] for d, ref in validated_with.items()}

    con = engine.connect(engine_settings, tmp, spill_limit_mb=space.spill_limit_mb())
    try:
        outcome = validate_stream_file(
            local,
            snapshots=snapshots_of,
            lineage=Lineage(request.file.key, content_key, request.run_id),
            out_dir=tmp / "out",
            con=con,
        )
    finally:
        con.close()

    if isinstance(outcome, RejectedFile):
        return IngestResult(
            **request.file.model_dump(),
            outcome="quarantined",
            content_key=content_key,
            reason=outcome.reason.value,
            detail=outcome.detail,
        )
    # Pinned before any play is written: an ingest of this content that dies and runs again
    # validates each date with the same snapshot, so it writes the same objects.
    pin_dates(
        storage,
        layout,
        outcome.kpi_dates,
        request.run_id,
        today,
        validated_unpinned={d for d in outcome.kpi_dates if validated_with[d] == today},
    )
    _publish(outcome, content_key, storage, layout)
    dates = [d.isoformat() for d in outcome.kpi_dates]
    if dates:  # content without a valid play has nothing to load (Transform clears the
        # marker an earlier attempt of it may have left)
        marker = {"content_key": content_key, "run_id": request.run_id, "kpi_dates": dates}
        storage.put_json(layout.data_bucket, layout.pending_key(content_key), marker)
    ledger = {
        "content_key": content_key,
        "source_key": request.file.key,
        "etag": request.file.etag,
        "run_id": request.run_id,
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(),
        "kpi_dates": dates,
        "plays_valid": outcome.plays_valid,
        # what PlanTransform's engine choice weighs (transform.engine "auto")
        "plays_by_date": {d.isoformat(): n for d, n in sorted(outcome.plays_per_date.items())},
        "copy_format": COPY_FORMAT,  # its curated Parquet follows these COPY rules
        "duplicates": outcome.duplicates,
        "rows_quarantined": outcome.rows_quarantined,
    }
    # Written last and only if absent: the ledger entry is the proof that every output of
    # this content is in place. Losing the race means the same content (another name in
    # this manifest) was just accepted: this copy is then "already processed".
    if not storage.put_json_if_absent(layout.data_bucket, layout.ledger_key(content_key), ledger):
        previous = storage.get_json(layout.data_bucket, layout.ledger_key(content_key)) or ledger
        return _from_ledger(request, content_key, previous)
    return _processed(request.file, content_key, ledger)


def download_snapshots(
    refs: set[SnapshotRef], storage: Storage, layout: Layout, tmp: Path
) -> dict[SnapshotRef, Snapshot]:
    local = {}
    for i, ref in enumerate(sorted(refs, key=lambda r: (r.songs_key, r.users_key))):
        snapshot = Snapshot(tmp / f"users-{i}.parquet", tmp / f"songs-{i}.parquet")
        for key, path in (
            (ref.users_key, snapshot.users_parquet),
            (ref.songs_key, snapshot.songs_parquet),
        ):
            if not download_parquet(storage, layout.data_bucket, key, path, what="the catalogue"):
                raise FileNotFoundError(f"snapshot s3://{layout.data_bucket}/{key} is missing")
        local[ref] = snapshot
    return local


def _publish(outcome: AcceptedFile, content_key: str, storage: Storage, layout: Layout) -> None:
    for kpi_date, path in outcome.plays_by_date.items():
        storage.upload_file(
            path, layout.data_bucket, layout.curated_plays_key(kpi_date, content_key)
        )
    if outcome.quarantine_path:
        storage.upload_file(
            outcome.quarantine_path, layout.data_bucket, layout.quarantine_rows_key(content_key)
        )


def _from_ledger(request: IngestRequest, content_key: str, ledger: dict[str, Any]) -> IngestResult:
    """Content the ledger knows: this very file of this run (a retried attempt whose first
    try got as far as the ledger) is processed; anything else is already processed."""
    entry = request.file
    if ledger.get("run_id") == request.run_id and ledger.get("source_key") == entry.key:
        return _processed(entry, content_key, ledger)
    return IngestResult(
        **entry.model_dump(),
        outcome="already_processed",
        content_key=content_key,
        kpi_dates=ledger.get("kpi_dates", []),
        ingested_by_run=ledger.get("run_id"),
        loaded_by_run=ledger.get("loaded_by_run"),
    )


def _processed(entry: ManifestEntry, content_key: str, ledger: dict[str, Any]) -> IngestResult:
    return IngestResult(
        **entry.model_dump(),
        outcome="processed",
        content_key=content_key,
        plays_valid=ledger.get("plays_valid", 0),
        duplicates=ledger.get("duplicates", 0),
        rows_quarantined=ledger.get("rows_quarantined", {}),
        kpi_dates=ledger.get("kpi_dates", []),
    )


def _emit_metrics(result: IngestResult) -> None:
    if result.outcome == "processed":
        count(FILES_PROCESSED, 1)
        count(PLAYS_INGESTED, result.plays_valid)
        count(DUPLICATE_PLAYS, result.duplicates)
        for reason, n in result.rows_quarantined.items():
            count(ROWS_QUARANTINED, n, reason=reason)
    elif result.outcome == "already_processed":
        count(FILES_ALREADY_PROCESSED, 1)
    elif result.outcome == "quarantined":
        count(FILES_QUARANTINED, 1, reason=result.reason or "unknown")
    elif result.outcome == "unreadable":
        count(FILES_UNREADABLE, 1, reason=result.reason or "unknown")
