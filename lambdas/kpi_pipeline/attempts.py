"""Files that IngestFile could not get through: retried by the next runs, then quarantined.

A file whose IngestFile fails after its retries stays in landing, and Archive fails the run
so that someone looks (kpi_pipeline.archiving). Each failed attempt is counted, per file
version (its landing key and ETag), in ``quarantine/attempts/<hash>.json``: one entry per
run, so a retried Archive counts a run once. A file is given up on, and quarantined whole
with the reason ``ingest_failed`` (its errors in the detail), when

- its failure is deterministic: the same file fails the same way on every attempt (it
  exhausted the function's memory or its /tmp: raise ``functions.ingest_file`` and put the
  file back in landing), or
- it failed ``max_file_attempts`` runs in a row (cdk.json; default 3).

One poison file then costs at most that many failed runs, never every run after it. A new
version of the file (another ETag) starts counting again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from kpi_pipeline.contracts import IngestResult
from kpi_pipeline.errors import ScratchSpaceExhausted
from kpi_pipeline.layout import Layout
from kpi_pipeline.parallel import parallel
from kpi_pipeline.reasons import FileReason
from kpi_pipeline.storage import Storage

# The same file fails the same way again: Lambda's out-of-memory kill, Python's own
# MemoryError, or a /tmp too small for the file (its size decides it).
DETERMINISTIC_ERRORS = frozenset(
    {"Runtime.OutOfMemory", "MemoryError", ScratchSpaceExhausted.__name__}
)


def give_up_on(
    failed: list[IngestResult],
    run_id: str,
    *,
    max_attempts: int,
    storage: Storage,
    layout: Layout,
) -> dict[int, IngestResult]:
    """Count this run's failed attempt of each file; answer, by manifest index, the files
    given up on, as quarantined results (reason ``ingest_failed``)."""

    def count(result: IngestResult) -> IngestResult | None:
        key = attempts_key(result.key)
        previous = storage.get_json(layout.data_bucket, key) or {}
        runs: dict[str, Any] = (
            previous.get("runs", {}) if previous.get("etag") == result.etag else {}
        )
        runs.setdefault(
            run_id,
            {"error": result.reason, "message": error_message(result.detail), "at": _now()},
        )
        storage.put_json(
            layout.data_bucket, key, {"key": result.key, "etag": result.etag, "runs": runs}
        )
        deterministic = result.reason in DETERMINISTIC_ERRORS
        if not deterministic and len(runs) < max_attempts:
            return None
        why = (
            "a failure that repeats on every attempt"
            if deterministic
            else (f"{len(runs)} failed runs (max_file_attempts {max_attempts})")
        )
        errors = "; ".join(f"{r['error']}: {r['message']}" for r in runs.values())
        return result.model_copy(
            update={
                "outcome": "quarantined",
                "reason": FileReason.INGEST_FAILED.value,
                "detail": f"given up after {why}: {errors}"[:2000],
            }
        )

    given_up = parallel(count, failed)
    return {r.index: r for r in given_up if r is not None}


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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
