"""Side effects of the Lambda steps, observed; and a Lambda that dies right after one.

Every write a function makes (an S3 put, copy or delete, the warehouse commit) is recorded
as a :class:`SideEffect`: the step, what it did, and what kind of object it touched (named
after the data layout, so the list reads like the design). A test can arm a crash right
after the first occurrence of one of them: the invocation then dies as a Lambda that times
out does (``Sandbox.Timedout``), with its side effect done and nothing after it.
"""

from __future__ import annotations

import contextlib
import contextvars
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
    (r"^runs/[^/]+/revalidate\.json$", "revalidation result"),
    (r"^runs/[^/]+/recompute\.json$", "recompute details"),
    (r"^catalogue/dates/", "date pin"),
    (r"^catalogue/(songs|users|song_artists|song_tracks)/", "pinned snapshot"),
    (r"^curated/", "curated plays"),
    (r"^quarantine/rows/", "quarantined rows"),
    (r"^ledger/pending/", "pending marker"),
    (r"^ledger/files/", "ledger entry"),
    (r"^kpis/", "KPI part"),
    (r"^archive/", "archived file"),
    (r"^quarantine/attempts/", "ingest attempts"),
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


class LambdaOutOfMemory(Exception):
    """The invocation is killed for passing its memory size: raised by a test's wrapper,
    answered as Lambda answers, with ``error_type`` Runtime.OutOfMemory or (as the Python
    runtimes often report it) Runtime.ExitError, "signal: killed" in the message."""

    def __init__(self, error_type: str = "Runtime.OutOfMemory") -> None:
        super().__init__(error_type)
        self.error_type = error_type


# The run whose Lambda invocation (or Data API batch) the current thread carries out.
current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar("run", default=None)


@dataclass
class Park:
    """Hold one run's invocation right before a side effect: it goes on (as a zombie, when
    its execution was stopped meanwhile) once released."""

    before: SideEffect
    run_id: str
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    thread: int | None = None  # the thread it holds, once reached

    def hold(self) -> None:
        self.thread = threading.get_ident()
        self.reached.set()
        assert self.release.wait(timeout=300), f"{self.before} of {self.run_id} never released"


@dataclass
class SideEffects:
    """What the functions wrote, in order; optionally a crash after one of them."""

    data_bucket: str
    landing_bucket: str
    seen: list[SideEffect] = field(default_factory=list)
    crash_after: SideEffect | None = None
    crash_every_time: bool = False  # every invocation dies there, retries included
    crashes: int = 0
    parks: list[Park] = field(default_factory=list)
    _held: list[Park] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def park_before(self, effect: SideEffect, run_id: str) -> Park:
        """Hold ``run_id``'s invocation right before its first ``effect``."""
        park = Park(effect, run_id)
        self.parks.append(park)
        return park

    def release_held(self, which: Callable[[Park], bool]) -> None:
        """Let go the held invocations ``which`` selects."""
        with self._lock:
            held = [p for p in self._held if which(p)]
        for park in held:
            park.release.set()

    def holds(self, thread: int | None) -> bool:
        """Whether an invocation is held in ``thread`` and not released."""
        with self._lock:
            return any(p.thread == thread and not p.release.is_set() for p in self._held)

    def about_to(self, effect: SideEffect) -> None:
        """Called right before ``effect``: hold the invocation if a park awaits it."""
        run = current_run.get()  # None in a thread of S3's transfer manager: the first one
        with self._lock:
            due = [p for p in self.parks if p.before == effect and (run is None or p.run_id == run)]
            for park in due:
                self.parks.remove(park)
        for park in due:
            with self._lock:
                self._held.append(park)
            park.hold()

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
        step = principal_of(self)
        classified = effects.classify(operation, params) if step else None
        if step and classified:
            effects.about_to(SideEffect(step, *classified))
        result = make_api_call(self, operation, params)
        if step and classified:
            effects.happened(SideEffect(step, *classified))
        return result

    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        effects.about_to(SideEffect("Load", "commit", "warehouse dates"))
        rows = replace_dates(self, *args, **kwargs)
        effects.happened(SideEffect("Load", "commit", "warehouse dates"))
        return rows

    def compute(self: Any, *args: Any, **kwargs: Any) -> Any:
        effects.about_to(SideEffect("TransformInWarehouse", "commit", "date stage table"))
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
