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
from dataclasses import dataclass, field
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
    # Pending contents with more dates than this plan takes: the dates it loads of each
    # (recorded as loaded in their ledger entries); their markers stay for the rest.
    partial: dict[str, list[dt.date]] = field(default_factory=dict)

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
            "partial": {k: [d.isoformat() for d in v] for k, v in sorted(self.partial.items())},
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
            partial={
                k: [dt.date.fromisoformat(d) for d in v]
                for k, v in document.get("partial", {}).items()
            },
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
    max_dates: int | None = None,
) -> Planned:
    """The dates of pending contents the ledger accepted (at most ``max_dates``), each with
    all its contents.

    A marker without a ledger entry belongs to an ingest that died before accepting its
    file (the file, if it is still in landing, is ingested again and marked again), once it
    is older than the longest a writer runs (``writers_end_within``): a younger one may be an
    ingest still at work, of a run that failed meanwhile, which writes its entry next. A
    marker whose content has no date left to load (accepted without a valid play, or every
    date loaded already) needs no load. Both are reported so that the caller clears them.

    Dates are taken content by content, the contents with the fewest dates first (the newest
    first among as few), as long as all of a content's dates fit; the rest is filled with the
    oldest dates left. So a file
    with thousands of dates (any year 1-9999 is valid) is loaded a share per run, oldest
    first, and never delays a day's ordinary files, which the first run to see them loads.
    """
    since = ledger.pending_since()
    pending = sorted(since)
    entries = ledger.entries(pending)
    remaining = {
        key: sorted(set(entry_dates(entries[key])) - set(_loaded_dates(entries[key])))
        for key in pending
        if key in entries
    }
    loadable = sorted(key for key, dates in remaining.items() if dates)
    chosen = _choose_dates({key: remaining[key] for key in loadable}, since, max_dates)
    moment = now or _now()
    orphaned = [
        key
        for key in pending
        if key not in loadable
        and (key in entries or moment - _aware(since[key]) > writers_end_within)
    ]
    covered = [key for key in loadable if set(remaining[key]) <= chosen]
    partial = {
        key: sorted(set(remaining[key]) & chosen)
        for key in loadable
        if key not in covered and set(remaining[key]) & chosen
    }
    return Planned(
        plan=LoadPlan(ledger.accepted_by_date(chosen), covered, version, partial),
        unloadable=sorted(orphaned),
    )


def _choose_dates(
    dates_of: dict[str, list[dt.date]], since: dict[str, dt.datetime], max_dates: int | None
) -> set[dt.date]:
    every = {d for dates in dates_of.values() for d in dates}
    if max_dates is None or len(every) <= max_dates:
        return every
    chosen: set[dt.date] = set()

    def first(item: tuple[str, list[dt.date]]) -> tuple[int, float, str]:
        # The fewest dates first; among as few, the content marked last (this run's files
        # before an old backlog of one-date files), then by key (a stable plan).
        key, dates = item
        return (len(dates), -_aware(since[key]).timestamp(), key)

    for _, dates in sorted(dates_of.items(), key=first):
        if len(chosen | set(dates)) <= max_dates:
            chosen |= set(dates)
    for kpi_date in sorted(every - chosen)[: max_dates - len(chosen)]:
        chosen.add(kpi_date)
    return chosen


def _loaded_dates(entry: dict[str, Any]) -> list[dt.date]:
    """The dates of a content loaded already by a plan that took only part of them."""
    return [dt.date.fromisoformat(d) for d in entry.get("loaded_dates", [])]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
