"""The load plan: which dates a run recomputes, and from exactly which accepted contents.

PlanTransform makes the plan from the pending markers (accepted content the warehouse lacks)
and writes it to ``runs/<run>/load_plan.json``; Load checks, right before its commit, that
the plan still covers every content accepted for its dates. A plan that does not (content
was accepted for one of its dates after it was made) would replace the date with fewer
plays than were accepted, and leave no marker to repair it: Load refuses it, PlanTransform
makes a new one (a bounded number of times).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kpi_pipeline.errors import DataGateError, PlanOutdated
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger, entry_dates
from kpi_pipeline.storage import Storage

MAX_PLANS = 3  # per run: a plan made again this often means content keeps arriving meanwhile


@dataclass(frozen=True)
class LoadPlan:
    # Every content accepted for each date: the date's plays are exactly theirs.
    contents_by_date: dict[dt.date, list[str]]
    # The pending markers this plan covers: removed once its dates are in the warehouse.
    pending: list[str]
    version: int = 1

    @property
    def kpi_dates(self) -> list[dt.date]:
        return sorted(self.contents_by_date)

    def to_document(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kpi_dates": [d.isoformat() for d in self.kpi_dates],
            "contents_by_date": {
                d.isoformat(): keys for d, keys in sorted(self.contents_by_date.items())
            },
            "pending": self.pending,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> LoadPlan:
        return cls(
            contents_by_date={
                dt.date.fromisoformat(d): list(keys)
                for d, keys in document.get("contents_by_date", {}).items()
            },
            pending=list(document.get("pending", [])),
            version=int(document.get("version", 1)),
        )


@dataclass(frozen=True)
class Planned:
    plan: LoadPlan
    unloadable: list[str]  # markers no load can ever clear: no ledger entry, or no date


def make_plan(
    ledger: Ledger,
    version: int = 1,
    *,
    writers_end_within: dt.timedelta = dt.timedelta(minutes=16),
    now: dt.datetime | None = None,
) -> Planned:
    """The dates of every pending content the ledger accepted, each with all its contents.

    A marker without a ledger entry belongs to an ingest that died before accepting its
    file (the file, if it is still in landing, is ingested again and marked again), once it
    is older than the longest a writer runs (``writers_end_within``): a younger one may be an
    ingest still at work, of a run that failed meanwhile, which writes its entry next. A
    marker whose content was accepted without a single valid play has no date to load.
    Neither can ever be loaded: they are reported so that the caller clears them.
    """
    since = ledger.pending_since()
    pending = sorted(since)
    entries = ledger.entries(pending)
    loadable = sorted(key for key in pending if key in entries and entries[key].get("kpi_dates"))
    dates = {d for key in loadable for d in entry_dates(entries[key])}
    moment = now or dt.datetime.now(dt.UTC)
    orphaned = [
        key
        for key in pending
        if key not in loadable
        and (key in entries or moment - _aware(since[key]) > writers_end_within)
    ]
    return Planned(
        plan=LoadPlan(ledger.accepted_by_date(dates), loadable, version),
        unloadable=sorted(orphaned),
    )


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def outdated_dates(plan: LoadPlan, ledger: Ledger) -> list[dt.date]:
    """The plan's dates for which content was accepted that the plan does not include."""
    now = ledger.accepted_by_date(plan.kpi_dates)
    return [d for d in plan.kpi_dates if set(now[d]) - set(plan.contents_by_date[d])]


def check_still_covers(plan: LoadPlan, ledger: Ledger) -> None:
    """Raise :class:`PlanOutdated` if the plan no longer covers its dates' contents."""
    outdated = outdated_dates(plan, ledger)
    if not outdated:
        return
    dates = ", ".join(d.isoformat() for d in outdated)
    if plan.version >= MAX_PLANS:
        raise DataGateError(
            f"content keeps being accepted for {dates} while this run loads ({plan.version} "
            "plans made): is another pipeline or a manual ingest writing to the same bucket?"
        )
    raise PlanOutdated(f"content was accepted for {dates} after the plan was made: replanning")


def write_plan(storage: Storage, layout: Layout, run_id: str, plan: LoadPlan) -> None:
    storage.put_json(layout.data_bucket, layout.load_plan_key(run_id), plan.to_document())


def read_plan(storage: Storage, layout: Layout, run_id: str) -> LoadPlan | None:
    document = storage.get_json(layout.data_bucket, layout.load_plan_key(run_id))
    return LoadPlan.from_document(document) if document else None
