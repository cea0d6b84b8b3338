"""ListNewFiles: freeze the manifest of landing files this run will process.

The manifest records each file's key, ETag and size. Only those exact versions are
ingested and archived; files that land (or change) afterwards wait for the next run. The
file list stays in S3 (the IngestStreams Distributed Map reads it from there); the state
carries its keys and counts only.
"""

from __future__ import annotations

import datetime as dt

from kpi_pipeline.contracts import Manifest, ManifestEntry, ManifestSummary
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import FILES_IGNORED, FILES_UNREADABLE, count, logger
from kpi_pipeline.storage import ObjectInfo, Storage

# Storage classes whose objects GetObject refuses (InvalidObjectState) until restored.
ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
ARCHIVED_STORAGE_CLASS = "archived_storage_class"


def is_stream_file(key: str) -> bool:
    return key.lower().endswith(".csv")


EXAMPLES = 10  # of the objects left in place, the keys a log line names


def list_new_files(
    run_id: str, *, storage: Storage, layout: Layout, max_files: int
) -> ManifestSummary:
    """The manifest of the oldest ``max_files`` stream files under the landing prefix.

    The listing is read page by page and never held: of the files it keeps the oldest
    ``max_files`` (at most twice that at a time), of the rest counts and a few keys. A
    landing prefix of a million objects costs no more memory than one of ``max_files``."""
    oldest = _Oldest(max_files)
    candidates = 0
    archived: list[str] = []
    archived_count = 0
    ignored: list[str] = []
    ignored_count = 0
    for obj in storage.list_objects(layout.landing_bucket, layout.landing_prefix):
        if obj.key.endswith("/"):  # "folder" placeholder objects are not files
            continue
        if not is_stream_file(obj.key):
            ignored_count += 1
            if len(ignored) < EXAMPLES:
                ignored.append(obj.key)
        # An archived object cannot be read: it stays where it is, counted, and takes no
        # place in the manifest (restore it and copy it in place as STANDARD to ingest it).
        elif obj.storage_class in ARCHIVED_CLASSES:
            archived_count += 1
            if len(archived) < EXAMPLES:
                archived.append(obj.key)
        else:
            candidates += 1
            oldest.add(obj)
    if archived_count:
        count(FILES_UNREADABLE, archived_count, reason=ARCHIVED_STORAGE_CLASS)
        logger.warning(
            "landing files in GLACIER or DEEP_ARCHIVE cannot be read; left in place",
            extra={"count": archived_count, "examples": archived},
        )
    count(FILES_IGNORED, ignored_count)
    if ignored_count:
        logger.warning(
            "landing objects that are not CSV files were left in place",
            extra={"count": ignored_count, "examples": ignored},
        )

    entries = [_entry(index, obj) for index, obj in enumerate(oldest.sorted())]

    pending = storage.list_objects(layout.data_bucket, layout.pending_prefix)
    manifest = Manifest(
        manifest_key=layout.manifest_key(run_id),
        files_key=layout.manifest_files_key(run_id),
        results_prefix=layout.ingest_results_prefix(run_id),
        file_count=len(entries),
        files=entries,
        files_deferred=candidates - len(entries),
        files_ignored=ignored_count,
        files_unreadable=archived_count,
        files_unreadable_by_reason=(
            {ARCHIVED_STORAGE_CLASS: archived_count} if archived_count else {}
        ),
        # With no new file, the run still goes on to load what an earlier run left pending.
        pending_contents=sum(1 for _ in pending),
    )
    storage.put_json(
        layout.data_bucket,
        manifest.files_key,
        [entry.model_dump(mode="json") for entry in entries],
    )
    storage.put_json(
        layout.data_bucket,
        manifest.manifest_key,
        {
            "run_id": run_id,
            "taken_at": dt.datetime.now(dt.UTC).isoformat(),
            "landing": f"s3://{layout.landing_bucket}/{layout.landing_prefix}",
            **manifest.model_dump(mode="json"),
        },
    )
    if manifest.files_deferred:
        logger.warning(
            "more landing files than one run takes; the rest wait for the next run",
            extra={"taken": manifest.file_count, "deferred": manifest.files_deferred},
        )
    return ManifestSummary.model_validate(manifest.model_dump(exclude={"files"}))


class _Oldest:
    """The ``size`` oldest stream files seen (oldest first: under a backlog larger than one
    run takes, no file waits forever), by last modified then key, in at most ``2 * size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: list[ObjectInfo] = []

    def add(self, obj: ObjectInfo) -> None:
        self._kept.append(obj)
        if len(self._kept) >= 2 * self._size:
            self._kept = self.sorted()

    def sorted(self) -> list[ObjectInfo]:
        return sorted(self._kept, key=lambda o: (o.last_modified, o.key))[: self._size]


def read_manifest(storage: Storage, layout: Layout, manifest_key: str) -> Manifest:
    document = storage.get_json(layout.data_bucket, manifest_key)
    if document is None:
        raise FileNotFoundError(f"manifest s3://{layout.data_bucket}/{manifest_key} is missing")
    return Manifest.model_validate(document)


def _entry(index: int, obj: ObjectInfo) -> ManifestEntry:
    return ManifestEntry(index=index, key=obj.key, etag=obj.etag, size=obj.size)
