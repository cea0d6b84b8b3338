"""Side effects of the Lambda steps, observed; and a Lambda that dies right after one.

Every write a function makes (an S3 put, copy or delete, the warehouse commit) is recorded
as a :class:`SideEffect`: the step, what it did, and what kind of object it touched (named
after the data layout, so the list reads like the design). A test can arm a crash right
after the first occurrence of one of them: the invocation then dies as a Lambda that times
out does (``Sandbox.Timedout``), with its side effect done and nothing after it.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient

# What each data-bucket prefix holds, first match wins (see kpi_pipeline.layout).
KINDS: tuple[tuple[str, str], ...] = (
    (r"^snapshots/", "source snapshot"),
    (r"^source/", "source mark"),
    (r"^quarantine/source/", "quarantined source rows"),
    (r"^runs/[^/]+/manifest\.json$", "manifest"),
    (r"^runs/[^/]+/manifest_files\.json$", "manifest file list"),
    (r"^runs/[^/]+/ingest/", "ingest result"),
    (r"^runs/[^/]+/load_plan\.json$", "load plan"),
    (r"^runs/[^/]+/transform/[^/]+/dates\.json$", "date list"),
    (r"^runs/[^/]+/transform/[^/]+/results/", "date result"),
    (r"^runs/[^/]+/transform/[^/]+/manifests/", "COPY manifest"),
    (r"^runs/[^/]+/summary\.json$", "run summary"),
    (r"^runs/[^/]+/replay\.json$", "replay result"),
    (r"^runs/[^/]+/recompute\.json$", "recompute details"),
    (r"^catalogue/dates/", "date pin"),
    (r"^catalogue/(songs|users|song_artists|song_tracks)/", "pinned snapshot"),
    (r"^curated/", "curated plays"),
    (r"^quarantine/rows/", "quarantined rows"),
    (r"^ledger/pending/", "pending marker"),
    (r"^ledger/files/", "ledger entry"),
    (r"^kpis/", "KPI part"),
    (r"^archive/", "archived file"),
    (r"^quarantine/files/.*\.reason\.json$", "quarantine reason"),
    (r"^quarantine/files/", "quarantined file"),
)
_ACTIONS = {
    "PutObject": "put",
    "CompleteMultipartUpload": "put",
    "CopyObject": "copy",
    "DeleteObject": "delete",
}


@dataclass(frozen=True, order=True)
class SideEffect:
    step: str  # the function, e.g. IngestFile
    action: str  # put, copy, delete, commit
    kind: str  # what it touched, e.g. "ledger entry"

    def __str__(self) -> str:
        return f"{self.step}: {self.action} {self.kind}"


class LambdaKilled(Exception):
    """The invocation dies here (as on a timeout): raised right after a side effect."""


@dataclass
class SideEffects:
    """What the functions wrote, in order; optionally a crash after one of them."""

    data_bucket: str
    landing_bucket: str
    seen: list[SideEffect] = field(default_factory=list)
    crash_after: SideEffect | None = None
    crash_every_time: bool = False  # every invocation dies there, retries included
    crashes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def classify(self, operation: str, params: dict[str, Any]) -> tuple[str, str] | None:
        action = _ACTIONS.get(operation)
        if action is None:
            return None
        bucket, key = params.get("Bucket"), str(params.get("Key", ""))
        if bucket == self.landing_bucket:
            return action, "landing file"
        if bucket != self.data_bucket:
            return None
        kind = next((name for pattern, name in KINDS if re.search(pattern, key)), key)
        return action, kind

    def happened(self, effect: SideEffect) -> None:
        """Record ``effect``; raise LambdaKilled if a crash is armed right after it."""
        with self._lock:
            self.seen.append(effect)
            if effect != self.crash_after or (self.crashes and not self.crash_every_time):
                return
            self.crashes += 1
        raise LambdaKilled(f"killed right after '{effect}'")

    def disarm(self) -> None:
        self.crash_after = None

    def distinct(self) -> list[SideEffect]:
        """Each side effect once, in the order of its first occurrence."""
        return list(dict.fromkeys(self.seen))


@contextlib.contextmanager
def observed(
    effects: SideEffects, principal_of: Callable[[BaseClient], str | None]
) -> Iterator[None]:
    """Record the writes of every function (the state machine's own are not a step's)."""
    from kpi_pipeline.warehouse.postgres import PostgresWarehouse

    make_api_call = BaseClient._make_api_call
    replace_dates = PostgresWarehouse.replace_dates
    compute_date = PostgresWarehouse.compute_date

    def call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        result = make_api_call(self, operation, params)
        step = principal_of(self)
        classified = effects.classify(operation, params) if step else None
        if step and classified:
            effects.happened(SideEffect(step, *classified))
        return result

    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        rows = replace_dates(self, *args, **kwargs)
        effects.happened(SideEffect("Load", "commit", "warehouse dates"))
        return rows

    def compute(self: Any, *args: Any, **kwargs: Any) -> Any:
        figures = compute_date(self, *args, **kwargs)
        effects.happened(SideEffect("TransformInWarehouse", "commit", "date stage table"))
        return figures

    BaseClient._make_api_call = call
    PostgresWarehouse.replace_dates = commit  # type: ignore[method-assign]
    PostgresWarehouse.compute_date = compute  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseClient._make_api_call = make_api_call
        PostgresWarehouse.replace_dates = replace_dates  # type: ignore[method-assign]
        PostgresWarehouse.compute_date = compute_date  # type: ignore[method-assign]
