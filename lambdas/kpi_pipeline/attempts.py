"""Files that IngestFile could not get through: retried by the next runs, then quarantined.

A file whose IngestFile fails after its retries stays in landing, and Archive fails the run
so that someone looks (kpi_pipeline.archiving). Each failed attempt that the file itself
may have caused is counted in ``quarantine/attempts/<hash of its landing key>.json``, one
entry per run (a retried Archive counts its run once). A file is given up on, quarantined
whole with the reason ``ingest_failed`` (its errors in the detail), an ``ingest_failed``
metric emitted (FilesGivenUpAlarm), when

- its failure repeats on every attempt: it ran out of memory twice (the state machine
  retries that once, in a fresh sandbox), or ``/tmp`` is too small for it (its size decides
  that); raise ``functions.ingest_file`` and put the file back in landing; or
- it failed ``max_file_attempts`` runs (cdk.json; default 3; a count lapses 30 days after
  its last failure).

Not counted: the failures of the pipeline or of AWS rather than of the file (throttling,
a Lambda service error, a setting, the lock, an object the pipeline kept, the source or the
warehouse unavailable). A run in which every file failed, more than one (an outage, or a
setting such as the memory size, more likely than poison files), is counted only once a
file has failed twice ``max_file_attempts`` runs, and never gives a file up at once.

A file is known by its key and size: a producer that sends the same file again under the
same key (a new ETag under SSE-KMS) keeps its count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from kpi_pipeline.contracts import IngestResult
from kpi_pipeline.errors import (
    LAMBDA_NETWORK_SETTINGS_ERRORS,
    LAMBDA_SERVICE_ERRORS,
    MAYBE_OUT_OF_MEMORY_ERRORS,
    OUT_OF_MEMORY_ERRORS,
    RETRYABLE_ERRORS,
    ConfigurationError,
    CorruptObject,
    InvalidRequest,
    LockLost,
    ScratchSpaceExhausted,
)
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import FILES_QUARANTINED, count, logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.reasons import FileReason
from kpi_pipeline.storage import Storage

# Out of memory, already retried once by the state machine; or /tmp too small for the file.
DETERMINISTIC_ERRORS = frozenset({*OUT_OF_MEMORY_ERRORS, ScratchSpaceExhausted.__name__})
# The pipeline's or AWS's trouble, whatever the file: never held against it.
NOT_THE_FILES = frozenset(
    {
        *(error.__name__ for error in RETRYABLE_ERRORS),
        *LAMBDA_SERVICE_ERRORS,
        *LAMBDA_NETWORK_SETTINGS_ERRORS,
        *(e.__name__ for e in (ConfigurationError, CorruptObject, InvalidRequest, LockLost)),
        "States.Runtime",
        "States.Permissions",
    }
)


def give_up_on(
    failed: list[IngestResult],
    run_id: str,
    *,
    files_in_run: int,
    max_attempts: int,
    storage: Storage,
    layout: Layout,
) -> dict[int, IngestResult]:
    """Count this run's failed attempt of each file; answer, by manifest index, the files
    given up on, as quarantined results (reason ``ingest_failed``)."""
    # Every file of the run failed: an outage, or a setting (the memory size), rather than
    # each file; counted only once such runs reach twice max_attempts (two poison files
    # alone in landing would otherwise fail every run for good).
    outage = len(failed) > 1 and len(failed) == files_in_run

    def attempt(result: IngestResult) -> IngestResult | None:
        error = error_name(result)
        if error in NOT_THE_FILES:
            return None
        deterministic = error in DETERMINISTIC_ERRORS and not outage
        key = attempts_key(result.key)
        document = _previous(storage, layout.data_bucket, key)
        same_file = document.get("size") == result.size
        runs: dict[str, Any] = document.get("runs", {}) if same_file else {}
        given_up_by = document.get("given_up_by") if same_file else None
        if given_up_by and given_up_by != run_id:
            runs, given_up_by = {}, None  # put back in landing after it was given up on
        runs.setdefault(
            run_id,
            {"error": error, "message": error_message(result.detail), "at": _now(), "all": outage},
        )
        alone = sum(1 for r in runs.values() if not r.get("all"))
        give_up = deterministic or alone >= max_attempts or len(runs) >= 2 * max_attempts
        storage.put_json(
            layout.data_bucket,
            key,
            {
                "key": result.key,
                "size": result.size,
                "runs": runs,
                "given_up_by": run_id if give_up else None,
            },
        )
        if not give_up:
            return None
        if given_up_by != run_id:  # a retried Archive gave it up already: counted once
            count(FILES_QUARANTINED, 1, reason=FileReason.INGEST_FAILED.value)
        why = (
            "a failure that repeats on every attempt"
            if deterministic
            else f"{len(runs)} failed runs (max_file_attempts {max_attempts}; runs in which "
            f"every file failed count from {2 * max_attempts})"
        )
        errors = "; ".join(f"{r['error']}: {r['message']}" for r in runs.values())
        return result.model_copy(
            update={
                "outcome": "quarantined",
                "reason": FileReason.INGEST_FAILED.value,
                "detail": f"given up after {why}: {errors}"[:2000],
            }
        )

    given_up = parallel(attempt, failed)
    return {r.index: r for r in given_up if r is not None}


def attempts_so_far(failed: IngestResult, storage: Storage, layout: Layout) -> int:
    """How many runs this file has failed so far (0: none counted against it)."""
    document = _previous(storage, layout.data_bucket, attempts_key(failed.key))
    return len(document.get("runs", {})) if document.get("size") == failed.size else 0


def error_name(result: IngestResult) -> str:
    """The error a failed file's result records; an out-of-memory kill reported as
    Runtime.ExitError ("signal: killed") or Lambda.Unknown ("memory") is named as such."""
    name = result.reason or ""
    cause = (result.detail or "").lower()
    if name in MAYBE_OUT_OF_MEMORY_ERRORS and ("signal: killed" in cause or "memory" in cause):
        return OUT_OF_MEMORY_ERRORS[0]
    return name


def attempts_key(landing_key: str) -> str:
    """Where a landing file's failed attempts are counted (a hash: keys may be long)."""
    digest = hashlib.sha256(landing_key.encode()).hexdigest()
    return f"{Layout.attempts_prefix}{digest}.json"


def error_message(cause: str | None) -> str:
    """The message of a Lambda error cause (a JSON document with errorMessage), shortened."""
    try:
        message = json.loads(cause or "").get("errorMessage", cause)
    except (ValueError, AttributeError):
        message = cause
    return str(message)[:300]


def _previous(storage: Storage, bucket: str, key: str) -> dict[str, Any]:
    """The counting so far; one that cannot be read is started again (it is only a count)."""
    try:
        document = storage.get_json(bucket, key)
    except CorruptObject as exc:
        logger.warning("ingest attempts unreadable: counted anew", extra={"problem": str(exc)})
        return {}
    if not isinstance(document, dict) or not isinstance(document.get("runs", {}), dict):
        return {}
    return document


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
